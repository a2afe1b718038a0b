"""Where Q/DQ pairs go: follow what ONNX Runtime runs in integer kernels.

Placement, not mutation: ``plan(graph, ...)`` returns a ``Placement``: which compute nodes are quantized, which
activation tensors carry a Q/DQ pair, and which tensors share one set of parameters.

* Compute nodes (Conv, ConvTranspose, Gemm, MatMul with a constant weight, and optionally
  MatMul of two activations): their activation inputs are quantized; Conv/ConvTranspose/Gemm
  outputs too, because ORT fuses DQ → Conv → Q into QLinearConv only with the Q after it.
  MatMul outputs stay float unless a quantized op reads them (DQ → MatMul becomes
  MatMulIntegerToFloat, with the bias Add fused).
* A Relu (or Clip with min 0) that alone reads a quantized output is absorbed with uint8
  activations: its range becomes the producer's, zero point 0, so Q itself clips at 0.
* Integer ops (Add, Mul, Concat, GlobalAveragePool, AveragePool) are quantized when all
  their activation inputs already are (residual blocks of conv nets; not the float bias Adds
  of a transformer).
* Pass-through ops (MaxPool, Reshape, Transpose, Flatten, Squeeze, Unsqueeze, nearest Resize,
  Relu, Identity) share their input's parameters; Concat uses one range for inputs and output.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.ir.linear import with_weight
from onnxslim.ir.weights import constant_value, is_constant

COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ARITH = ("Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool")
PASS_THROUGH = ("MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Resize", "Relu", "Identity")
ABSORBED = ("Relu", "Clip")


@dataclasses.dataclass
class Placement:
    """What to quantize; tensors are named, nodes are referred to by name."""

    compute: list[str] = dataclasses.field(default_factory=list)
    arith: list[str] = dataclasses.field(default_factory=list)
    passthrough: list[str] = dataclasses.field(default_factory=list)
    tensors: list[str] = dataclasses.field(default_factory=list)
    #: Relu/Clip nodes removed because Q clips for them (uint8, zero point 0), by name; their
    #: producer writes their output tensor directly
    absorbed: list[str] = dataclasses.field(default_factory=list)
    #: tensors written by a producer whose Relu/Clip was absorbed: their zero point must be qmin
    zero_clip: set[str] = dataclasses.field(default_factory=set)
    #: tensor -> representative of its shared-parameter group
    parent: dict[str, str] = dataclasses.field(default_factory=dict)
    #: tensors whose float readers must read the DQ output too (fusion of their producer)
    redirect_all: set[str] = dataclasses.field(default_factory=set)
    declines: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def readers(self) -> set[str]:
        """Nodes that read the DQ output of a quantized tensor."""
        return set(self.compute) | set(self.arith) | set(self.passthrough)

    def group(self, name: str) -> str:
        while self.parent.get(name, name) != name:
            name = self.parent[name]
        return name

    def union(self, a: str, b: str) -> None:
        ra, rb = self.group(a), self.group(b)
        if ra != rb:
            self.parent[rb] = ra



def node_key(node: gs.Node) -> str:
    return node.name or node.outputs[0].name


def activation_inputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.inputs if t.name and not is_constant(t)]


def compute_blocker(node: gs.Node, activation_matmul: bool) -> str | None:
    """Why a compute node is not quantized, or None."""
    if node.domain not in (None, "", "ai.onnx"):
        return "not an ONNX-domain op"
    if any(t.inputs and t.inputs[0].op == "DequantizeLinear" for t in node.inputs if t.name):
        return "already quantized (reads a DequantizeLinear)"
    other = next((t.dtype for t in activation_inputs(node) if t.dtype is not None and np.dtype(t.dtype) != np.float32),
                 None)
    if other is not None:  # fp16 graphs were widened to float32 before placement; float64 stays float64
        return f"activation of type {np.dtype(other).name} (QuantizeLinear takes float32 here)"
    if node.op == "MatMul":
        if any(t.shape is not None and len(t.shape) < 2 for t in activation_inputs(node)):
            return "MatMul of a 1-D activation (ORT's integer MatMul kernels take rank 2 and up)"
        weight = constant_value(node.inputs[1])
        if weight is None:
            if not activation_matmul:
                return "MatMul of two activations (activation_matmul=false)"
            return None
        if constant_value(node.inputs[0]) is not None:
            return "MatMul of two constants"
        if weight.ndim != 2:
            return f"MatMul weight of rank {weight.ndim} (ORT's integer MatMul kernels take a [K, N] weight)"
        return None
    weight = constant_value(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None:
        return f"the weight of {node.op} is not constant"
    if weight.dtype.kind != "f":
        return "the weight is not floating point"
    if node.op == "Gemm":
        layer = with_weight(node, weight)
        if layer.alpha != 1.0 or layer.beta != 1.0:
            return "Gemm with alpha or beta other than 1"
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = constant_value(node.inputs[2])
            n_out = layer.shape[1]
            if bias is None or bias.ndim != 1 or bias.shape[0] != n_out:
                return "Gemm bias is not a constant vector of the output size"
    elif len(node.inputs) > 2 and node.inputs[2].name and constant_value(node.inputs[2]) is None:
        return "the bias is not constant"
    return None


def mark_from_values(graph: gs.Graph, p: Placement, values: dict[str, np.ndarray]) -> bool:
    """Give the activation inputs of plan ``p`` whose type or MatMul rank the graph does not state
    those of their calibrated ``values`` (a tensor without a batch axis keeps its own rank); True
    when one is then declined by ``compute_blocker`` (a 1-D MatMul input, a float64 activation):
    plan again."""
    nodes = {node_key(n): n for n in graph.nodes}
    found = False
    for key in p.compute:
        node = nodes[key]
        for t in activation_inputs(node):
            if t.name not in values:
                continue
            if t.dtype is None:
                t.dtype = np.asarray(values[t.name]).dtype
                found |= t.dtype != np.float32
            if node.op == "MatMul" and t.shape is None and np.ndim(values[t.name]) < 2:
                t.shape = [None] * np.ndim(values[t.name])
                found = True
    return found


def plan(graph: gs.Graph, exclude: set[str], activation_matmul: bool, absorb_relu: bool) -> Placement:
    """Decide placement over a toposorted graph; nodes named in ``exclude`` stay float."""
    p = Placement()
    quantized: set[str] = set()
    outputs = {t.name for t in graph.outputs}

    def add(tensor: gs.Tensor) -> None:
        if tensor.name not in quantized:
            quantized.add(tensor.name)
            p.tensors.append(tensor.name)

    for node in graph.nodes:
        key = node_key(node)
        if key in exclude or key in p.absorbed:
            continue
        if node.op in COMPUTE:
            reason = compute_blocker(node, activation_matmul)
            if reason:
                p.declines.append((key, reason))
                continue
            p.compute.append(key)
            for t in activation_inputs(node):
                add(t)
            if node.op != "MatMul":
                _quantize_output(p, node, add, outputs, absorb_relu, exclude)
        elif node.op in ARITH and node.domain in (None, "", "ai.onnx"):
            acts = activation_inputs(node)
            if acts and len(acts) == len([t for t in node.inputs if t.name]) and all(t.name in quantized for t in acts):
                p.arith.append(key)
                if node.op == "Concat":
                    add(node.outputs[0])
                    p.redirect_all.add(node.outputs[0].name)
                    for t in acts:
                        p.union(node.outputs[0].name, t.name)
                else:
                    _quantize_output(p, node, add, outputs, absorb_relu, exclude)
        elif node.op in PASS_THROUGH and node.inputs and node.inputs[0].name in quantized:
            if node.op == "Resize" and node.attrs.get("mode", "nearest") != "nearest":
                continue
            p.passthrough.append(key)
            add(node.outputs[0])
            p.union(node.inputs[0].name, node.outputs[0].name)
    # MatMul outputs read by a quantized op were added when that op was planned; the MatMul
    # must then feed its Q directly for ORT to fuse it into QLinearMatMul.
    return p


def _quantize_output(p: Placement, node: gs.Node, add, outputs: set[str], absorb_relu: bool, exclude: set[str]) -> None:
    out = node.outputs[0]
    readers = out.outputs
    if absorb_relu and out.name not in outputs and len(readers) == 1 and _is_absorbable(readers[0]) \
            and node_key(readers[0]) not in exclude:
        p.absorbed.append(node_key(readers[0]))
        out = readers[0].outputs[0]
        p.zero_clip.add(out.name)
    p.redirect_all.add(out.name)
    add(out)


def _is_absorbable(node: gs.Node) -> bool:
    if node.op == "Relu":
        return True
    if node.op != "Clip":
        return False
    lo = constant_value(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
    hi = constant_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    return lo is not None and float(lo) == 0.0 and (hi is None or float(hi) > 0.0)
