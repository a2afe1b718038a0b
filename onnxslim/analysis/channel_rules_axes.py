"""Channel rules for ops that move or cut the channel axis.

Transpose/Squeeze/Unsqueeze/Reduce* move the axis; Softmax and LayerNormalization freeze when they
normalize across channels; Concat joins layouts (offsets), Split and Slice cut them at segment
boundaries (rewriting their size/offset constants); Resize and Pad pass channels through when they
leave the channel axis alone. Flatten, Reshape and shape expressions are in ``channel_rules_shape``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.analysis.channel_layout import FIXED, Segment, slice_layout, width
from onnxslim.analysis.channel_rule_base import (
    channel_rule,
    check_shape_exprs,
    extra_outputs_used,
    freeze_all,
    slice_shape_expr,
    tracked_inputs,
)

if TYPE_CHECKING:
    from onnxslim.analysis.channel_deps import Builder


# ---- axis moves -------------------------------------------------------------------------------
@channel_rule("Transpose")
def _transpose(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    rank = b.rank(node.inputs[0])
    perm = list(node.attrs.get("perm", range(rank - 1, -1, -1) if rank else []))
    if space[0] not in perm:
        b.freeze(space[1], f"Transpose {node.name!r}: unknown permutation")
        return
    b.set_space(node.outputs[0], perm.index(space[0]), space[1])


def _axes(node: gs.Node, b: Builder, index: int = 1) -> list[int] | None:
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > index and node.inputs[index].name:
        value = b.const(node.inputs[index])
        return None if value is None else [int(a) for a in np.ravel(value)]
    return []


@channel_rule("Squeeze", "Unsqueeze")
def _squeeze(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    expr = b.shape_exprs.get(node.inputs[0].name)
    if expr is not None and (node.op == "Unsqueeze" or len(expr) == 1):
        b.shape_exprs[node.outputs[0].name] = expr
        return
    if space is None:
        return check_shape_exprs(node, b)
    rank, axes = b.rank(node.inputs[0]), _axes(node, b)
    if rank is None or axes is None or (node.op == "Squeeze" and not axes):
        b.freeze(space[1], f"{node.op} {node.name!r}: axes or rank unknown")
        return
    axis = space[0]
    if node.op == "Squeeze":
        axes = sorted(a % rank for a in axes)
        if axis in axes:
            b.freeze(space[1], f"Squeeze {node.name!r} removes the channel axis")
            return
        axis -= sum(1 for a in axes if a < axis)
    else:
        out_rank = rank + len(axes)
        for a in sorted(x % out_rank for x in axes):
            if a <= axis:
                axis += 1
    b.set_space(node.outputs[0], axis, space[1])


REDUCE = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


@channel_rule(*REDUCE)
def _reduce(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    rank, axes = b.rank(node.inputs[0]), _axes(node, b)
    if rank is None or axes is None:
        b.freeze(space[1], f"{node.op} {node.name!r}: axes or rank unknown")
        return
    axes = sorted(a % rank for a in axes) or list(range(rank))
    if space[0] in axes:
        b.freeze(space[1], f"{node.op} {node.name!r} reduces across channels")
        return
    axis = space[0] if node.attrs.get("keepdims", 1) else space[0] - sum(1 for a in axes if a < space[0])
    b.set_space(node.outputs[0], axis, space[1])


@channel_rule("LayerNormalization")
def _layer_norm(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    rank = b.rank(node.inputs[0])
    axis = int(node.attrs.get("axis", -1)) % rank if rank else None
    if axis is None or space[0] >= axis:
        b.freeze(space[1], f"LayerNormalization {node.name!r} normalizes across channels")
    elif extra_outputs_used(node):
        b.freeze(space[1], f"LayerNormalization {node.name!r}: its statistics outputs are used")
    else:
        b.set_space(node.outputs[0], *space)


@channel_rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    rank = b.rank(node.inputs[0]) or 0
    opset = _opset(b)
    axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1)) % max(rank, 1)
    if axis == space[0] or (opset < 13 and axis <= space[0]):
        b.freeze(space[1], f"{node.op} {node.name!r} normalizes across channels")
        return
    b.set_space(node.outputs[0], *space)


def _axis(axis: int, rank: int | None) -> int | None:
    """``axis`` made non-negative; None for a negative one when the rank is unknown."""
    return axis if axis >= 0 else axis % rank if rank else None


def _opset(b: Builder) -> int:
    return int(getattr(b.graph, "opset", 17) or 17)


# ---- channel-axis surgery ---------------------------------------------------------------------
@channel_rule("Concat")
def _concat(node: gs.Node, b: Builder) -> None:
    tracked = tracked_inputs(node, b)
    if not tracked:
        return check_shape_exprs(node, b, concat=True)
    rank = b.rank(node.outputs[0]) or b.rank(tracked[0][0])
    axis = _axis(int(node.attrs["axis"]), rank)
    where = f"Concat {node.name!r}"
    if axis is None:
        freeze_all(node, b, f"{where}: a negative axis on inputs of unknown rank")
        return
    if any(a != tracked[0][1] for _, a, _ in tracked):
        freeze_all(node, b, "inputs carry channels on different axes")
        return
    if axis != tracked[0][1]:
        layout = tracked[0][2]
        ok = all(b.unify(layout, other, where) for _, _, other in tracked[1:])
        if ok and len(tracked) != len(node.inputs):
            b.freeze(layout, f"{where} joins tracked channels with untracked tensors on another axis")
        elif ok:
            b.set_space(node.outputs[0], tracked[0][1], layout)
        return
    segments: list[Segment] = []
    for t in node.inputs:
        space = b.space(t)
        if space:
            segments.extend(space[1])
            continue
        dims = b.shape(t)
        if dims is None or not isinstance(dims[axis], int):
            freeze_all(node, b, f"input {t.name!r} has an unknown size on the channel axis")
            return
        segments.append(Segment(FIXED, int(dims[axis])))
    b.set_space(node.outputs[0], axis, tuple(segments))


@channel_rule("Split")
def _split(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    axis = _axis(int(node.attrs.get("axis", 0)), b.rank(node.inputs[0]))
    if axis is None:
        b.freeze(space[1], f"Split {node.name!r}: a negative axis on an input of unknown rank")
        return
    if axis != space[0]:
        for out in node.outputs:
            b.set_space(out, *space)
        return
    if "split" in node.attrs:
        sizes, edit = [int(s) for s in node.attrs["split"]], "attr"
    elif len(node.inputs) > 1 and node.inputs[1].name and b.const(node.inputs[1]) is not None:
        sizes, edit = [int(s) for s in b.const(node.inputs[1])], "input"
    else:
        b.freeze(space[1], f"Split {node.name!r} has no explicit sizes (equal parts cannot stay equal)")
        return
    start, pieces = 0, []
    for size in sizes:
        piece = slice_layout(space[1], start, start + size)
        if not piece:
            b.freeze(space[1], f"Split {node.name!r} cuts through the channels of one producer")
            return
        pieces.append(piece)
        start += size
    for i, (out, piece) in enumerate(zip(node.outputs, pieces)):
        if edit == "attr":
            b.attr_edit(node, "split", piece, entry=i)
        else:
            b.size_edit(node, 1, i, piece)
        b.set_space(out, axis, piece)


@channel_rule("Slice")
def _slice(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return slice_shape_expr(node, b)
    values = [b.const(t) if t.name else None for t in node.inputs[1:5]]
    rank = b.rank(node.inputs[0])
    if any(v is None for v in values[:2]) or (len(values) > 2 and values[2] is None and node.inputs[3].name):
        b.freeze(space[1], f"Slice {node.name!r}: starts/ends/axes are not constant")
        return
    starts, ends = [int(v) for v in values[0]], [int(v) for v in values[1]]
    axes = [_axis(int(a), rank) for a in values[2]] if len(values) > 2 and values[2] is not None else list(range(len(starts)))
    if None in axes:
        b.freeze(space[1], f"Slice {node.name!r}: a negative axis on an input of unknown rank")
        return
    steps = [int(s) for s in values[3]] if len(values) > 3 and values[3] is not None else [1] * len(starts)
    if space[0] not in axes:
        b.set_space(node.outputs[0], *space)
        return
    i = axes.index(space[0])
    total = width(space[1])
    start = min(max(starts[i] + total if starts[i] < 0 else starts[i], 0), total)
    end = min(max(ends[i] + total if ends[i] < 0 else ends[i], 0), total)
    piece = slice_layout(space[1], start, end) if steps[i] == 1 else None
    if not piece:
        b.freeze(space[1], f"Slice {node.name!r} cuts through the channels of one producer or steps by {steps[i]}")
        return
    b.size_edit(node, 1, i, slice_layout(space[1], 0, start) or ())
    if ends[i] < total:
        b.size_edit(node, 2, i, slice_layout(space[1], 0, end) or ())
    b.set_space(node.outputs[0], space[0], piece)


@channel_rule("Resize", "Upsample")
def _resize(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    axis = space[0]
    scales_index = 2 if node.op == "Resize" and len(node.inputs) > 2 else 1
    scales = b.const(node.inputs[scales_index]) if len(node.inputs) > scales_index and node.inputs[scales_index].name else None
    sizes = b.const(node.inputs[3]) if node.op == "Resize" and len(node.inputs) > 3 and node.inputs[3].name else None
    if "axes" in node.attrs:
        b.freeze(space[1], f"{node.op} {node.name!r} uses the axes attribute")
        return
    if scales is not None and scales.size > axis and float(scales[axis]) == 1.0:
        b.set_space(node.outputs[0], *space)
    elif sizes is not None and sizes.size > axis and int(sizes[axis]) == width(space[1]):
        b.size_edit(node, 3, axis, space[1])
        b.set_space(node.outputs[0], *space)
    else:
        b.freeze(space[1], f"{node.op} {node.name!r}: scales/sizes on the channel axis are not a constant 1/C")


@channel_rule("Pad")
def _pad(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    rank = b.rank(node.inputs[0])
    pads = node.attrs.get("pads") if "pads" in node.attrs else b.const(node.inputs[1]) if len(node.inputs) > 1 else None
    axes = _axes(node, b, 3) if len(node.inputs) > 3 else None
    if pads is None or rank is None or (len(node.inputs) > 3 and node.inputs[3].name and axes is None):
        b.freeze(space[1], f"Pad {node.name!r}: pads are not constant")
        return
    pads = [int(p) for p in np.ravel(pads)]
    axes = [a % rank for a in axes] if axes else list(range(rank))
    i = axes.index(space[0]) if space[0] in axes else None
    if i is not None and (pads[i] or pads[i + len(axes)]):
        b.freeze(space[1], f"Pad {node.name!r} pads the channel axis")
        return
    b.set_space(node.outputs[0], *space)
