"""Small predicates and helpers over gs nodes and graphs that every pass needs, and over the
models built from them to be run."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

DEFAULT_DOMAINS = (None, "", "ai.onnx")


def is_onnx_op(node: gs.Node, *ops: str) -> bool:
    """True for a node of the default ONNX domain (gs reports it as None or ''), of one of ``ops`` if given."""
    return node.domain in DEFAULT_DOMAINS and (not ops or node.op in ops)


def sole_reader(tensor: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    """The one node reading ``tensor``, if it has exactly one reader and is not a graph output."""
    if len(tensor.outputs) != 1 or tensor in graph.outputs:
        return None
    return tensor.outputs[0]


def other_input(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor | None:
    """The input of a two-input node that is not ``tensor`` (None if ``tensor`` is not an input)."""
    if len(node.inputs) != 2:
        return None
    if node.inputs[0] is tensor:
        return node.inputs[1]
    return node.inputs[0] if node.inputs[1] is tensor else None


def subgraphs(node: gs.Node) -> list[gs.Graph]:
    """The If/Loop/Scan bodies held in ``node``'s attributes."""
    found: list[gs.Graph] = []
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            found.append(value)
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, gs.Graph))
    return found


def prefix(graph: gs.Graph, names: list[str]) -> gs.Graph:
    """A copy of ``graph`` computing only ``names`` (all inputs kept), so ORT runs just that prefix."""
    inputs = {t.name for t in graph.inputs}
    wanted = [n for n in names if n not in inputs]
    if not wanted:
        return graph
    tensors = graph.tensors()
    outputs = [tensors[n] for n in wanted]
    hit = reached(outputs)
    nodes, kept_outputs = graph.nodes, graph.outputs
    try:  # the graph holds only what the outputs reach while it is copied: only that is copied
        graph.nodes = [node for node in nodes if id(node) in hit]
        graph.outputs = outputs
        sub = copy_graph(graph)
    finally:
        graph.nodes, graph.outputs = nodes, kept_outputs
    sub.cleanup(remove_unused_graph_inputs=False)
    return sub


def between(graph: gs.Graph, given: dict[str, np.dtype], names: list[str]) -> gs.Graph:
    """A copy of ``graph`` computing ``names`` from the tensors ``given`` (name -> dtype), which
    become its inputs beside the graph inputs it still reads (``given`` tensors are not computed)."""
    tensors = graph.tensors()
    outputs = [tensors[n] for n in names if n not in given]
    hit = reached(outputs, set(given))
    read = {t.name for node in graph.nodes if id(node) in hit for t in node.inputs}
    inputs = [t for t in graph.inputs if t.name in read] + [tensors[n] for n in given if n in read]
    kept = graph.nodes, graph.inputs, graph.outputs
    try:
        graph.nodes = [node for node in kept[0] if id(node) in hit]
        graph.inputs, graph.outputs = inputs, outputs
        sub = copy_graph(graph)
    finally:
        graph.nodes, graph.inputs, graph.outputs = kept
    for t in sub.inputs:
        if t.name in given:
            t.inputs.clear()
            t.dtype, t.shape = given[t.name], None
    return sub


def has_subgraphs(graph: gs.Graph) -> bool:
    return any(subgraphs(node) for node in graph.nodes)


def downstream(nodes: list[gs.Node]) -> set[int]:
    """The ids of ``nodes`` and of every node that reads what they compute (top-level graph only)."""
    seen: set[int] = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack += [reader for t in node.outputs for reader in t.outputs]
    return seen


def reached(outputs: list[gs.Tensor], stop: set[str] = frozenset()) -> set[int]:
    """The ids of the nodes ``outputs`` depend on, up to the tensors named in ``stop``: a superset
    (a node with subgraphs reaches every tensor its bodies read), which ``cleanup`` trims. Copying
    the whole graph and leaving the rest to ``cleanup`` cost more than the runs on PP-OCRv4's refit
    prefixes: gs formats each node it removes into a log message it does not print, Constant
    values included."""
    found: set[int] = set()
    stack = [node for t in outputs if t.name not in stop for node in t.inputs]
    while stack:
        node = stack.pop()
        if id(node) in found:
            continue
        found.add(id(node))
        read = list(node.inputs)
        for body in _bodies(node):
            read += [t for n in body.nodes for t in n.inputs] + list(body.outputs)
        stack += [producer for t in read if t.name not in stop for producer in t.inputs if id(producer) not in found]
    return found


def _bodies(node: gs.Node):
    for body in subgraphs(node):
        yield body
        for inner in body.nodes:
            yield from _bodies(inner)


def copy_graph(graph: gs.Graph) -> gs.Graph:
    """``graph.copy()`` that keeps each value's ONNX type: gs copies dtype and shape only, so a
    sequence (SequenceMap's loop, node tests test_sequence_map_*) came back as a tensor without
    a shape, which the checker refuses."""
    copy = graph.copy()
    types = {t.name: t.type for g in _graphs(graph) for t in g.tensors().values() if isinstance(t, gs.Variable)}
    for g in _graphs(copy):
        for name, tensor in g.tensors().items():
            if isinstance(tensor, gs.Variable) and name in types:
                tensor.type = types[name]
    return copy


def _graphs(graph: gs.Graph):
    yield graph
    for node in graph.nodes:
        for body in subgraphs(node):
            yield from _graphs(body)


def expose_tensors(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``names`` (graph inputs are skipped)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output} | {i.name for i in exposed.graph.input}
    for name in dict.fromkeys(names):
        if name not in present:
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return exposed
