"""Materialize a placement plan: insert QuantizeLinear/DequantizeLinear pairs in one sweep.

Weights become int8 constants behind a DequantizeLinear (per channel: the ``axis``
attribute); biases become int32 with scale s_input · s_weight; each planned activation tensor
gets one Q → DQ pair that its quantized readers (and, where ORT must fuse the producer, all
readers) read instead. A quantized graph output keeps its name on the DQ output.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.ir.weights import constant_value, unique_name
from onnxslim.quant.placement import Plan, node_key
from onnxslim.quant.qparams import QParams, bias_params, quantize, weight_params

MIN_QDQ_OPSET = 13


@dataclasses.dataclass(frozen=True)
class WeightChoice:
    per_channel: bool = True
    bits7: bool = False


def weight_axis(node: gs.Node, weight: np.ndarray, per_channel: bool) -> int | None:
    """The output-channel axis of a node's weight, or None for per-tensor."""
    if not per_channel:
        return None
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        return 1 if node.attrs.get("group", 1) == 1 else None
    if node.op == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    return 1 if weight.ndim == 2 else None  # MatMul: columns of a 2-D weight


def materialize(graph: gs.Graph, plan: Plan, act: dict[str, QParams],
                weights: dict[str, WeightChoice]) -> dict[str, int]:
    """Rewrite ``graph`` in place; return counts of what was inserted.

    ``act`` maps every planned tensor name to its parameters (shared groups already resolved).
    """
    nodes = {node_key(n): n for n in graph.nodes}
    _absorb(graph, [nodes[k] for k in plan.absorbed if k in nodes])
    counts = {"weights": 0, "activations": 0, "absorbed": len(plan.absorbed)}
    dq_cache: dict[tuple, gs.Variable] = {}
    for key in plan.compute:
        node = nodes[key]
        if constant_value(node.inputs[1]) is not None:
            _quantize_weight(graph, node, act, weights.get(key, WeightChoice()), dq_cache)
            counts["weights"] += 1
    readers = plan.readers()
    tensors = graph.tensors()
    for name in plan.tensors:
        _insert_qdq(graph, tensors[name], act[name], readers, name in plan.redirect_all)
        counts["activations"] += 1
    set_opset(graph, max(graph.opset or MIN_QDQ_OPSET, MIN_QDQ_OPSET))
    return counts


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
                     cache: dict[tuple, gs.Variable]) -> None:
    old = node.inputs[1]
    weight = constant_value(old).astype(np.float32)
    axis = weight_axis(node, weight, choice.per_channel)
    params = weight_params(weight, axis, choice.bits7)
    key = (old.name, axis, choice.bits7)
    if key not in cache:
        q = gs.Constant(unique_name(graph, f"{old.name}_quantized"), quantize(weight, params, choice.bits7))
        cache[key] = _dequantize(graph, q, params, f"{old.name}_DequantizeLinear")
    node.inputs[1] = cache[key]
    _drop_constant_node(graph, old)
    if node.op == "MatMul" or len(node.inputs) < 3 or not node.inputs[2].name:
        return
    old_bias = node.inputs[2]
    bias = constant_value(old_bias)
    in_params = act.get(node.inputs[0].name)
    if in_params is None:
        return
    q_bias, b_params = bias_params(in_params.scale, params, bias)
    qb = gs.Constant(unique_name(graph, f"{old_bias.name}_quantized"), q_bias)
    node.inputs[2] = _dequantize(graph, qb, b_params, f"{old_bias.name}_DequantizeLinear")
    _drop_constant_node(graph, old_bias)


def _dequantize(graph: gs.Graph, q: gs.Tensor, params: QParams, name: str) -> gs.Variable:
    name = unique_name(graph, name)
    out = gs.Variable(f"{name}_output", dtype=np.float32, shape=getattr(q, "shape", None))
    attrs = {"axis": params.axis} if params.axis is not None and np.ndim(params.scale) else {}
    inputs = [q, _const(graph, f"{name}_scale", params.scale)]
    if params.zero_point.dtype != np.int32:
        # an int32 bias's zero point is omitted (ONNX's default 0): 4 bytes per output channel saved;
        # ORT's Gemm fusion needs the weight's explicit int8 zero point
        inputs.append(_const(graph, f"{name}_zero_point", params.zero_point))
    graph.nodes.append(gs.Node("DequantizeLinear", name, attrs, inputs, [out]))
    return out


def _const(graph: gs.Graph, name: str, value: np.ndarray) -> gs.Constant:
    return gs.Constant(unique_name(graph, name), np.array(value, copy=True))  # keeps 0-d (scalar) shape


def _insert_qdq(graph: gs.Graph, tensor: gs.Tensor, params: QParams, readers: set[str], redirect_all: bool) -> None:
    consumers = [n for n in tensor.outputs if redirect_all or node_key(n) in readers]
    is_output = any(t is tensor for t in graph.outputs)
    base = tensor.name
    q_name = unique_name(graph, f"{base}_QuantizeLinear")
    q_out = gs.Variable(f"{q_name}_output", dtype=params.zero_point.dtype, shape=tensor.shape)
    scale, zp = _const(graph, f"{q_name}_scale", params.scale), _const(graph, f"{q_name}_zero_point", params.zero_point)
    dq_name = unique_name(graph, f"{base}_DequantizeLinear")
    dq_out = gs.Variable(f"{dq_name}_output", dtype=np.float32, shape=tensor.shape)
    graph.nodes.append(gs.Node("QuantizeLinear", q_name, {}, [tensor, scale, zp], [q_out]))
    graph.nodes.append(gs.Node("DequantizeLinear", dq_name, {}, [q_out, scale, zp], [dq_out]))
    for node in consumers:
        for i, t in enumerate(node.inputs):
            if t is tensor:
                node.inputs[i] = dq_out
    if is_output and redirect_all:
        # the graph output keeps its name: it is now the DQ output
        tensor.name = unique_name(graph, f"{base}_prequant")
        dq_out.name = base
        graph.outputs = [dq_out if t is tensor else t for t in graph.outputs]


def _drop_constant_node(graph: gs.Graph, tensor: gs.Tensor) -> None:
    """Remove a Constant node nobody reads any more (Paddle-style weights)."""
    if isinstance(tensor, gs.Constant) or tensor.outputs or not tensor.inputs:
        return
    node = tensor.inputs[0]
    if node.op == "Constant":
        node.outputs.clear()
        graph.nodes.remove(node)
