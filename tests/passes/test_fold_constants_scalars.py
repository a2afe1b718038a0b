"""fold-constants keeps a folded value's exact shape and dtype (issue 12: a 0-d scalar became [1])."""

from __future__ import annotations

import numpy as np
import onnx

from onnxslim.passes.fold_constants import FoldConstants
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

RANGE_OF_FOLDED_SCALAR = """<ir_version: 8, opset_import: ["": 17]>
g (int64 start) => (int64[M] y) {
    a = Constant<value = int64 {3}>()
    b = Constant<value = int64 {4}>()
    limit = Add(a, b)
    one = Constant<value = int64 {1}>()
    delta = Mul(one, one)
    y = Range(start, limit, delta)
}"""


def test_folded_scalar_stays_a_scalar_for_range():
    model = model_from_text(RANGE_OF_FOLDED_SCALAR)
    out, result = run_pass(FoldConstants(), model)
    assert result.modified and result.stats["folded"] == 2
    assert op_types(out) == ["Range"]
    folded = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    assert folded["limit"].shape == () and folded["limit"].dtype == np.int64 and folded["limit"] == 7
    assert folded["delta"].shape == () and folded["delta"].dtype == np.int64
    assert_parity(model, out, {"start": np.array(2, dtype=np.int64)})
    assert not run_pass(FoldConstants(), out)[1].modified


def test_folded_values_keep_shape_and_dtype_of_every_rank():
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[2,3] x) => (float[2,3] y) {
    hh = Add(h, h)
    hf = Cast<to = 1>(hh)
    m = Constant<value = float[3,2] {1, 2, 3, 4, 5, 6}>()
    mt = Transpose(m)
    s = Mul(mt, hf)
    y = Add(x, s)
}"""
    model = model_from_text(text, {"h": np.array(1.5, dtype=np.float16)})
    out, result = run_pass(FoldConstants(), model)
    assert result.modified and op_types(out) == ["Add"]
    (folded,) = [onnx.numpy_helper.to_array(t) for t in out.graph.initializer]
    assert folded.shape == (2, 3) and folded.dtype == np.float32
    assert_parity(model, out, {"x": np.ones((2, 3), np.float32)})


# The ONNX AffineGrid expansion (node tests test_affine_grid_2d*_expanded): a branch hands Range a
# [1] tensor, which ONNX Runtime accepts at run time. Once the If's condition is computable at load
# (Size of a static shape folded to 4), ORT inlines the branch, re-infers shapes and refuses the model.
IF_FEEDS_RANGE = """<ir_version: 8, opset_import: ["": 18]>
g (int64[4] size) => (int64[M] y) {
    four = Constant<value = int64 {4}>()
    zero = Constant<value = int64 {0}>()
    one = Constant<value = int64 {1}>()
    one_1d = Constant<value = int64[1] {1}>()
    n = Size(size)
    is_2d = Equal(n, four)
    w = If(is_2d) <then_branch = g1 () => (int64[1] w_then) {
        w_then = Identity(one_1d)
    }, else_branch = g2 () => (int64[1] w_else) {
        a, b, c, w_else = Split<num_outputs = 4>(size)
    }>
    y = Range(zero, w, one)
}"""


def test_an_if_condition_is_not_made_computable_at_load():
    model = model_from_text(IF_FEEDS_RANGE)
    out, _ = run_pass(FoldConstants(), model)
    assert_parity(model, out, {"size": np.array([1, 1, 2, 3], dtype=np.int64)})  # both levels: ORT loads it
    producers = {o: n.op_type for n in out.graph.node for o in n.output}
    assert producers["is_2d"] == "Equal" and producers["n"] == "Size"  # the condition's cone is left as it was
