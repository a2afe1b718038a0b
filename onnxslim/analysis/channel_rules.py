"""Per-op channel rules: how each ONNX op moves, couples, consumes or creates channel spaces.

This module holds the registry, the pass-through and elementwise ops and the layers; the ops that
move or cut the channel axis (Transpose, Squeeze, Reduce*, Softmax, LayerNormalization, Concat,
Split, Slice, Resize, Pad) are in ``channel_rules_axes``, those that reshape it (Flatten, Reshape,
and the Shape/Slice/Gather expressions that compute a Reshape's shape) in ``channel_rules_shape``.

A rule gets the node and the ``Builder`` and may: give an output a layout (pass-through,
permuted axis, concatenated, scaled by a flatten stride), create a new source (Conv, Gemm...),
unify layouts (elementwise ops between activations), declare members (weights, shape
constants, attributes) and freeze layouts with a reason. An op with no rule freezes every
tracked input (``no_rule``). All ops are in the default domain; opset differences (attribute vs
input for ``axes``, ``split``, ``pads``) are handled inside the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

# the rules that move or reshape the channel axis live in their own modules; importing them registers them
from onnxslim.analysis import channel_rules_axes, channel_rules_shape  # noqa: F401
from onnxslim.analysis.channel_layout import scaled, slice_layout, width
from onnxslim.analysis.channel_rule_base import (  # noqa: F401 - RULES and no_rule are channel_deps' entry
    RULES,
    channel_rule,
    check_shape_exprs,
    extra_outputs_used,
    freeze_all,
    no_rule,
    tracked_inputs,
)
from onnxslim.ir.linear import with_weight

if TYPE_CHECKING:
    from onnxslim.analysis.channel_deps import Builder

# ---- pass-through ops -------------------------------------------------------------------------
UNARY = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Celu",
         "Softplus", "Softsign", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Erf", "Gelu", "Identity",
         "Dropout", "Cast", "Floor", "Ceil", "Round", "Sign", "Mish", "ThresholdedRelu", "Sin", "Cos", "Not",
         "IsNaN", "IsInf", "Shrink")


@channel_rule(*UNARY)
def _unary(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0]) if node.inputs else None
    expr = b.shape_exprs.get(node.inputs[0].name) if node.inputs else None
    if expr is not None and node.op in ("Cast", "Identity"):
        b.shape_exprs[node.outputs[0].name] = expr
        return
    others = [t for t in node.inputs[1:] if b.space(t)]
    for t in others:  # Clip bounds or Dropout ratio that carry channels: not a pass-through
        b.freeze(b.space(t)[1], f"{node.op} {node.name!r} reads channels on a parameter input")
    if space is None:
        check_shape_exprs(node, b)
        return
    if extra_outputs_used(node):
        b.freeze(space[1], f"{node.op} {node.name!r}: its second output is used")
        return
    b.set_space(node.outputs[0], *space)


POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool")


@channel_rule(*POOLS)
def _pool(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    if space[0] != 1:
        b.freeze(space[1], f"{node.op} {node.name!r} pools the channel axis")
    elif extra_outputs_used(node):
        b.freeze(space[1], f"{node.op} {node.name!r}: its indices output encodes channel offsets")
    else:
        b.set_space(node.outputs[0], *space)


@channel_rule("BatchNormalization", "InstanceNormalization")
def _norm(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    axis, layout = space
    if axis != 1 or extra_outputs_used(node):
        b.freeze(layout, f"{node.op} {node.name!r}: channels not on axis 1, or training outputs used")
        return
    count = 5 if node.op == "BatchNormalization" else 3
    for index in range(1, min(count, len(node.inputs))):
        b.param(node, index, 0, layout)
    b.set_space(node.outputs[0], axis, layout)


# ---- elementwise ops with several operands -----------------------------------------------------
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "PRelu", "Where", "Equal", "Greater",
               "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "BitShift", "Mod")
#: ops whose rule handles every input; for any other op, channels on inputs[1:] freeze (fail closed)
ALL_OPERANDS = (*ELEMENTWISE, "Concat")


@channel_rule(*ELEMENTWISE)
def _elementwise(node: gs.Node, b: Builder) -> None:
    tracked = tracked_inputs(node, b)
    if not tracked:
        check_shape_exprs(node, b)
        return
    ranks = [b.rank(t) for t in node.inputs]
    if any(r is None for r in ranks):
        freeze_all(node, b, "an operand has unknown rank")
        return
    out_rank = max(ranks)
    axes = {out_rank - b.rank(t) + axis for t, axis, _ in tracked}
    if len(axes) != 1:
        freeze_all(node, b, "operands carry channels on different axes")
        return
    out_axis = axes.pop()
    layout = tracked[0][2]
    where = f"{node.op} {node.name!r}"
    for _, _, other in tracked[1:]:
        if not b.unify(layout, other, where):
            return
    for index, t in enumerate(node.inputs):
        if b.space(t):
            continue
        dims = b.shape(t)
        local = out_rank - len(dims)
        dim = dims[out_axis - local] if out_axis >= local else 1
        if dim == 1:
            continue
        if b.const(t) is not None and dim == width(layout):
            b.param(node, index, out_axis - local, layout)
        else:
            b.freeze(layout, f"{where}: operand {t.name!r} has {dim} entries on the channel axis and is not tracked")
            return
    b.set_space(node.outputs[0], out_axis, layout)


# ---- layers -----------------------------------------------------------------------------------
@channel_rule("Conv")
def _conv(node: gs.Node, b: Builder) -> None:
    x, weight, out = node.inputs[0], node.inputs[1], node.outputs[0]
    space = b.space(x)
    w = b.const(weight)
    bias = len(node.inputs) > 2 and node.inputs[2].name
    if w is None or (bias and b.const(node.inputs[2]) is None):
        if space:
            b.freeze(space[1], f"Conv {node.name!r}: weight or bias is not constant")
        return
    group = with_weight(node, w).groups
    if space and space[0] != 1:
        b.freeze(space[1], f"Conv {node.name!r} reads channels on axis {space[0]}")
        space = None
    c_in = w.shape[1] * group
    if group == 1:
        if space:
            b.param(node, 1, 1, space[1], role="consumer", tensor=x, tensor_axis=1)
        layout = b.new_source(node, out, w.shape[0])
        b.param(node, 1, 0, layout, role="producer")
        if bias:
            b.param(node, 2, 0, layout, role="producer")
        b.set_space(out, 1, layout)
    elif w.shape[1] == 1 and space and width(space[1]) == c_in and w.shape[0] % group == 0:
        # depthwise: filter o reads channel o // m only, so the output is the input layout with each
        # channel spanning m positions (m = 1: one shared space)
        mult = w.shape[0] // group
        layout = scaled(space[1], mult) if mult > 1 else space[1]
        b.param(node, 1, 0, layout)
        if bias:
            b.param(node, 2, 0, layout)
        b.attr_edit(node, "group", space[1])  # the attribute itself: it counts the channels kept
        b.set_space(out, 1, layout)
    else:
        _grouped_conv(node, b, space, w, group, bool(bias))


def _grouped_conv(node: gs.Node, b: Builder, space, w: np.ndarray, group: int, bias: bool) -> None:
    """1 < group: every group must keep the same channels, so the groups' blocks are unified.

    The input layout is cut into ``group`` blocks of k_in channels that become one space (the same
    local indices go from every block), and so are the ``group`` blocks of the output; the weight
    loses the same columns in every group and its rows block by block; ``group`` is unchanged.
    """
    where = f"Conv {node.name!r} (group={group})"
    out = node.outputs[0]
    k_in, c_out = w.shape[1], w.shape[0]
    if c_out % group:
        if space:
            b.freeze(space[1], f"{where}: {c_out} filters do not split into {group} groups")
        return
    if space:
        layout = b.refine(space[1], {i * k_in for i in range(1, group)})
        blocks = [slice_layout(layout, i * k_in, (i + 1) * k_in) for i in range(group)]
        if any(not blk for blk in blocks):
            b.freeze(layout, f"{where}: its input cannot be cut into its groups")
        elif all(b.unify(blocks[0], blk, where) for blk in blocks[1:]):
            b.param(node, 1, 1, b.expand(blocks[0]))
    k_out = c_out // group
    layout = b.refine(b.new_source(node, out, c_out), {i * k_out for i in range(1, group)})
    pieces = [slice_layout(layout, i * k_out, (i + 1) * k_out) for i in range(group)]
    for piece in pieces[1:]:
        b.unify(pieces[0], piece, where)
    b.param(node, 1, 0, layout, role="producer")
    if bias:
        b.param(node, 2, 0, layout, role="producer")
    b.set_space(out, 1, layout)


@channel_rule("ConvTranspose")
def _conv_transpose(node: gs.Node, b: Builder) -> None:
    x, out = node.inputs[0], node.outputs[0]
    space = b.space(x)
    w = b.const(node.inputs[1])
    bias = len(node.inputs) > 2 and node.inputs[2].name
    if w is None or with_weight(node, w).groups != 1 or (bias and b.const(node.inputs[2]) is None) or node.attrs.get("output_shape"):
        if space:
            b.freeze(space[1], f"ConvTranspose {node.name!r}: grouped, output_shape given, or weights not constant")
        return
    if space:
        if space[0] != 1:
            b.freeze(space[1], f"ConvTranspose {node.name!r} reads channels on axis {space[0]}")
        else:
            b.param(node, 1, 0, space[1], role="consumer", tensor=x, tensor_axis=1)
    layout = b.new_source(node, out, w.shape[1])
    b.param(node, 1, 1, layout, role="producer")
    if bias:
        b.param(node, 2, 0, layout, role="producer")
    b.set_space(out, 1, layout)


@channel_rule("Gemm")
def _gemm(node: gs.Node, b: Builder) -> None:
    a, out = node.inputs[0], node.outputs[0]
    space = b.space(a)
    w = b.const(node.inputs[1])
    has_c = len(node.inputs) > 2 and node.inputs[2].name
    c = b.const(node.inputs[2]) if has_c else None
    if w is None or (has_c and c is None) or b.space(node.inputs[1]):
        freeze_all(node, b, "the weight or bias is not constant")
        return
    layer = with_weight(node, w)
    if space:
        if layer.trans_a or space[0] != 1:
            b.freeze(space[1], f"Gemm {node.name!r} reads the channels as rows (transA)")
        else:
            b.param(node, 1, layer.reduction_axis, space[1], role="consumer", tensor=a, tensor_axis=1)
    n = layer.shape[1]
    layout = b.new_source(node, out, n)
    b.param(node, 1, layer.output_axis, layout, role="producer")
    if c is not None and c.size > 1:
        if c.shape[-1] == n:
            b.param(node, 2, c.ndim - 1, layout, role="producer")
        else:
            b.freeze(layout, f"Gemm {node.name!r}: bias of shape {list(c.shape)} is not per output feature")
    b.set_space(out, 1, layout)


@channel_rule("MatMul")
def _matmul(node: gs.Node, b: Builder) -> None:
    a, weight, out = node.inputs[0], node.inputs[1], node.outputs[0]
    space = b.space(a)
    w = b.const(weight)
    rank = b.rank(a)
    if w is None or w.ndim != 2 or b.space(weight) or rank is None:
        freeze_all(node, b, "the weight is not a constant matrix")
        return
    if space:
        if space[0] != rank - 1:
            b.freeze(space[1], f"MatMul {node.name!r} reads the channels as rows")
        else:
            b.param(node, 1, 0, space[1], role="consumer", tensor=a, tensor_axis=space[0])
    layout = b.new_source(node, out, w.shape[1])
    b.param(node, 1, 1, layout, role="producer")
    b.set_space(out, max(rank, 2) - 1, layout)


