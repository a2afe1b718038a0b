"""fold-constants, remove-identity and dce: op types after, ORT parity, checker, idempotence, declines."""

from __future__ import annotations

import numpy as np

from onnxslim.passes.cleanup import DeadCodeElimination
from onnxslim.passes.fold_constants import FoldConstants, FoldConstantsOptions
from onnxslim.passes.remove_identity import RemoveIdentity
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

FOLDABLE = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,2] y) {
    scale = Constant<value = float[1] {2.0}>()
    w2 = Mul(w, scale)
    s = Constant<value = int64[2] {2, 4}>()
    wt = Reshape(w2, s)
    wtt = Transpose(wt)
    y = MatMul(x, wtt)
}"""


def test_fold_constants_folds_weight_arithmetic_including_constant_nodes(rng):
    model = model_from_text(FOLDABLE, {"w": rng.normal(size=(8,)).astype(np.float32)})
    out, result = run_pass(FoldConstants(), model)
    assert result.modified and result.stats["folded"] == 1
    assert op_types(out) == ["MatMul"]
    assert_parity(model, out, {"x": rng.normal(size=(3, 4)).astype(np.float32)})
    _, again = run_pass(FoldConstants(), out)
    assert not again.modified


def test_fold_constants_declines_a_fold_that_grows_the_model(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,64] x) => (float[N,64] y) {
    shape = Constant<value = int64[2] {64, 64}>()
    big = Expand(v, shape)
    y = MatMul(x, big)
}"""
    model = model_from_text(text, {"v": rng.normal(size=(64,)).astype(np.float32)})
    out, result = run_pass(FoldConstants(), model)
    assert not result.modified
    assert "grow the model" in result.declines[0].reason
    assert "Expand" in op_types(out)
    out, result = run_pass(FoldConstants(FoldConstantsOptions(max_growth_bytes=1 << 20)), model)
    assert result.modified and op_types(out) == ["MatMul"]


def test_fold_constants_folds_shape_of_static_tensor(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[2,3,4] x) => (float[2,12] y) {
    s = Shape<end=1>(x)
    tail = Constant<value = int64[1] {12}>()
    shape = Concat<axis=0>(s, tail)
    y = Reshape(x, shape)
}"""
    model = model_from_text(text)
    out, result = run_pass(FoldConstants(), model)
    assert result.modified
    assert op_types(out) == ["Reshape"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 4)).astype(np.float32)})


def test_fold_constants_leaves_dynamic_shapes_alone(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,4] x) => (float[N,12] y) {
    s = Shape<end=1>(x)
    tail = Constant<value = int64[1] {12}>()
    shape = Concat<axis=0>(s, tail)
    y = Reshape(x, shape)
}"""
    model = model_from_text(text)
    out, result = run_pass(FoldConstants(), model)
    assert not result.modified
    assert op_types(out) == ["Shape", "Constant", "Concat", "Reshape"]


def test_remove_identity_and_dropout_keep_output_names(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,4] y) {
    a = Relu(x)
    b = Identity(a)
    c = Dropout(b)
    d = Sigmoid(c)
    y = Identity(d)
}"""
    model = model_from_text(text)
    out, result = run_pass(RemoveIdentity(), model)
    assert result.modified and result.stats["removed"] == 3
    assert op_types(out) == ["Relu", "Sigmoid"]
    assert [o.name for o in out.graph.output] == ["y"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 4)).astype(np.float32)})
    assert not run_pass(RemoveIdentity(), out)[1].modified


def test_remove_identity_declines_input_to_output_and_used_mask():
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,4] y, float[N,4] z, bool[N,4] m) {
    y = Identity(x)
    z, m = Dropout(x)
}"""
    out, result = run_pass(RemoveIdentity(), model_from_text(text))
    assert not result.modified
    reasons = sorted(d.reason for d in result.declines)
    assert reasons == ["it joins a graph input, constant or output to a graph output", "its mask output is used"]
    assert op_types(out) == ["Identity", "Dropout"]


def test_dce_removes_dead_nodes_and_constants_but_keeps_interface(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x, float[N,4] unused) => (float[N,4] y) {
    dead = MatMul(x, w)
    dead2 = Relu(dead)
    y = Relu(x)
}"""
    model = model_from_text(text, {"w": rng.normal(size=(4, 4)).astype(np.float32)})
    out, result = run_pass(DeadCodeElimination(), model)
    assert result.modified and result.stats["removed_nodes"] == 2
    assert op_types(out) == ["Relu"]
    assert [i.name for i in out.graph.input] == ["x", "unused"]
    assert not out.graph.initializer
    assert not run_pass(DeadCodeElimination(), out)[1].modified
