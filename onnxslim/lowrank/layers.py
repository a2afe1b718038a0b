"""Which nodes can be split, their weight as a K×N matrix, and the two-node rewrite.

    MatMul(X, W)                 -> MatMul(MatMul(X, A), B)               (X may be batched)
    Gemm(X, W, C; transA, transB, alpha, beta)
                                 -> Gemm(Gemm(X, A; transA), B, C; beta)   (alpha folded in B)
    Conv(X, W[N,K,1,1], b), group 1
                                 -> Conv(Conv(X, A[r,K,1,1]; strides, pads), B[N,r,1,1], b)

Layers are ``onnxslim.ir.linear`` views (K×N, transB applied; ``weight`` adds Gemm's alpha).
The weight may be an initializer or a ``Constant`` node output; the new factors are
initializers, and the old weight is left for ``dce``. The split nodes are named
``<node>/svd_a`` and ``<node>/svd_b``; a node so named is never split again, which keeps the
pass idempotent.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.pass_base import Decline
from onnxslim.ir.linear import Linear, linear_of
from onnxslim.ir.weights import constant_value, unique_name

FACTOR_SUFFIXES = ("/svd_a", "/svd_b")
FLOAT_TYPES = (np.float16, np.float32, np.float64)


def match(node: gs.Node) -> Linear | Decline | None:
    """The layer view if ``node`` can be split, a ``Decline`` with the reason if it is a near miss,
    None if it is no candidate at all (another op, or a product of two activations)."""
    if node.op not in ("MatMul", "Gemm", "Conv"):
        return None
    layer = linear_of(node)
    if layer is None:
        return None
    stored, where = layer.stored, layer.name
    if node.name.endswith(FACTOR_SUFFIXES):
        return Decline(where, "already a low-rank factor")
    if stored.dtype.type not in FLOAT_TYPES:
        return Decline(where, f"the weight is {stored.dtype}, not floating point")
    if layer.shared:
        return Decline(where, f"the weight {layer.tensor.name!r} is shared by {layer.readers} nodes")
    if constant_value(node.inputs[0]) is not None:
        return Decline(where, "both inputs are constant (fold-constants handles this)")
    if node.op == "MatMul" and stored.ndim != 2:
        return Decline(where, f"the weight is {stored.ndim}-D, not a matrix")
    if node.op == "Conv" and (stored.ndim < 3 or any(d != 1 for d in stored.shape[2:])):
        return Decline(where, f"the kernel is {'x'.join(str(d) for d in stored.shape[2:])}, only 1x1 convolutions are split")
    if layer.groups != 1:
        return Decline(where, "grouped convolution")
    _, reason = bias(layer)
    return Decline(where, reason) if reason else layer


def weight(layer: Linear) -> np.ndarray:
    """The effective K×N matrix in float64 (Gemm's alpha applied): the layer computes rows(X)·weight + bias."""
    return layer.matrices()[0].astype(np.float64) * layer.alpha


def bias(layer: Linear) -> tuple[np.ndarray | None, str | None]:
    """The bias as a float64 vector of N (Gemm's beta applied) or None, and why a layer with a bias
    that is not constant cannot be split. A full [M, N] Gemm C counts as none: it does not change
    ‖Y‖'s estimate much."""
    if not layer.has_bias:
        return None, None
    value = layer.bias()
    if value is None:
        return None, "the bias C is not constant" if layer.op == "Gemm" else "the bias is not constant"
    if layer.op == "Gemm":
        return (value.astype(np.float64).reshape(-1) * layer.beta if value.size in (1, layer.shape[1]) else None), None
    return value.astype(np.float64), None


def rows(layer: Linear, x: np.ndarray) -> np.ndarray:
    """The layer's input as rows of K features, float64."""
    x = np.moveaxis(np.asarray(x), layer.feature_axis, -1)
    return np.asarray(x, dtype=np.float64).reshape(-1, layer.shape[0])


def split(graph: gs.Graph, layer: Linear, a: np.ndarray, b: np.ndarray) -> tuple[gs.Node, gs.Node]:
    """Replace ``layer.node`` in ``graph`` by two nodes computing X·A·B (+ the bias)."""
    node = layer.node
    base = node.name or node.outputs[0].name
    weight_name = node.inputs[1].name
    a_values, b_values = a.astype(layer.stored.dtype), b.astype(layer.stored.dtype)
    if node.op == "Conv":
        spatial = (1,) * (layer.stored.ndim - 2)
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
    """The attributes of the two nodes that replace ``node``. They copy attributes as written (not
    the layer view's reading of them): the first node reads the input as ``node`` did (``transA``,
    a convolution's strides and pads), the second keeps Gemm's ``beta`` on C."""
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
