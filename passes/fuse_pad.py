"""fuse-pad: a zero Pad in front of a Conv becomes part of the Conv's own padding.

``Conv(Pad(x, p, 0), pads=c) = Conv(x, pads=c + p)`` when the Pad adds zeros (mode ``constant``,
value 0 or absent) and only on the spatial axes (axes 0 and 1, batch and channels, unpadded),
with no negative amount (a crop), and the Conv pads explicitly (``auto_pad`` NOTSET, or VALID:
no padding, which becomes explicit zeros plus the Pad's amounts): a Conv
pads with zeros itself, so padding first or inside gives the same sums, element for element.
Pad writes ``[x0_begin, ..., x(r-1)_begin, x0_end, ..., x(r-1)_end]`` over the axes it pads
(every axis, or its ``axes`` input from opset 18); Conv writes ``[x1_begin, ..., x1_end, ...]``
over the spatial axes only. Every reader of the Pad must be such a Conv reading it as its data
input, and the Pad's output must not be a graph output. Exact: no value is computed differently.

Exporters of TensorFlow and old PyTorch models (``padding='same'`` done by hand, MobileNet's
asymmetric pads before a stride-2 Conv) write these Pads; onnxsim and OnnxSlim fuse them too.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op
from onnxslim.ir.weights import constant_value


@register_pass
class FusePad(Pass):
    """Fold a zero, spatial-only Pad into the padding of the Convs that read it."""

    name = "fuse-pad"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        outputs = {id(t) for t in graph.outputs}
        fused = 0
        declines: list[Decline] = []
        gone: set[int] = set()
        for pad in list(graph.nodes):
            if not is_onnx_op(pad, "Pad") or not pad.inputs or len(pad.outputs) != 1:
                continue
            out = pad.outputs[0]
            readers = list(out.outputs)
            if id(out) in outputs or not readers or not all(_pads_itself(c, out) for c in readers):
                continue
            amounts, reason = _spatial_amounts(pad, graph.opset or 0)
            if amounts is None:
                declines.append(Decline(pad.name, reason))
                continue
            if any(len(c.attrs.get("pads", amounts)) != len(amounts) for c in readers):
                declines.append(Decline(pad.name, "a Conv reading it has pads of another rank"))
                continue
            for conv in readers:
                own = [0] * len(amounts)
                if _auto_pad(conv) == "NOTSET":
                    own = list(conv.attrs.get("pads", own))
                conv.attrs["pads"] = [int(a + b) for a, b in zip(own, amounts)]
                conv.attrs.pop("auto_pad", None)
                conv.inputs[0] = pad.inputs[0]
            pad.inputs.clear()
            pad.outputs.clear()
            gone.add(id(pad))
            fused += 1
        if gone:
            graph.nodes = [n for n in graph.nodes if id(n) not in gone]
        return PassResult(modified=fused > 0, stats={"pads_fused": fused}, declines=declines)


def _pads_itself(node: gs.Node, tensor: gs.Tensor) -> bool:
    """A Conv reading ``tensor`` as its data input only, with explicit pads."""
    return (is_onnx_op(node, "Conv") and node.inputs[0] is tensor
            and all(t is not tensor for t in node.inputs[1:])
            and _auto_pad(node) in ("NOTSET", "VALID"))


def _auto_pad(node: gs.Node) -> str:
    value = node.attrs.get("auto_pad", "NOTSET")
    return value.decode() if isinstance(value, bytes) else value


def _spatial_amounts(pad: gs.Node, opset: int) -> tuple[list[int] | None, str]:
    """The Pad's amounts in Conv's layout (spatial begins, then spatial ends), or None and why."""
    mode = pad.attrs.get("mode", "constant")
    if mode not in ("constant", b"constant"):
        return None, f"pads in mode {mode!r}, not with zeros"
    if opset < 11:
        pads, value, axes = pad.attrs.get("pads"), pad.attrs.get("value", 0.0), None
    else:
        pads = constant_value(pad.inputs[1]) if len(pad.inputs) > 1 else None
        given = pad.inputs[2] if len(pad.inputs) > 2 and pad.inputs[2].name else None
        value = constant_value(given) if given is not None else 0
        axes_input = pad.inputs[3] if len(pad.inputs) > 3 and pad.inputs[3].name else None
        axes = constant_value(axes_input) if axes_input is not None else None
        if axes_input is not None and axes is None:
            return None, "its axes are computed at run time"
    if pads is None or value is None:
        return None, "its pads or value are computed at run time"
    if np.any(np.asarray(value) != 0):
        return None, "pads with a value other than 0"
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    count = len(pads) // 2
    rank = pad.inputs[0].shape and len(pad.inputs[0].shape)
    if axes is None:
        axes = list(range(count))
    elif rank:
        axes = [int(a) % rank for a in np.asarray(axes).reshape(-1)]
    else:
        return None, "the rank of its input is unknown"
    rank = rank or count
    begin, end = [0] * rank, [0] * rank
    for axis, b, e in zip(axes, pads[:count], pads[count:]):
        begin[axis], end[axis] = b, e
    if any(p < 0 for p in pads):
        return None, "crops (a negative pad)"
    if rank < 3 or begin[0] or begin[1] or end[0] or end[1]:
        return None, "pads the batch or channel axis"
    return begin[2:] + end[2:], ""
