"""The held-back part of ``--calibration-data`` that verifies a run given no ``--data``.

Split, deterministic and in the source's own order: the last ``ceil(20%)`` of the samples (at
least one) are held back for parity, calibration sees the rest. A model with a fixed batch B
counts in whole batches of B (the source drops a partial last batch anyway), so both parts are
fed full batches. A source with fewer than 2 units (samples, or batches of B) cannot be split:
``split`` returns None and the caller verifies on all of it, saying that calibration saw it.
Nothing is read twice: each part streams the source and stops or skips at its boundary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from onnxslim.runtime.data import DataSource

#: share of the calibration samples held back for parity
HOLDOUT_SHARE = 0.2


def split(source: DataSource, fixed_batch: int | None) -> tuple[DataSource, DataSource] | None:
    """(calibration part, held-back part) of ``source``, or None when it is too small to split."""
    unit = fixed_batch if fixed_batch and fixed_batch > 1 else 1
    total = source.num_samples
    if total is None:
        return None
    units = total // unit
    if units < 2:
        return None
    held = math.ceil(units * HOLDOUT_SHARE)
    boundary, stop = (units - held) * unit, units * unit
    held_note = f"the last {stop - boundary} held back for parity"
    calibration = _part(source, 0, boundary, f"{source.description}: first {boundary} samples ({held_note})")
    parity = _part(source, boundary, stop,
                   f"{source.description}: last {stop - boundary} samples, held back from calibration")
    return calibration, parity


def _part(source: DataSource, start: int, stop: int, description: str) -> DataSource:
    count = stop - start
    first, _ = next(source.with_labels())
    size = _rows(first)  # the source's batch size; the pieces cut at a boundary are joined to it again

    def sliced() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        position = 0
        for feeds, labels in source.with_labels():
            rows = _rows(feeds)
            low, high = max(start - position, 0), min(stop - position, rows)
            position += rows
            if (low, high) == (0, rows):
                yield feeds, labels
            elif low < high:
                yield {k: v[low:high] for k, v in feeds.items()}, None if labels is None else labels[low:high]
            if position >= stop:
                return

    def batches() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        pending: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = []
        for feeds, labels in sliced():
            if not _shares_axis0(feeds):
                yield feeds, labels
                continue
            pending.append((feeds, labels))
            while sum(_rows(f) for f, _ in pending) >= size:
                joined, rest = _cut(_join(pending), size)
                yield joined
                pending = [rest] if _rows(rest[0]) else []
        if pending:
            yield _join(pending)

    return DataSource(description, batches, num_samples=count, len_hint=math.ceil(count / size),
                      has_labels=source.has_labels)


Piece = tuple[dict[str, np.ndarray], "np.ndarray | None"]


def _join(parts: list[Piece]) -> Piece:
    if len(parts) == 1:
        return parts[0]
    feeds = {k: np.concatenate([f[k] for f, _ in parts]) for k in parts[0][0]}
    labels = [lab for _, lab in parts]
    return feeds, None if any(lab is None for lab in labels) else np.concatenate(labels)


def _cut(piece: Piece, size: int) -> tuple[Piece, Piece]:
    feeds, labels = piece
    head = {k: v[:size] for k, v in feeds.items()}, None if labels is None else labels[:size]
    tail = {k: v[size:] for k, v in feeds.items()}, None if labels is None else labels[size:]
    return head, tail


def _shares_axis0(feeds: dict[str, np.ndarray]) -> bool:
    firsts = {np.shape(v)[0] if np.ndim(v) else None for v in feeds.values()}
    return len(firsts) == 1 and None not in firsts


def _rows(feeds: dict[str, np.ndarray]) -> int:
    """Samples in one batch: the shared axis 0, or 1 for a batch whose arrays are fed as they are."""
    return int(np.shape(next(iter(feeds.values())))[0]) if _shares_axis0(feeds) else 1
