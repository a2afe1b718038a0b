"""fold-affine: fold constant Mul/Div/Add/Sub (and BatchNormalization) after a Conv, ConvTranspose
or Gemm into its weights.

A scale or shift that is constant per output channel (a scalar, or a tensor that broadcasts along
the channel axis only) commutes into the producer: ``(W x + b) · s + t == (W s) x + (b s + t)``.
Exporters leave such nodes behind: PP-OCRv4's backbone (PaddlePaddle's learnable affine blocks)
has a scalar Mul and Add after 28 of its convs, each a full pass over the feature map that ONNX
Runtime did not fuse (profiled: all 28 pairs still ran after its optimizations).

Only the producer's sole reader is folded, repeatedly, so ``Conv → Mul → Add`` folds whole. An
inference BatchNormalization in such a chain folds too (``fold-bn`` runs first in the default
pipeline and meets PP-OCRv4's ``ConvTranspose → Add → BatchNormalization`` before the Add is gone).
Declines when a weight or bias is not constant and on grouped ConvTranspose.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir import affine
from onnxslim.ir.nodes import is_onnx_op, other_input, sole_reader
from onnxslim.ir.weights import constant_value

OPS = ("Mul", "Div", "Add", "Sub")


@register_pass
class FoldAffine(Pass):
    """Fold constant per-channel Mul/Div/Add/Sub/BatchNormalization into the preceding Conv/ConvTranspose/Gemm."""

    name = "fold-affine"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        folded = 0
        declines: list[Decline] = []
        for producer in [n for n in graph.nodes if is_onnx_op(n, *affine.PRODUCERS)]:
            while (step := _foldable(producer, graph)) is not None:
                reason = affine.blocker(producer)
                if reason:
                    declines.append(Decline(step[0].name, reason))
                    break
                node, scale, shift = step
                out = node.outputs[0]
                node.inputs.clear()
                node.outputs.clear()
                graph.nodes.remove(node)
                affine.fold(graph, producer, scale, shift, out, "affine")
                folded += 1
        return PassResult(modified=folded > 0, stats={"folded": folded}, declines=declines)


def _foldable(producer: gs.Node, graph: gs.Graph) -> tuple[gs.Node, np.ndarray, np.ndarray] | None:
    """The producer's sole reader if it is a constant per-channel Mul/Div/Add/Sub or an inference
    BatchNormalization: (node, scale, shift)."""
    y = producer.outputs[0]
    node = sole_reader(y, graph)
    if node is None or constant_value(producer.inputs[1]) is None:
        return None
    if is_onnx_op(node, "BatchNormalization") and node.inputs[0] is y:
        params = affine.batchnorm(node)
        if params is None or len(params[0]) != affine.output_channels(producer):
            return None
        return node, *params
    if not is_onnx_op(node, *OPS):
        return None
    other = other_input(node, y)
    if other is None or (node.inputs[0] is not y and node.op in ("Div", "Sub")):
        return None  # c / y and c - y are not affine in y
    value = constant_value(other)
    if value is None or value.dtype.kind != "f":
        return None
    vector = _per_channel(value, producer)
    if vector is None or (node.op == "Div" and np.any(vector == 0)):
        return None
    ones, zeros = np.ones_like(vector), np.zeros_like(vector)
    return node, *{"Mul": (vector, zeros), "Div": (1.0 / vector, zeros), "Add": (ones, vector),
                   "Sub": (ones, -vector)}[node.op]


def _per_channel(value: np.ndarray, producer: gs.Node) -> np.ndarray | None:
    """``value`` as one float64 number per output channel, or None if it varies along another axis
    (or would change the output's shape by broadcasting)."""
    rank = 2 if producer.op == "Gemm" else constant_value(producer.inputs[1]).ndim
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    channels = affine.output_channels(producer)
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    if not np.all(np.isfinite(value)):
        return None
    return np.broadcast_to(value.astype(np.float64).reshape(-1), (channels,)).copy()
