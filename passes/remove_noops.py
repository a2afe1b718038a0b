"""remove-noops: remove nodes that return their input unchanged, and pairs that undo each other.

A node is a no-op when, for every input it can be given, its output equals its input ``x``:

- ``Cast`` to the type ``x`` already has;
- ``Reshape`` whose target has x's rank and, at each position i, 0 (copy dim i), x's dim i as a
  number, or the one -1 (then it must equal dim i, as every other dim is kept);
- ``Expand`` to a shape whose every entry is 1 or x's (numeric) dim at that position, of rank ≤ x's;
- ``Tile`` with every repeat 1; ``Pad`` with every pad 0; ``Concat`` of one input;
- ``Slice`` that on every sliced axis has step 1, starts at 0 (or before it) and ends at or past
  the end (a numeric dim, or an end ≥ 2³¹−1: exporters' "to the end");
- ``Transpose`` with the identity permutation;
- ``Where(c, a, b)`` with a constant condition all True (a) or all False (b), when that branch
  has the output's (numeric) shape;
- ``x + 0``, ``x − 0``, ``x · 1``, ``x / 1``, ``x and True``, ``x or False`` with a constant that
  does not broadcast x to a larger shape (IEEE: x · 1 and x / 1 are x; x + 0 differs from x only
  in the sign of a zero).

Pairs (the middle tensor read only by the second node, and not a graph output):
``Transpose → Transpose`` whose permutations compose to the identity, ``Unsqueeze(axes) →
Squeeze(axes)``, ``Squeeze(axes) → Unsqueeze(axes)`` (the squeezed dims were 1).

And an ``LSTM``/``GRU``/``RNN`` initial state that is all zeros (a ``ConstantOfShape`` of 0 or a
constant of zeros) is dropped: an omitted initial state is zeros by the operator's definition.

Shapes are onnx's computed ones (``onnxslim.ir.shapes``), never declared ones. A graph output
keeps its name; a rewrite that would join a graph input or constant to a graph output declines.
Every rule is exact: values are never recomputed, only forwarded.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op, sole_reader
from onnxslim.ir.shapes import Shapes, computed_shapes
from onnxslim.ir.weights import constant_value
from onnxslim.passes.remove_identity import alias_blocker, bypass, drop_detached

TO_THE_END = 2**31 - 1
STATE_INPUTS = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}
MAX_SWEEPS = 8


@register_pass
class RemoveNoops(Pass):
    """Remove nodes and node pairs that return their input unchanged."""

    name = "remove-noops"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        shapes = computed_shapes(graph, ctx.template)
        removed: collections.Counter[str] = collections.Counter()
        declines: dict[str, Decline] = {}
        gone: set[int] = set()
        for _ in range(MAX_SWEEPS):
            changed = False
            for node in list(graph.nodes):
                if id(node) in gone or not is_onnx_op(node):
                    continue
                if node.op in STATE_INPUTS and _drop_zero_states(node):
                    removed["zero_state"] += 1
                    changed = True
                    continue
                found = _noop(node, graph, shapes)
                if found is None:
                    continue
                kind, out, source = found
                reason = alias_blocker(out, source, graph)
                if reason:
                    declines[node.name] = Decline(node.name, f"{kind}: {reason}")
                    continue
                bypass(node, out, source, graph)
                gone.add(id(node))
                removed[kind] += 1
                changed = True
            if not changed:
                break
        if removed:
            drop_detached(graph)
            graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=False, remove_unused_graph_inputs=False)
        stats = {"removed": sum(removed.values()), **dict(sorted(removed.items()))}
        return PassResult(modified=bool(removed), stats=stats, declines=list(declines.values()))


def _noop(node: gs.Node, graph: gs.Graph, shapes: Shapes) -> tuple[str, gs.Tensor, gs.Tensor] | None:
    """(kind, output, the tensor it equals) when ``node`` (or the pair it ends) changes nothing."""
    if len(node.outputs) != 1 or not node.inputs or not node.inputs[0].name:
        return None
    x, out = node.inputs[0], node.outputs[0]
    pair = _pair(node, graph, shapes)
    if pair is not None:
        return pair[0], out, pair[1]
    rule = SINGLE_RULES.get(node.op)
    if rule is not None and rule(node, shapes.get(x.name), shapes):
        return node.op.lower(), out, x
    if node.op == "Where":
        chosen = _where_branch(node, shapes)
        if chosen is not None:
            return "where_constant", out, chosen
    if node.op in NEUTRAL:
        source = _neutral_operand(node, shapes)
        if source is not None and shapes.types.get(source.name) == shapes.types.get(out.name):
            return f"{node.op.lower()}_neutral", out, source
    return None


def _cast(node: gs.Node, dims, shapes: Shapes) -> bool:
    return shapes.types.get(node.inputs[0].name) == node.attrs.get("to")


def _reshape(node: gs.Node, dims, shapes: Shapes) -> bool:
    target = _const_ints(node, 1)
    if dims is None or target is None or len(target) != len(dims) or node.attrs.get("allowzero", 0) and 0 in target:
        return False
    for t, d in zip(target, dims):
        if not (t == 0 or t == -1 or (isinstance(d, int) and t == d)):
            return False
    return list(target).count(-1) <= 1


def _expand(node: gs.Node, dims, shapes: Shapes) -> bool:
    target = _const_ints(node, 1)
    if dims is None or target is None or len(target) > len(dims):
        return False
    tail = dims[len(dims) - len(target):]
    return all(t == 1 or (isinstance(d, int) and t == d) for t, d in zip(target, tail))


def _tile(node: gs.Node, dims, shapes: Shapes) -> bool:
    repeats = _const_ints(node, 1)
    return repeats is not None and all(r == 1 for r in repeats)


def _pad(node: gs.Node, dims, shapes: Shapes) -> bool:
    pads = node.attrs.get("pads") if "pads" in node.attrs else _const_ints(node, 1)
    return pads is not None and all(p == 0 for p in pads)


def _concat(node: gs.Node, dims, shapes: Shapes) -> bool:
    return len(node.inputs) == 1


def _slice(node: gs.Node, dims, shapes: Shapes) -> bool:
    starts, ends = _const_ints(node, 1), _const_ints(node, 2)
    axes = _const_ints(node, 3) if len(node.inputs) > 3 and node.inputs[3].name else None
    steps = _const_ints(node, 4) if len(node.inputs) > 4 and node.inputs[4].name else None
    if dims is None or starts is None or ends is None:
        return False
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps if steps is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = dims[axis] if -len(dims) <= axis < len(dims) else None
        if step != 1 or not _at_start(start, dim) or not (end >= TO_THE_END or (isinstance(dim, int) and end >= dim)):
            return False
    return True


def _at_start(start: int, dim) -> bool:
    return start == 0 or (start < 0 and isinstance(dim, int) and start + dim <= 0)


def _where_branch(node: gs.Node, shapes: Shapes) -> gs.Tensor | None:
    """``Where(c, a, b)`` with a constant ``c`` all True (all False) is ``a`` (``b``), when that
    branch already has the output's shape (the condition and the other branch broadcast nothing)."""
    if len(node.inputs) != 3:
        return None
    cond = constant_value(node.inputs[0])
    if cond is None or cond.size == 0 or not (cond.all() or not cond.any()):
        return None
    chosen = node.inputs[1] if cond.all() else node.inputs[2]
    dims, out = shapes.get(chosen.name), shapes.get(node.outputs[0].name)
    if dims is None or dims != out or not all(isinstance(d, int) for d in dims):
        return None
    return chosen


#: the constant that leaves the other operand as it is, per op
NEUTRAL = {"Add": 0, "Sub": 0, "Mul": 1, "Div": 1, "And": True, "Or": False}


def _neutral_operand(node: gs.Node, shapes: Shapes) -> gs.Tensor | None:
    """For x + 0, x − 0, x · 1, x / 1, x and True, x or False (a constant that does not broadcast x
    larger): x."""
    if len(node.inputs) != 2:
        return None
    neutral = NEUTRAL[node.op]
    sides = [(0, 1), (1, 0)] if node.op in ("Add", "Mul", "And", "Or") else [(0, 1)]
    for xi, ci in sides:
        x, value = node.inputs[xi], constant_value(node.inputs[ci])
        dims = shapes.get(x.name)
        if value is None or dims is None or value.size == 0 or value.ndim > len(dims) or np.any(value != neutral):
            continue
        tail = dims[len(dims) - value.ndim:] if value.ndim else ()
        if constant_value(x) is None and all(c == 1 or (isinstance(d, int) and c == d) for c, d in zip(value.shape, tail)):
            return x
    return None


def _transpose(node: gs.Node, dims, shapes: Shapes) -> bool:
    perm = node.attrs.get("perm")
    if perm is None:
        return dims is not None and len(dims) <= 1
    return list(perm) == list(range(len(perm)))


SINGLE_RULES = {"Cast": _cast, "Reshape": _reshape, "Expand": _expand, "Tile": _tile, "Pad": _pad,
                "Concat": _concat, "Slice": _slice, "Transpose": _transpose}


def _pair(node: gs.Node, graph: gs.Graph, shapes: Shapes) -> tuple[str, gs.Tensor] | None:
    """For the second node of an undoing pair: (kind, the first node's input)."""
    mid = node.inputs[0]
    first = mid.inputs[0] if len(mid.inputs) == 1 else None
    if first is None or not is_onnx_op(first) or sole_reader(mid, graph) is not node or not first.inputs:
        return None
    if node.op == "Transpose" and first.op == "Transpose":
        p, q = first.attrs.get("perm"), node.attrs.get("perm")
        if p is not None and q is not None and len(p) == len(q) and [p[i] for i in q] == list(range(len(p))):
            return "transpose_pair", first.inputs[0]
    if {node.op, first.op} == {"Squeeze", "Unsqueeze"}:
        rank = _rank(first.outputs[0], shapes) if first.op == "Unsqueeze" else _rank(first.inputs[0], shapes)
        a, b = _axes(first, rank), _axes(node, rank)
        if a is not None and a == b:
            return "squeeze_pair", first.inputs[0]
    return None


def _rank(tensor: gs.Tensor, shapes: Shapes) -> int | None:
    dims = shapes.get(tensor.name)
    return None if dims is None else len(dims)


def _axes(node: gs.Node, rank: int | None) -> list[int] | None:
    """Sorted non-negative axes of a Squeeze/Unsqueeze, counted in the larger of its two ranks."""
    axes = node.attrs.get("axes") if "axes" in node.attrs else (_const_ints(node, 1) if len(node.inputs) > 1 else None)
    if not axes:
        return None  # Squeeze without axes removes every 1: which ones depends on the shape
    if any(a < 0 for a in axes):
        if rank is None:
            return None
        axes = [a + rank if a < 0 else a for a in axes]
    return sorted(axes)


def _drop_zero_states(node: gs.Node) -> bool:
    dropped = False
    for index in STATE_INPUTS[node.op]:
        if index < len(node.inputs) and node.inputs[index].name and _all_zeros(node.inputs[index]):
            node.inputs[index] = gs.Variable.empty()
            dropped = True
    return dropped


def _all_zeros(tensor: gs.Tensor) -> bool:
    value = constant_value(tensor)
    if value is not None:
        return value.size > 0 and not np.any(value)
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if producer is None or not is_onnx_op(producer, "ConstantOfShape"):
        return False
    fill = producer.attrs.get("value")
    return fill is None or not np.any(np.asarray(fill.values))


def _const_ints(node: gs.Node, index: int) -> list[int] | None:
    if index >= len(node.inputs) or not node.inputs[index].name:
        return None
    value = constant_value(node.inputs[index])
    if value is None or value.dtype.kind not in "iu":
        return None
    return [int(v) for v in value.reshape(-1)]

