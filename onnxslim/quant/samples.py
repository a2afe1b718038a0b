"""Calibration samples for the quantize pass: a capped source, the first few samples, and the
activations of a graph on them, all through the engine's ``PassContext``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.quant import calibration

logger = logging.getLogger(__name__)


class LimitedSamples:
    """Re-iterable calibration source cut at ``limit`` samples (None: all)."""

    def __init__(self, source: Iterable[dict[str, np.ndarray]], limit: int | None) -> None:
        self.source, self.limit = source, limit

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        seen = 0
        for feeds in self.source:
            if self.limit is not None and seen >= self.limit:
                return
            n = rows(feeds)
            if self.limit is not None and seen + n > self.limit:
                feeds = {k: v[: self.limit - seen] for k, v in feeds.items()}
                n = self.limit - seen
            seen += n
            logger.info("quantize: calibration %d samples", seen)
            yield feeds


def rows(feeds: dict[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1


def activations(ctx: PassContext, graph: gs.Graph, names: Sequence[str],
                data: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """``ctx.activations`` over ``data`` (a possibly limited calibration source).

    ORT keeps every graph output intact when it optimizes, so the deployed level is safe here
    and several times faster than ORT_DISABLE_ALL on conv nets.
    """
    return ctx.activations(graph, names, optimize=True, data=data)


def first_samples(data: Iterable[dict[str, np.ndarray]], count: int) -> dict[str, np.ndarray]:
    parts, seen = [], 0
    for feeds in data:
        parts.append(feeds)
        seen += rows(feeds)
        if seen >= count:
            break
    return {k: np.concatenate([p[k] for p in parts])[:count] for k in parts[0]}


def layer_inputs(ctx: PassContext, work: gs.Graph, nodes: Sequence[gs.Node],
                 feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The non-constant inputs of ``nodes`` on one batch of ``feeds``."""
    names = list(dict.fromkeys(t.name for n in nodes for t in n.inputs if t.name and not isinstance(t, gs.Constant)))
    return next(iter(ctx.activations(work, names, data=[feeds])))


def scan(ctx: PassContext, graph: gs.Graph, names: Sequence[str], channels: Sequence[str], keep: dict[str, int],
         data: Iterable[dict[str, np.ndarray]]) -> calibration.Scan:
    """``calibration.scan`` of ``graph`` on ``data``, with the reductions run inside ORT after the head.

    The first batches, until every tensor in ``keep`` has its rows, expose the whole tensors; the
    rest of the data runs a copy of the graph whose extra outputs are ReduceMin/ReduceMax of each
    tensor (per channel for ``channels``), so ORT reduces with its own threads and copies out a few
    numbers per tensor instead of whole activations. A tensor whose reduction is not finite (an
    inf somewhere) is scanned again the plain way, ignoring non-finite values.
    """
    need = max(keep.values(), default=1)
    exposed = list(dict.fromkeys([*names, *channels, *keep]))
    out = calibration.scan(activations(ctx, graph, exposed, _head(data, need)), names, channels, keep)
    tail = _tail(data, need)
    first = next(tail, None)
    if first is None:
        return out
    channels = [c for c in channels if out.ranks.get(c, 0) >= 2]
    reduced, outputs = _reducing_copy(graph, names, {c: out.ranks[c] for c in channels})
    lo: dict[str, float] = {}
    redo: set[str] = set()
    for values in activations(ctx, reduced, outputs, itertools.chain([first], tail)):
        lo = {n: float(values[f"{n}__min"]) for n in names}
        hi = {n: float(values[f"{n}__max"]) for n in names}
        chans = {c: (np.asarray(values[f"{c}__cmin"]), np.asarray(values[f"{c}__cmax"])) for c in channels}
        redo |= {n for n in names if not (np.isfinite(lo[n]) and np.isfinite(hi[n]))}
        redo |= {c for c, (a, b) in chans.items() if not (np.isfinite(a).all() and np.isfinite(b).all())}
        calibration.merge(out, {n: lo[n] for n in names if n not in redo}, {n: hi[n] for n in names if n not in redo},
                          {c: v for c, v in chans.items() if c not in redo}, rows(values))
    if redo:
        again = calibration.scan(activations(ctx, graph, sorted(redo), _tail(data, need)),
                                 [n for n in names if n in redo], [c for c in channels if c in redo])
        calibration.merge(out, {n: st.lo for n, st in again.stats.items()}, {n: st.hi for n, st in again.stats.items()},
                          again.channels, 0)
    return out


def _head(data: Iterable[dict[str, np.ndarray]], count: int) -> Iterator[dict[str, np.ndarray]]:
    seen = 0
    for feeds in data:
        if seen >= count:
            return
        seen += rows(feeds)
        yield feeds


def _tail(data: Iterable[dict[str, np.ndarray]], count: int) -> Iterator[dict[str, np.ndarray]]:
    seen = 0
    for feeds in data:
        if seen >= count:
            yield feeds
        seen += rows(feeds)


def _reducing_copy(graph: gs.Graph, names: Sequence[str], channels: dict[str, int]) -> tuple[gs.Graph, list[str]]:
    """A copy of ``graph`` with ReduceMin/ReduceMax outputs: ``t__min``/``t__max`` (whole tensor) and
    ``t__cmin``/``t__cmax`` (over every axis but the last) for ``channels`` of the given ranks."""
    g = graph.copy()
    tensors = g.tensors()
    opset = g.opset or 13
    outputs: list[str] = []

    def reduce(op: str, tensor: gs.Tensor, name: str, axes: list[int] | None) -> None:
        attrs, inputs = {"keepdims": 0}, [tensor]
        if axes is not None and opset >= 18:
            inputs.append(gs.Constant(f"{name}_axes", np.array(axes, np.int64)))
        elif axes is not None:
            attrs["axes"] = axes
        out = gs.Variable(name, dtype=np.float32)
        g.nodes.append(gs.Node(op, "", attrs, inputs, [out]))
        g.outputs.append(out)
        outputs.append(name)

    for name in names:
        reduce("ReduceMin", tensors[name], f"{name}__min", None)
        reduce("ReduceMax", tensors[name], f"{name}__max", None)
    for name, rank in channels.items():
        reduce("ReduceMin", tensors[name], f"{name}__cmin", list(range(rank - 1)))
        reduce("ReduceMax", tensors[name], f"{name}__cmax", list(range(rank - 1)))
    return g, outputs
