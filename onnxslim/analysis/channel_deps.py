"""Channel dependency analysis: which channels of an ONNX graph must be removed together.

A *source* is a channel space created by one layer: the output channels of a Conv with
group=1, of a ConvTranspose, or the output features of a Gemm/MatMul with a constant weight.
Every other tensor on a channel path carries a *layout* along its channel axis: a sequence of
segments, each the channels of one source, every channel spanning ``inner`` consecutive
positions (``inner`` > 1 after Flatten/Reshape merges C×H×W into one axis; the index map of
channel ``c`` is ``offset + c·inner + [0, inner)``; Concat joins segments, Split/Slice cut them).

Per-op rules (``channel_rules``) propagate layouts in topological order and declare:

* unions: an elementwise op between two activations makes their sources one *group*
  (union-find; a residual Add couples every producer in its block). When the two layouts do not
  line up segment for segment, the coupled sources are first *split* at the other side's offsets
  (a residual Add over a Concat: the producer's channels 0..k-1 follow one Concat input, the rest
  the other) or *coarsened* (after a depthwise Conv with a channel multiplier m, channel c spans
  m positions, so the other side's channels go m at a time); a split or coarsened source is
  retired and layouts are expanded into its parts whenever they are read. Grouped convolutions
  use the same mechanism: their blocks are split apart and unified, so that every group keeps
  the same local channels;
* members: what must shrink when a group's channels go: weight/bias/normalization slices on
  an axis, integer shape constants (Reshape, Split, Slice, Resize), the ``group`` attribute of a
  depthwise Conv; and *consumers*: layers that read the channels on their input axis (their
  weights lose columns; recovery refits them);
* blockers: a reason that freezes every source of a layout. Fail closed: an op with no rule,
  a graph input or output on the path, a reshape that is not a plain flatten or whose shape is
  not constant, a grouped Conv, and so on.

``analyze`` is pure (reads the graph, returns an ``Analysis``); ``channel_apply.apply_plan`` is the
only mutation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.analysis.channel_layout import FIXED, Layout, Segment, aligned, segment_cuts, width
from onnxslim.analysis.channel_plan import Analysis, Group, Member, Source
from onnxslim.analysis.channel_rules import ALL_OPERANDS, RULES, no_rule
from onnxslim.ir.weights import constant_value


class Builder:
    """What the rules see: spaces of tensors, constants, shapes, and the plan being built."""

    def __init__(self, graph: gs.Graph, shapes: Mapping[str, Sequence[Any]]) -> None:
        self.graph = graph
        self.shapes = shapes
        self.sources: list[Source] = []
        self.parent: list[int] = []
        self.reasons: dict[int, list[str]] = defaultdict(list)
        self.members: list[Member] = []
        self.spaces: dict[str, tuple[int, Layout]] = {}
        self.shape_exprs: dict[str, list[Any]] = {}
        self.split: dict[int, list[int]] = {}  # a source cut into consecutive sub-sources
        self.coarse: dict[int, tuple[int, int]] = {}  # a source regrouped as (new source, channels per new channel)

    # ---- spaces -------------------------------------------------------------------------
    def space(self, tensor: gs.Tensor) -> tuple[int, Layout] | None:
        space = self.spaces.get(tensor.name) if tensor is not None and tensor.name else None
        return (space[0], self.expand(space[1])) if space else None

    def expand(self, layout: Layout) -> Layout:
        """``layout`` with every split source replaced by its sub-sources."""
        if not self.split and not self.coarse:
            return layout
        out: list[Segment] = []
        for seg in layout:
            if seg.source in self.split:
                subs = [Segment(sub, self.sources[sub].size, seg.inner) for sub in self.split[seg.source]]
                out.extend(self.expand(tuple(subs)))
            elif seg.source in self.coarse:
                new, factor = self.coarse[seg.source]
                out.extend(self.expand((Segment(new, seg.size // factor, seg.inner * factor),)))
            else:
                out.append(seg)
        return tuple(out)

    def retired(self, sid: int) -> bool:
        return sid in self.split or sid in self.coarse

    def set_space(self, tensor: gs.Tensor, axis: int, layout: Layout) -> None:
        if tensor is not None and tensor.name and layout:
            self.spaces[tensor.name] = (axis, layout)

    def new_source(self, node: gs.Node, tensor: gs.Tensor, size: int) -> Layout:
        sid = len(self.sources)
        self.sources.append(Source(sid, node.name, node.op, tensor.name, int(size), id(node)))
        self.parent.append(sid)
        return (Segment(sid, int(size)),)

    # ---- union-find ---------------------------------------------------------------------
    def find(self, sid: int) -> int:
        while self.parent[sid] != sid:
            self.parent[sid] = self.parent[self.parent[sid]]
            sid = self.parent[sid]
        return sid

    def union(self, a: int, b: int, where: str) -> None:
        if a == FIXED and b == FIXED:
            return
        if a == FIXED or b == FIXED:
            self.freeze_source(b if a == FIXED else a, f"{where} adds these channels to channels that are never pruned")
            return
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def unify(self, a: Layout, b: Layout, where: str) -> bool:
        a, b = self.expand(a), self.expand(b)
        if not aligned(a, b) and width(a) == width(b):
            cuts = segment_cuts(a) | segment_cuts(b)  # e.g. a residual Add over a Concat: cut producers at the offsets
            a, b = self.refine(a, cuts), self.refine(b, cuts)
        if not aligned(a, b) and len(a) == len(b) and all(x.width == y.width for x, y in zip(a, b)):
            for x, y in zip(a, b):  # e.g. a depthwise multiplier output: channel c spans 2 positions
                fine, coarse = (x, y) if x.inner < y.inner else (y, x)
                if fine.inner != coarse.inner and coarse.inner % fine.inner == 0 and fine.source != FIXED:
                    self.coarsen_group(fine.source, coarse.inner // fine.inner)
            a, b = self.expand(a), self.expand(b)
        if aligned(a, b):
            for x, y in zip(a, b):
                self.union(x.source, y.source, where)
            return True
        self.freeze(a, f"{where} couples channel layouts that do not line up")
        self.freeze(b, f"{where} couples channel layouts that do not line up")
        return False

    def refine(self, layout: Layout, cuts: set[int]) -> Layout:
        """Cut the segments of ``layout`` at the positions ``cuts`` (splitting whole groups of sources)."""
        out: list[Segment] = []
        pos = 0
        for seg in layout:
            inside = sorted(c - pos for c in cuts if pos < c < pos + seg.width)
            pos += seg.width
            if not inside or any(c % seg.inner for c in inside):
                out.append(seg)  # a cut inside one channel's positions cannot be honoured: stays misaligned
                continue
            offsets = [c // seg.inner for c in inside]
            sizes = [hi - lo for lo, hi in zip([0, *offsets], [*offsets, seg.size])]
            if seg.source == FIXED:
                out.extend(Segment(FIXED, n, seg.inner) for n in sizes)
                continue
            self.split_group(seg.source, sizes)
            out.extend(self.expand((seg,)))
        return tuple(out)

    def coarsen_group(self, sid: int, factor: int) -> None:
        """Regroup ``sid`` and its unified sources so that ``factor`` consecutive channels go together."""
        root = self.find(sid)
        peers = [s.id for s in self.sources if not self.retired(s.id) and self.find(s.id) == root]
        if any(self.sources[p].size % factor for p in peers):
            return
        new_ids = []
        for peer in peers:
            src = self.sources[peer]
            new = len(self.sources)
            self.sources.append(Source(new, src.node, src.op, src.tensor, src.size // factor, src.key))
            self.parent.append(new)
            self.reasons[new] = list(self.reasons.get(peer, []))
            self.coarse[peer] = (new, factor)
            new_ids.append(new)
        for other in new_ids[1:]:
            self.union(new_ids[0], other, "coarsen")

    def split_group(self, sid: int, sizes: list[int]) -> None:
        """Cut ``sid`` and every source unified with it into consecutive parts of ``sizes``."""
        root = self.find(sid)
        peers = [s.id for s in self.sources if not self.retired(s.id) and self.find(s.id) == root]
        parts: list[list[int]] = []
        for peer in peers:
            src = self.sources[peer]
            subs = []
            for n in sizes:
                sub = len(self.sources)
                self.sources.append(Source(sub, src.node, src.op, src.tensor, n, src.key))
                self.parent.append(sub)
                self.reasons[sub] = list(self.reasons.get(peer, []))
                subs.append(sub)
            self.split[peer] = subs
            parts.append(subs)
        for other in parts[1:]:
            for x, y in zip(parts[0], other):
                self.union(x, y, "split")

    def freeze(self, layout: Iterable[Segment], reason: str) -> None:
        for seg in layout:
            if seg.source != FIXED:
                self.freeze_source(seg.source, reason)

    def freeze_source(self, sid: int, reason: str) -> None:
        for sub in self.split.get(sid, []):
            self.freeze_source(sub, reason)
        if sid in self.coarse:
            self.freeze_source(self.coarse[sid][0], reason)
        if reason not in self.reasons[sid]:
            self.reasons[sid].append(reason)

    # ---- members ------------------------------------------------------------------------
    def param(self, node: gs.Node, index: int, axis: int, layout: Layout, role: str = "param",
              tensor: gs.Tensor | None = None, tensor_axis: int = 1) -> bool:
        """Declare a constant slice; freezes the layout when the constant's size does not match."""
        value = self.const(node.inputs[index]) if index < len(node.inputs) else None
        if value is None:
            self.freeze(layout, f"{node.op} {node.name!r}: input {index} is not a constant")
            return False
        if value.ndim <= axis or value.shape[axis] != width(layout):
            self.freeze(layout, f"{node.op} {node.name!r}: input {index} has shape {list(value.shape)}, "
                                f"not {width(layout)} on axis {axis}")
            return False
        self.members.append(Member("param", node, index, axis, layout, role,
                                   tensor=tensor.name if tensor is not None else None, tensor_axis=tensor_axis))
        return True

    def size_edit(self, node: gs.Node, index: int, entry: int, layout: Layout, mode: str = "abs") -> None:
        self.members.append(Member("size", node, index, entry, layout, mode=mode))

    def attr_edit(self, node: gs.Node, attr: str, layout: Layout, entry: int = -1, mode: str = "abs") -> None:
        kind = "attr" if entry < 0 else "attr_list"
        self.members.append(Member(kind, node, -1, entry, layout, mode=mode, attr=attr))

    # ---- graph facts --------------------------------------------------------------------
    def const(self, tensor: gs.Tensor | None) -> np.ndarray | None:
        if tensor is None or not tensor.name:
            return None
        return constant_value(tensor)

    def shape(self, tensor: gs.Tensor) -> list[Any] | None:
        dims = self.shapes.get(tensor.name)
        if dims is None and isinstance(tensor, gs.Constant):
            dims = list(tensor.values.shape)
        if dims is None:
            value = self.const(tensor)
            dims = list(value.shape) if value is not None else None
        return list(dims) if dims is not None else None

    def rank(self, tensor: gs.Tensor) -> int | None:
        dims = self.shape(tensor)
        return len(dims) if dims is not None else None

    # ---- result -------------------------------------------------------------------------
    def plan(self) -> Analysis:
        for m in self.members:
            m.layout = self.expand(m.layout)
        live = [src for src in self.sources if not self.retired(src.id)]
        roots: dict[int, list[Source]] = defaultdict(list)
        for src in live:
            roots[self.find(src.id)].append(src)
        group_ids = {root: gid for gid, root in enumerate(sorted(roots))}
        group_of = {src.id: group_ids[self.find(src.id)] for src in live}
        by_group: dict[int, list[Member]] = defaultdict(list)
        for m in self.members:
            for gid in sorted({group_of[s] for s in m.sources()}):
                by_group[gid].append(m)
        groups = []
        for root, gid in sorted(group_ids.items(), key=lambda kv: kv[1]):
            srcs = roots[root]
            reasons = [r for s in srcs for r in self.reasons.get(s.id, [])]
            sizes = {s.size for s in srcs}
            if len(sizes) != 1:
                reasons.append(f"couples sources of different sizes {sorted(sizes)}")
            groups.append(Group(gid, srcs[0].size, srcs, by_group[gid], list(dict.fromkeys(reasons))))
        spaces = {name: (axis, self.expand(layout)) for name, (axis, layout) in self.spaces.items()}
        return Analysis(live, groups, self.members, spaces, group_of)


def analyze(graph: gs.Graph, shapes: Mapping[str, Sequence[Any]], exclude: Iterable[str] = ()) -> Analysis:
    """Build the channel groups of ``graph`` (toposorted) without changing it."""
    b = Builder(graph, shapes)
    excluded = set(exclude)
    for node in graph.nodes:
        rule = RULES.get(node.op) if (node.domain or "") in ("", "ai.onnx") else None
        _freeze_captures(node, b)
        if rule is None:
            no_rule(node, b)
        else:
            if node.op not in ALL_OPERANDS:  # e.g. a Conv whose weight is computed from pruned channels
                for t in node.inputs[1:]:
                    space = b.space(t)
                    if space:
                        b.freeze(space[1], f"{node.op} {node.name!r} reads channels on a parameter input")
            rule(node, b)
        if node.name in excluded:
            for out in node.outputs:
                space = b.space(out)
                if space and any(b.sources[s.source].node == node.name for s in space[1] if s.source != FIXED):
                    b.freeze(space[1], f"{node.name!r} is excluded by the exclude option")
    for out in graph.outputs:
        space = b.space(out)
        if space:
            b.freeze(space[1], f"reaches graph output {out.name!r}")
    return b.plan()


def _freeze_captures(node: gs.Node, b: Builder) -> None:
    """A subgraph (If/Loop/Scan body) may read outer tensors by name: their channels must stay."""
    for value in node.attrs.values():
        bodies = value if isinstance(value, (list, tuple)) else [value]
        for body in bodies:
            if not isinstance(body, gs.Graph):
                continue
            for name in {t.name for inner in body.nodes for t in inner.inputs if t.name}:
                space = b.spaces.get(name)
                if space:
                    b.freeze(space[1], f"{node.op} {node.name!r} reads {name!r} inside a subgraph")
