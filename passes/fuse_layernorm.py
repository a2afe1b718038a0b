"""fuse-layernorm: layer normalization spelled out in elementary ops becomes LayerNormalization.

PyTorch and TensorFlow exports write LayerNorm over the last axes as

    d = x − ReduceMean(x);  y = d / Sqrt(ReduceMean(d²) + ε) · γ + β

(``d²`` as ``Pow(d, 2)`` or ``Mul(d, d)``; the γ and β steps optional), nine passes over the
activations. ONNX's ``LayerNormalization(axis, epsilon)`` (opset 17) is the same function in
one op, and the portable form edge runtimes implement. Both ReduceMeans must reduce the same
trailing axes (``axis`` is the first of them); γ and β must be constants broadcastable to the
normalized shape (they are stored at exactly that shape, as the operator expects). Every
intermediate tensor must be read only inside the pattern and not be a graph output.

Not bit-exact: ORT sums in another order and computes 1/√ in float32 (``stash_type=1``), which
stays far inside the ``exact`` budget (max_abs ≤ 1e-5 + 1e-4·max|a|; tested). Models below
opset 17 are left alone, with one decline saying so.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op, other_input, sole_reader
from onnxslim.ir.shapes import Shapes, computed_shapes
from onnxslim.ir.weights import constant_value, unique_name
from onnxslim.passes.remove_identity import drop_detached

LAYERNORM_OPSET = 17
FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # onnx element type -> numpy


@register_pass
class FuseLayerNorm(Pass):
    """Replace ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div(/Mul/Add) by LayerNormalization."""

    name = "fuse-layernorm"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        candidates = [n for n in graph.nodes if is_onnx_op(n, "ReduceMean")]
        if (graph.opset or 0) < LAYERNORM_OPSET:
            declines = [Decline("graph", f"opset {graph.opset} has no LayerNormalization (needs {LAYERNORM_OPSET})")] if candidates else []
            return PassResult(modified=False, stats={"fused": 0}, declines=declines)
        fused = 0
        shapes = computed_shapes(graph, ctx.template) if candidates else Shapes()
        for mean in candidates:
            match = _match(mean, graph, shapes)
            if match is not None and _rewrite(graph, *match):
                fused += 1
        drop_detached(graph)
        return PassResult(modified=fused > 0, stats={"fused": fused})


def _axes(node: gs.Node) -> list[int] | None:
    if node.attrs.get("keepdims", 1) != 1:
        return None
    if "axes" in node.attrs:
        return sorted(node.attrs["axes"])
    value = constant_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
    return sorted(int(a) for a in value.reshape(-1)) if value is not None and value.size else None


def _trailing_axis(axes: list[int], rank: int | None) -> int | None:
    """The first axis when ``axes`` are the last len(axes) axes, counted from the end."""
    if all(a < 0 for a in axes):
        return axes[0] if axes == list(range(-len(axes), 0)) else None
    if rank is not None and all(a >= 0 for a in axes) and axes == list(range(rank - len(axes), rank)):
        return axes[0] - rank
    return None


def _reader(tensor: gs.Tensor, graph: gs.Graph, op: str) -> gs.Node | None:
    node = sole_reader(tensor, graph)
    return node if node is not None and is_onnx_op(node, op) else None


def _scalar(tensor: gs.Tensor | None) -> float | None:
    value = constant_value(tensor) if tensor is not None and tensor.name else None
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 and value.dtype.kind == "f" else None


def _match(mean: gs.Node, graph: gs.Graph, shapes: Shapes):
    if not mean.inputs or not mean.outputs:
        return None  # already part of a fused chain
    x = mean.inputs[0]
    axes = _axes(mean)
    sub = _reader(mean.outputs[0], graph, "Sub")
    if axes is None or sub is None or sub.inputs[0] is not x or sub.inputs[1] is not mean.outputs[0]:
        return None
    dims = shapes.get(x.name)
    if dims is None or shapes.types.get(x.name) not in FLOAT_TYPES:
        return None
    axis = _trailing_axis(axes, len(dims))
    normalized = dims[axis:] if axis is not None else ()
    if not normalized or not all(isinstance(d, int) for d in normalized):
        return None
    d = sub.outputs[0]
    if axis is None or d in graph.outputs or len({id(n) for n in d.outputs}) != 2:
        return None
    square = next((n for n in d.outputs if is_onnx_op(n, "Pow", "Mul") and n.inputs[0] is d), None)
    div = next((n for n in d.outputs if is_onnx_op(n, "Div") and n.inputs[0] is d), None)
    if square is None or div is None:
        return None
    if not (square.op == "Pow" and _scalar(square.inputs[1]) == 2.0 or square.op == "Mul" and square.inputs[1] is d):
        return None
    var = _reader(square.outputs[0], graph, "ReduceMean")
    if var is None or _axes(var) != axes:
        return None
    add_eps = _reader(var.outputs[0], graph, "Add")
    eps = _scalar(other_input(add_eps, var.outputs[0])) if add_eps is not None else None
    sqrt = _reader(add_eps.outputs[0], graph, "Sqrt") if eps is not None else None
    if sqrt is None or div.inputs[1] is not sqrt.outputs[0] or sole_reader(sqrt.outputs[0], graph) is not div:
        return None
    chain = [mean, sub, square, var, add_eps, sqrt, div]
    out, gamma, beta = div.outputs[0], None, None
    mul = _reader(out, graph, "Mul")
    if mul is not None and _affine_constant(other_input(mul, out)) is not None:
        gamma, out = _affine_constant(other_input(mul, out)), mul.outputs[0]
        chain.append(mul)
        add = _reader(out, graph, "Add")
        if add is not None and _affine_constant(other_input(add, out)) is not None:
            beta, out = _affine_constant(other_input(add, out)), add.outputs[0]
            chain.append(add)
    return chain, x, out, axis, eps, gamma, beta, normalized, FLOAT_TYPES[shapes.types[x.name]]


def _affine_constant(tensor: gs.Tensor | None) -> np.ndarray | None:
    value = constant_value(tensor) if tensor is not None and tensor.name else None
    return value if value is not None and value.dtype.kind == "f" and value.ndim <= 1 else None


def _rewrite(graph, chain, x, out, axis, eps, gamma, beta, normalized, dtype) -> bool:
    """Replace ``chain`` by one LayerNormalization writing ``out``; False if γ/β do not fit."""
    try:
        scale = np.broadcast_to(gamma if gamma is not None else np.ones(1), normalized).astype(dtype)
        bias = np.broadcast_to(beta, normalized).astype(dtype) if beta is not None else None
    except ValueError:
        return False
    for node in chain:
        node.inputs.clear()
        node.outputs.clear()
    inputs = [x, gs.Constant(unique_name(graph, f"{out.name}_scale"), np.array(scale))]
    if bias is not None:
        inputs.append(gs.Constant(unique_name(graph, f"{out.name}_bias"), np.array(bias)))
    graph.nodes.append(gs.Node("LayerNormalization", attrs={"axis": axis, "epsilon": eps}, inputs=inputs, outputs=[out]))
    return True
