"""fold-bn: fold an inference BatchNormalization into the preceding Conv, ConvTranspose or Gemm.

    s  = gamma / sqrt(var + eps)
    W' = W * s                      (on the producer's output-channel axis)
    b' = (b - mean) * s + beta      (Gemm: b = beta_gemm * C, and beta_gemm becomes 1)

Computed in float64 and cast back to the weight's dtype. Declines when the producer's output
has another reader, when a weight or BN parameter is not constant, on training-mode BN, and on
grouped ConvTranspose.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir import affine
from onnxslim.ir.affine import PRODUCERS
from onnxslim.ir.nodes import is_onnx_op, sole_reader


@register_pass
class FoldBatchNorm(Pass):
    """Fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm."""

    name = "fold-bn"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        folded = 0
        declines: list[Decline] = []
        for bn in [n for n in graph.nodes if is_onnx_op(n, "BatchNormalization")]:
            producer = bn.inputs[0].inputs[0] if bn.inputs[0].inputs else None
            if producer is None or producer.op not in PRODUCERS:
                continue
            reason = _blocker(producer, bn, graph)
            if reason:
                declines.append(Decline(bn.name, reason))
                continue
            _fold(graph, producer, bn)
            folded += 1
        return PassResult(modified=folded > 0, stats={"folded": folded}, declines=declines)


def _blocker(producer: gs.Node, bn: gs.Node, graph: gs.Graph) -> str | None:
    if sole_reader(bn.inputs[0], graph) is None:
        return f"the output of {producer.op} {producer.name!r} has other readers"
    if bn.attrs.get("training_mode", 0) or sum(1 for t in bn.outputs if t.name) > 1:
        return "BatchNormalization is in training mode"
    if affine.batchnorm(bn) is None:
        return "BatchNormalization parameters are not constant vectors, or var + epsilon is not positive"
    return affine.blocker(producer)


def _fold(graph: gs.Graph, producer: gs.Node, bn: gs.Node) -> None:
    scale, shift = affine.batchnorm(bn)
    out = bn.outputs[0]
    bn.inputs.clear()
    bn.outputs.clear()
    graph.nodes.remove(bn)
    affine.fold(graph, producer, scale, shift, out, "bnfold")
