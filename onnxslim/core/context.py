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
            values = dict(zip(outputs, session.run(outputs, feeds)))
            values.update(feeds)
            yield values

    def latency(self, models: Sequence[onnx.ModelProto], feeds: dict[str, np.ndarray],
                **options: Any) -> list[LatencyStats]:
        """Time ``models`` interleaved on the target provider (``runtime.bench.measure_latency``;
        ``threads`` defaults to this context's, else 1). Tests inject timings by overriding this."""
        options.setdefault("threads", self.threads or 1)
        return measure_latency(models, feeds, self.target_provider, **options)

    def run(self, graph: gs.Graph, feeds: dict[str, np.ndarray], optimize: bool = True) -> dict[str, np.ndarray]:
        model = self.export(graph)
        session = make_session(model, self.target_provider, self.threads, optimize=optimize)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))


def expose_tensors(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``names`` (graph inputs are skipped)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output} | {i.name for i in exposed.graph.input}
    for name in dict.fromkeys(names):
        if name not in present:
            exposed.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return exposed
