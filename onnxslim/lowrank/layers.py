"""Which nodes can be split, their weight as a K×N matrix, and the two-node rewrite.

    MatMul(X, W)                 -> MatMul(MatMul(X, A), B)               (X may be batched)
    Gemm(X, W, C; transA, transB, alpha, beta)
                                 -> Gemm(Gemm(X, A; transA), B, C; beta)   (alpha folded in B)
    Conv(X, W[N,K,1,1], b), group 1
                                 -> Conv(Conv(X, A[r,K,1,1]; strides, pads), B[N,r,1,1], b)

The weight may be an initializer or a ``Constant`` node output; the new factors are
initializers, and the old weight is left for ``dce``. The split nodes are named
``<node>/svd_a`` and ``<node>/svd_b``; a node so named is never split again, which keeps the
pass idempotent.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.pass_base import Decline
from onnxslim.ir.weights import constant_value, unique_name

FACTOR_SUFFIXES = ("/svd_a", "/svd_b")
FLOAT_TYPES = (np.float16, np.float32, np.float64)


@dataclasses.dataclass
class Layer:
    """A node whose constant weight can be split.

    ``weight`` is the effective K×N matrix (transB and alpha applied) in float64, so the layer
    computes ``rows(X) · weight + bias``. ``layout`` says how to turn the input tensor into
    rows of K features: ``last`` (MatMul), ``transposed`` (Gemm transA=1), ``channels`` (Conv).
    """

    node: gs.Node
    weight: np.ndarray
    bias: np.ndarray | None
    dtype: np.dtype
    layout: str

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.weight.shape[0]), int(self.weight.shape[1])

    @property
    def input(self) -> gs.Tensor:
        return self.node.inputs[0]


def match(node: gs.Node) -> Layer | Decline | None:
    """A ``Layer`` if ``node`` can be split, a ``Decline`` with the reason if it is a near miss,
    None if it is no candidate at all (another op, or a product of two activations)."""
    if node.op not in ("MatMul", "Gemm", "Conv") or node.domain not in (None, "", "ai.onnx") or len(node.inputs) < 2:
        return None
    stored = constant_value(node.inputs[1])
    if stored is None:
        return None
    where = node.name or node.outputs[0].name
    if node.name.endswith(FACTOR_SUFFIXES):
        return Decline(where, "already a low-rank factor")
    if stored.dtype.type not in FLOAT_TYPES:
        return Decline(where, f"the weight is {stored.dtype}, not floating point")
    if len(node.inputs[1].outputs) > 1:
        return Decline(where, f"the weight {node.inputs[1].name!r} is shared by {len(node.inputs[1].outputs)} nodes")
    if constant_value(node.inputs[0]) is not None:
        return Decline(where, "both inputs are constant (fold-constants handles this)")
    matcher = {"MatMul": _matmul, "Gemm": _gemm, "Conv": _conv}[node.op]
    result = matcher(node, stored)
    if isinstance(result, str):
        return Decline(where, result)
    return result


def _matmul(node: gs.Node, stored: np.ndarray) -> Layer | str:
    if stored.ndim != 2:
        return f"the weight is {stored.ndim}-D, not a matrix"
    return Layer(node, stored.astype(np.float64), None, stored.dtype, "last")


def _gemm(node: gs.Node, stored: np.ndarray) -> Layer | str:
    weight = stored.T if node.attrs.get("transB", 0) else stored
    weight = weight.astype(np.float64) * float(node.attrs.get("alpha", 1.0))
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = constant_value(node.inputs[2])
        if c is None:
            return "the bias C is not constant"
        if c.size in (1, weight.shape[1]):  # a full [M, N] C does not change ‖Y‖'s estimate much
            bias = c.astype(np.float64).reshape(-1) * float(node.attrs.get("beta", 1.0))
    return Layer(node, weight, bias, stored.dtype, "transposed" if node.attrs.get("transA", 0) else "last")


def _conv(node: gs.Node, stored: np.ndarray) -> Layer | str:
    if stored.ndim < 3 or any(d != 1 for d in stored.shape[2:]):
        return f"the kernel is {'x'.join(str(d) for d in stored.shape[2:])}, only 1x1 convolutions are split"
    if node.attrs.get("group", 1) != 1:
        return "grouped convolution"
    bias = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        b = constant_value(node.inputs[2])
        if b is None:
            return "the bias is not constant"
        bias = b.astype(np.float64)
    weight = stored.reshape(stored.shape[0], stored.shape[1]).T.astype(np.float64)
    return Layer(node, weight, bias, stored.dtype, "channels")


def rows(layer: Layer, x: np.ndarray) -> np.ndarray:
    """The layer's input as rows of K features, float64."""
    k = layer.shape[0]
    if layer.layout == "transposed":
        x = x.T
    elif layer.layout == "channels":
        x = np.moveaxis(x, 1, -1)
    return np.asarray(x, dtype=np.float64).reshape(-1, k)


def split(graph: gs.Graph, layer: Layer, a: np.ndarray, b: np.ndarray) -> tuple[gs.Node, gs.Node]:
    """Replace ``layer.node`` in ``graph`` by two nodes computing X·A·B (+ the bias)."""
    node = layer.node
    base = node.name or node.outputs[0].name
    weight_name = node.inputs[1].name
    a_values, b_values = a.astype(layer.dtype), b.astype(layer.dtype)
    if node.op == "Conv":
        spatial = (1,) * (constant_value(node.inputs[1]).ndim - 2)
        a_values = np.ascontiguousarray(a_values.T).reshape(a.shape[1], a.shape[0], *spatial)
        b_values = np.ascontiguousarray(b_values.T).reshape(b.shape[1], b.shape[0], *spatial)
    a_const = gs.Constant(unique_name(graph, f"{weight_name}_svd_a"), np.ascontiguousarray(a_values))
    b_const = gs.Constant(unique_name(graph, f"{weight_name}_svd_b"), np.ascontiguousarray(b_values))
    out = node.outputs[0]
    mid = gs.Variable(unique_name(graph, f"{out.name}_svd"), dtype=out.dtype)
    x = node.inputs[0]
    extra = [t for t in node.inputs[2:3] if t.name]
    first_attrs, second_attrs = _attrs(node)
    first = gs.Node(node.op, f"{base}/svd_a", first_attrs, inputs=[x, a_const], outputs=[mid])
    second = gs.Node(node.op, f"{base}/svd_b", second_attrs, inputs=[mid, b_const, *extra], outputs=[out])
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.remove(node)
    graph.nodes.extend([first, second])
    return first, second


def _attrs(node: gs.Node) -> tuple[dict, dict]:
    attrs = dict(node.attrs)
    if node.op == "MatMul":
        return {}, {}
    if node.op == "Gemm":
        first = {"transA": attrs["transA"]} if attrs.get("transA", 0) else {}
        has_c = len(node.inputs) > 2 and bool(node.inputs[2].name)
        beta = float(attrs.get("beta", 1.0))
        return first, ({"beta": beta} if has_c and beta != 1.0 else {})
    second = {"kernel_shape": attrs["kernel_shape"]} if "kernel_shape" in attrs else {}
    return attrs, second
