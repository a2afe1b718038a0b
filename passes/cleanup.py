"""dce: remove nodes whose outputs nothing reads, and constants nothing uses.

Graph inputs and outputs are never removed. Nodes inside If/Loop/Scan bodies are cleaned too;
a tensor a subgraph reads from the outer scope counts as used.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.registry import register_pass
from onnxslim.ir.nodes import subgraphs


@register_pass
class DeadCodeElimination(Pass):
    """Remove unused nodes and unused constant tensors."""

    name = "dce"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        nodes_before = count_nodes(graph)
        consts_before = count_constants(graph)
        graph.cleanup(remove_unused_node_outputs=False, recurse_subgraphs=True, remove_unused_graph_inputs=False)
        removed_nodes = nodes_before - count_nodes(graph)
        removed_consts = consts_before - count_constants(graph)
        return PassResult(
            modified=bool(removed_nodes or removed_consts),
            stats={"removed_nodes": removed_nodes, "removed_constants": removed_consts},
        )


def count_nodes(graph: gs.Graph) -> int:
    total = 0
    for node in graph.nodes:
        total += 1 + sum(count_nodes(sub) for sub in subgraphs(node))
    return total


def count_constants(graph: gs.Graph) -> int:
    return sum(1 for t in graph.tensors().values() if isinstance(t, gs.Constant))
