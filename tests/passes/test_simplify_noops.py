"""remove-noops: nodes and pairs that change nothing disappear; outputs keep names; declines."""

from __future__ import annotations

import numpy as np

from onnxslim.passes.cleanup import DeadCodeElimination
from onnxslim.passes.fold_constants import FoldConstants
from onnxslim.passes.remove_noops import RemoveNoops
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

EVERY_NOOP = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,12] x) => (float[N,12] y) {
    a = Cast<to = 1>(x)
    rs = Constant<value = int64[2] {0, -1}>()
    b = Reshape(a, rs)
    es = Constant<value = int64[2] {1, 12}>()
    c = Expand(b, es)
    reps = Constant<value = int64[2] {1, 1}>()
    d = Tile(c, reps)
    starts = Constant<value = int64[1] {0}>()
    ends = Constant<value = int64[1] {9223372036854775807}>()
    axes = Constant<value = int64[1] {1}>()
    e = Slice(d, starts, ends, axes)
    pads = Constant<value = int64[4] {0, 0, 0, 0}>()
    f = Pad(e, pads)
    h = Transpose<perm = [0, 1]>(f)
    i = Concat<axis = 0>(h)
    ax = Constant<value = int64[1] {1}>()
    j = Unsqueeze(i, ax)
    k = Squeeze(j, ax)
    l = Transpose<perm = [1, 0]>(k)
    m = Transpose<perm = [1, 0]>(l)
    y = Relu(m)
}"""


def _feeds(rng, n=3):
    return {"x": rng.normal(size=(n, 12)).astype(np.float32)}


def test_every_noop_and_undoing_pair_is_removed(rng):
    model = model_from_text(EVERY_NOOP)
    out, result = run_pass(RemoveNoops(), model)
    assert result.modified
    assert [op for op in op_types(out) if op != "Constant"] == ["Relu"]
    assert result.stats == {"removed": 10, "cast": 1, "concat": 1, "expand": 1, "pad": 1, "reshape": 1, "slice": 1,
                            "squeeze_pair": 1, "tile": 1, "transpose": 1, "transpose_pair": 1}
    assert_parity(model, out, _feeds(rng))
    assert_parity(model, out, _feeds(rng, 1))
    assert not run_pass(RemoveNoops(), out)[1].modified


def test_a_noop_writing_a_graph_output_keeps_the_output_name(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,12] x) => (float[N,12] y) {
    r = Relu(x)
    y = Cast<to = 1>(r)
}"""
    model = model_from_text(text)
    out, result = run_pass(RemoveNoops(), model)
    assert result.modified and op_types(out) == ["Relu"]
    assert [o.name for o in out.graph.output] == ["y"] and out.graph.node[0].output[0] == "y"
    assert [d.dim_param or d.dim_value for d in out.graph.output[0].type.tensor_type.shape.dim] == ["N", 12]
    assert_parity(model, out, _feeds(rng))


def test_ops_that_change_something_stay(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,12] x) => (double[N,12] y, float[N,3,4] z, float[N,6] w, float[12,N] v) {
    y = Cast<to = 11>(x)
    rs = Constant<value = int64[3] {0, 3, 4}>()
    z = Reshape(x, rs)
    starts = Constant<value = int64[1] {0}>()
    ends = Constant<value = int64[1] {6}>()
    axes = Constant<value = int64[1] {1}>()
    w = Slice(x, starts, ends, axes)
    v = Transpose<perm = [1, 0]>(x)
}"""
    model = model_from_text(text)
    out, result = run_pass(RemoveNoops(), model)
    assert not result.modified
    assert sorted(op_types(out)) == sorted(op_types(model))


def test_transpose_pair_whose_middle_is_a_graph_output_is_kept(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,12] x) => (float[12,N] mid, float[N,12] y) {
    r = Relu(x)
    mid = Transpose<perm = [1, 0]>(r)
    y = Transpose<perm = [1, 0]>(mid)
}"""
    model = model_from_text(text)
    out, result = run_pass(RemoveNoops(), model)
    assert not result.modified
    assert op_types(out) == ["Relu", "Transpose", "Transpose"]


def test_a_noop_joining_a_graph_input_to_an_output_declines(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,12] x) => (float[N,12] y) {
    y = Cast<to = 1>(x)
}"""
    out, result = run_pass(RemoveNoops(), model_from_text(text))
    assert not result.modified
    assert [d.reason for d in result.declines] == ["cast: it joins a graph input, constant or output to a graph output"]
    assert op_types(out) == ["Cast"]


def test_squeeze_without_axes_and_nonzero_state_are_left_alone(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[T,1,8] x) => (float[T,1,1,4] y) {
    ax = Constant<value = int64[1] {1}>()
    u = Unsqueeze(x, ax)
    s = Squeeze(u)
    y, yh, yc = LSTM<hidden_size = 4>(s, w, rr, bias, , h0)
}"""
    model = model_from_text(text, {
        "w": rng.normal(size=(1, 16, 8)).astype(np.float32),
        "rr": rng.normal(size=(1, 16, 4)).astype(np.float32),
        "bias": rng.normal(size=(1, 32)).astype(np.float32),
        "h0": np.full((1, 1, 4), 0.5, np.float32),
    })
    out, result = run_pass(RemoveNoops(), model)
    assert not result.modified
    assert op_types(out) == ["Constant", "Unsqueeze", "Squeeze", "LSTM"]


def test_neutral_arithmetic_goes_unless_it_broadcasts_or_changes_type(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,12] x, int64 n) => (float[N,12] y, float[1,N,12] z, int64 k) {
    one = Constant<value = float[12] {1,1,1,1,1,1,1,1,1,1,1,1}>()
    zero = Constant<value = float {0.0}>()
    a = Mul(x, one)
    b = Add(zero, a)
    c = Div(b, one)
    y = Sub(c, zero)
    big = Constant<value = float[1,1,12] {1,1,1,1,1,1,1,1,1,1,1,1}>()
    z = Mul(x, big)
    i1 = Constant<value = int64 {1}>()
    m = Mul(n, i1)
    k = Neg(m)
}"""
    model = model_from_text(text)
    out, result = run_pass(RemoveNoops(), model)
    assert result.stats == {"removed": 4, "add_neutral": 1, "div_neutral": 1, "mul_neutral": 2}
    # the last Sub would join the graph input x to the output y: it stays, and says why
    assert [d.reason for d in result.declines] == ["sub_neutral: it joins a graph input, constant or output to a graph output"]
    assert sorted(op for op in op_types(out) if op != "Constant") == ["Mul", "Neg", "Sub"]
    assert [o.name for o in out.graph.output] == ["y", "z", "k"]
    feeds = {"x": rng.normal(size=(3, 12)).astype(np.float32), "n": np.array(7, np.int64)}
    assert_parity(model, out, feeds)
    assert not run_pass(RemoveNoops(), out)[1].modified


def test_and_true_and_or_false_go(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (bool[N,4] m, float[N,4] x) => (float[N,4] y) {
    t = Constant<value = bool {1}>()
    f = Constant<value = bool[4] {0, 0, 0, 0}>()
    a = And(t, m)
    o = Or(a, f)
    zero = Constant<value = float {0}>()
    y = Where(o, x, zero)
}"""
    model = model_from_text(text)
    out, result = run_pass(RemoveNoops(), model)
    assert result.stats.get("and_neutral") == 1 and result.stats.get("or_neutral") == 1
    assert sorted(op for op in op_types(out) if op != "Constant") == ["Where"]
    feeds = {"m": rng.random((3, 4)) > 0.5, "x": rng.normal(size=(3, 4)).astype(np.float32)}
    assert_parity(model, out, feeds)


def test_a_shape_tested_against_minus_one_folds_and_its_where_goes(rng):
    """Exporters write Where(Equal(shape, -1), 1, shape) before an Expand: a dim is never -1."""
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,1,S] x, float[N,4,S] y) => (float[N,4,S] z) {
    s = Shape(y)
    minus = Constant<value = int64[3] {-1, -1, -1}>()
    e = Equal(s, minus)
    ones = Constant<value = int64[3] {1, 1, 1}>()
    t = Where(e, ones, s)
    z = Expand(x, t)
}"""
    model = model_from_text(text)
    out = model
    for the_pass in (FoldConstants(), RemoveNoops(), DeadCodeElimination()):
        out, _ = run_pass(the_pass, out)
    assert sorted(op for op in op_types(out) if op != "Constant") == ["Expand", "Shape"]
    feeds = {"x": rng.normal(size=(2, 1, 3)).astype(np.float32), "y": rng.normal(size=(2, 4, 3)).astype(np.float32)}
    assert_parity(model, out, feeds)
