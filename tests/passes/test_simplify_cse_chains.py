"""cse and collapse-chains: structure after, ORT parity, checker (in run_pass), idempotence, declines."""

from __future__ import annotations

import numpy as np

from onnxslim.passes.collapse_chains import CollapseChains
from onnxslim.passes.cse import CommonSubexpressionElimination
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass


def _computing(model):
    return [op for op in op_types(model) if op != "Constant"]


def test_cse_merges_identical_nodes_and_twin_constants(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,4] y) {
    a = Relu(x)
    b = Relu(x)
    ma = MatMul(a, w1)
    mb = MatMul(b, w2)
    c1 = Constant<value = float {2.0}>()
    c2 = Constant<value = float {2.0}>()
    sa = Mul(ma, c1)
    sb = Mul(mb, c2)
    y = Add(sa, sb)
}"""
    w = rng.normal(size=(4, 4)).astype(np.float32)
    model = model_from_text(text, {"w1": w, "w2": w.copy()})
    out, result = run_pass(CommonSubexpressionElimination(), model)
    assert result.modified
    assert result.stats == {"merged_nodes": 3, "merged_constants": 2}  # Relu, MatMul, Mul; w2 and c2
    assert _computing(out) == ["Relu", "MatMul", "Mul", "Add"]
    assert len(out.graph.initializer) == 1
    assert_parity(model, out, {"x": rng.normal(size=(3, 4)).astype(np.float32)})
    assert not run_pass(CommonSubexpressionElimination(), out)[1].modified


def test_cse_keeps_graph_outputs_named_and_never_merges_two_outputs(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,4] y, float[N,4] z, float[N,4] v) {
    a = Relu(x)
    y = Relu(x)
    z = Sigmoid(x)
    z2 = Sigmoid(x)
    v = Add(a, z2)
}"""
    model = model_from_text(text)
    out, result = run_pass(CommonSubexpressionElimination(), model)
    assert result.stats["merged_nodes"] == 2  # a into y (y keeps its name), z2 into z
    assert _computing(out) == ["Relu", "Sigmoid", "Add"]
    assert [o.name for o in out.graph.output] == ["y", "z", "v"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 4)).astype(np.float32)})
    both = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,4] y, float[N,4] z) {
    y = Relu(x)
    z = Relu(x)
}"""
    out, result = run_pass(CommonSubexpressionElimination(), model_from_text(both))
    assert not result.modified and op_types(out) == ["Relu", "Relu"]


def test_cse_leaves_random_ops_and_different_attributes_alone():
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,4] y) {
    r1 = RandomNormalLike(x)
    r2 = RandomNormalLike(x)
    s1 = Softmax<axis = 0>(x)
    s2 = Softmax<axis = 1>(x)
    a = Add(r1, r2)
    b = Add(s1, s2)
    y = Add(a, b)
}"""
    out, result = run_pass(CommonSubexpressionElimination(), model_from_text(text))
    assert not result.modified
    assert op_types(out).count("RandomNormalLike") == 2 and op_types(out).count("Softmax") == 2


def test_cse_rewires_a_subgraph_reading_the_merged_value(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[2] x, bool c) => (float[2] y) {
    a = Relu(x)
    b = Relu(x)
    t = If(c) <then_branch = th () => (float[2] o) { o = Neg(b) }, else_branch = el () => (float[2] o2) { o2 = Abs(b) }>
    y = Add(a, t)
}"""
    model = model_from_text(text)
    out, result = run_pass(CommonSubexpressionElimination(), model)
    assert result.stats["merged_nodes"] == 1
    for flag in (True, False):
        assert_parity(model, out, {"x": rng.normal(size=(2,)).astype(np.float32), "c": np.array(flag)})


def test_reshape_and_transpose_chains_collapse(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,4] x) => (float[N,12] y, float[4,N,3] z) {
    s1 = Constant<value = int64[2] {-1, 4}>()
    s2 = Constant<value = int64[3] {-1, 2, 6}>()
    s3 = Constant<value = int64[2] {-1, 12}>()
    a = Reshape(x, s1)
    b = Reshape(a, s2)
    y = Reshape(b, s3)
    r = Relu(x)
    t1 = Transpose<perm = [1, 0, 2]>(r)
    z = Transpose<perm = [2, 1, 0]>(t1)
}"""
    model = model_from_text(text)
    out, result = run_pass(CollapseChains(), model)
    assert result.stats == {"reshapes": 2, "transposes": 1, "unsqueezes": 0}
    assert sorted(_computing(out)) == ["Relu", "Reshape", "Transpose"]
    assert [n.input[0] for n in out.graph.node if n.op_type == "Reshape"] == ["x"]
    assert [list(a.ints) for n in out.graph.node if n.op_type == "Transpose" for a in n.attribute] == [[2, 0, 1]]
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 4)).astype(np.float32)})
    assert not run_pass(CollapseChains(), out)[1].modified


def test_transposes_composing_to_identity_vanish_and_the_output_keeps_its_name(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,4] x) => (float[N,3,4] y) {
    r = Relu(x)
    t1 = Transpose<perm = [1, 2, 0]>(r)
    y = Transpose<perm = [2, 0, 1]>(t1)
}"""
    model = model_from_text(text)
    out, result = run_pass(CollapseChains(), model)
    assert result.modified and op_types(out) == ["Relu"] and out.graph.node[0].output[0] == "y"
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 4)).astype(np.float32)})


def test_chains_whose_middle_is_seen_elsewhere_or_copied_from_stay(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,4] x) => (float[3,N,4] mid, float[N,3,4] y, float[N,12] w) {
    r = Relu(x)
    mid = Transpose<perm = [1, 0, 2]>(r)
    y = Transpose<perm = [1, 0, 2]>(mid)
    s1 = Constant<value = int64[2] {-1, 4}>()
    s2 = Constant<value = int64[2] {0, 12}>()
    a = Reshape(x, s1)
    w = Reshape(a, s2)
}"""
    model = model_from_text(text)
    out, result = run_pass(CollapseChains(), model)
    assert not result.modified
    assert sorted(d.reason for d in result.declines) == [
        "its target shape may copy dims (0) from the intermediate tensor",
        "the Transpose before it has other readers or is a graph output",
    ]


def test_unsqueeze_chains_become_one_unsqueeze(rng):
    """The dynamo exporter writes x[None, :, None] as two Unsqueezes; opset 11 keeps axes in attributes."""
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,5] x) => (float[1,N,1,5,1] y, float[N,5,1,1] z) {
    a1 = Constant<value = int64[1] {0}>()
    a2 = Constant<value = int64[2] {2, 4}>()
    u = Unsqueeze(x, a1)
    y = Unsqueeze(u, a2)
    b1 = Constant<value = int64[1] {2}>()
    b2 = Constant<value = int64[1] {-1}>()
    v = Unsqueeze(x, b1)
    z = Unsqueeze(v, b2)
}"""
    model = model_from_text(text)
    out, result = run_pass(CollapseChains(), model)
    assert result.stats["unsqueezes"] == 1  # a negative axis needs the rank: that chain stays
    assert _computing(out).count("Unsqueeze") == 3
    assert_parity(model, out, {"x": rng.normal(size=(3, 5)).astype(np.float32)})
    old = """<ir_version: 6, opset_import: ["": 11]>
g (float[N,5] x) => (float[1,5,N,1] y) {
    t = Transpose<perm = [1, 0]>(x)
    u = Unsqueeze<axes = [0]>(t)
    y = Unsqueeze<axes = [3]>(u)
}"""
    model = model_from_text(old)
    out, result = run_pass(CollapseChains(), model)
    assert result.stats["unsqueezes"] == 1 and _computing(out).count("Unsqueeze") == 1
    assert [list(a.ints) for n in out.graph.node if n.op_type == "Unsqueeze" for a in n.attribute] == [[0, 3]]
    assert_parity(model, out, {"x": rng.normal(size=(3, 5)).astype(np.float32)})


def test_a_first_node_read_by_several_of_its_kind_merges_into_each(rng):
    """albert's dynamo export: ``arange[None]`` read by two Unsqueezes; onnxsim merges both."""
    text = """<ir_version: 8, opset_import: ["": 18]>
g (float[N] x) => (float[1,1,N] y, float[1,N,1] z, float[3,N,4] t, float[N,4,3] w, float[N,3,4] v) {
    a0 = Constant<value = int64[1] {0}>()
    a1 = Constant<value = int64[1] {1}>()
    a2 = Constant<value = int64[1] {2}>()
    r = Relu(x)
    u = Unsqueeze(r, a0)
    y = Unsqueeze(u, a0)
    z = Unsqueeze(u, a2)
    s = Constant<value = float[3,1,4] {1,2,3,4,5,6,7,8,9,10,11,12}>()
    e = Unsqueeze(r, a1)
    b = Mul(e, s)
    p = Transpose<perm = [1, 0, 2]>(b)
    t = Transpose<perm = [1, 0, 2]>(p)
    w = Transpose<perm = [0, 2, 1]>(p)
    v = Transpose<perm = [0, 1, 2]>(p)
}"""
    model = model_from_text(text)
    out, result = run_pass(CollapseChains(), model)
    assert result.stats["unsqueezes"] == 2 and _computing(out).count("Unsqueeze") == 3
    # t cancels into a graph output while w and v read the same Transpose: that Transpose stays
    assert result.stats["transposes"] == 0 and _computing(out).count("Transpose") == 4
    assert any("other readers" in d.reason for d in result.declines)
    assert_parity(model, out, {"x": rng.normal(size=(5,)).astype(np.float32)})
    assert not run_pass(CollapseChains(), out)[1].modified


def test_transposes_read_by_several_transposes_compose_into_each(rng):
    text = """<ir_version: 8, opset_import: ["": 18]>
g (float[N,3,4] x) => (float[4,N,3] y, float[N,4,3] z) {
    r = Relu(x)
    p = Transpose<perm = [1, 0, 2]>(r)
    y = Transpose<perm = [2, 1, 0]>(p)
    z = Transpose<perm = [1, 2, 0]>(p)
}"""
    model = model_from_text(text)
    out, result = run_pass(CollapseChains(), model)
    assert result.stats["transposes"] == 2 and _computing(out).count("Transpose") == 2
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 4)).astype(np.float32)})
