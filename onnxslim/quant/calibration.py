"""Streaming activation statistics: minmax, percentile, entropy (KL) and mse.

Every tensor of interest is collected in one ONNX Runtime run per batch (``ctx.activations``),
and each batch is reduced at once into fixed-size state, so memory does not grow with the
number of samples. One pass (``scan``) gathers running min and max per tensor, per-channel
ranges of some tensors (SmoothQuant), the first rows of some tensors (for the checks that
follow) and, for percentile, entropy and mse, a histogram of |x| per tensor.

The histogram needs no earlier pass for its range: its bins have width 2^e, e the smallest
integer with max|x| ≤ 2·``bins``·2^e over the data seen so far. When a batch raises max|x|, e
grows and every 2^k adjacent bins merge into one, which is exact, since the new bin edges are old
ones; so the histogram is that of all the data on the final grid, whatever the batching, with
between ``bins`` and 2·``bins`` bins over [0, max|x|].

The range of a tensor is then [max(min, -T), min(max, T)] for the threshold T the method picks:

* minmax: T = max|x| (no clipping);
* percentile: T = the ``percentile``-th percentile of |x|;
* entropy: the T minimising KL(P || Q), P the clipped histogram and Q its quantization to
  ``levels`` levels (TensorRT's algorithm), searched over ``bins``/``levels`` .. ``bins``;
* mse: the T minimising the expected squared error, clipping plus rounding (step²/12).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from onnxslim.core.context import stacked_rows
from onnxslim.quant.qparams import QParams, activation_params

if TYPE_CHECKING:
    from onnxslim.quant.placement import Placement

logger = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy", "mse")


@dataclasses.dataclass
class TensorStats:
    """Streaming statistics of one tensor."""

    lo: float = np.inf
    hi: float = -np.inf
    hist: np.ndarray | None = None  # counts of |x| in bins [i·width, (i+1)·width)
    width: float = 0.0
    count: int = 0

    @property
    def amax(self) -> float:
        return max(abs(self.lo), abs(self.hi), 0.0)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind != "f":
        return values.astype(np.float32)
    return values[np.isfinite(values)] if not np.isfinite(values).all() else values


@dataclasses.dataclass
class Scan:
    """What one streaming pass over the calibration data gathers.

    ``stats``: running min/max per tensor; ``channels``: per-channel (last axis) running min and
    max of some tensors (SmoothQuant's input statistics); ``kept``: the first ``rows`` rows of
    some tensors (reference outputs and probe inputs), so that no later pass reruns the model
    on them. When the first feed's inputs do not share axis 0 (``stacked`` False: one feed, fed
    as it is), ``kept`` holds that whole feed instead: its arrays cannot be cut into rows or
    joined with another feed's. A scalar is likewise kept whole from the first batch. (A tensor
    whose axis 0 is not the batch, ``[N*T, C]`` after a Reshape, keeps its first rows: the
    per-layer probes read rows of it, as of any other.)
    """

    stats: dict[str, TensorStats]
    channels: dict[str, tuple[np.ndarray, np.ndarray]]
    kept: dict[str, np.ndarray]
    samples: int = 0
    stacked: bool = True
    whole: set[str] = dataclasses.field(default_factory=set)  # kept names never to cut into rows


def scan(batches: Iterable[dict[str, np.ndarray]], names: Sequence[str], channels: Sequence[str] = (),
         keep: dict[str, int] | None = None, bins: int | None = None, inputs: Sequence[str] = ()) -> Scan:
    """Min/max of ``names`` (and their |x| histograms with ``bins``), per-channel ranges of
    ``channels``, the ``keep[name]`` first rows; ``inputs`` (the graph inputs, among the batch
    values) tell stacked samples from one feed (see ``Scan``)."""
    out = Scan({n: TensorStats() for n in names}, {}, {})
    keep = dict(keep or {})
    parts: dict[str, list[np.ndarray]] = {n: [] for n in keep}
    whole = out.whole  # kept as the first batch gave them, never cut or joined
    for values in batches:
        feeds = {n: values[n] for n in inputs if n in values}
        rows = stacked_rows(feeds) if feeds else _batch(values, names)
        if rows is None and not out.samples:
            out.stacked = False
        for name in names:
            v = _finite(values[name])
            if v.size:
                st = out.stats[name]
                lo, hi = float(v.min()), float(v.max())
                st.lo, st.hi = min(st.lo, lo), max(st.hi, hi)
                if bins:
                    _add_to_histogram(st, v, max(-lo, hi, 0.0), 2 * bins)
        for name in channels:
            v = np.asarray(values[name], dtype=np.float32)
            v = v if np.isfinite(v).all() else np.where(np.isfinite(v), v, 0.0)
            v = v.reshape(-1, v.shape[-1])
            lo, hi = v.min(axis=0), v.max(axis=0)
            old = out.channels.get(name)
            out.channels[name] = (lo, hi) if old is None else (np.minimum(old[0], lo), np.maximum(old[1], hi))
        for name, wanted in keep.items():
            value = np.asarray(values[name])
            if not out.stacked or value.ndim == 0:
                if not parts[name]:
                    parts[name].append(value)
                    whole.add(name)
                continue
            have = sum(len(p) for p in parts[name])
            if rows is not None and name not in whole and have < wanted:
                parts[name].append(value[: wanted - have])
        out.samples += rows if rows is not None else 1
    for st in out.stats.values():
        if not np.isfinite(st.lo):
            st.lo = st.hi = 0.0
    out.kept = {n: p[0] if n in whole else np.concatenate(p) for n, p in parts.items() if p}
    return out


#: the finest histogram bin width, 2^MIN_EXPONENT (|x| below it all count as 0)
MIN_EXPONENT = -120


def _add_to_histogram(st: TensorStats, v: np.ndarray, amax: float, size: int) -> None:
    """Add |v| to ``st.hist`` (``size`` bins of width 2^e), coarsening the grid first if needed."""
    exponent = max(MIN_EXPONENT, int(np.ceil(np.log2(amax / size))) if amax > 0 else MIN_EXPONENT)
    while amax > size * 2.0 ** exponent:  # log2's rounding
        exponent += 1
    if st.hist is None:
        st.hist, st.width = np.zeros(size, np.float64), 2.0 ** exponent
    elif 2.0 ** exponent > st.width:
        k = min(exponent - int(np.log2(st.width)), 62)
        st.hist = np.bincount(np.arange(size) >> k, weights=st.hist, minlength=size)
        st.width = 2.0 ** exponent
    # a power-of-two scale: |x| / width is exact, and so is each bin index
    scaled = np.abs(v.reshape(-1), dtype=np.float32)
    scaled *= np.float32(1.0 / st.width)
    np.minimum(scaled, np.float32(size - 1), out=scaled)
    st.hist += np.bincount(scaled.astype(np.intp), minlength=size)
    st.count += v.size


def collect(batches: Iterable[dict[str, np.ndarray]], names: Sequence[str], method: str,
            bins: int = 2048) -> dict[str, TensorStats]:
    """The statistics ``method`` needs of ``names``, in one pass."""
    return scan(batches, names, bins=bins if method != "minmax" else None).stats


def _batch(values: dict[str, np.ndarray], names: Sequence[str]) -> int:
    first = values[names[0]] if names else None
    return int(first.shape[0]) if first is not None and first.ndim else 1


def threshold(st: TensorStats, method: str, percentile: float = 99.999, levels: int = 128) -> float:
    """The clipping threshold T for one tensor (see the module docstring)."""
    if method == "minmax" or st.hist is None or st.hist.sum() == 0 or st.amax == 0:
        return st.amax
    width = st.width
    hist = st.hist[: max(levels, int(st.amax / width) + 1)]  # the bins over [0, max|x|]
    if method == "percentile":
        cdf = np.cumsum(hist) / hist.sum()
        idx = int(np.searchsorted(cdf, percentile / 100.0))
        return min(st.amax, (idx + 1) * width)
    if method == "mse":
        return min(st.amax, _mse_threshold(hist, width, levels))
    return min(st.amax, _kl_threshold(hist, width, levels))


def clipped_range(st: TensorStats, t: float) -> tuple[float, float]:
    return max(st.lo, -t), min(st.hi, t)


def _mse_threshold(hist: np.ndarray, width: float, levels: int) -> float:
    centers = (np.arange(len(hist)) + 0.5) * width
    n = len(hist)
    candidates = np.unique(np.linspace(max(n // 32, 1), n, 256).astype(int))
    best, best_err = n * width, np.inf
    for i in candidates:
        t = i * width
        step = t / levels
        clip = centers > t
        err = np.sum(hist[clip] * (centers[clip] - t) ** 2) + hist[~clip].sum() * step * step / 12.0
        if err < best_err:
            best, best_err = t, err
    return float(best)


def _kl_threshold(hist: np.ndarray, width: float, levels: int) -> float:
    """TensorRT's entropy calibration on the |x| histogram, candidates every few bins."""
    n = len(hist)
    stride = max(1, (n - levels) // 256)
    best, best_kl = n, np.inf
    for i in range(levels, n + 1, stride):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        nonzero = p > 0
        # quantize the first i bins into `levels` groups, spread each group over its nonzero bins
        groups = np.minimum((np.arange(i) * levels) // i, levels - 1)
        sums = np.bincount(groups, weights=hist[:i], minlength=levels)
        counts = np.bincount(groups, weights=(hist[:i] > 0).astype(np.float64), minlength=levels)
        q = np.where(nonzero, sums[groups] / np.maximum(counts[groups], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        pn, qn = p[nonzero] / ps, q[nonzero] / qs
        kl = float(np.sum(pn * np.log(pn / np.maximum(qn, 1e-12))))
        if kl < best_kl:
            best, best_kl = i, kl
    return float(best * width)


def activation_qparams(p: Placement, stats: dict[str, TensorStats], method: str, percentile: float,
                       activation_type: str) -> dict[str, QParams]:
    """Per-tensor ranges from the method, merged over each shared group of plan ``p`` (Concat,
    pass-through); ``activation_type`` "int8" makes them symmetric."""
    own = {}
    for name in p.tensors:
        st = stats[name]
        own[name] = clipped_range(st, threshold(st, method, percentile))
    ranges: dict[str, tuple[float, float]] = {}
    for name, (lo, hi) in own.items():
        old = ranges.get(p.group(name), (0.0, 0.0))
        ranges[p.group(name)] = (min(old[0], lo), max(old[1], hi))
    symmetric = activation_type == "int8"
    by_group = {g: activation_params(lo, hi, "uint8", symmetric) for g, (lo, hi) in ranges.items()}
    params = {name: by_group[p.group(name)] for name in p.tensors}
    for name in p.zero_clip:
        # an absorbed Relu is exact only with zero point 0: leave a group that holds negatives
        if ranges[p.group(name)][0] < 0:
            params[name] = activation_params(0.0, own[name][1], "uint8", symmetric)
    return params
