"""One tiny graph per channel rule: the groups it builds, its members, and why it freezes.

Where a rule prunes, the pruned model is checked against the soft-pruned original (the same
channels zeroed), which must agree to fp32 round-off.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxslim import testing
from onnxslim.analysis.channel_deps import analyze
from onnxslim.analysis.channel_layout import Segment, kept_positions, slice_layout
from onnxslim.analysis.channel_importance import choose_keep, kept_count
from onnxslim.ir.io import to_graph
from onnxslim.ir.shapes import inferred_dims
from onnxslim.testing import EXACT_ATOL, EXACT_RTOL, prune_nets

HEAD = '<ir_version: 8, opset_import: ["" : 17]>'


def plan_of(model):
    return analyze(to_graph(model).toposort(), inferred_dims(model))


def w(rng, *shape):
    return rng.normal(0, 0.5, shape).astype(np.float32)


def check_soft_equals_hard(model, rng, drop_every=2):
    """Drop every other channel of every prunable group; hard and soft pruning must agree."""
    def keep_fn(plan):
        return {g.id: np.arange(0, g.size, drop_every) for g in plan.prunable() if g.size > 1}

    hard, soft, plan, keep = prune_nets.hard_and_soft(model, lambda g: analyze(g.toposort(), inferred_dims(model)), keep_fn)
    onnx.checker.check_model(hard, full_check=True)
    onnx.shape_inference.infer_shapes(hard, strict_mode=True)
    name = model.graph.input[0].name
    dims = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {name: rng.normal(0, 1, dims).astype(np.float32)}
    for a, b in zip(prune_nets.run(soft, feeds), prune_nets.run(hard, feeds)):
        np.testing.assert_allclose(b, a, rtol=EXACT_RTOL, atol=EXACT_ATOL)
    return hard, plan, keep


def conv_chain(rng, middle: str, extra: dict | None = None, c: int = 8):
    """x -> Conv(c) -> Relu -> <middle: r -> m> -> Conv(4) -> y."""
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        c1 = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
        r = Relu (c1)
        {middle}
        y = Conv (m, W2)
    }}"""
    weights = {"W1": w(rng, c, 3, 3, 3), "B1": w(rng, c), "W2": w(rng, 4, c, 1, 1), **(extra or {})}
    return testing.model_from_text(text, weights)


def test_conv_group1_creates_a_group_with_producer_and_consumer(rng):
    model = conv_chain(rng, "m = Identity (r)")
    plan = plan_of(model)
    group = plan.groups[0]
    assert (group.size, group.frozen) == (8, False)
    roles = sorted((m.node.name or m.node.op, m.role, m.axis) for m in group.members)
    assert [r[1:] for r in roles] == [("consumer", 1), ("producer", 0), ("producer", 0)]
    assert plan.groups[1].frozen and "reaches graph output 'y'" in plan.groups[1].reasons[0]
    check_soft_equals_hard(model, rng)


def test_depthwise_conv_shares_the_space_and_rewrites_group(rng):
    model = conv_chain(rng, "m = Conv <group = 8, pads = [1, 1, 1, 1]> (r, Wd, Bd)",
                       {"Wd": w(rng, 8, 1, 3, 3), "Bd": w(rng, 8)})
    plan = plan_of(model)
    assert len(plan.prunable()) == 1
    assert any(m.kind == "attr" and m.attr == "group" for m in plan.groups[0].members)
    hard, _, _ = check_soft_equals_hard(model, rng)
    dw = [n for n in hard.graph.node if n.op_type == "Conv"][1]
    assert onnx.helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 4


def test_grouped_conv_prunes_the_same_channels_in_every_group(rng):
    model = conv_chain(rng, "g = Conv <group = 2> (r, Wg, Bg)\n m = Relu (g)",
                       {"Wg": w(rng, 6, 4, 1, 1), "Bg": w(rng, 6), "W2": w(rng, 4, 6, 1, 1)})
    plan = plan_of(model)
    # the input's 8 channels become one space of 4 (both groups' blocks), the output's 6 one of 3
    assert sorted(g.size for g in plan.prunable()) == [3, 4], plan.lines()
    hard, _, _ = check_soft_equals_hard(model, rng)
    grouped = [n for n in hard.graph.node if n.op_type == "Conv"][1]
    assert onnx.helper.get_attribute_value(next(a for a in grouped.attribute if a.name == "group")) == 2
    weight = next(i for i in hard.graph.initializer if i.name == grouped.input[1])
    assert list(weight.dims[:2]) == [4, 2]  # 2 of 3 filters per group (keep 0, 2), 2 of 4 inputs


def test_depthwise_with_a_channel_multiplier(rng):
    model = conv_chain(rng, "m = Conv <group = 8, pads = [1, 1, 1, 1]> (r, Wd)", {"Wd": w(rng, 16, 1, 3, 3), "W2": w(rng, 4, 16, 1, 1)})
    plan = plan_of(model)
    assert not plan.groups[0].frozen
    hard, _, _ = check_soft_equals_hard(model, rng)
    dw = [n for n in hard.graph.node if n.op_type == "Conv"][1]
    assert onnx.helper.get_attribute_value(next(a for a in dw.attribute if a.name == "group")) == 4


@pytest.mark.parametrize("op", ["BatchNormalization", "InstanceNormalization"])
def test_normalization_params_follow_the_channels(rng, op):
    params = "r, S, Bn, M, V" if op == "BatchNormalization" else "r, S, Bn"
    extra = {"S": w(rng, 8) + 2, "Bn": w(rng, 8), "M": w(rng, 8), "V": np.abs(w(rng, 8)) + 1}
    model = conv_chain(rng, f"m = {op} ({params})", extra)
    plan = plan_of(model)
    count = 4 if op == "BatchNormalization" else 2
    assert sum(1 for m in plan.groups[0].members if m.node.op == op) == count
    check_soft_equals_hard(model, rng)


def test_binary_with_per_channel_constant_is_a_member_scalar_is_not(rng):
    model = conv_chain(rng, "t = Mul (r, S)\n m = Add (t, K)", {"S": w(rng, 8, 1, 1), "K": np.float32(0.5)})
    plan = plan_of(model)
    ops = [m.node.op for m in plan.groups[0].members if m.role == "param"]
    assert ops == ["Mul"]
    assert not plan.groups[0].frozen


def test_binary_with_an_untracked_activation_freezes(rng):
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x, float[2, 8, 6, 6] z) => (float[2, 4, 6, 6] y) {{
        c = Conv (x, W1)
        m = Add (c, z)
        y = Conv (m, W2)
    }}"""
    model = testing.model_from_text(text, {"W1": w(rng, 8, 3, 1, 1), "W2": w(rng, 4, 8, 1, 1)})
    assert "'z' has 8 entries on the channel axis and is not tracked" in plan_of(model).groups[0].reasons[0]


def test_residual_add_couples_both_producers(rng):
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        a = Conv (x, Wa)
        ra = Relu (a)
        b = Conv (ra, Wb)
        s = Add (a, b)
        y = Conv (s, Wy)
    }}"""
    model = testing.model_from_text(text, {"Wa": w(rng, 8, 3, 1, 1), "Wb": w(rng, 8, 8, 1, 1), "Wy": w(rng, 4, 8, 1, 1)})
    plan = plan_of(model)
    group = next(g for g in plan.groups if len(g.sources) == 2)
    assert len(group.sources) == 2 and not group.frozen
    check_soft_equals_hard(model, rng)


def test_concat_and_split_move_channels_by_offsets(rng):
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        a = Conv (x, Wa)
        b = Conv (x, Wb)
        c = Concat <axis = 1> (a, b)
        r = Relu (c)
        p, q = Split <axis = 1> (r, sizes)
        s = Add (p, q)
        y = Conv (s, Wy)
    }}"""
    weights = {"Wa": w(rng, 8, 3, 1, 1), "Wb": w(rng, 8, 3, 1, 1), "Wy": w(rng, 4, 8, 1, 1),
               "sizes": np.array([8, 8], np.int64)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    group = next(g for g in plan.groups if len(g.sources) == 2)
    assert not group.frozen
    assert sum(1 for m in group.members if m.kind == "size") == 2
    hard, _, _ = check_soft_equals_hard(model, rng)
    split_sizes = next(i for i in hard.graph.initializer if i.name.startswith("sizes"))
    assert onnx.numpy_helper.to_array(split_sizes).tolist() == [4, 4]


def test_split_through_one_producer_freezes(rng):
    model = conv_chain(rng, "p, q = Split <axis = 1> (r, sizes)\n m = Add (p, q)",
                       {"sizes": np.array([4, 4], np.int64)})
    model.graph.node[-1].input[0] = "m"
    plan = plan_of(model)
    assert "cuts through the channels of one producer" in plan.groups[0].reasons[0]


def test_slice_on_channel_axis_at_a_segment_boundary(rng):
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        a = Conv (x, Wa)
        b = Conv (x, Wb)
        c = Concat <axis = 1> (a, b)
        s = Slice (c, st, en, ax)
        y = Conv (s, Wy)
    }}"""
    weights = {"Wa": w(rng, 8, 3, 1, 1), "Wb": w(rng, 8, 3, 1, 1), "Wy": w(rng, 4, 8, 1, 1),
               "st": np.array([8], np.int64), "en": np.array([16], np.int64), "ax": np.array([1], np.int64)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    assert len(plan.prunable()) == 2
    check_soft_equals_hard(model, rng)


@pytest.mark.parametrize("middle, extra", [
    ("m = MaxPool <kernel_shape = [2, 2], strides = [1, 1], pads = [0, 0, 1, 1]> (r)", {}),
    ("m = Resize <mode = \"nearest\"> (r, roi, sc)", {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 1, 1], np.float32)}),
    ("m = Pad (r, pads)", {"pads": np.zeros(8, np.int64)}),
    ("t = Transpose <perm = [0, 2, 3, 1]> (r)\n m = Transpose <perm = [0, 3, 1, 2]> (t)", {}),
    ("t = HardSwish (r)\n u = Clip (t, lo, hi)\n m = LeakyRelu (u)", {"lo": np.float32(0), "hi": np.float32(6)}),
])
def test_pass_through_ops(rng, middle, extra):
    model = conv_chain(rng, middle, extra)
    plan = plan_of(model)
    assert not plan.groups[0].frozen, plan.lines()
    check_soft_equals_hard(model, rng)


def test_pad_on_the_channel_axis_and_unknown_op_freeze(rng):
    pads = np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64)
    model = conv_chain(rng, "m = Pad (r, pads)", {"pads": pads, "W2": w(rng, 4, 10, 1, 1)})
    assert "pads the channel axis" in plan_of(model).groups[0].reasons[0]
    model = conv_chain(rng, "m = LRN <size = 3> (r)")
    assert "no channel rule for LRN" in plan_of(model).groups[0].reasons[0]
    model = conv_chain(rng, "m = LayerNormalization <axis = 1> (r, S, Bn)",
                       {"S": np.ones((8, 6, 6), np.float32), "Bn": np.zeros((8, 6, 6), np.float32)})
    assert "normalizes across channels" in plan_of(model).groups[0].reasons[0]
    model = conv_chain(rng, "m = LayerNormalization <axis = 2> (r, S, Bn)",
                       {"S": np.ones((6, 6), np.float32), "Bn": np.zeros((6, 6), np.float32)})
    assert not plan_of(model).groups[0].frozen


def test_flatten_into_gemm_maps_each_channel_to_a_stride(rng):
    text = f"""{HEAD}
    g (float[2, 3, 4, 4] x) => (float[2, 5] y) {{
        c = Conv (x, W1)
        r = Relu (c)
        f = Flatten (r)
        h = Gemm <transB = 1> (f, Wg, Bg)
        y = Gemm (h, Wo)
    }}"""
    weights = {"W1": w(rng, 8, 3, 1, 1), "Wg": w(rng, 6, 128), "Bg": w(rng, 6), "Wo": w(rng, 6, 5)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    consumer = next(m for m in plan.groups[0].members if m.role == "consumer")
    assert consumer.layout[0].inner == 16 and consumer.axis == 1
    assert not plan.groups[1].frozen  # the hidden Gemm units
    check_soft_equals_hard(model, rng)


def test_constant_reshape_is_rewritten_and_dynamic_one_freezes(rng):
    text = f"""{HEAD}
    g (float[2, 3, 4, 4] x) => (float[2, 5] y) {{
        c = Conv (x, W1)
        f = Reshape (c, shape)
        y = MatMul (f, Wm)
    }}"""
    weights = {"W1": w(rng, 8, 3, 1, 1), "Wm": w(rng, 128, 5), "shape": np.array([2, 128], np.int64)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    assert any(m.kind == "size" and m.mode == "delta" for m in plan.groups[0].members)
    hard, _, _ = check_soft_equals_hard(model, rng)
    shape = next(i for i in hard.graph.initializer if i.name.startswith("shape"))
    assert onnx.numpy_helper.to_array(shape).tolist() == [2, 64]
    text2 = f"""{HEAD}
    g (float[2, 3, 4, 4] x, int64[2] shp) => (float[2, 5] y) {{
        c = Conv (x, W1)
        f = Reshape (c, shp)
        y = MatMul (f, Wm)
    }}"""
    model = testing.model_from_text(text2, {k: v for k, v in weights.items() if k != "shape"})
    assert "shape is not constant" in plan_of(model).groups[0].reasons[0]


def test_shape_of_batch_then_minus_one_reshape_is_handled(rng):
    text = f"""{HEAD}
    g (float[N, 3, 4, 4] x) => (float[N, 5] y) {{
        c = Conv (x, W1)
        p = GlobalAveragePool (c)
        s = Shape (p)
        b = Slice (s, z, o, z)
        t = Concat <axis = 0> (b, minus)
        f = Reshape (p, t)
        y = MatMul (f, Wm)
    }}"""
    weights = {"W1": w(rng, 8, 3, 1, 1), "Wm": w(rng, 8, 5), "z": np.array([0], np.int64),
               "o": np.array([1], np.int64), "minus": np.array([-1], np.int64)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    assert not plan.groups[0].frozen, plan.lines()
    check_soft_equals_hard(model, rng)


def test_conv_transpose_and_matmul_rules(rng):
    text = f"""{HEAD}
    g (float[2, 3, 4, 4] x) => (float[2, 2, 8, 8] y) {{
        c = Conv (x, W1)
        r = Relu (c)
        d = ConvTranspose <strides = [2, 2]> (r, Wt, Bt)
        e = Relu (d)
        y = Conv (e, W2)
    }}"""
    weights = {"W1": w(rng, 8, 3, 1, 1), "Wt": w(rng, 8, 6, 2, 2), "Bt": w(rng, 6), "W2": w(rng, 2, 6, 1, 1)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    assert [g.frozen for g in plan.groups] == [False, False, True]
    check_soft_equals_hard(model, rng)


def test_weights_in_constant_nodes_are_read_and_copied(rng):
    model = prune_nets.random_net(rng, ["conv", "depthwise"], 4, "gap", const_nodes=True)
    assert not model.graph.initializer
    plan = plan_of(model)
    assert len(plan.prunable()) == 2  # the stem and the conv block; the depthwise conv shares the latter
    hard, _, _ = check_soft_equals_hard(model, rng)
    assert not hard.graph.initializer  # the sliced weights are held as the model held them: Constant nodes


def test_shared_weight_is_copied_not_edited(rng):
    text = f"""{HEAD}
    g (float[2, 3, 4, 4] x) => (float[2, 4, 4, 4] y) {{
        a = Conv (x, W)
        b = Conv (x, W)
        ya = Conv (a, Wy)
        yb = Conv (b, Wy2)
        y = Add (ya, yb)
    }}"""
    weights = {"W": w(rng, 8, 3, 1, 1), "Wy": w(rng, 4, 8, 1, 1), "Wy2": w(rng, 4, 8, 1, 1)}
    model = testing.model_from_text(text, weights)
    g = to_graph(model).toposort()
    plan = analyze(g, inferred_dims(model))
    from onnxslim.analysis.channel_apply import apply_plan
    first = plan.prunable()[0]
    original = next(t for t in g.tensors().values() if t.name == "W").values.copy()
    apply_plan(g, plan, {first.id: np.arange(4)})
    assert np.array_equal(next(t for t in g.tensors().values() if t.name == "W").values, original)
    convs = [n for n in g.nodes if n.op == "Conv"][:2]
    assert sorted(n.inputs[1].shape[0] for n in convs) == [4, 8]


def test_layout_helpers_and_rounding():
    layout = (Segment(0, 3), Segment(1, 2, inner=2))
    assert kept_positions(layout, {1: np.array([1])}).tolist() == [0, 1, 2, 5, 6]
    assert slice_layout(layout, 3, 7) == (Segment(1, 2, 2),)
    assert slice_layout(layout, 2, 7) is None
    assert kept_count(64, 0.3, 8) == 40          # 44.8 rounds down to a multiple of 8
    assert kept_count(64, 0.95, 8) == 8          # never below round_to
    assert kept_count(12, 0.5, 8) == 12          # narrower than 2 x round_to: left whole
    assert kept_count(10, 0.2, 1) == 8
    keep = choose_keep({0: np.array([3.0, 1.0, 2.0, 0.5])}, {0: 4}, 0.5, 1, "local")
    assert keep[0].tolist() == [0, 2]


def test_residual_add_over_a_concat_cuts_the_producer_at_the_offsets(rng):
    """Add(Concat(a, b), c): c's channels 0..3 are a's, 4..11 are b's; all three stay prunable."""
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        a = Conv (x, Wa)
        b = Conv (x, Wb)
        j = Concat <axis = 1> (a, b)
        r = Relu (j)
        c = Conv (r, Wc)
        s = Add (j, c)
        y = Conv (s, Wy)
    }}"""
    weights = {"Wa": w(rng, 4, 3, 1, 1), "Wb": w(rng, 8, 3, 1, 1), "Wc": w(rng, 12, 12, 1, 1), "Wy": w(rng, 4, 12, 1, 1)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    assert sorted((g.size, len(g.sources)) for g in plan.prunable()) == [(4, 2), (8, 2)]
    hard, _, _ = check_soft_equals_hard(model, rng)
    conv_c = [n for n in hard.graph.node if n.op_type == "Conv"][2]
    weight = next(i for i in hard.graph.initializer if i.name == conv_c.input[1])
    assert list(weight.dims[:2]) == [6, 6]  # half of each part: 2 + 4


def test_residual_add_over_a_depthwise_multiplier_regroups_the_other_side(rng):
    """Add(depthwise x2 of a, b): b's channels 2c and 2c+1 both follow channel c of a."""
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        a = Conv (x, Wa)
        d = Conv <group = 4> (a, Wd)
        b = Conv (x, Wb)
        s = Add (d, b)
        y = Conv (s, Wy)
    }}"""
    weights = {"Wa": w(rng, 4, 3, 1, 1), "Wd": w(rng, 8, 1, 1, 1), "Wb": w(rng, 8, 3, 1, 1), "Wy": w(rng, 4, 8, 1, 1)}
    model = testing.model_from_text(text, weights)
    plan = plan_of(model)
    group = next(g for g in plan.groups if len(g.sources) == 2)
    assert (group.size, group.frozen) == (4, False)
    hard, _, _ = check_soft_equals_hard(model, rng)
    conv_b = next(n for n in hard.graph.node if n.op_type == "Conv" and n.input[0] == "x" and "Wb" in n.input[1])
    assert next(i for i in hard.graph.initializer if i.name == conv_b.input[1]).dims[0] == 4  # pairs kept: 2 of 4


def test_a_tensor_read_inside_a_subgraph_freezes(rng):
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x, bool cond) => (float[2, 4, 6, 6] y) {{
        c = Conv (x, W1)
        r = Relu (c)
        m = If (cond) <then_branch = t () => (float[2, 8, 6, 6] a) {{ a = Identity (r) }},
                       else_branch = e () => (float[2, 8, 6, 6] z) {{ z = Neg (r) }}>
        y = Conv (m, W2)
    }}"""
    model = testing.model_from_text(text, {"W1": w(rng, 8, 3, 1, 1), "W2": w(rng, 4, 8, 1, 1)})
    assert "reads 'r' inside a subgraph" in plan_of(model).groups[0].reasons[0]


def test_channels_on_a_parameter_input_freeze(rng):
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        c = Conv (x, W1)
        s = Relu (c)
        m = BatchNormalization (s, s4, s4, s4, s4)
        y = Conv (m, W2)
    }}"""
    weights = {"W1": w(rng, 4, 3, 1, 1), "W2": w(rng, 4, 4, 1, 1), "s4": np.ones(4, np.float32)}
    model = testing.model_from_text(text, weights)
    assert not plan_of(model).groups[0].frozen  # constants on the parameter inputs are fine
    text2 = text.replace("s = Relu (c)", "s = Relu (c)\n        v = ReduceMean <axes = [0, 2, 3], keepdims = 0> (s)")
    model = testing.model_from_text(text2.replace("(s, s4, s4, s4, s4)", "(s, v, s4, s4, s4)"), weights)
    assert any("parameter input" in r for r in plan_of(model).groups[0].reasons)


def test_negative_axes_on_tensors_of_unknown_rank_freeze(rng):
    """Concat, Split and Slice with a negative axis where no shape is known (mobilevit's legacy
    export): the channel axis cannot be told apart, so the channels freeze (was a TypeError)."""
    text = f"""{HEAD}
    g (float[2, 3, 6, 6] x) => (float[2, 4, 6, 6] y) {{
        a = Conv (x, Wa)
        b = Conv (x, Wb)
        c = Concat <axis = -3> (a, b)
        p, q = Split <axis = -3> (c, sizes)
        s = Slice (p, starts, ends, axes)
        t = Add (s, q)
        y = Conv (t, Wy)
    }}"""
    weights = {"Wa": w(rng, 8, 3, 1, 1), "Wb": w(rng, 8, 3, 1, 1), "Wy": w(rng, 4, 8, 1, 1),
               "sizes": np.array([8, 8], np.int64), "starts": np.array([0], np.int64),
               "ends": np.array([8], np.int64), "axes": np.array([-3], np.int64)}
    plan = analyze(to_graph(testing.model_from_text(text, weights)).toposort(), {})
    reasons = [r for g in plan.groups for r in g.reasons]
    assert all(g.frozen for g in plan.groups if len(g.sources) == 2)
    assert any("negative axis on inputs of unknown rank" in r for r in reasons)
