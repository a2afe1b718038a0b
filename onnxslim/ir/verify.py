"""Structural verification of a graph after a pass, before the (more expensive) checker.

Catches what a buggy rewrite typically leaves behind: a tensor produced twice, a node reading
a tensor nothing produces, a graph output left dangling, a cycle.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxslim.errors import VerificationError
from onnxslim.ir.nodes import subgraphs


def verify_structure(graph: gs.Graph, outer: set[str] | None = None, where: str = "graph") -> None:
    """Raise ``VerificationError`` naming the first broken invariant."""
    available = set(outer or ())
    available.update(t.name for t in graph.inputs)
    available.update(t.name for t in graph.tensors().values() if isinstance(t, gs.Constant))
    produced: set[str] = set()
    for node in graph.nodes:
        for out in node.outputs:
            if out.name in produced:
                raise VerificationError(f"{where}: tensor {out.name!r} is produced twice")
            produced.add(out.name)
    try:
        graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
    except Exception as exc:  # gs raises a bare Exception on cycles
        raise VerificationError(f"{where}: the graph has a cycle ({exc})") from None
    known = available | produced
    for node in graph.nodes:
        for tensor in node.inputs:
            if tensor.name and tensor.name not in known:
                raise VerificationError(f"{where}: node {node.name!r} reads {tensor.name!r}, which nothing produces")
        for sub in subgraphs(node):
            verify_structure(sub, known, f"{where}/{node.name}")
    for out in graph.outputs:
        if out.name not in known:
            raise VerificationError(f"{where}: output {out.name!r} is not produced")
