"""Test helpers for channel pruning: random small networks, the soft-pruned reference, ORT runs.

``soft_prune`` zeroes the removed channels in the original model instead of removing them:
producer rows and biases, normalization scale and shift, per-channel constants. With ReLU-like
activations (f(0) = 0) the removed channels are then exactly zero everywhere, so the pruned
model must compute the same outputs as the soft-pruned one, to fp32 round-off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from onnxslim.analysis.channel_apply import apply_plan
from onnxslim.analysis.channel_layout import kept_positions
from onnxslim.analysis.channel_plan import Analysis
from onnxslim.ir.io import to_graph, to_model
from onnxslim.ir.weights import constant_value, replace_input
from onnxslim.runtime.session import make_session

OPSET = 17


class NetBuilder:
    """Builds NCHW conv networks node by node with seeded weights."""

    def __init__(self, rng: np.random.Generator, c_in: int = 3, hw: int = 6, const_nodes: bool = False) -> None:
        self.rng, self.nodes, self.inits = rng, [], []
        self.const_nodes = const_nodes
        self.c_in, self.hw = c_in, hw
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def weight(self, array: np.ndarray, base: str = "w") -> str:
        name = self.name(base)
        array = np.asarray(array, np.float32)
        if self.const_nodes:  # Paddle style: weights are Constant node outputs
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name + "_v")))
        else:
            self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op: str, inputs: Sequence[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=self.name(f"/{op}"), **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, bias: bool = True) -> str:
        w = self.weight(self.rng.normal(0, 0.5, (c_out, c_in // group, k, k)))
        inputs = [x, w] + ([self.weight(self.rng.normal(0, 0.1, c_out), "b")] if bias else [])
        return self.op("Conv", inputs, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)

    def bn(self, x: str, c: int) -> str:
        params = [self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.1, c), self.rng.normal(0, 0.1, c),
                  self.rng.uniform(0.5, 1.5, c)]
        return self.op("BatchNormalization", [x] + [self.weight(p, "bn") for p in params])

    def conv_bn_relu(self, x: str, c_in: int, c_out: int, k: int = 3, group: int = 1, use_bn: bool = True) -> str:
        y = self.conv(x, c_in, c_out, k, group, bias=not use_bn)
        return self.op("Relu", [self.bn(y, c_out) if use_bn else y])

    def gemm(self, x: str, k: int, n: int, trans_b: int = 1) -> str:
        shape = (n, k) if trans_b else (k, n)
        w = self.weight(self.rng.normal(0, 0.3, shape))
        b = self.weight(self.rng.normal(0, 0.1, n), "b")
        return self.op("Gemm", [x, w, b], transB=trans_b)

    def model(self, out: str, out_shape: Sequence[int | str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "net",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", self.c_in, self.hw, self.hw])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def random_net(rng: np.random.Generator, blocks: Sequence[str], width: int, head: str,
               const_nodes: bool = False) -> onnx.ModelProto:
    """A chain of blocks: conv | residual | concat | depthwise | multiplier | grouped | bnconv | scale, then a head."""
    b = NetBuilder(rng, const_nodes=const_nodes)
    x, c = b.conv_bn_relu("x", 3, width, use_bn=False), width
    for kind in blocks:
        if kind == "conv":
            x, c = b.conv_bn_relu(x, c, c + 2, use_bn=False), c + 2
        elif kind == "bnconv":
            x = b.conv_bn_relu(x, c, c, use_bn=True)
        elif kind == "residual":
            y = b.conv_bn_relu(x, c, c, use_bn=False)
            y = b.conv(y, c, c)
            x = b.op("Relu", [b.op("Add", [x, y])])
        elif kind == "concat":
            left = b.conv_bn_relu(x, c, 3, k=1, use_bn=False)
            right = b.conv_bn_relu(x, c, c, use_bn=False)
            x, c = b.op("Concat", [left, right], axis=1), c + 3
        elif kind == "depthwise":
            x = b.conv_bn_relu(x, c, c, group=c, use_bn=False)
        elif kind == "multiplier":  # depthwise with two filters per channel
            x, c = b.conv_bn_relu(x, c, 2 * c, group=c, use_bn=False), 2 * c
        elif kind == "grouped":  # two groups (the width is made even first)
            if c % 2:
                x, c = b.conv_bn_relu(x, c, c + 1, k=1, use_bn=False), c + 1
            x, c = b.conv_bn_relu(x, c, c + 2, group=2, use_bn=False), c + 2
        elif kind == "scale":  # per-channel constant Mul and Add
            x = b.op("Mul", [x, b.weight(rng.uniform(0.5, 2.0, (c, 1, 1)), "s")])
            x = b.op("Add", [x, b.weight(rng.normal(0, 0.1, (1, c, 1, 1)), "t")])
    if head == "flatten":  # each channel becomes hw*hw features of the Gemm
        x = b.op("Flatten", [x], axis=1)
        out = b.gemm(x, c * b.hw * b.hw, 4)
    else:
        x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
        out = b.gemm(x, c, 4)
    return b.model(out, ["N", 4])


def soft_prune_graph(graph: gs.Graph, plan: Analysis, keep: Mapping[int, np.ndarray]) -> None:
    """Zero, in ``graph`` (the one ``plan`` was built from), every channel not kept."""
    src_keep = plan.source_keep(keep)
    for m in plan.members:
        if m.kind != "param" or m.role == "consumer" or not any(s in src_keep for s in m.sources()):
            continue
        if m.node.op == "BatchNormalization" and m.index in (3, 4):
            continue  # mean and var: with scale and shift zeroed the channel is 0 whatever they are
        value = np.array(constant_value(m.node.inputs[m.index]), copy=True)
        dropped = np.setdiff1d(np.arange(value.shape[m.axis]), kept_positions(m.layout, src_keep))
        index = [slice(None)] * value.ndim
        index[m.axis] = dropped
        value[tuple(index)] = 0
        replace_input(graph, m.node, m.index, value, "soft")


def hard_and_soft(model: onnx.ModelProto, analyze_fn, keep_fn) -> tuple[onnx.ModelProto, onnx.ModelProto, Analysis, dict]:
    """Analyse two imports of ``model``; hard-prune one, soft-prune the other, with the same keep."""
    hard_graph, soft_graph = to_graph(model), to_graph(model)
    hard_plan, soft_plan = analyze_fn(hard_graph), analyze_fn(soft_graph)
    keep = keep_fn(hard_plan)
    apply_plan(hard_graph, hard_plan, keep)
    soft_prune_graph(soft_graph, soft_plan, keep)
    for g in (hard_graph, soft_graph):
        io = {id(t) for t in [*g.inputs, *g.outputs]}
        for t in g.tensors().values():
            if isinstance(t, gs.Variable) and id(t) not in io:
                t.shape = None
        g.toposort()
    return to_model(hard_graph, model), to_model(soft_graph, model), hard_plan, keep


def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], optimize: bool = False) -> list[np.ndarray]:
    return make_session(model, optimize=optimize).run(None, dict(feeds))


def feeds(rng: np.random.Generator, n: int = 2, c: int = 3, hw: int = 6) -> dict[str, np.ndarray]:
    return {"x": rng.normal(0, 1, (n, c, hw, hw)).astype(np.float32)}
