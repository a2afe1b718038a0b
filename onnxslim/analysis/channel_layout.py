"""Channel layouts: where each source's channels sit along one tensor axis.

A layout is a sequence of segments, each the channels of one source, every channel spanning
``inner`` consecutive positions (``inner`` > 1 after Flatten/Reshape merges C×H×W into one
axis). These are the index maps of ``channel_deps``: pure functions over tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

FIXED = -1  # source id of channels that are never pruned (e.g. a Concat input with no tracked channels)


@dataclasses.dataclass(frozen=True)
class Segment:
    """``size`` channels of ``source``, each spanning ``inner`` consecutive positions."""

    source: int
    size: int
    inner: int = 1

    @property
    def width(self) -> int:
        return self.size * self.inner


Layout = tuple[Segment, ...]


def width(layout: Layout) -> int:
    return sum(s.width for s in layout)


def scaled(layout: Layout, factor: int) -> Layout:
    return tuple(Segment(s.source, s.size, s.inner * factor) for s in layout)


def slice_layout(layout: Layout, start: int, stop: int) -> Layout | None:
    """The segments covering positions [start, stop), or None when a cut falls inside a segment."""
    out, pos = [], 0
    for seg in layout:
        lo, hi = pos, pos + seg.width
        pos = hi
        if hi <= start or lo >= stop:
            continue
        if lo < start or hi > stop:
            return None
        out.append(seg)
    return tuple(out)


def kept_positions(layout: Layout, keep: Mapping[int, np.ndarray]) -> np.ndarray:
    """Positions along the axis that survive when each source keeps ``keep[source]`` (sorted)."""
    parts, base = [], 0
    for seg in layout:
        channels = keep.get(seg.source)
        if channels is None:
            idx = np.arange(seg.width)
        else:
            idx = (np.asarray(channels)[:, None] * seg.inner + np.arange(seg.inner)).ravel()
        parts.append(base + idx)
        base += seg.width
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def position_owner(layout: Layout) -> list[tuple[int, np.ndarray]]:
    """Per segment: (source, channel index of each position) in position order."""
    return [(seg.source, np.repeat(np.arange(seg.size), seg.inner)) for seg in layout]


def aligned(a: Layout, b: Layout) -> bool:
    return len(a) == len(b) and all(x.size == y.size and x.inner == y.inner for x, y in zip(a, b))


def segment_cuts(layout: Layout) -> set[int]:
    out, pos = set(), 0
    for seg in layout[:-1]:
        pos += seg.width
        out.add(pos)
    return out
