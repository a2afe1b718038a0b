"""Apply a channel plan: the only step of channel pruning that changes the graph.

Every member of a pruned group is sliced to the kept positions (weights, biases, normalization
parameters), integer shape constants and ``group``/size attributes are rewritten, and each
changed constant becomes a new tensor, so a weight shared with another node is never edited.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.analysis.channel_layout import kept_positions, width
from onnxslim.analysis.channel_plan import Member, Analysis
from onnxslim.ir.linear import write_input
from onnxslim.ir.weights import constant_value


def apply_plan(graph: gs.Graph, plan: Analysis, keep: Mapping[int, np.ndarray]) -> dict[str, int]:
    """Remove every channel not in ``keep[group id]``; returns counts of what changed."""
    src_keep = plan.source_keep(keep)
    params: dict[tuple[int, int], tuple[gs.Node, int, list[tuple[int, np.ndarray]]]] = {}
    sizes: dict[tuple[int, int], tuple[gs.Node, list[Member]]] = {}
    stats = {"params_sliced": 0, "shape_constants": 0, "attributes": 0}
    for m in plan.members:
        if not any(s in src_keep for s in m.sources()):
            continue
        if m.kind == "param":
            entry = params.setdefault((id(m.node), m.index), (m.node, m.index, []))
            if all(axis != m.axis for axis, _ in entry[2]):  # the same slice declared twice applies once
                entry[2].append((m.axis, kept_positions(m.layout, src_keep)))
        elif m.kind == "size":
            sizes.setdefault((id(m.node), m.index), (m.node, []))[1].append(m)
        else:
            old = m.node.attrs[m.attr] if m.kind == "attr" else list(m.node.attrs[m.attr])
            if m.kind == "attr":
                m.node.attrs[m.attr] = _new_size(int(old), m, src_keep)
            else:
                old[m.axis] = _new_size(int(old[m.axis]), m, src_keep)
                m.node.attrs[m.attr] = old
            stats["attributes"] += 1
    for node, index, slices in params.values():
        value = constant_value(node.inputs[index])
        for axis, positions in slices:
            value = np.take(value, positions, axis=axis)
        write_input(graph, node, index, value, "pruned")
        stats["params_sliced"] += 1
    for node, edits in sizes.values():
        value = np.array(constant_value(node.inputs[edits[0].index]), copy=True)
        flat = value.reshape(-1)
        for m in edits:
            flat[m.axis] = _new_size(int(flat[m.axis]), m, src_keep)
        write_input(graph, node, edits[0].index, value, "pruned")
        stats["shape_constants"] += 1
    return stats


def _new_size(old: int, m: Member, src_keep: Mapping[int, np.ndarray]) -> int:
    kept = len(kept_positions(m.layout, src_keep))
    if m.mode == "abs":
        return kept
    return old - (width(m.layout) - kept)
