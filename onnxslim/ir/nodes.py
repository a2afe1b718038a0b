"""Small predicates over gs nodes that every pass needs."""

from __future__ import annotations

import onnx_graphsurgeon as gs

DEFAULT_DOMAINS = (None, "", "ai.onnx")


def is_onnx_op(node: gs.Node, *ops: str) -> bool:
    """True for a node of the default ONNX domain (gs reports it as None or ''), of one of ``ops`` if given."""
    return node.domain in DEFAULT_DOMAINS and (not ops or node.op in ops)


def subgraphs(node: gs.Node) -> list[gs.Graph]:
    """The If/Loop/Scan bodies held in ``node``'s attributes."""
    found: list[gs.Graph] = []
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            found.append(value)
        elif isinstance(value, list):
            found.extend(v for v in value if isinstance(v, gs.Graph))
    return found
