"""What a lossy pass needs before it runs, and what it must not leave behind.

A lossy pass declares the clean graph it needs (``Pass.requires``, as onnx-ir's passes declare
theirs): quantize needs BatchNormalization folded into its convolutions (ONNX Runtime cannot fuse
a BN between an integer Conv and its readers), the pruning passes need weights whose magnitudes
are comparable across channels (BN folded), and all of them need constants folded and dead nodes
gone. The manager runs the required passes that have not run yet in the pipeline, before the
lossy pass, and records each as inserted; required passes are exact, so this never changes what
the model computes beyond the ``exact`` budget.

A lossy pass that rewrites a weight held by a ``Constant`` node (Paddle and older exporters)
points its reader at a new tensor; the Constant node it read before is dead, and written to the
file it would double that weight's bytes (prune-channels on a recognizer with Constant-node weights
wrote 1.35x the original's size). The manager drops those nodes after every lossy pass.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

#: the clean graph every lossy pass starts from
CLEAN = ("remove-identity", "fold-constants", "fold-bn", "dce")


def missing(required: tuple[str, ...], done: set[str]) -> list[str]:
    """The required pass names that have not run yet, in the order they are required."""
    return [name for name in required if name not in done]


def read_constant_nodes(graph: gs.Graph) -> set[int]:
    """ids of the Constant nodes whose value something reads (a node or a graph output)."""
    outputs = {id(t) for t in graph.outputs}
    return {id(n) for n in graph.nodes
            if n.op == "Constant" and any(t.outputs or id(t) in outputs for t in n.outputs)}


def drop_orphaned_constants(graph: gs.Graph, read_before: set[int]) -> int:
    """Remove the Constant nodes that were read before a pass and no longer are; returns how many."""
    still_read = read_constant_nodes(graph)
    dead = {id(n) for n in graph.nodes if n.op == "Constant" and id(n) in read_before and id(n) not in still_read}
    for node in graph.nodes:
        if id(node) in dead:
            node.outputs.clear()
    graph.nodes = [n for n in graph.nodes if id(n) not in dead]
    return len(dead)
