"""fuse-activations: hard-swish and hard-sigmoid spelled out in elementary ops become one op.

Exporters that predate (or avoid) ONNX's HardSwish write it as four elementwise passes:

    HardSigmoid(x) = Clip(x + 3, 0, 6) / 6                       (or · 1/6)
    HardSwish(x)   = x · Clip(x + 3, 0, 6) / 6                    (any grouping of the · and /)

and ONNX Runtime fuses none of them: PP-OCRv4's detector runs 24 such chains, 4 passes over the
feature map each. ``HardSigmoid(alpha=1/6, beta=0.5)`` computes the first in one pass; HardSwish
becomes ``HardSwish(x)`` from opset 14 and ``x · HardSigmoid(x)`` before it (2 passes instead of 4).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op, other_input, sole_reader
from onnxslim.ir.weights import constant_value, unique_name

#: HardSwish joined the default domain in opset 14
HARDSWISH_OPSET = 14


@register_pass
class FuseActivations(Pass):
    """Replace hard-swish / hard-sigmoid written as Add, Clip, Mul and Div by HardSwish / HardSigmoid."""

    name = "fuse-activations"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        counts = {"hardswish": 0, "hardsigmoid": 0}
        for add in [n for n in graph.nodes if is_onnx_op(n, "Add")]:
            kind = _fuse(graph, add)
            if kind:
                counts[kind] += 1
        return PassResult(modified=sum(counts.values()) > 0, stats=counts)


def _scalar(tensor: gs.Tensor | None) -> float | None:
    value = constant_value(tensor) if tensor is not None and tensor.name else None
    return float(value.reshape(())) if value is not None and value.size == 1 and value.dtype.kind == "f" else None


def _divides_by_6(node: gs.Node | None, tensor: gs.Tensor) -> bool:
    """``node`` computes tensor / 6 or tensor · (1/6)."""
    if node is None or not is_onnx_op(node, "Div", "Mul") or len(node.inputs) != 2:
        return False
    if node.op == "Div":
        return node.inputs[0] is tensor and _scalar(node.inputs[1]) == 6.0
    return _is_one_sixth(other_input(node, tensor))


def _is_one_sixth(tensor: gs.Tensor | None) -> bool:
    """A float scalar constant equal to 1/6 as its own type rounds it (fp16: 0.16663)."""
    c = _scalar(tensor)
    if c is None:
        return False
    own = float(constant_value(tensor).dtype.type(1.0 / 6.0))
    return c == own or abs(c - 1.0 / 6.0) <= 1e-7


def _relu6_of_x_plus_3(add: gs.Node, graph: gs.Graph) -> tuple[gs.Tensor, gs.Node] | None:
    """For ``Add(x, 3) → Clip(0, 6)``: (x, the Clip node)."""
    if len(add.inputs) != 2:
        return None
    x = add.inputs[0] if _scalar(add.inputs[1]) == 3.0 else add.inputs[1] if _scalar(add.inputs[0]) == 3.0 else None
    clip = sole_reader(add.outputs[0], graph) if x is not None else None
    if x is None or constant_value(x) is not None or clip is None or not is_onnx_op(clip, "Clip"):
        return None
    if len(clip.inputs) > 1:  # opset 11+: min and max are inputs
        low = _scalar(clip.inputs[1])
        high = _scalar(clip.inputs[2]) if len(clip.inputs) > 2 else None
    else:
        low, high = clip.attrs.get("min"), clip.attrs.get("max")
    return (x, clip) if low == 0.0 and high == 6.0 else None


def _fuse(graph: gs.Graph, add: gs.Node) -> str | None:
    found = _relu6_of_x_plus_3(add, graph)
    if found is None:
        return None
    x, clip = found
    r6 = clip.outputs[0]
    after = sole_reader(r6, graph)
    if _divides_by_6(after, r6):  # HardSigmoid, maybe then x · HardSigmoid
        hsig_out = after.outputs[0]
        mul = sole_reader(hsig_out, graph)
        if mul is not None and is_onnx_op(mul, "Mul") and other_input(mul, hsig_out) is x:
            _replace_hardswish(graph, x, mul.outputs[0], [add, clip, after, mul])
            return "hardswish"
        _drop(graph, [add, clip, after])
        graph.nodes.append(_hardsigmoid(x, hsig_out))
        return "hardsigmoid"
    if after is not None and is_onnx_op(after, "Mul") and other_input(after, r6) is x:  # x · relu6(x + 3), then / 6
        last = sole_reader(after.outputs[0], graph)
        if _divides_by_6(last, after.outputs[0]):
            _replace_hardswish(graph, x, last.outputs[0], [add, clip, after, last])
            return "hardswish"
    return None


def _hardsigmoid(x: gs.Tensor, out: gs.Tensor) -> gs.Node:
    return gs.Node("HardSigmoid", attrs={"alpha": 1.0 / 6.0, "beta": 0.5}, inputs=[x], outputs=[out])


def _replace_hardswish(graph: gs.Graph, x: gs.Tensor, out: gs.Tensor, chain: list[gs.Node]) -> None:
    _drop(graph, chain)
    if (graph.opset or 0) >= HARDSWISH_OPSET:
        graph.nodes.append(gs.Node("HardSwish", inputs=[x], outputs=[out]))
        return
    gate = gs.Variable(unique_name(graph, f"{out.name}_hardsigmoid"), dtype=x.dtype or np.float32, shape=x.shape)
    graph.nodes += [_hardsigmoid(x, gate), gs.Node("Mul", inputs=[x, gate], outputs=[out])]


def _drop(graph: gs.Graph, nodes: list[gs.Node]) -> None:
    for node in nodes:
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.remove(node)
