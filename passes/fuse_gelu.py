"""fuse-gelu: GELU spelled out with Erf becomes ONNX's Gelu (opset 20).

The exact (erf) GELU is exported as

    y = x · 0.5 · (1 + Erf(x / √2))        (x / √2 also as x · (1/√2))

with the two products in any grouping: ``(x · (1 + e)) · 0.5``, ``(x · 0.5) · (1 + e)`` or
``x · ((1 + e) · 0.5)``; five passes over the activations. ``Gelu(x)`` (``approximate="none"``)
is the same function in one op. Constants must be √2, 1/√2, 1 and 0.5 to float32 precision;
every intermediate tensor is read only inside the pattern and is not a graph output; the last
product's output keeps its name. Not bit-exact (ORT evaluates erf its own way), well inside
``exact`` (tested). Below opset 20 the pass declines once, saying so.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op, other_input, sole_reader
from onnxslim.ir.weights import constant_value
from onnxslim.passes.remove_identity import drop_detached

GELU_OPSET = 20
REL_TOL = 1e-6


@register_pass
class FuseGelu(Pass):
    """Replace x · 0.5 · (1 + Erf(x / √2)) by Gelu."""

    name = "fuse-gelu"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        erfs = [n for n in graph.nodes if is_onnx_op(n, "Erf")]
        if (graph.opset or 0) < GELU_OPSET:
            declines = [Decline("graph", f"opset {graph.opset} has no Gelu (needs {GELU_OPSET})")] if erfs else []
            return PassResult(modified=False, stats={"fused": 0}, declines=declines)
        fused = 0
        for erf in erfs:
            match = _match(erf, graph)
            if match is None:
                continue
            chain, x, out = match
            for node in chain:
                node.inputs.clear()
                node.outputs.clear()
            graph.nodes.append(gs.Node("Gelu", inputs=[x], outputs=[out]))
            fused += 1
        drop_detached(graph)
        return PassResult(modified=fused > 0, stats={"fused": fused})


def _is(tensor: gs.Tensor | None, target: float) -> bool:
    value = constant_value(tensor) if tensor is not None and tensor.name else None
    if value is None or value.size != 1 or value.dtype.kind != "f":
        return False
    return math.isclose(float(value.reshape(-1)[0]), target, rel_tol=REL_TOL)


def _reader(tensor: gs.Tensor, graph: gs.Graph, op: str) -> gs.Node | None:
    node = sole_reader(tensor, graph)
    return node if node is not None and is_onnx_op(node, op) else None


def _match(erf: gs.Node, graph: gs.Graph) -> tuple[list[gs.Node], gs.Tensor, gs.Tensor] | None:
    scaled = erf.inputs[0]
    pre = scaled.inputs[0] if len(scaled.inputs) == 1 else None
    if pre is None or sole_reader(scaled, graph) is not erf or len(pre.inputs) != 2:
        return None
    if is_onnx_op(pre, "Div") and _is(pre.inputs[1], math.sqrt(2.0)):
        x = pre.inputs[0]
    elif is_onnx_op(pre, "Mul") and any(_is(t, 1.0 / math.sqrt(2.0)) for t in pre.inputs):
        x = pre.inputs[1] if _is(pre.inputs[0], 1.0 / math.sqrt(2.0)) else pre.inputs[0]
    else:
        return None
    add = _reader(erf.outputs[0], graph, "Add")
    if add is None or not _is(other_input(add, erf.outputs[0]), 1.0):
        return None
    gate = add.outputs[0]  # 1 + erf(x / √2)
    first = _reader(gate, graph, "Mul")
    if first is None:
        return None
    other = other_input(first, gate)
    if other is x:  # (x · gate) · 0.5
        last = _reader(first.outputs[0], graph, "Mul")
        ok = last is not None and _is(other_input(last, first.outputs[0]), 0.5)
    elif _is(other, 0.5):  # x · (gate · 0.5)
        last = _reader(first.outputs[0], graph, "Mul")
        ok = last is not None and other_input(last, first.outputs[0]) is x
    else:  # (x · 0.5) · gate
        half = other.inputs[0] if len(other.inputs) == 1 else None
        ok = (half is not None and is_onnx_op(half, "Mul") and sole_reader(other, graph) is first
              and x in half.inputs and _is(other_input(half, x), 0.5))
        last = first
        if ok:
            return [pre, erf, add, half, first], x, first.outputs[0]
    if not ok:
        return None
    return [pre, erf, add, first, last], x, last.outputs[0]
