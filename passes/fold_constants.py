"""fold-constants: evaluate nodes whose inputs are all constant, with a size guard.

The constant part of the graph is evaluated once with ONNX Runtime (optimizations off) and
each tensor where it meets the rest of the graph becomes a constant. A fold is applied only
if it does not grow the model: the folded tensor may be no larger than the constants and nodes
it makes dead (onnxsim's folding of a Tile or Expand can grow a model 10x). ``Shape`` of a
tensor whose shape is fully static folds too. Random ops, Q/DQ, nodes with subgraphs and
custom domains are never folded; subgraph bodies are left as they are.

Shape computations fold where the shapes fix them, before the constant cone is evaluated:
onnx's shape inference computes every tensor's shape from the graph inputs (never from the
shapes an exporter declared), and ``onnxslim.ir.shapes.shape_values`` follows the values of
Shape → Gather/Slice/Concat/Unsqueeze/... element by element. ``Shape(x)`` of ``x: [N, 3, 48,
W]`` gathered at 1 and 2 becomes the constant ``[3, 48]`` while the gathers of ``N`` and ``W``
stay: dynamic dims stay dynamic. What then has only constant inputs (a Concat of known parts,
a ConstantOfShape of a known shape) folds like any constant, under the same size guard.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassOptions, PassResult, option
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op, subgraphs
from onnxslim.ir.shapes import computed_shapes, shape_values
from onnxslim.ir.weights import constant_value

logger = logging.getLogger(__name__)

NEVER_FOLD = {
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Constant",
}
NODE_BYTES = 64  # rough serialized size of a node: what removing one saves


@dataclasses.dataclass(frozen=True)
class FoldConstantsOptions(PassOptions):
    max_growth_bytes: int = option(0, "bytes a fold may add to the model (0: a fold must not grow it)")

    def validate(self) -> None:
        if self.max_growth_bytes < 0:
            raise self.error("max_growth_bytes", f"must be >= 0, got {self.max_growth_bytes}")


@register_pass
class FoldConstants(Pass):
    """Evaluate constant subgraphs ahead of time, unless that grows the model."""

    name = "fold-constants"
    Options = FoldConstantsOptions

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        shape_folded = _fold_shape_values(graph, ctx)
        cone = _foldable_nodes(graph)
        if not cone:
            if shape_folded:
                _cleanup(graph)
            return PassResult(modified=shape_folded > 0, stats={"folded": 0, "shape_folded": shape_folded})
        boundary = [t for n in graph.nodes if id(n) in cone for t in n.outputs if _read_outside(t, cone, graph)]
        values = _evaluate(graph, cone, boundary, ctx)
        folded, saved = 0, 0
        declines: list[Decline] = []
        keep = _if_condition_cone(graph)
        for tensor in boundary:
            value = values.get(tensor.name)
            if value is None:
                declines.append(Decline(tensor.name, "ONNX Runtime could not evaluate it"))
                continue
            if tensor in graph.outputs or tensor.name in keep:
                continue  # a graph output must stay the output of a node; an If condition: see the top
            freed = _freed_bytes(tensor, cone)
            if value.nbytes > freed + self.options.max_growth_bytes:
                declines.append(Decline(tensor.name, f"folding would grow the model ({value.nbytes} bytes for {freed})"))
                continue
            _replace_with_constant(tensor, value)
            folded += 1
            saved += freed - value.nbytes
        if folded or shape_folded:
            _cleanup(graph)
        return PassResult(modified=folded + shape_folded > 0,
                          stats={"folded": folded, "shape_folded": shape_folded, "bytes_saved": saved}, declines=declines)


def _cleanup(graph: gs.Graph) -> None:
    graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=False, remove_unused_graph_inputs=False)


def _fold_shape_values(graph: gs.Graph, ctx: PassContext) -> int:
    """Replace the shape-computation tensors whose values the computed shapes fix by constants.

    Only the frontier is replaced (a known tensor some node reads that is not itself known);
    what feeds it becomes dead. A graph output stays the output of its node.
    """
    if not any(is_onnx_op(n, "Shape", "Size") for n in graph.nodes):
        return 0
    graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
    known = shape_values(graph, computed_shapes(graph, ctx.template))
    tensors = graph.tensors()
    keep = _if_condition_cone(graph)
    frontier = [name for name, value in known.items()
                if tensors[name] not in graph.outputs and name not in keep
                and any(not all(o.name in known for o in reader.outputs) for reader in tensors[name].outputs)]
    for name in frontier:
        _replace_with_constant(tensors[name], known[name])
    return len(frontier)


def _foldable_nodes(graph: gs.Graph) -> set[int]:
    """Nodes whose every input is constant, directly or through other foldable nodes."""
    graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
    const_out: set[str] = set()
    cone: set[int] = set()
    for node in graph.nodes:
        if node.op == "Constant":
            if all(constant_value(t) is not None for t in node.outputs):  # bf16 and friends stay as they are
                const_out.update(t.name for t in node.outputs)
            continue
        if not _foldable_op(node):
            continue
        if node.inputs and all(not t.name or t.name in const_out or constant_value(t) is not None for t in node.inputs):
            cone.add(id(node))
            const_out.update(t.name for t in node.outputs)
    return cone


def _foldable_op(node: gs.Node) -> bool:
    return is_onnx_op(node) and node.op not in NEVER_FOLD and not subgraphs(node)


def _if_condition_cone(graph: gs.Graph) -> set[str]:
    """Names of the tensors an If's condition is computed from, the condition included."""
    names: set[str] = set()
    stack = [n.inputs[0] for n in graph.nodes if is_onnx_op(n, "If") and n.inputs]
    while stack:
        tensor = stack.pop()
        if tensor.name in names:
            continue
        names.add(tensor.name)
        for producer in tensor.inputs:
            stack.extend(producer.inputs)
    return names


def _read_outside(tensor: gs.Tensor, cone: set[int], graph: gs.Graph) -> bool:
    return tensor in graph.outputs or any(id(c) not in cone for c in tensor.outputs)


def _evaluate(graph: gs.Graph, cone: set[int], boundary: list[gs.Tensor], ctx: PassContext) -> dict[str, np.ndarray]:
    """Run the constant cone once in ONNX Runtime and return the boundary tensors' values."""
    values: dict[str, np.ndarray] = {}
    nodes = [n for n in graph.nodes if id(n) in cone]
    protos, initializers = [], {}
    for node in nodes:
        protos.append(OnnxExporter.export_node(node))
        for t in node.inputs:
            if t.name and t.name not in initializers and (t.name in values or not (t.inputs and id(t.inputs[0]) in cone)):
                value = values.get(t.name)
                initializers[t.name] = value if value is not None else constant_value(t)
    wanted = [t.name for t in boundary if t.name not in values]
    if not protos or not wanted:
        return values
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            protos, "constant_cone", [], [onnx.helper.make_empty_tensor_value_info(n) for n in wanted],
            [onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in initializers.items()],
        ),
        opset_imports=list(ctx.template.opset_import),
        ir_version=ctx.template.ir_version,
    )
    try:
        values.update(ctx.session(model, optimize=False, on_target=False).run({}))
    except Exception as exc:  # noqa: BLE001 - an op ORT cannot run on constants is simply not folded
        logger.info("fold-constants: could not evaluate the constant subgraph: %s", exc)
    return values


def _freed_bytes(tensor: gs.Tensor, cone: set[int]) -> int:
    """Bytes of the constants and nodes that only exist to compute ``tensor``."""
    freed = 0
    stack = [tensor]
    seen: set[int] = set()
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t is not tensor and any(id(c) not in cone for c in t.outputs):
            continue  # still read elsewhere: stays in the model
        value = constant_value(t) if isinstance(t, gs.Constant) or (t.inputs and t.inputs[0].op == "Constant") else None
        if value is not None:
            freed += value.nbytes
            if t.inputs:
                freed += NODE_BYTES
            continue
        if t.inputs and id(t.inputs[0]) in cone:
            freed += NODE_BYTES
            stack.extend(t.inputs[0].inputs)
    return freed


def _replace_with_constant(tensor: gs.Tensor, value: np.ndarray) -> None:
    producer = tensor.inputs[0]
    index = producer.outputs.index(tensor)
    producer.outputs[index] = gs.Variable(f"{tensor.name}__folded_away")
    # np.require, not np.ascontiguousarray: the latter turns a 0-d scalar into shape [1], and
    # ops such as Range refuse that. A folded value keeps its exact shape and dtype.
    constant = gs.Constant(tensor.name, np.require(value, requirements="C"))
    for consumer in list(tensor.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is tensor:
                consumer.inputs[i] = constant
