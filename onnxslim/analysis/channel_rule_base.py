"""What every channel rule module shares: the registry, and the helpers rules call.

The rule modules (``channel_rules``, ``channel_rules_axes``, ``channel_rules_shape``) import this
one and ``channel_deps`` imports them, never the other way: a rule sees the ``Builder`` only as
its argument (its type is named for type checkers alone).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.analysis.channel_layout import Layout

if TYPE_CHECKING:
    from onnxslim.analysis.channel_deps import Builder

Rule = Callable[[gs.Node, "Builder"], None]
RULES: dict[str, Rule] = {}


def channel_rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            if op in RULES:
                raise ValueError(f"two channel rules for {op}")
            RULES[op] = fn
        return fn
    return register


def tracked_inputs(node: gs.Node, b: Builder) -> list[tuple[gs.Tensor, int, Layout]]:
    out = []
    for t in node.inputs:
        space = b.space(t)
        if space:
            out.append((t, space[0], space[1]))
    return out


def no_rule(node: gs.Node, b: Builder) -> None:
    for _, _, layout in tracked_inputs(node, b):
        b.freeze(layout, f"no channel rule for {node.op} {node.name!r}")
    check_shape_exprs(node, b)


def freeze_all(node: gs.Node, b: Builder, reason: str) -> None:
    for _, _, layout in tracked_inputs(node, b):
        b.freeze(layout, f"{node.op} {node.name!r}: {reason}")


def extra_outputs_used(node: gs.Node) -> bool:
    return any(t.name and t.outputs for t in node.outputs[1:])


def check_shape_exprs(node: gs.Node, b: Builder, concat: bool = False) -> None:
    """A shape expression reaching an op without a shape rule: freeze any channel count in it."""
    exprs = [b.shape_exprs.get(t.name) for t in node.inputs]
    if not any(e is not None for e in exprs):
        return
    if concat:
        joined: list[Any] = []
        for t, e in zip(node.inputs, exprs):
            value = b.const(t)
            if e is None and value is None:
                break
            joined.extend(e if e is not None else [int(v) for v in np.ravel(value)])
        else:
            b.shape_exprs[node.outputs[0].name] = joined
            return
    for e in exprs:
        if e is not None:
            freeze_channel_refs(node, b, e)


def freeze_channel_refs(node: gs.Node, b: Builder, entries: list[Any]) -> None:
    for e in entries:
        if isinstance(e, tuple):
            space = b.spaces.get(e[0])
            if space and space[0] == e[1]:
                b.freeze(space[1], f"the channel count flows through Shape into {node.op} {node.name!r}")


def slice_shape_expr(node: gs.Node, b: Builder) -> None:
    """A Slice of a shape expression (Shape → Slice feeding a Reshape) keeps its entries; any other
    Slice of one freezes the channel counts in it."""
    expr = b.shape_exprs.get(node.inputs[0].name)
    if expr is None:
        return check_shape_exprs(node, b)
    values = [b.const(t) if t.name else None for t in node.inputs[1:5]]
    if any(v is None for v in values[:2]) or any(v is None for v, t in zip(values[2:], node.inputs[3:5]) if t.name):
        return check_shape_exprs(node, b)
    steps = values[3] if len(values) > 3 and values[3] is not None else [1]
    if int(np.ravel(steps)[0]) != 1:
        return check_shape_exprs(node, b)
    start, end = int(np.ravel(values[0])[0]), int(np.ravel(values[1])[0])
    b.shape_exprs[node.outputs[0].name] = expr[slice(start, min(end, len(expr)) if end >= 0 else end)]
