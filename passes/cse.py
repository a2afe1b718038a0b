"""cse: common-subexpression elimination — compute each distinct value once.

Two nodes with the same op, domain, attributes and the very same input tensors compute the
same outputs (every standard op is a function of its inputs), so the later one is removed and
its readers read the earlier one's outputs. Constants with equal dtype, shape and bytes
(initializers, and ``Constant`` nodes by their value) are merged the same way, so that nodes
reading twin constants then merge too. Nodes are visited in topological order, which makes
one sweep reach whole repeated chains (``Shape → Gather → Unsqueeze`` computed per layer).

Never merged: random ops (two draws differ), nodes holding a subgraph, ops outside the
default ONNX domain (their semantics are not ours to assume), and a node whose outputs
include a graph output when the twin's output is one too (two outputs cannot become one).
Constants are compared by a hash of their bytes only when another constant has the same
dtype, shape and a strided sample of values, and only up to ``MAX_HASHED_BYTES``: cheap on
any model size.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import is_onnx_op, subgraphs
from onnxslim.ir.refs import FileValues
from onnxslim.passes.remove_identity import alias_blocker, bypass, drop_detached, swap_input

RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
MAX_HASHED_BYTES = 16 << 20


@register_pass
class CommonSubexpressionElimination(Pass):
    """Merge identical nodes and identical constants."""

    name = "cse"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        merged_constants = _merge_constants(graph)
        graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
        seen: dict[Any, gs.Node] = {}
        merged_nodes = 0
        for node in list(graph.nodes):
            key = _node_key(node)
            if key is None:
                continue
            twin = seen.get(key)
            if twin is None:
                seen[key] = node
                continue
            if _merge(node, twin, graph):
                merged_nodes += 1
        if merged_nodes or merged_constants:
            drop_detached(graph)
            graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=False, remove_unused_graph_inputs=False)
        return PassResult(modified=bool(merged_nodes or merged_constants),
                          stats={"merged_nodes": merged_nodes, "merged_constants": merged_constants})


def _merge(node: gs.Node, twin: gs.Node, graph: gs.Graph) -> bool:
    """Remove ``node``, its readers reading ``twin``'s outputs; False where that would break the interface."""
    pairs = list(zip(node.outputs, twin.outputs))
    for out, source in pairs:
        if out in graph.outputs and (alias_blocker(out, source, graph) or source in graph.outputs):
            return False
    node.inputs.clear()
    node.outputs.clear()
    for out, source in pairs:
        if out.name:
            bypass(node, out, source, graph)
    return True


def _node_key(node: gs.Node) -> Any:
    if not is_onnx_op(node) or node.op in RANDOM_OPS or subgraphs(node) or not node.outputs:
        return None
    if node.op == "Constant" and "value" in node.attrs:
        return None  # merged by value in _merge_constants
    try:
        attrs = tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items()))
    except TypeError:
        return None
    inputs = tuple(id(t) if t.name else None for t in node.inputs)
    return node.op, node.domain or "", inputs, attrs, len(node.outputs)


def _attr_key(value: Any) -> Any:
    if isinstance(value, gs.Constant):
        return ("tensor", *_value_key(value))
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, (int, float, str, bytes)) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, np.ndarray):
        return ("array", str(value.dtype), value.shape, value.tobytes())
    raise TypeError(f"no key for attribute of type {type(value).__name__}")


def _value_key(constant: gs.Constant) -> tuple:
    _shape_key(constant)
    values = np.asarray(constant.values)
    if values.nbytes > MAX_HASHED_BYTES:
        raise TypeError("too large to hash")
    return str(values.dtype), values.shape, hashlib.blake2b(np.ascontiguousarray(values).tobytes(), digest_size=16).digest()


def _merge_constants(graph: gs.Graph) -> int:
    """Merge initializers, and ``Constant`` nodes, holding the same dtype, shape and bytes."""
    initializers: dict[str, gs.Constant] = {}
    for node in graph.nodes:
        for t in node.inputs:
            if isinstance(t, gs.Constant) and t.name not in initializers and t not in graph.outputs:
                initializers[t.name] = t
    canonical = _twins([(t, t) for t in initializers.values()])
    for node in graph.nodes:
        for t in list(node.inputs):
            if id(t) in canonical:
                swap_input(node, t, canonical[id(t)])
    constant_nodes = [(n, n.attrs["value"]) for n in graph.nodes
                      if is_onnx_op(n, "Constant") and isinstance(n.attrs.get("value"), gs.Constant)]
    merged_nodes = sum(_merge(node, twin, graph) for node, twin in _twin_pairs(constant_nodes))
    return len(canonical) + merged_nodes


def _twin_pairs(items: list[tuple[Any, gs.Constant]]) -> list[tuple[Any, Any]]:
    twins = _twins(items)
    return [(obj, twins[id(obj)]) for obj, _ in items if id(obj) in twins]


def _twins(items: list[tuple[Any, gs.Constant]]) -> dict[int, Any]:
    """id(obj) -> the first obj whose constant has the same value, for every later duplicate.

    Staged so that weights are rarely read in full: grouped by dtype and shape, then by a
    strided sample of at most 256 elements, and only then by a hash of all the bytes.
    """
    twins: dict[int, Any] = {}
    for stage in (_shape_key, _sample_key, _value_key):
        groups: dict[Any, list[tuple[Any, gs.Constant]]] = {}
        for obj, constant in items:
            try:
                key = (_shape_key(constant), stage(constant))
            except TypeError:
                continue
            groups.setdefault(key, []).append((obj, constant))
        items = [item for group in groups.values() if len(group) > 1 for item in group]
        if stage is _value_key:
            for group in groups.values():
                for obj, _ in group[1:]:
                    twins[id(obj)] = group[0][0]
    return twins


def _shape_key(constant: gs.Constant) -> tuple:
    if isinstance(constant.dtype, int):
        raise TypeError("type numpy cannot hold")  # bf16 and friends: left alone
    return str(np.dtype(constant.dtype)), tuple(constant.shape)


def _sample_key(constant: gs.Constant) -> bytes:
    size = int(np.prod(constant.shape))
    if isinstance(constant._values, FileValues):  # a weight not read yet is sampled in its file
        return constant._values.strided(max(1, size // 256)).tobytes()
    flat = np.asarray(constant.values).reshape(-1)
    return flat[:: max(1, flat.size // 256)].tobytes()
