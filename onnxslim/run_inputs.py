"""What each part of a run feeds the model: parity data, calibration data, generated inputs.

``parity_data`` picks the final check's data (``--data``; else the held-back part of
``--calibration-data``; else generated inputs that run in ORT) and ``calibration_data`` what the
passes calibrate on; ``Inputs`` resolves generated inputs once, only when a check needs them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx

from onnxslim.errors import UsageError
from onnxslim.runtime import holdout
from onnxslim.runtime.data import RANDOM_BATCH_SIZE, DataSource, open_data
from onnxslim.runtime.feeds import input_specs, random_feeds
from onnxslim.runtime.inputs import InputsError, ResolvedInputs, batched_shapes, first_line, resolve_inputs
from onnxslim.runtime.metric import Metric
from onnxslim.runtime.samples import generated_source
from onnxslim.runtime.session import make_session

RunOptions = Any  # onnxslim.api.RunOptions (not imported: api imports this module)


class Inputs:
    """Generated inputs for a model, resolved in ORT once and only when a check needs them."""

    def __init__(self, model: onnx.ModelProto, options: RunOptions, providers: list[str]) -> None:
        self.model, self.options, self.provider = model, options, providers[0]
        self._resolved: ResolvedInputs | None = None
        self.error: InputsError | None = None

    def resolved(self) -> ResolvedInputs | None:
        if self._resolved is None and self.error is None:
            try:
                self._resolved = resolve_inputs(self.model, self.options.input_shapes, self.options.seed,
                                                self.provider, self.options.threads)
            except InputsError as exc:
                self.error = exc
        return self._resolved

    def runs(self, feeds: dict[str, np.ndarray], where: str) -> bool:
        """Whether ORT runs the original model on ``feeds`` (the user's data); if not, ``error``
        says so: the model, or the data, is not one ORT can run, which no pass can change."""
        try:
            session = make_session(self.model, self.provider, self.options.threads, optimize=False)
            session.run(None, feeds)
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            self.error = InputsError(f"ONNX Runtime cannot run the model on {where}: {first_line(exc)}")
            return False
        return True

    def unchecked_feeds(self) -> dict[str, np.ndarray] | None:
        """Inputs for shape-only statistics, without running the model."""
        resolved = self._resolved
        if resolved is not None:
            return resolved.feeds
        try:
            return random_feeds(self.model, self.options.input_shapes, self.options.seed)
        except UsageError:  # an input of unknown rank or type: its costs stay symbolic
            return None


def parity_data(model: onnx.ModelProto, options: RunOptions, inputs: Inputs) -> Iterable[dict[str, np.ndarray]] | None:
    """The final check's data: ``--data``; else the held-back part of ``--calibration-data``
    (``runtime.holdout``; all of it, with a warning, when it is too small to split); else
    generated inputs that run in ORT (``runtime.inputs``), None when none do (``inputs.error``).
    ``--calibration-data random`` is never parity data.

    Also checks ``--metric``/``--max-drop`` before any work (usage errors, exit 2).
    """
    check_metric_options(options)
    data: Iterable[dict[str, np.ndarray]]
    if options.data:
        data = open_data(options.data, model, preprocess=options.preprocess, seed=options.seed,
                         input_shapes=options.input_shapes)
    elif options.calibration_data and options.calibration_data != "random":
        source = _open_calibration(model, options)
        parts = holdout.split(source, _fixed_batch(model))
        if parts is not None:
            data = parts[1]
        else:
            data = source
            data.description = f"{source.description}, which calibration sees too"
            data.warnings = [f"calibration data {options.calibration_data} holds {source.num_samples} sample(s), "
                             "too few to hold some back: parity runs on the samples calibration saw"]
    else:
        resolved = inputs.resolved()
        if resolved is None:
            return None
        data = generated_source(resolved)
    if isinstance(data, DataSource) and not data.is_random:
        first = next(iter(data))  # fail now, before any work, on data that does not fit the model
        if not inputs.runs(first, data.description):
            return None
    if options.metric and Metric(options.metric).needs_labels and not getattr(data, "has_labels", False):
        where = "--data" if options.data else "--calibration-data" if options.calibration_data else "--data (none given)"
        raise UsageError(f"--metric accuracy needs labels: a 'label' key in every file of {where}")
    return data


def calibration_data(model: onnx.ModelProto, options: RunOptions, inputs: Inputs) -> Iterable[dict[str, np.ndarray]] | None:
    """``--calibration-data``, less the part held back for parity when no ``--data`` is given;
    ``random`` uses the inputs ``runtime.inputs`` found to run."""
    if not options.calibration_data:
        return None
    if options.calibration_data == "random":
        resolved = inputs.resolved()
        if resolved is None:
            raise inputs.error
        shapes = batched_shapes(model, resolved, RANDOM_BATCH_SIZE, keep=list(options.input_shapes),
                                provider=inputs.provider, threads=options.threads)
        data = open_data("random", model, seed=options.seed, input_shapes=shapes, values=resolved.values)
    else:
        data = _open_calibration(model, options)
        if not options.data:
            parts = holdout.split(data, _fixed_batch(model))
            data = parts[0] if parts is not None else data
    next(iter(data))
    return data


def _open_calibration(model: onnx.ModelProto, options: RunOptions) -> DataSource:
    return open_data(options.calibration_data, model, preprocess=options.preprocess, seed=options.seed,
                     input_shapes=options.input_shapes)


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    specs = input_specs(model)
    first = specs[0].dims if specs else None
    return first[0] if first and isinstance(first[0], int) else None


def check_metric_options(options: RunOptions) -> None:
    if options.max_drop is not None and not options.metric:
        raise UsageError("--max-drop needs --metric (accuracy, top1, cosine or module:function)")
    if options.max_drop is not None and not (options.max_drop >= 0):
        raise UsageError(f"--max-drop must be a number of points >= 0, got {options.max_drop}")
    if options.metric and not options.verify:
        raise UsageError("--metric and --max-drop need the final check: drop --no-verify")
    if options.metric:
        Metric(options.metric)  # unknown metric or module that does not import: fail before any work
