"""The result of the channel dependency analysis (``channel_deps.analyze``): sources of channels,
the groups of sources whose channels go together, and every member that changes with them; and
``ChannelPlan``, the prune-channels pass's plan: the same groups as data, with the channels kept."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.analysis.channel_layout import FIXED, Layout
from onnxslim.core.pass_base import Decline, Plan

MAX_LISTED = 8  # members named per group in the printed plan


@dataclasses.dataclass
class Source:
    id: int
    node: str
    op: str
    tensor: str
    size: int
    key: int = 0  # id() of the producer node in the analysed graph


@dataclasses.dataclass
class Member:
    """Something that changes when the channels of ``layout`` shrink.

    kind: ``param`` (slice input ``index`` of ``node`` on ``axis``), ``size`` (integer constant
    input ``index`` entry ``axis`` becomes the kept width: ``mode`` "abs" of the layout, "delta"
    old value minus the removed positions), ``attr`` (attribute ``attr`` becomes the kept width),
    ``attr_list`` (entry ``axis`` of list attribute ``attr``, same modes as ``size``).
    role: ``producer`` (the rows of a source), ``consumer`` (input columns of a layer reading the
    channels; ``tensor`` is the activation it reads on ``tensor_axis``) or ``param``.
    """

    kind: str
    node: gs.Node
    index: int
    axis: int
    layout: Layout
    role: str = "param"
    mode: str = "abs"
    attr: str | None = None
    tensor: str | None = None
    tensor_axis: int = 1

    def sources(self) -> set[int]:
        return {s.source for s in self.layout if s.source != FIXED}


@dataclasses.dataclass
class Group:
    """Channels removed together: one index set applied to every source of the group."""

    id: int
    size: int
    sources: list[Source]
    members: list[Member]
    reasons: list[str]

    @property
    def frozen(self) -> bool:
        return bool(self.reasons)

    def describe(self) -> str:
        names = list(dict.fromkeys(f"{s.op} {(s.node or s.tensor)!r}" for s in self.sources))
        producers = ", ".join(names)
        consumers = sum(1 for m in self.members if m.role == "consumer")
        edits: dict[str, list[str]] = {}
        for m in self.members:
            what = {"param": f"in{m.index}[axis {m.axis}]", "size": f"in{m.index}[{m.axis}] size",
                    "attr": m.attr, "attr_list": f"{m.attr}[{m.axis}]"}[m.kind]
            edits.setdefault(m.node.name or f"{m.node.op}->{m.node.outputs[0].name}", []).append(what)
        listed = [f"{node} {'+'.join(dict.fromkeys(w))}" for node, w in edits.items()]
        shown = "; ".join(listed[:MAX_LISTED]) + (f"; ... {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else "")
        return (f"group {self.id}: {self.size} channels, {len(names)} producer(s) [{producers}], "
                f"{consumers} consumer(s), members: {shown or 'none'}")


@dataclasses.dataclass
class Analysis:
    """Live: members hold the analysed graph's nodes (``channel_apply`` edits them); the plan
    (``ChannelPlan``) is what it decides, named."""

    sources: list[Source]
    groups: list[Group]
    members: list[Member]
    spaces: dict[str, tuple[int, Layout]]
    group_of: dict[int, int]  # source id -> group id

    def prunable(self) -> list[Group]:
        return [g for g in self.groups if not g.frozen]

    def frozen(self) -> list[Group]:
        return [g for g in self.groups if g.frozen]

    def source_keep(self, keep: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Per source id, the kept channels, from ``keep`` per group id."""
        return {sid: np.sort(np.asarray(keep[gid], np.int64)) for sid, gid in self.group_of.items() if gid in keep}

    def lines(self) -> list[str]:
        out = []
        for g in self.groups:
            state = "frozen: " + "; ".join(dict.fromkeys(g.reasons)) if g.frozen else "prunable"
            out.append(f"{g.describe()} - {state}")
        return out


@dataclasses.dataclass
class ChannelPlan(Plan):
    """``changes``: one entry per pruned group: its id, producers, width and kept channel indices
    (what ``apply`` slices); frozen groups are declines. The analysis stays in ``cache``."""

    @classmethod
    def of(cls, analysis: Analysis, keep: Mapping[int, np.ndarray], summary: dict, notes: list[str]) -> ChannelPlan:
        changes = [{"where": where(g), "group": g.id, "channels": g.size, "keep": [int(i) for i in keep[g.id]]}
                   for g in analysis.prunable() if g.id in keep]
        declines = [Decline(where(g), "; ".join(g.reasons)) for g in analysis.frozen()]
        return cls("prune-channels", changes, declines, summary=summary, notes=notes,
                   cache={"analysis": analysis})

    def keep(self) -> dict[int, np.ndarray]:
        """Group id -> the channels it keeps."""
        return {c["group"]: np.asarray(c["keep"], np.int64) for c in self.changes}


def where(group: Group) -> str:
    """A group named by its producers (at most four)."""
    names = list(dict.fromkeys(s.node or f"{s.op}->{s.tensor}" for s in group.sources))
    return ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
