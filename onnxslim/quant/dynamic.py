"""Dynamic int8 for a MatMul whose static activation range costs too much accuracy.

A layer that mixed precision would keep in float because one calibrated range cannot serve all
its inputs (BERT's FFN output projection reads GELU outputs whose outliers move with the
sentence) can still run in int8 when the range is taken per run instead:

    x_q, s_x, z_x = DynamicQuantizeLinear(x)                 uint8, range of this very batch
    y = Cast(MatMulInteger(x_q, W_q, z_x, 0), float) · (s_x · s_W)

with ``W_q`` int8 symmetric per output column (``s_W`` has N entries). This is the pattern of
onnxruntime's own dynamic quantizer; ORT fuses it on load into one ``DynamicQuantizeMatMul``
kernel (U8S8, the fast path on AVX2), so the layer gets integer speed and int8 storage without
a calibrated activation range. Weights are kept in [-63, 63] where the CPU's 16-bit accumulation
of u8·s8 pairs saturates (AVX2 without VNNI): measured here on a 64×48 layer, full-range int8
weights gave output cosine 0.9987 in ORT's kernels against 0.99998 simulated, 7-bit 0.99992.

The few input channels whose calibrated maximum dwarfs the rest (LLM.int8()'s decomposition)
are taken out of the per-run range: X·mask runs dynamic int8, Gather(X, outliers) times their
weight rows runs in float, and the two products are added. On MiniLM's first FFN output
projection one channel (of 1536) reaches 24.6 against 5.8 for the next; splitting it took that
layer's embedding error (1 - cosine) from 0.0023 to 0.0002 with no measurable latency cost.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.ir.nodes import is_onnx_op
from onnxslim.ir.weights import constant_value
from onnxslim.quant.qdq import Names
from onnxslim.quant.qparams import quantize, weight_params


#: an input channel stays float in a dynamic layer when the channels from it upward stand this
#: many times above the next largest (see ``outlier_channels``)
OUTLIER_GAP = 2.0


def outlier_channels(absmax: np.ndarray) -> np.ndarray:
    """The few input channels (at most K/128) whose calibrated maximum dwarfs the others.

    One per-tensor range per run serves all K channels, so a single channel 4x larger than the
    rest (MiniLM's first FFN output projection: 24.6 against 5.8) costs the others 2 bits. The
    outliers are the top j channels for the largest j ≤ K/128 where the j-th largest maximum is
    more than ``OUTLIER_GAP`` times the (j+1)-th.
    """
    absmax = np.asarray(absmax, dtype=np.float64)
    cap = max(1, absmax.size // 128)
    order = np.argsort(-absmax, kind="stable")
    top = absmax[order[: cap + 1]]
    gaps = [j for j in range(1, len(top)) if top[j - 1] > OUTLIER_GAP * top[j]]
    return np.sort(order[: max(gaps, default=0)]).astype(np.int64)


def dynamic_ok(node: gs.Node) -> bool:
    """A float MatMul with a constant 2-D float weight and a non-constant input."""
    if not is_onnx_op(node, "MatMul") or len(node.inputs) != 2:
        return False
    w = constant_value(node.inputs[1])
    return (w is not None and w.dtype == np.float32 and w.ndim == 2
            and constant_value(node.inputs[0]) is None)


def rewrite(graph: gs.Graph, node: gs.Node, names: Names | None = None, bits7: bool = False,
            outliers: np.ndarray | None = None) -> list[gs.Node]:
    """Replace the float MatMul ``node`` by the dynamic int8 pattern; returns the new nodes.

    ``bits7``: 7-bit weights, where the CPU's u8·s8 kernels can saturate (``cpu.saturation_risk``).
    ``outliers``: input channels kept in float (see ``outlier_channels``).
    """
    names = names or Names(graph)
    label = node.name or node.outputs[0].name
    weight = constant_value(node.inputs[1])
    base = node.inputs[1].name
    x, y = node.inputs[0], node.outputs[0]
    new: list[gs.Node] = []
    if outliers is not None and len(outliers):
        idx = np.asarray(outliers, dtype=np.int64)
        mask = np.ones(weight.shape[0], dtype=np.float32)
        mask[idx] = 0.0
        x_rest = gs.Variable(names(f"{x.name}_inl"), dtype=np.float32)
        x_out = gs.Variable(names(f"{x.name}_outl"), dtype=np.float32)
        y_out = gs.Variable(names(f"{y.name}_outl"), dtype=np.float32)
        y_rest = gs.Variable(names(f"{y.name}_inl"), dtype=np.float32)
        new += [
            gs.Node("Mul", inputs=[x, gs.Constant(names(f"{x.name}_inl_mask"), mask)], outputs=[x_rest]),
            gs.Node("Gather", attrs={"axis": -1}, inputs=[x, gs.Constant(names(f"{x.name}_outl_idx"), idx)],
                    outputs=[x_out]),
            gs.Node("MatMul", inputs=[x_out, gs.Constant(names(f"{base}_outl"), np.ascontiguousarray(weight[idx]))],
                    outputs=[y_out]),
            gs.Node("Add", inputs=[y_rest, y_out], outputs=[y]),
        ]
        weight = weight * mask[:, None]
        x, y = x_rest, y_rest
    params = weight_params(weight, axis=1, bits7=bits7)
    w_q = gs.Constant(names(f"{base}_q"), np.ascontiguousarray(quantize(weight, params, bits7)))
    w_zp = gs.Constant(names(f"{base}_zp"), np.zeros(weight.shape[1], dtype=np.int8))
    w_scale = gs.Constant(names(f"{base}_s"), np.ascontiguousarray(params.scale.astype(np.float32)))
    x_q = gs.Variable(names(f"{x.name}_dyn_q"), dtype=np.uint8)
    x_s = gs.Variable(names(f"{x.name}_dyn_s"), dtype=np.float32, shape=[])
    x_zp = gs.Variable(names(f"{x.name}_dyn_zp"), dtype=np.uint8, shape=[])
    product = gs.Variable(names(f"{y.name}_i32"), dtype=np.int32)
    as_float = gs.Variable(names(f"{y.name}_f"), dtype=np.float32)
    scales = gs.Variable(names(f"{y.name}_s"), dtype=np.float32)
    new += [
        gs.Node("DynamicQuantizeLinear", inputs=[x], outputs=[x_q, x_s, x_zp]),
        gs.Node("MatMulInteger", inputs=[x_q, w_q, x_zp, w_zp], outputs=[product]),
        gs.Node("Cast", attrs={"to": onnx.TensorProto.FLOAT}, inputs=[product], outputs=[as_float]),
        gs.Node("Mul", inputs=[x_s, w_scale], outputs=[scales]),
        gs.Node("Mul", inputs=[as_float, scales], outputs=[y]),
    ]
    for i, new_node in enumerate(new):
        new_node.name = f"{label}/dynamic_{i}"
    node.inputs.clear()
    node.outputs.clear()
    graph.nodes.remove(node)
    graph.nodes.extend(new)
    return new
