"""remove-identity: drop Identity nodes and inference-mode Dropout.

A node whose output is a graph output keeps that output's name: the producer of its input is
renamed to produce the output directly. It declines where the input is itself a graph input,
a constant or another graph output (the graph interface would change), and on a Dropout whose
mask is used or whose training_mode is not a constant false.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op
from onnxslim.ir.weights import constant_value


@register_pass
class RemoveIdentity(Pass):
    """Remove Identity and inference-mode Dropout nodes."""

    name = "remove-identity"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        removed = 0
        declines: list[Decline] = []
        for node in [n for n in graph.nodes if is_onnx_op(n, "Identity", "Dropout")]:
            reason = _blocker(node, graph)
            if reason:
                declines.append(Decline(node.name, reason))
                continue
            _bypass(node, graph)
            removed += 1
        drop_detached(graph)
        return PassResult(modified=removed > 0, stats={"removed": removed}, declines=declines)


def _blocker(node: gs.Node, graph: gs.Graph) -> str | None:
    if node.op == "Dropout":
        if len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1] in graph.outputs):
            return "its mask output is used"
        if len(node.inputs) > 2 and node.inputs[2].name:
            mode = constant_value(node.inputs[2])
            if mode is None or bool(mode):
                return "training_mode is not a constant false"
    return alias_blocker(node.outputs[0], node.inputs[0], graph)


def _bypass(node: gs.Node, graph: gs.Graph) -> None:
    bypass(node, node.outputs[0], node.inputs[0], graph)


def alias_blocker(out: gs.Tensor, source: gs.Tensor, graph: gs.Graph) -> str | None:
    """Why ``out`` cannot be replaced by ``source`` (an equal value), or None when it can."""
    if out in graph.outputs:
        if source in graph.inputs or source in graph.outputs or not source.inputs or source.inputs[0].op == "Constant":
            return "it joins a graph input, constant or output to a graph output"
    return None


def bypass(node: gs.Node, out: gs.Tensor, source: gs.Tensor, graph: gs.Graph) -> None:
    """Remove ``node`` and let ``source`` (equal to ``node``'s output ``out``) stand for ``out``.

    A graph output keeps its name: the producer of ``source`` then writes ``out``, and the
    readers of ``source`` read ``out``. Check ``alias_blocker`` first. ``node`` is left
    detached in ``graph.nodes``: call ``drop_detached`` once after a batch of rewrites.
    """
    node.inputs.clear()
    node.outputs.clear()
    if out in graph.outputs:
        for consumer in list(source.outputs):
            swap_input(consumer, source, out)
        producer = source.inputs[0]
        producer.outputs[producer.outputs.index(source)] = out
    else:
        for consumer in list(out.outputs):
            swap_input(consumer, out, source)


def drop_detached(graph: gs.Graph) -> None:
    """Remove nodes left with no inputs and no outputs (by identity: gs compares nodes by value)."""
    graph.nodes = [n for n in graph.nodes if n.inputs or n.outputs]


def swap_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    for i, tensor in enumerate(node.inputs):
        if tensor is old:
            node.inputs[i] = new
