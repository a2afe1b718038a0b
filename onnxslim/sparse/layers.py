"""Prunable layers (``onnxslim.ir.linear.Linear``) and the matrix view the pruning math works on.

The pruning math (masks, OBS) runs over rows of output weights: each group's matrix is taken as
``M[g] = W_gᵀ``, ``[N, K]``, one row per output with ``cols = K`` input features (the layer
view's ``K×N`` matrices transposed). For a convolution ``K`` is in im2col order (input channel,
then kernel offset); for a transposed convolution ``K`` is the group's input channels.

N:M blocks run along ``cols``; for Conv they run along the input channels at a fixed kernel
position (``nm_perm``), the layout sparse tensor cores use for implicit-GEMM convolutions.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.ir.linear import Linear, linear_of
from onnxslim.ir.weights import constant_value

def to_mats(layer: Linear, w: np.ndarray | None = None) -> np.ndarray:
    """The weight (``w`` in the stored layout, by default the layer's own) as ``[G, N, K]``, a copy."""
    return np.ascontiguousarray(layer.matrices(w).transpose(0, 2, 1))


def from_mats(layer: Linear, mats: np.ndarray) -> np.ndarray:
    """Inverse of ``to_mats``: the weight in its stored layout and dtype."""
    return layer.from_matrices(mats.transpose(0, 2, 1))


def nm_perm(layer: Linear) -> np.ndarray:
    """Column order in which consecutive blocks are the N:M groups."""
    cols = layer.shape[0]
    if layer.op != "Conv":
        return np.arange(cols)
    spatial = layer.spatial
    cin = cols // spatial
    return (np.arange(cin)[None, :] * spatial + np.arange(spatial)[:, None]).reshape(-1)


def nm_cols(layer: Linear) -> int:
    """Length of the runs the N:M blocks must tile (input channels per group for Conv)."""
    return layer.stored.shape[1] if layer.op == "Conv" else layer.shape[0]


def find_layers(graph: gs.Graph) -> tuple[list[Linear], list[tuple[str, str]]]:
    """Prunable layers in graph order, and ``(where, reason)`` for weights left alone."""
    layers: list[Linear] = []
    skipped: list[tuple[str, str]] = []
    for node in graph.nodes:
        if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or node.domain not in (None, "", "ai.onnx") \
                or len(node.inputs) < 2:
            continue
        layer, reason = _layer_of(node, graph)
        if layer is not None:
            layers.append(layer)
        elif reason:
            skipped.append((node.name or node.outputs[0].name, reason))
    return layers, skipped


def _layer_of(node: gs.Node, graph: gs.Graph) -> tuple[Linear | None, str | None]:
    if node.op == "MatMul" and constant_value(node.inputs[0]) is not None:
        return None, "the constant is the left operand of MatMul"
    if node.op == "Gemm" and constant_value(node.inputs[0]) is not None:
        return None, "the constant is input A of Gemm"
    layer = linear_of(node, graph)
    if layer is None:
        return None, None  # activation x activation: nothing to prune, nothing to say
    tensor, weight = layer.tensor, layer.stored
    if weight.dtype.kind != "f":
        return None, f"weight {tensor.name!r} is {weight.dtype}, not floating point"
    if layer.shared:
        return None, f"weight {tensor.name!r} is shared by {layer.readers} nodes"
    if node.op == "MatMul" and weight.ndim != 2:
        return None, f"MatMul weight is {weight.ndim}-D, not 2-D"
    return layer, None


def matches(layer: Linear, patterns: Sequence[str]) -> bool:
    """Whether the node name or the weight name matches one of the glob ``patterns``."""
    names = (layer.name, layer.tensor.name)
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)
