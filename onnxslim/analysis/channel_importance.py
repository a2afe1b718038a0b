"""Channel importance per group, and the choice of the channels to keep.

Scores are per channel of a group (index i means channel i of every source in the group):

* ``l1`` / ``l2``: the norm of each producer filter (its weight slice on the output axis),
  divided by that producer's mean so that no layer dominates the group, summed over producers;
* ``bn``: |gamma| of the BatchNormalization layers on the group's channels (mean-normalized,
  summed); a group without BatchNormalization falls back to ``l2``;
* ``activation``: measured on calibration data at the input of every layer that reads the
  group's channels (its consumers). ``stat=effect`` (default) scores channel c by
  sqrt(E[x_c²]) · ‖W[:, c]‖₂, the size of its contribution to the consumer's output;
  ``mean_abs`` by E|x_c|; ``nonzero`` by the fraction of nonzero values. Statistics are reduced
  streaming, batch by batch.

``kept_count`` applies the contract's rounding: the kept count is rounded down to a multiple of
``round_to``, never below ``round_to``; a group narrower than 2 × ``round_to`` is left whole, and
so is a group the ratio does not reach (rounding alone never removes channels).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from onnxslim.analysis.channel_layout import FIXED, position_owner
from onnxslim.analysis.channel_plan import Group, Member, Analysis
from onnxslim.ir.weights import constant_value

EPS = 1e-12


def kept_count(size: int, ratio: float, round_to: int) -> int:
    """How many of ``size`` channels stay when ``ratio`` of them go (contract rounding rule)."""
    keep = math.floor(size * (1.0 - ratio) + 1e-9)
    if keep >= size or (round_to > 1 and size < 2 * round_to):
        return size
    if round_to > 1:
        keep = max(round_to, keep // round_to * round_to)
    return max(1, min(size, keep))


def _normalized(v: np.ndarray) -> np.ndarray:
    return v / (float(np.mean(np.abs(v))) + EPS)


def weight_scores(plan: Analysis, group: Group, norm: str) -> np.ndarray:
    score = np.zeros(group.size)
    for m in group.members:
        if m.role != "producer" or m.kind != "param" or m.index != 1:
            continue
        w = constant_value(m.node.inputs[m.index]).astype(np.float64)
        rows = np.moveaxis(w, m.axis, 0).reshape(w.shape[m.axis], -1)
        values = np.abs(rows).sum(1) if norm == "l1" else np.sqrt((rows**2).sum(1))
        per = _per_channel(plan, group, m, _normalized(values))
        if per is not None:
            score += per
    return score


def bn_scores(plan: Analysis, group: Group) -> np.ndarray | None:
    score, found = np.zeros(group.size), False
    for m in group.members:
        if m.node.op != "BatchNormalization" or m.index != 1 or m.kind != "param":
            continue
        gamma = np.abs(constant_value(m.node.inputs[1]).astype(np.float64))
        per_source = _per_channel(plan, group, m, gamma)
        if per_source is not None:
            score += _normalized(per_source)
            found = True
    return score if found else None


def _per_channel(plan: Analysis, group: Group, m: Member, values: np.ndarray) -> np.ndarray | None:
    """Sum ``values`` (one per position of ``m.layout``) into the group's channel indices."""
    out, pos, hit = np.zeros(group.size), 0, False
    for source, channels in position_owner(m.layout):
        n = len(channels)
        if source != FIXED and plan.group_of[source] == group.id:
            np.add.at(out, channels, values[pos:pos + n])
            hit = True
        pos += n
    return out if hit else None


def consumer_members(groups: Iterable[Group]) -> list[Member]:
    seen, out = set(), []
    for g in groups:
        for m in g.members:
            if m.role == "consumer" and m.tensor and id(m) not in seen:
                seen.add(id(m))
                out.append(m)
    return out


class ActivationStats:
    """Streaming per-position statistics of tensors along one axis."""

    def __init__(self, axes: Mapping[str, int]) -> None:
        self.axes = dict(axes)
        self.sums: dict[str, dict[str, np.ndarray]] = {}
        self.count: dict[str, int] = {}

    def add(self, values: Mapping[str, np.ndarray]) -> None:
        for name, axis in self.axes.items():
            x = np.moveaxis(np.asarray(values[name], np.float64), axis, 0)
            x = x.reshape(x.shape[0], -1)
            acc = self.sums.setdefault(name, {"abs": 0.0, "sq": 0.0, "nz": 0.0})
            acc["abs"] = acc["abs"] + np.abs(x).sum(1)
            acc["sq"] = acc["sq"] + (x**2).sum(1)
            acc["nz"] = acc["nz"] + (x != 0).sum(1)
            self.count[name] = self.count.get(name, 0) + x.shape[1]

    def mean(self, name: str, key: str) -> np.ndarray:
        return self.sums[name][key] / max(self.count[name], 1)


def collect_activations(batches: Iterator[Mapping[str, np.ndarray]], members: list[Member]) -> ActivationStats:
    stats = ActivationStats({m.tensor: m.tensor_axis for m in members})
    for values in batches:
        stats.add(values)
    return stats


def activation_scores(plan: Analysis, group: Group, stats: ActivationStats, stat: str) -> np.ndarray | None:
    score, found = np.zeros(group.size), False
    for m in group.members:
        if m.role != "consumer" or m.tensor not in stats.axes or m.tensor not in stats.sums:
            continue
        if stat == "mean_abs":
            values = stats.mean(m.tensor, "abs")
        elif stat == "nonzero":
            values = stats.mean(m.tensor, "nz")
        else:
            w = constant_value(m.node.inputs[m.index]).astype(np.float64)
            cols = np.moveaxis(w, m.axis, 0).reshape(w.shape[m.axis], -1)
            values = np.sqrt(stats.mean(m.tensor, "sq")) * np.sqrt((cols**2).sum(1))
        per = _per_channel(plan, group, m, values)
        if per is not None:
            score += _normalized(per)
            found = True
    return score if found else None


def choose_keep(scores: Mapping[int, np.ndarray], sizes: Mapping[int, int], ratio: float, round_to: int,
                scope: str, overrides: Mapping[int, float] | None = None) -> dict[int, np.ndarray]:
    """Per group id, the sorted indices to keep (only groups that lose channels are listed).

    ``overrides`` (group id -> ratio) take those groups out of the global ranking.
    """
    overrides = dict(overrides or {})
    counts = {gid: kept_count(sizes[gid], r, round_to) for gid, r in overrides.items() if gid in scores}
    scores_left = {gid: s for gid, s in scores.items() if gid not in counts}
    if scope == "global" and scores_left:
        pooled = np.concatenate([_normalized(s) for s in scores_left.values()])
        cut = np.quantile(pooled, ratio) if ratio > 0 else -np.inf
        for gid, s in scores_left.items():
            survivors = int(np.sum(_normalized(s) > cut))
            counts[gid] = kept_count(sizes[gid], 1.0 - survivors / sizes[gid], round_to)
    else:
        counts.update({gid: kept_count(sizes[gid], ratio, round_to) for gid in scores_left})
    keep = {}
    for gid, s in scores.items():
        n = counts[gid]
        if n >= sizes[gid]:
            continue
        order = np.argsort(-s, kind="stable")[:n]
        keep[gid] = np.sort(order)
    return keep
