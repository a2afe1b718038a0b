"""Channel rules for Flatten, Reshape and the shape expressions that feed them.

Flatten and Reshape merge C×H×W into one axis (each channel maps to a stride of features) and
rewrite an explicit shape constant. ``Shape -> Slice/Gather -> Concat -> Reshape`` chains are
followed as shape expressions, so a Reshape whose shape is computed from the batch dimension is
still understood; a channel count that flows anywhere else freezes its group.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.analysis.channel_layout import scaled
from onnxslim.analysis.channel_rule_base import (
    channel_rule,
    check_shape_exprs,
    freeze_channel_refs,
    no_rule,
)

if TYPE_CHECKING:
    from onnxslim.analysis.channel_deps import Builder


@channel_rule("Flatten")
def _flatten(node: gs.Node, b: Builder) -> None:
    space = b.space(node.inputs[0])
    if space is None:
        return
    dims = b.shape(node.inputs[0])
    k = int(node.attrs.get("axis", 1)) % (len(dims) + 1 if dims else 1)
    tail = dims[space[0] + 1:] if dims else None
    if dims is None or k != space[0] or k == 0 or not all(isinstance(d, int) for d in tail):
        b.freeze(space[1], f"Flatten {node.name!r} mixes the channel axis with other axes, or sizes are not static")
        return
    b.set_space(node.outputs[0], 1, scaled(space[1], math.prod(tail)))


@channel_rule("Reshape")
def _reshape(node: gs.Node, b: Builder) -> None:
    x, target = node.inputs[0], node.inputs[1]
    space = b.space(x)
    entries = _shape_entries(target, b)
    if space is None:
        if entries is None:
            check_shape_exprs(node, b)
        else:
            freeze_channel_refs(node, b, entries)
        return
    axis, layout = space
    where = f"Reshape {node.name!r}"
    dims = b.shape(x)
    if entries is None or dims is None:
        b.freeze(layout, f"{where}: its shape is not constant")
        return
    out = _resolve(entries, dims, node.attrs.get("allowzero", 0))
    tail = dims[axis:]
    if out is None or len(out) <= axis or out[:axis] != dims[:axis] or not all(isinstance(d, int) for d in tail):
        b.freeze(layout, f"{where} changes the axes before the channels, or sizes are not static")
        return
    entry = entries[axis]
    foreign = [e for i, e in enumerate(entries) if isinstance(e, tuple) and (e[0], e[1]) != (x.name, axis)]
    freeze_channel_refs(node, b, foreign)
    if out[axis:] == tail:
        new = layout
    elif out[axis] == math.prod(tail) and all(d == 1 for d in out[axis + 1:]):
        new = scaled(layout, math.prod(tail[1:]))
    else:
        b.freeze(layout, f"{where} splits or moves the channel axis ({dims} -> {out})")
        return
    if isinstance(entry, int) and entry > 0:
        b.size_edit(node, 1, axis, new, mode="delta")
    elif entry == 0 and new is not layout:
        b.freeze(layout, f"{where} copies the channel count (0) while merging axes")
        return
    b.set_space(node.outputs[0], axis, new)


def _resolve(entries: list[Any], dims: list[Any], allowzero: int) -> list[Any] | None:
    out: list[Any] = []
    for i, e in enumerate(entries):
        if isinstance(e, tuple):
            out.append(e[2])
        elif e == 0 and not allowzero:
            if i >= len(dims):
                return None
            out.append(dims[i])
        else:
            out.append(int(e))
    if out.count(-1) > 1:
        return None
    if -1 in out:
        known = [d for d in out if d != -1]
        num = [d for d in dims if isinstance(d, int)]
        sym_in = sorted(str(d) for d in dims if not isinstance(d, int))
        sym_out = sorted(str(d) for d in known if not isinstance(d, int))
        den = math.prod(d for d in known if isinstance(d, int))
        if sym_in != sym_out or den == 0 or math.prod(num) % den:
            return None
        out[out.index(-1)] = math.prod(num) // den
    return out


# ---- shape expressions: Shape -> Slice/Gather -> Concat -> Reshape ------------------------------
# An entry is an int, or (tensor name, dim index, dim value) read at run time from ``Shape``.
@channel_rule("Shape")
def _shape(node: gs.Node, b: Builder) -> None:
    x = node.inputs[0]
    dims = b.shape(x)
    if dims is None:
        if b.space(x):
            b.freeze(b.space(x)[1], f"Shape {node.name!r}: rank unknown")
        return
    rank = len(dims)
    start, end = int(node.attrs.get("start", 0)), int(node.attrs.get("end", rank))
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    b.shape_exprs[node.outputs[0].name] = [(x.name, i, dims[i]) for i in range(start, end)]


@channel_rule("Gather")
def _gather(node: gs.Node, b: Builder) -> None:
    expr = b.shape_exprs.get(node.inputs[0].name)
    idx = b.const(node.inputs[1]) if len(node.inputs) > 1 else None
    if b.space(node.inputs[0]) or b.space(node.inputs[1]):
        return no_rule(node, b)
    if expr is None or idx is None or int(node.attrs.get("axis", 0)) != 0:
        return check_shape_exprs(node, b)
    b.shape_exprs[node.outputs[0].name] = [expr[int(i)] for i in np.ravel(idx)]


def _shape_entries(tensor: gs.Tensor, b: Builder) -> list[Any] | None:
    value = b.const(tensor)
    if value is not None:
        return [int(v) for v in np.ravel(value)]
    return b.shape_exprs.get(tensor.name)
