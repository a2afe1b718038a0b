"""What a pass may ask of the outside world, owned by the pass manager.

Passes never open files or sessions themselves. A pass that needs activation statistics asks
``ctx.activations(graph, names)``, which exports the current graph, exposes those tensors as
outputs and streams the calibration data through ONNX Runtime batch by batch, so the memory
a pass uses is its own reduction, never the whole set of activations.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.errors import UsageError
from onnxslim.ir.io import to_model
from onnxslim.ir.nodes import expose_tensors
from onnxslim.runtime.bench import LatencyStats, measure_latency
from onnxslim.runtime.session import make_session

logger = logging.getLogger(__name__)


Tracker = Callable[[Iterable[Any], str, "int | None"], Iterable[Any]]


def untracked(items: Iterable[Any], label: str, total: int | None) -> Iterable[Any]:
    return items


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
    """

    template: onnx.ModelProto
    calibration: Iterable[dict[str, np.ndarray]] | None = None
    providers: Sequence[str] = ("CPUExecutionProvider",)
    threads: int | None = None
    seed: int = 0
    warnings: list[str] = dataclasses.field(default_factory=list)
    tracker: Tracker = untracked

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

    def activations(
        self, graph: gs.Graph, names: Sequence[str], optimize: bool = False,
        data: Iterable[dict[str, np.ndarray]] | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield, per calibration batch, the values of the tensors ``names`` (and the feeds).

        ``data`` replaces the calibration data (a subset of it, or one batch of it). Sessions run
        with ORT's optimizations off by default, so every named tensor survives.
        """
        data = data if data is not None else self.require_calibration("this pass")
        model = expose_tensors(self.export(graph), names)
        session = make_session(model, self.target_provider, self.threads, optimize=optimize)
        outputs = [o.name for o in session.get_outputs()]
        for feeds in self.track(data, "calibration batches"):
            feeds, values = run_by_batch(session, outputs, feeds, self.fixed_batch)
            values.update(feeds)
            yield values

    def latency(self, models: Sequence[onnx.ModelProto], feeds: dict[str, np.ndarray],
                **options: Any) -> list[LatencyStats]:
        """Time ``models`` interleaved on the target provider (``runtime.bench.measure_latency``;
        ``threads`` defaults to this context's, else 1). Tests inject timings by overriding this."""
        options.setdefault("threads", self.threads or 1)
        return measure_latency(models, feeds, self.target_provider, **options)

    def run(self, graph: gs.Graph, feeds: dict[str, np.ndarray], optimize: bool = True) -> dict[str, np.ndarray]:
        """The graph's outputs on ``feeds``; a model with a fixed batch B runs B rows at a time
        (the rows past the last multiple of B are not run)."""
        model = self.export(graph)
        session = make_session(model, self.target_provider, self.threads, optimize=optimize)
        names = [o.name for o in session.get_outputs()]
        return run_by_batch(session, names, feeds, self.fixed_batch)[1]

    @property
    def fixed_batch(self) -> int | None:
        """The input model's declared batch when its first input fixes it (as the data sources read
        it), else None."""
        return fixed_batch(self.template)


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """Axis 0 of the model's first input when it is a fixed number (the batch it must be fed)."""
    initializers = {t.name for t in model.graph.initializer}
    first = next((i for i in model.graph.input if i.name not in initializers), None)
    dims = first.type.tensor_type.shape.dim if first is not None else ()
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def run_by_batch(session, names: Sequence[str], feeds: dict[str, np.ndarray],
                 batch: int | None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the feeds run, the outputs ``names``): ``feeds`` as they are, or, when they hold more rows than
    the fixed ``batch``, ``batch`` rows at a time with the outputs concatenated on axis 0 (a trailing
    part of fewer rows is dropped: the model cannot take it)."""
    n = _rows(feeds)
    if batch is None or n is None or n <= batch:
        return feeds, dict(zip(names, session.run(list(names), feeds)))
    stop = n - n % batch
    parts = [session.run(list(names), {k: v[i:i + batch] if _rows({k: v}) == n else v for k, v in feeds.items()})
             for i in range(0, stop, batch)]
    used = {k: v[:stop] if _rows({k: v}) == n else v for k, v in feeds.items()}
    return used, {name: np.concatenate([p[j] for p in parts]) if np.ndim(parts[0][j]) else parts[0][j]
                  for j, name in enumerate(names)}


def _rows(feeds: dict[str, np.ndarray]) -> int | None:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and np.ndim(first) else None

