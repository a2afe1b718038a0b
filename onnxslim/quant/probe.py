"""Per-layer measurements with the real integer kernels.

For one compute node, a two-model probe is built from the node alone (its float weights, the
captured float input of a few calibration samples):

* the float node → y;
* the same node quantized exactly as the full model will be (``materialize`` on the one-node
  graph) → ŷ, run at ORT's deployed level (real integer kernels) and with ORT's optimizations
  off (Q/DQ simulated in float).

From it come the layer's relative output error ‖ŷ − y‖_F / ‖y‖_F (ranking for mixed
precision), its multiply-accumulates, and whether the real kernels disagree with the float
simulation: saturation of AVX2's int16 pair sums.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.ir.weights import constant_value
from onnxslim.quant.placement import Plan, node_key
from onnxslim.quant.qdq import WeightChoice, materialize
from onnxslim.quant.qparams import QParams
from onnxslim.runtime.bench import measure_latency
from onnxslim.runtime.session import make_session

#: real-kernel vs simulated relative difference above which a layer counts as saturating
SATURATION_GAP = 0.01


#: unary activations a probe carries behind its layer, so that float's fused Conv+activation is
#: timed against int8's QLinearConv → DQ → activation
EPILOGUE = ("HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh", "Relu", "Clip", "Gelu")


@dataclasses.dataclass
class LayerProbe:
    node: str
    op: str
    macs: int          # per sample
    error: float       # relative output error with the real kernels
    simulated_error: float
    saturated: bool
    float_ms: float | None = None
    int8_ms: float | None = None


def extract(node: gs.Node, absorbed: gs.Node | None, opset: int) -> gs.Graph:
    """A one-node graph (plus its absorbed Relu/Clip) with constant weights as initializers."""
    inputs, new_inputs = [], []
    for t in node.inputs:
        if not t.name:
            new_inputs.append(gs.Variable(""))
            continue
        value = constant_value(t)
        if value is None:
            var = gs.Variable(t.name, dtype=np.float32)
            inputs.append(var)
            new_inputs.append(var)
        else:
            new_inputs.append(gs.Constant(t.name, np.ascontiguousarray(value)))
    out = gs.Variable(node.outputs[0].name, dtype=np.float32)
    nodes = [gs.Node(node.op, node.name, dict(node.attrs), new_inputs, [out])]
    final = out
    if absorbed is not None:
        final = gs.Variable(absorbed.outputs[0].name, dtype=np.float32)
        extra = [gs.Constant(t.name, np.ascontiguousarray(constant_value(t))) if t.name else gs.Variable("")
                 for t in absorbed.inputs[1:]]
        nodes.append(gs.Node(absorbed.op, absorbed.name, dict(absorbed.attrs), [out, *extra], [final]))
    return gs.Graph(nodes=nodes, inputs=inputs, outputs=[final], opset=max(opset, 13))


def probe_layer(node: gs.Node, absorbed: gs.Node | None, feeds: dict[str, np.ndarray],
                act: dict[str, QParams], choice: WeightChoice, opset: int, provider: str,
                epilogue: gs.Node | None = None, threads: int | None = None, timed: bool = False) -> LayerProbe:
    """Measure one layer; ``feeds`` holds its float activation inputs, ``act`` every param.

    With ``timed`` the probe is also timed, on one sample: float layer against Q → int8 layer → DQ,
    real kernels, both followed by ``epilogue`` (the layer's lone unary activation) when given, since
    float fuses it into the layer and int8 runs it apart.
    """
    float_graph = extract(node, absorbed, opset)
    qgraph = float_graph.copy()
    out_name = float_graph.outputs[0].name
    plan = Plan(compute=[node_key(node)], absorbed=[node_key(absorbed)] if absorbed is not None else [])
    plan.tensors = [t.name for t in float_graph.inputs] + ([out_name] if out_name in act else [])
    plan.redirect_all = {out_name}
    materialize(qgraph, plan, act, {node_key(node): choice})
    feeds = {t.name: feeds[t.name] for t in float_graph.inputs}
    y = _run(_export(float_graph), feeds, provider, True)
    qmodel = _export(qgraph)
    real = _run(qmodel, feeds, provider, True)
    sim = _run(qmodel, feeds, provider, False)
    norm = max(float(np.linalg.norm(y)), 1e-30)
    error = float(np.linalg.norm(real - y)) / norm
    simulated = float(np.linalg.norm(sim - y)) / norm
    gap = float(np.linalg.norm(real - sim)) / norm
    batch = next(iter(feeds.values())).shape[0] if feeds else 1
    probe = LayerProbe(node_key(node), node.op, macs(node, feeds, y) // max(batch, 1), error, simulated,
                       gap > SATURATION_GAP and gap > 0.5 * simulated)
    if timed:
        for g in (float_graph, qgraph):
            if epilogue is not None:
                _append(g, epilogue)
        one = {k: v[:1] for k, v in feeds.items()}
        f_stats, q_stats = measure_latency([_export(float_graph), _export(qgraph)], one, provider, threads or 1,
                                           warmup=3, repeat=40, max_seconds=0.4)
        probe.float_ms, probe.int8_ms = f_stats.median_ms, q_stats.median_ms
    return probe


def _append(graph: gs.Graph, act: gs.Node) -> None:
    """Put a copy of the unary activation ``act`` behind the graph's output."""
    out = graph.outputs[0]
    extra = [gs.Constant(t.name, np.array(constant_value(t))) if t.name else gs.Variable("") for t in act.inputs[1:]]
    new = gs.Variable(act.outputs[0].name, dtype=np.float32)
    graph.nodes.append(gs.Node(act.op, act.name, dict(act.attrs), [out, *extra], [new]))
    graph.outputs = [new]


def macs(node: gs.Node, feeds: dict[str, np.ndarray], y: np.ndarray) -> int:
    """Multiply-accumulates of the node on this batch."""
    x = feeds.get(node.inputs[0].name)
    w = constant_value(node.inputs[1])
    if node.op == "Conv":
        return int(np.prod(y.shape)) * int(np.prod(w.shape[1:]))
    if node.op == "ConvTranspose":
        return int(np.prod(x.shape)) * int(np.prod(w.shape[1:]))
    if node.op == "Gemm":
        k = x.shape[0] if node.attrs.get("transA", 0) else x.shape[-1]
        return int(np.prod(y.shape)) * int(k)
    a = x if x is not None else constant_value(node.inputs[0])
    return int(np.prod(y.shape)) * int(a.shape[-1])


def _export(graph: gs.Graph) -> onnx.ModelProto:
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = min(model.ir_version, 9)
    return model


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], provider: str, optimize: bool) -> np.ndarray:
    session = make_session(model, provider, threads=1, optimize=optimize)
    return session.run(None, feeds)[0].astype(np.float64)
