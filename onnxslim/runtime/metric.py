"""``--metric``: the task's own measure, on the original's and the result's outputs.

A metric is a number, higher is better, in its native scale (a fraction for accuracy, top-1 and
cosine). The report gives the original's value, the result's and the drop in points:
100 × (original − result). ``--max-drop P`` makes ``drop ≤ P`` the budget.

* ``accuracy``: the share of labels (the data's ``label`` key) equal to the argmax along the
  class axis (``parity.class_axis``) of the first output, in graph order, whose argmax has the
  labels' shape: ``[N]`` labels for ``[N, C]`` scores, ``[N, T]`` for ``[N, T, C]``, ``[N, H, W]``
  for ``[N, C, H, W]`` maps. Labels shaped like the output itself (one-hot or probabilities) are
  reduced by the same argmax. Counted batch by batch; nothing is kept.
* ``top1``: the lowest top-1 agreement of the result with the original over the outputs that
  hold class scores (the original agrees with itself: 1).
* ``cosine``: the lowest cosine similarity of the result with the original over every output
  (the original: 1).
* ``module:function`` (or ``path/to/file.py:function``): ``function(outputs, data)`` is called
  once for the original and once for the result. ``outputs`` maps each output name to its
  values over every batch, concatenated on axis 0; ``data`` maps each input name, and ``label``
  when the data has labels, to the inputs fed, concatenated the same way. An output or input
  whose batches differ beyond axis 0 (a dynamic sequence length) is passed as the list of its
  per-batch arrays instead. Modules are imported from the current directory first, then the
  Python path. The function returns a finite real number.

Bad values are usage errors (exit 2): an unknown metric, a module that does not import, a name
that is not a callable, accuracy without labels or without an output that fits them, a function
that raises or returns something other than a finite number.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxslim.errors import UsageError
from onnxslim.runtime.parity import ParityReport, class_axis

BUILT_IN = ("accuracy", "top1", "cosine")
Outputs = dict[str, np.ndarray]


@dataclass
class MetricResult:
    """A metric's value on the original and the result, and whether ``--max-drop`` held."""

    metric: str
    original: float
    result: float
    max_drop: float | None = None
    output: str | None = None
    samples: int = 0

    @property
    def drop_points(self) -> float:
        return 100.0 * (self.original - self.result)

    @property
    def held(self) -> bool | None:
        if self.max_drop is None:
            return None
        return bool(self.drop_points <= self.max_drop + 1e-9)  # a drop equal to P holds despite rounding

    @property
    def failure(self) -> str | None:
        if self.held is not False:
            return None
        return (f"metric {self.metric} dropped {self.drop_points:.2f} points ({self.original:.4g} -> "
                f"{self.result:.4g}) > --max-drop {self.max_drop:g}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "original": self.original,
            "result": self.result,
            "drop_points": round(self.drop_points, 6),
            "max_drop": self.max_drop,
            "held": self.held,
            "failure": self.failure,
            "output": self.output,
            "samples": self.samples,
        }


class Metric:
    """A parsed ``--metric`` value; ``collector()`` gathers what it needs during the parity run."""

    def __init__(self, spec: str) -> None:
        self.spec = spec.strip()
        self.function: Callable[..., Any] | None = None
        if self.spec not in BUILT_IN:
            self.function = _load_callable(self.spec)

    @property
    def needs_labels(self) -> bool:
        return self.spec == "accuracy"

    def collector(self, max_drop: float | None = None) -> Collector:
        return Collector(self, max_drop)


class Collector:
    """Fed each batch's inputs (``add_inputs``) and then its outputs (``add_outputs``)."""

    def __init__(self, metric: Metric, max_drop: float | None) -> None:
        self.metric, self.max_drop = metric, max_drop
        self.samples = 0
        self._labels: np.ndarray | None = None
        self._inputs: list[dict[str, np.ndarray]] = []
        self._ref: list[Outputs] = []
        self._cand: list[Outputs] = []
        self._correct: dict[str, list[int]] = {}  # output -> [original correct, result correct, labels]
        self._unfit: set[str] = set()
        self._label_shapes: list[tuple[int, ...]] = []

    def add_inputs(self, feeds: Mapping[str, np.ndarray], labels: np.ndarray | None) -> None:
        self._labels = None if labels is None else np.asarray(labels)
        first = next(iter(feeds.values()), None)
        self.samples += int(first.shape[0]) if first is not None and np.ndim(first) > 0 else 1
        if self.metric.function is not None:
            batch = dict(feeds)
            if labels is not None:
                batch["label"] = np.asarray(labels)
            self._inputs.append(batch)

    def add_outputs(self, reference: Outputs, candidate: Outputs) -> None:
        if self.metric.function is not None:
            self._ref.append(dict(reference))
            self._cand.append(dict(candidate))
        elif self.metric.spec == "accuracy":
            self._count_correct(reference, candidate)

    def evaluate(self, parity: ParityReport) -> MetricResult:
        spec = self.metric.spec
        if spec == "top1":
            scores = [o for o in parity.outputs if o.top1 is not None]
            if not scores:
                raise UsageError("--metric top1: no output holds class scores ([N, C], [N, T, C] or [N, C, H, W])")
            worst = min(scores, key=lambda o: o.top1)
            return MetricResult(spec, 1.0, worst.top1, self.max_drop, worst.name, self.samples)
        if spec == "cosine":
            worst = min(parity.outputs, key=lambda o: (not math.isnan(o.cosine), o.cosine))
            return MetricResult(spec, 1.0, worst.cosine, self.max_drop, worst.name, self.samples)
        if spec == "accuracy":
            return self._accuracy()
        return self._custom()

    def _count_correct(self, reference: Outputs, candidate: Outputs) -> None:
        if self._labels is None:
            raise UsageError("--metric accuracy needs labels: a 'label' key in every data file")
        labels = self._labels
        self._label_shapes.append(labels.shape)
        for name, ref in reference.items():
            ref = np.asarray(ref)
            axis = class_axis(ref.shape, ref.dtype, name)
            if name in self._unfit or axis is None:
                self._unfit.add(name)
                continue
            target = _label_indices(labels, ref.shape, axis)
            if target is None:
                self._unfit.add(name)
                continue
            counts = self._correct.setdefault(name, [0, 0, 0])
            counts[0] += int(np.sum(np.argmax(ref, axis=axis) == target))
            counts[1] += int(np.sum(np.argmax(np.asarray(candidate[name]), axis=axis) == target))
            counts[2] += target.size

    def _accuracy(self) -> MetricResult:
        fitting = [n for n in self._correct if n not in self._unfit and self._correct[n][2]]
        if not fitting:
            shape = list(self._label_shapes[0]) if self._label_shapes else None
            raise UsageError(
                f"--metric accuracy: no output's argmax along its class axis has the labels' shape {shape}; "
                "use --metric module:function"
            )
        name = fitting[0]
        original, result, total = self._correct[name]
        return MetricResult("accuracy", original / total, result / total, self.max_drop, name, self.samples)

    def _custom(self) -> MetricResult:
        data = _stack(self._inputs)
        values = [_call(self.metric, _stack(outputs), data) for outputs in (self._ref, self._cand)]
        return MetricResult(self.metric.spec, values[0], values[1], self.max_drop, None, self.samples)


def _label_indices(labels: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """Labels as class indices shaped like the argmax of an output of ``shape``; None if unfit."""
    decided = shape[:axis] + shape[axis + 1 :]
    if labels.shape == decided and labels.dtype.kind in "iub":
        return labels.astype(np.int64)
    if labels.shape == decided and labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    if labels.shape == shape:
        return np.argmax(labels, axis=axis)
    return None


def _stack(batches: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    if not batches:
        return {}
    out: dict[str, Any] = {}
    for key in batches[0]:
        parts = [np.asarray(b[key]) for b in batches]
        same = all(p.ndim > 0 and p.shape[1:] == parts[0].shape[1:] for p in parts)
        out[key] = np.concatenate(parts) if same else parts
    return out


def _call(metric: Metric, outputs: dict[str, Any], data: dict[str, Any]) -> float:
    try:
        value = metric.function(outputs, data)
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is a usage error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"--metric {metric.spec} raised {type(exc).__name__}: {first}") from None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise UsageError(f"--metric {metric.spec} returned {value!r}, not a finite number")
    return float(value)


def _load_callable(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"unknown --metric {spec!r}: use accuracy, top1, cosine or module:function")
    module = _import(module_name)
    function = getattr(module, attr, None)
    if function is None:
        raise UsageError(f"--metric {spec}: module {module_name!r} has no {attr!r}")
    if not callable(function):
        raise UsageError(f"--metric {spec}: {attr!r} is not callable")
    return function


def _import(name: str) -> Any:
    try:
        if name.endswith(".py") or os.sep in name:
            location = importlib.util.spec_from_file_location(f"onnxslim_metric_{abs(hash(name))}", name)
            if location is None or not os.path.isfile(name):
                raise FileNotFoundError(f"no file {name}")
            module = importlib.util.module_from_spec(location)
            location.loader.exec_module(module)
            return module
        sys.path.insert(0, os.getcwd())
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(os.getcwd())
    except Exception as exc:  # noqa: BLE001 - importing the user's module can fail in any way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--metric: cannot import {name!r}: {first}") from None
