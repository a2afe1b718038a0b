"""reshape-targets: a Reshape's computed target becomes a constant with 0 (copy) and -1 (infer)."""

from __future__ import annotations

import numpy as np

from onnxslim.ir.io import to_graph
from onnxslim.ir.weights import constant_value
from onnxslim.passes.cleanup import DeadCodeElimination
from onnxslim.passes.reshape_targets import ReshapeTargets
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

FLATTEN_KEEPING_BATCH = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,5,5] x) => (float[N,3] y) {
    p = GlobalAveragePool(x)
    s = Shape(p)
    zero = Constant<value = int64[1] {0}>()
    one = Constant<value = int64[1] {1}>()
    batch = Slice(s, zero, one)
    rest = Constant<value = int64[1] {-1}>()
    t = Concat<axis = 0>(batch, rest)
    y = Reshape(p, t)
}"""


def _targets(model):
    tensors = to_graph(model).tensors()
    return [constant_value(tensors[n.input[1]]).tolist() for n in model.graph.node if n.op_type == "Reshape"]


def test_the_batch_copied_from_the_input_becomes_0(rng):
    model = model_from_text(FLATTEN_KEEPING_BATCH)
    out, result = run_pass(ReshapeTargets(), model)
    assert result.modified and result.stats == {"constant_targets": 1}
    assert _targets(out) == [[0, -1]]
    out, _ = run_pass(DeadCodeElimination(), out)
    assert [op for op in op_types(out) if op != "Constant"] == ["GlobalAveragePool", "Reshape"]
    for n in (1, 4):
        assert_parity(model, out, {"x": rng.normal(size=(n, 3, 5, 5)).astype(np.float32)})
    assert not run_pass(ReshapeTargets(), out)[1].modified


def test_a_dim_of_another_tensor_with_the_same_symbol_becomes_0_and_the_last_unknown_minus_1(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,8] x, float[N,4] y) => (float[N,2,2] a, float[N,2,4] b) {
    s = Shape(x)
    i0 = Constant<value = int64 {0}>()
    n = Gather<axis = 0>(s, i0)
    ax = Constant<value = int64[1] {0}>()
    n1 = Unsqueeze(n, ax)
    two = Constant<value = int64[1] {2}>()
    four = Constant<value = int64[1] {4}>()
    ta = Concat<axis = 0>(n1, two, two)
    a = Reshape(y, ta)
    flat_shape = Constant<value = int64[2] {-1, 4}>()
    z = Reshape(x, flat_shape)
    tb = Concat<axis = 0>(n1, two, four)
    b = Reshape(z, tb)
}"""
    model = model_from_text(text)
    out, result = run_pass(ReshapeTargets(), model)
    assert result.stats == {"constant_targets": 2}
    assert _targets(out) == [[0, 2, 2], [-1, 4], [-1, 2, 4]]
    for n in (1, 3):
        feeds = {"x": rng.normal(size=(n, 8)).astype(np.float32), "y": rng.normal(size=(n, 4)).astype(np.float32)}
        assert_parity(model, out, feeds)


def test_targets_that_the_values_do_not_fix_stay(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,M] x, float[P,Q] y) => (float[?,?] a, float[N,M] b) {
    s = Shape(y)
    a = Reshape(x, s)
    sx = Shape(x)
    b = Reshape<allowzero = 1>(x, sx)
}"""
    model = model_from_text(text)
    out, result = run_pass(ReshapeTargets(), model)
    assert not result.modified
    assert [list(n.input) for n in out.graph.node if n.op_type == "Reshape"] == [["x", "s"], ["x", "sx"]]
