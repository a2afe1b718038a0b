"""What a pass may ask of the outside world, owned by the pass manager.

Passes never open files, sessions or timers themselves: the context is their one door to ONNX
Runtime. It owns the provider, the threads, the fixed-batch rule (a model whose first input
declares a fixed batch B is fed B rows at a time) and the record of every choice made from
measured latency, which the report carries pass by pass.

Feeds come in two kinds (CONTRACT.md, data files): samples stacked on axis 0, which may be cut
into rows and batches, and one feed whose inputs do not share axis 0 (an attention mask
``[q, k]`` beside ``Q [2, q, d]``, a scalar, a recurrent state), which is one sample fed as it
is: never cut, never concatenated with another. ``stacked_rows`` tells them apart and
``take_rows`` cuts only the first kind; every pass that cuts rows goes through them.

* ``ctx.session(model)`` opens a model once to run it many times; ``ctx.run(graph, feeds)`` runs
  it once; ``ctx.activations(graph, names)`` exports the current graph, exposes those tensors as
  outputs and streams the calibration data through it batch by batch, so the memory a pass uses
  is its own reduction, never the whole set of activations.
* ``ctx.time(models, feeds)`` times models interleaved; ``ctx.decide(...)`` records what a timing
  chose (``ctx.decisions``).
* ``ctx.cpu`` is the host CPU's features (VNNI and the like).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.errors import UsageError
from onnxslim.ir.io import to_model
from onnxslim.ir.nodes import expose_tensors
from onnxslim.runtime.bench import LatencyStats, measure_latency
from onnxslim.runtime.cpu import CpuFeatures, host_cpu
from onnxslim.runtime.session import make_session

logger = logging.getLogger(__name__)


Tracker = Callable[[Iterable[Any], str, "int | None"], Iterable[Any]]

#: ``ctx.time``'s default threads: the context's, else 1. The svd latency gate passes the context's
#: own (None: ORT's default pool), as it always has.
CONTEXT_THREADS = object()


def untracked(items: Iterable[Any], label: str, total: int | None) -> Iterable[Any]:
    return items


@dataclasses.dataclass(frozen=True)
class LatencyDecision:
    """One choice a pass made from measured latency: what was timed, the medians, what was chosen."""

    what: str
    timed_ms: dict[str, float]
    chosen: str
    batch: int | None
    threads: int | None
    provider: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PassContext:
    """Shared services for the passes of one pipeline run.

    Attributes:
        template: the input model; its model-level fields are kept on every export.
        calibration: re-iterable source of feed dicts (``--calibration-data``), or None.
        providers: ONNX Runtime provider names, the first is the target.
        threads: intra-op threads for sessions the passes start (None: ORT's default).
        seed: seed for any sampling a pass does.
        warnings: messages for the user, collected into the report.
        tracker: wraps a long iteration to show progress (the CLI draws a bar; the library none).
        cpu: the host CPU's features (tests give another CPU).
        decisions: every choice made from measured latency, in order (see ``decide``).
    """

    template: onnx.ModelProto
    calibration: Iterable[dict[str, np.ndarray]] | None = None
    providers: Sequence[str] = ("CPUExecutionProvider",)
    threads: int | None = None
    seed: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    tracker: Tracker = untracked
    cpu: CpuFeatures = dataclasses.field(default_factory=host_cpu)
    decisions: list[LatencyDecision] = dataclasses.field(default_factory=list)

    def track(self, items: Iterable[Any], label: str, total: int | None = None) -> Iterable[Any]:
        """``items``, with progress shown while they are consumed."""
        return self.tracker(items, label, total if total is not None else getattr(items, "len_hint", None))

    @property
    def target_provider(self) -> str:
        return self.providers[0]

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def warn(self, message: str) -> None:
        logger.warning("%s", message)
        self.warnings.append(message)

    def require_calibration(self, pass_name: str) -> Iterable[dict[str, np.ndarray]]:
        if self.calibration is None:
            raise UsageError(f"{pass_name} needs calibration data: pass --calibration-data")
        return self.calibration

    def export(self, graph: gs.Graph) -> onnx.ModelProto:
        return to_model(graph, self.template)

    def session(self, model: onnx.ModelProto | gs.Graph, optimize: bool = True, on_target: bool = True) -> Session:
        """``model`` (a graph is exported first) opened on the target provider and the context's threads.

        ``optimize``: ORT's deployed level (real integer kernels), else ``ORT_DISABLE_ALL`` (every
        tensor survives). ``on_target=False``: the CPU provider with ORT's default threads, for values
        computed ahead of time (constant folding), which no deployment target may change.
        """
        model = self.export(model) if isinstance(model, gs.Graph) else model
        if on_target:
            session = make_session(model, self.target_provider, self.threads, optimize=optimize)
        else:
            session = make_session(model, "CPUExecutionProvider", optimize=optimize)
        return Session(session, fixed_batch(model))

    def run(self, model: onnx.ModelProto | gs.Graph, feeds: Mapping[str, np.ndarray], optimize: bool = True,
            outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The outputs of ``model`` on ``feeds`` (see ``session`` and ``Session.run``)."""
        return self.session(model, optimize).run(feeds, outputs)

    def activations(
        self, graph: gs.Graph, names: Sequence[str], optimize: bool = False,
        data: Iterable[dict[str, np.ndarray]] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield, per calibration batch, the values of the tensors ``names`` (and the feeds).

        ``data`` replaces the calibration data (a subset of it, or one batch of it). Sessions run
        with ORT's optimizations off by default, so every named tensor survives.
        """
        data = data if data is not None else self.require_calibration("this pass")
        session = self.session(expose_tensors(self.export(graph), names), optimize=optimize)
        for feeds in self.track(data, "calibration batches"):
            values = session.run(feeds)
            values.update(session.rows_run(feeds))
            yield values

    def time(self, models: Sequence[onnx.ModelProto | gs.Graph], feeds: Mapping[str, np.ndarray],
             rows: int | None = None, threads: Any = CONTEXT_THREADS, **options: Any) -> list[LatencyStats]:
        """Time ``models`` interleaved on the target provider (``runtime.bench.measure_latency``).

        ``rows``: feed the first ``rows`` rows, or the first model's fixed batch if larger (None:
        the feeds as given). ``threads`` defaults to the context's, else 1. Tests inject timings by
        overriding this.
        """
        models = [self.export(m) if isinstance(m, gs.Graph) else m for m in models]
        if rows is not None:
            feeds = take_rows(feeds, max(rows, fixed_batch(models[0]) or 1))
        threads = (self.threads or 1) if threads is CONTEXT_THREADS else threads
        return measure_latency(models, feeds, self.target_provider, threads, **options)

    def decide(self, what: str, timed: Mapping[str, LatencyStats], chosen: str) -> None:
        """Record a choice made from the timings ``timed`` (option -> its latency)."""
        first = next(iter(timed.values()))
        self.decisions.append(LatencyDecision(what, {k: round(s.median_ms, 4) for k, s in timed.items()}, chosen,
                                              first.batch, first.threads, first.provider))

    @property
    def fixed_batch(self) -> int | None:
        """The input model's declared batch when its first input fixes it (as the data sources read
        it), else None."""
        return fixed_batch(self.template)


class Session:
    """A model opened by the context; a model whose first input fixes the batch B runs B rows at a time."""

    def __init__(self, session, batch: int | None) -> None:
        self._session = session
        self.batch = batch
        self.inputs = [i.name for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        self.output_types = {o.name: o.type for o in session.get_outputs()}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The outputs ``outputs`` (None: all) on ``feeds``: as they are (one feed whose inputs do
        not share axis 0 always), or, when they stack more rows than the fixed batch, a batch at a
        time with the outputs concatenated on axis 0 (a trailing part of fewer rows is dropped: the
        model cannot take it)."""
        names = list(outputs) if outputs is not None else self.outputs
        n = stacked_rows(feeds)
        if self.batch is None or n is None or n <= self.batch:
            return dict(zip(names, self._session.run(names, dict(feeds))))
        b = self.batch
        parts = [self._session.run(names, {k: v[i:i + b] for k, v in feeds.items()}) for i in range(0, n - n % b, b)]
        return {name: np.concatenate([p[j] for p in parts]) if np.ndim(parts[0][j]) else parts[0][j]
                for j, name in enumerate(names)}

    def rows_run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``feeds`` as ``run`` feeds them: without the trailing rows past the last whole batch."""
        n = stacked_rows(feeds)
        if self.batch is None or n is None or n <= self.batch:
            return dict(feeds)
        return take_rows(feeds, n - n % self.batch)


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """Axis 0 of the model's first input when it is a fixed number (the batch it must be fed)."""
    initializers = {t.name for t in model.graph.initializer}
    first = next((i for i in model.graph.input if i.name not in initializers), None)
    dims = first.type.tensor_type.shape.dim if first is not None else ()
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def stacked_rows(feeds: Mapping[str, np.ndarray]) -> int | None:
    """The samples stacked on axis 0 when every array of ``feeds`` has the same length there;
    None for one feed whose arrays do not share axis 0 (or hold a scalar), fed as it is."""
    lengths = {int(np.shape(v)[0]) if np.ndim(v) else None for v in feeds.values()}
    return lengths.pop() if len(lengths) == 1 and None not in lengths else None


def take_rows(feeds: Mapping[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    """The first ``n`` stacked samples of ``feeds`` (None: all); one feed (see ``stacked_rows``)
    as it is: cutting its arrays would give shapes the model does not take."""
    if n is None or stacked_rows(feeds) is None:
        return dict(feeds)
    return {k: v[:n] for k, v in feeds.items()}

