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

A scale and shift that no layer precedes (PP-OCRv4: 24 of them after a hard-swish) fold forward
instead, into the Convs that read them, where every reader is a Conv with no padding:
``W * (x · s + t) + b == (W · s) * x + (b + W * t)``, s and t per input channel. With padding it
would not be exact: the padded border would hold t, not 0.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir import affine
from onnxslim.ir.linear import linear_of
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
        forward = 0
        channels = _Channels(graph, ctx)
        for node in reversed(list(graph.nodes)):  # the Add before a Conv first, then the Mul before it
            step = _forward_foldable(node, graph, channels)
            if step is not None:
                _fold_forward(graph, node, *step)
                forward += 1
        return PassResult(modified=folded + forward > 0, stats={"folded": folded, "folded_forward": forward},
                          declines=declines)


def _foldable(producer: gs.Node, graph: gs.Graph) -> tuple[gs.Node, np.ndarray, np.ndarray] | None:
    """The producer's sole reader if it is a constant per-channel Mul/Div/Add/Sub or an inference
    BatchNormalization: (node, scale, shift)."""
    y = producer.outputs[0]
    node = sole_reader(y, graph)
    layer = linear_of(producer)
    if node is None or layer is None:
        return None
    if is_onnx_op(node, "BatchNormalization") and node.inputs[0] is y:
        params = affine.batchnorm(node)
        if params is None or len(params[0]) != layer.out_channels:
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
    # the output's rank: a convolution's is its weight's, a Gemm's 2 (affine.blocker declines others)
    rank = 2 if producer.op == "Gemm" else layer.stored.ndim
    return _scale_shift(node, value, rank, layer.out_channels)


def _scale_shift(node: gs.Node, value: np.ndarray, rank: int, channels: int) -> tuple | None:
    """(node, scale, shift) of a Mul/Div/Add/Sub by ``value`` on a rank-``rank`` tensor, one float64
    per channel (axis 1); None if ``value`` is not per channel."""
    vector = _per_channel(value, rank, channels)
    if vector is None or (node.op == "Div" and np.any(vector == 0)):
        return None
    ones, zeros = np.ones_like(vector), np.zeros_like(vector)
    if node.op == "Mul":
        return node, vector, zeros
    if node.op == "Div":  # only here: a Mul by a vector holding zeros has no reciprocal (DETR's masks)
        return node, 1.0 / vector, zeros
    return node, ones, vector if node.op == "Add" else -vector


def _per_channel(value: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``value`` as one float64 number per channel (axis 1 of a rank-``rank`` tensor), or None if it
    varies along another axis (or would change the tensor's shape by broadcasting)."""
    if value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    if not np.all(np.isfinite(value)):
        return None
    return np.broadcast_to(value.astype(np.float64).reshape(-1), (channels,)).copy()


class _Channels:
    """A tensor's size on axis 1: its own shape, else ONNX shape inference on the graph (run once)."""

    def __init__(self, graph: gs.Graph, ctx: PassContext) -> None:
        self.graph, self.ctx, self.inferred = graph, ctx, None

    def __call__(self, tensor: gs.Tensor) -> int | None:
        if tensor.shape is not None and len(tensor.shape) > 1:
            return tensor.shape[1] if isinstance(tensor.shape[1], int) else None
        if self.inferred is None:
            model = onnx.shape_inference.infer_shapes(self.ctx.export(self.graph))
            self.inferred = {v.name: v.type.tensor_type.shape.dim[1].dim_value
                             for v in model.graph.value_info if len(v.type.tensor_type.shape.dim) > 1}
        return self.inferred.get(tensor.name) or None


def _forward_foldable(node: gs.Node, graph: gs.Graph, channels: _Channels) -> tuple[gs.Tensor, np.ndarray, np.ndarray] | None:
    """(x, scale, shift) if ``node`` is a constant per-channel Mul/Div/Add/Sub of x that only unpadded
    Convs read."""
    if not is_onnx_op(node, *OPS) or len(node.inputs) != 2 or len(node.outputs) != 1:
        return None
    y = node.outputs[0]
    if y in graph.outputs or not y.outputs or not all(_unpadded_conv(c, y) for c in y.outputs):
        return None
    values = [constant_value(t) for t in node.inputs]
    if (values[0] is None) == (values[1] is None):
        return None
    x, value = (node.inputs[0], values[1]) if values[0] is None else (node.inputs[1], values[0])
    if value.dtype.kind != "f" or (node.inputs[0] is not x and node.op in ("Div", "Sub")):
        return None
    weight = constant_value(y.outputs[0].inputs[1])  # an ungrouped Conv's: input channels on axis 1
    if value.size > 1 and channels(x) != weight.shape[1]:
        return None  # x must already have the Conv's channels: a per-channel value may not broadcast it
    step = _scale_shift(node, value, weight.ndim, weight.shape[1])
    return None if step is None else (x, step[1], step[2])


def _unpadded_conv(conv: gs.Node, y: gs.Tensor) -> bool:
    """A Conv (group 1, constant float weight and bias) that reads ``y`` as its input, with no padding."""
    if not is_onnx_op(conv, "Conv") or conv.inputs[0] is not y or any(t is y for t in conv.inputs[1:]):
        return False
    layer = linear_of(conv)
    if layer is None or layer.stored.dtype.kind != "f" or layer.groups != 1:
        return False
    if len(conv.inputs) > 2 and conv.inputs[2].name and constant_value(conv.inputs[2]) is None:
        return False
    return conv.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID") and not any(conv.attrs.get("pads", []))


def _fold_forward(graph: gs.Graph, node: gs.Node, x: gs.Tensor, scale: np.ndarray, shift: np.ndarray) -> None:
    """Fold ``x · scale + shift`` into every Conv reading ``node``'s output; ``node`` goes."""
    for conv in list(node.outputs[0].outputs):
        affine.fold_forward(graph, conv, scale, shift, x, "affine")
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.remove(node)
