"""Prunable layers: where a weight sits, and its matrix view along the reduction dimension.

Every prunable weight is seen as ``G`` matrices ``M[g]`` of shape ``[rows, cols]`` such that
one output of group ``g`` is ``M[g][r] · x`` with ``x`` a ``cols``-long input feature vector:

    MatMul  Y = X W,  W [K, N]             M = Wᵀ              cols = K
    Gemm    Y = A B,  B [K, N] (transB: [N, K])  M = Bᵀ or B   cols = K
    Conv    W [Cout, Cin/G, k...]          M[g] = W_g reshaped [Cout/G, Cin/G·Πk]  (im2col order)
    ConvTranspose W [Cin, Cout/G, k...]    M[g] = W_g reshaped [Cin/G, Cout/G·Πk]ᵀ  cols = Cin/G

N:M blocks run along ``cols``; for Conv they run along the input channels at a fixed kernel
position (``nm_perm``), the layout sparse tensor cores use for implicit-GEMM convolutions.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.ir.weights import constant_value

PRUNABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclasses.dataclass
class Layer:
    """One prunable weight and how to view it as matrices."""

    node: gs.Node
    index: int  # input index of the weight
    weight: np.ndarray
    groups: int = 1
    feature_axis: int = -1  # axis of the input activation holding the features (dense layers)

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def size(self) -> int:
        return int(self.weight.size)

    @property
    def input_name(self) -> str:
        return self.node.inputs[0].name

    def to_mats(self, w: np.ndarray | None = None) -> np.ndarray:
        """The weight as ``[G, rows, cols]`` (a copy)."""
        w = self.weight if w is None else w
        g = self.groups
        if self.op == "MatMul":
            return np.ascontiguousarray(w.T[None])
        if self.op == "Gemm":
            return np.ascontiguousarray((w if self.node.attrs.get("transB", 0) else w.T)[None])
        if self.op == "Conv":
            return w.reshape(g, w.shape[0] // g, -1).copy()
        cin = w.shape[0]  # ConvTranspose
        return np.ascontiguousarray(w.reshape(g, cin // g, -1).transpose(0, 2, 1))

    def from_mats(self, mats: np.ndarray) -> np.ndarray:
        """Inverse of ``to_mats``: the weight in its ONNX layout and dtype."""
        shape, dtype = self.weight.shape, self.weight.dtype
        if self.op == "MatMul":
            return mats[0].T.astype(dtype).reshape(shape)
        if self.op == "Gemm":
            return (mats[0] if self.node.attrs.get("transB", 0) else mats[0].T).astype(dtype).reshape(shape)
        if self.op == "Conv":
            return mats.reshape(shape).astype(dtype)
        return mats.transpose(0, 2, 1).reshape(shape).astype(dtype)

    def nm_perm(self) -> np.ndarray:
        """Column order in which consecutive blocks are the N:M groups."""
        cols = self.to_mats().shape[2]
        if self.op != "Conv":
            return np.arange(cols)
        spatial = int(np.prod(self.weight.shape[2:]))
        cin = cols // spatial
        return (np.arange(cin)[None, :] * spatial + np.arange(spatial)[:, None]).reshape(-1)

    def nm_cols(self) -> int:
        """Length of the runs the N:M blocks must tile (input channels per group for Conv)."""
        if self.op == "Conv":
            return self.weight.shape[1]
        return self.to_mats().shape[2]


def find_layers(graph: gs.Graph) -> tuple[list[Layer], list[tuple[str, str]]]:
    """Prunable layers in graph order, and ``(where, reason)`` for weights left alone."""
    layers: list[Layer] = []
    skipped: list[tuple[str, str]] = []
    for node in graph.nodes:
        if node.op not in PRUNABLE or node.domain not in (None, "", "ai.onnx") or len(node.inputs) < 2:
            continue
        where = node.name or node.outputs[0].name
        layer, reason = _layer_of(node, graph)
        if layer is not None:
            layers.append(layer)
        elif reason:
            skipped.append((where, reason))
    return layers, skipped


def _layer_of(node: gs.Node, graph: gs.Graph) -> tuple[Layer | None, str | None]:
    if node.op == "MatMul" and constant_value(node.inputs[0]) is not None:
        return None, "the constant is the left operand of MatMul"
    if node.op == "Gemm" and constant_value(node.inputs[0]) is not None:
        return None, "the constant is input A of Gemm"
    tensor = node.inputs[1]
    weight = constant_value(tensor)
    if weight is None:
        return None, None  # activation x activation: nothing to prune, nothing to say
    if weight.dtype.kind != "f":
        return None, f"weight {tensor.name!r} is {weight.dtype}, not floating point"
    readers = [n for n in tensor.outputs]
    if len(readers) != 1 or tensor in graph.outputs:
        return None, f"weight {tensor.name!r} is shared by {len(readers)} nodes"
    if node.op == "MatMul" and weight.ndim != 2:
        return None, f"MatMul weight is {weight.ndim}-D, not 2-D"
    if node.op == "Gemm" and node.attrs.get("transA", 0):
        return Layer(node, 1, weight, feature_axis=0), None
    groups = int(node.attrs.get("group", 1)) if node.op in ("Conv", "ConvTranspose") else 1
    return Layer(node, 1, weight, groups=groups), None


def matches(layer: Layer, patterns: Sequence[str]) -> bool:
    """Whether the node name or the weight name matches one of the glob ``patterns``."""
    names = (layer.name, layer.node.inputs[layer.index].name)
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)
