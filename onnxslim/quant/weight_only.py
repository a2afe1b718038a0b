"""The output error of storing a float layer's weight as int8 (weight-only quantization).

Mixed precision offers weight-only to the layers it keeps in float, best first; each layer's
error is ‖y(Ŵ) − y(W)‖ / ‖y(W)‖ on its kept float input, W its float weight and Ŵ the int8
weight dequantized. Every layer asked about runs twice (W and Ŵ) side by side in one model, so
one ORT session serves any op (strided and grouped Conv, ConvTranspose, batched MatMul).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.ir.weights import constant_value
from onnxslim.quant.qdq import weight_axis, weight_only_ok
from onnxslim.quant.qparams import dequantize, quantize, weight_params


def errors(work: gs.Graph, keys, kept: dict[str, np.ndarray], smoothed: dict, per_channel: bool,
           run) -> dict[str, float]:
    """The weight-only error of each node named in ``keys`` that can take int8 weights and whose
    input was kept; ``run(graph, feeds)`` runs a graph (``PassContext.run``).

    A smoothed layer is measured unsmoothed, since weight-only undoes its smoothing
    (``smooth.undo``): its input before the smoothing Mul and its weight before smoothing.
    """
    by_output = {r.output: r for r in smoothed.values()}
    nodes = {n.name: n for n in work.nodes}
    parts: list[tuple[str, str, str]] = []
    graph_nodes, inputs, outputs, feeds = [], [], [], {}
    for i, key in enumerate(keys):
        node = nodes.get(key)
        if node is None or not weight_only_ok(node):
            continue
        x, w = node.inputs[0], node.inputs[1]
        record = by_output.get(x.name)
        if record is not None:
            if node.name not in record.weights:
                continue
            x, w = x.inputs[0].inputs[0], record.weights[node.name]
        if x.name not in kept or any(t.name and constant_value(t) is None for t in node.inputs[2:]):
            continue
        weight = constant_value(w).astype(np.float32)
        params = weight_params(weight, weight_axis(node, weight, per_channel))
        x_in = gs.Variable(f"w{i}/x", dtype=np.float32)
        inputs.append(x_in)
        feeds[x_in.name] = kept[x.name]
        names = []
        for tag, value in (("f", weight), ("q", dequantize(quantize(weight, params), params))):
            out = gs.Variable(f"w{i}{tag}/y", dtype=np.float32)
            rest = [gs.Constant(f"w{i}{tag}/{j}", np.ascontiguousarray(constant_value(t))) if t.name
                    else gs.Variable("") for j, t in enumerate(node.inputs[2:])]
            graph_nodes.append(gs.Node(node.op, "", dict(node.attrs),
                                       [x_in, gs.Constant(f"w{i}{tag}/w", value), *rest], [out]))
            outputs.append(out)
            names.append(out.name)
        parts.append((key, *names))
    if not parts:
        return {}
    values = run(gs.Graph(nodes=graph_nodes, inputs=inputs, outputs=outputs, opset=max(work.opset or 13, 13)),
                 feeds)
    result = {}
    for key, f_name, q_name in parts:
        y, y_q = (np.asarray(values[n], np.float64).ravel() for n in (f_name, q_name))
        ref = float(np.linalg.norm(y))
        result[key] = float(np.linalg.norm(y_q - y)) / ref if ref > 0 else 0.0
    return result
