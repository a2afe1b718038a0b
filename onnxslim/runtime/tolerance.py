"""Parity tolerances: ``--tolerance`` text, checking metrics against it, merging budgets.

Text is ``exact``, ``none``, or ``metric=value`` pairs joined by commas over the per-output
metrics of ``parity``: ``max_abs`` and ``max_rel`` are upper bounds; ``cosine``, ``sqnr`` (dB)
and ``top1`` are lower bounds. ``exact`` (the default of exact passes and ``verify``) means
max_abs ≤ atol + rtol × max|a| on every output: max_rel alone means nothing for outputs near
zero. atol and rtol fit the output's dtype: 1e-5 and 1e-4 for float32 and wider; for a half
type with machine epsilon ε (float16 2⁻¹⁰, bfloat16 2⁻⁷) atol = ε and rtol = 10ε, since every
fp16 operation rounds to 2⁻¹¹ relative and a folded model rounds at other places than the
original (``exact_bounds``).

The word ``per_output`` makes the choice of metric per output, as the lossy passes' budgets do:
an output with a class axis (``parity.class_axis``) is judged by ``top1`` alone, every other
output by the other bounds. On generated inputs top-1 agreement says nothing of the task (random
noise gives near-tied scores), so there every output is judged by the other bounds and top-1 is
only reported. Without ``per_output`` every bound applies to every output (``top1`` to those
that have it). ``str()`` prints the canonical text (exact first, then metrics in the order
above, then per_output), and ``Tolerance.parse(str(t)) == t``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from onnxslim.errors import UsageError

if TYPE_CHECKING:
    from onnxslim.runtime.parity import OutputParity, ParityReport

#: ``exact`` means max_abs ≤ EXACT_ATOL + EXACT_RTOL × max|a| on every output.
EXACT_ATOL = 1e-5
EXACT_RTOL = 1e-4
#: machine epsilon of the half types, whose ``exact`` bounds scale with it
_HALF_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7}

#: metric -> (attribute of OutputParity, True if the bound is an upper bound, valid range)
_METRICS = {
    "max_abs": ("max_abs", True, (0.0, math.inf)),
    "max_rel": ("max_rel", True, (0.0, math.inf)),
    "cosine": ("cosine", False, (-1.0, 1.0)),
    "sqnr": ("sqnr_db", False, (-math.inf, math.inf)),
    "top1": ("top1", False, (0.0, 1.0)),
}
_ALIASES = {"sqnr_db": "sqnr", "top_1": "top1", "max_abs_err": "max_abs"}


@dataclass(frozen=True)
class Tolerance:
    """Bounds on per-output metrics; every bound must hold on every output.

    ``exact`` is the tolerance of exact passes and of ``verify``. Bounds on ``top1`` apply only
    to outputs that have a top-1 metric. ``per_output``: see the module docstring.
    ``Tolerance()`` bounds nothing (text ``none``).
    """

    exact: bool = False
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    sqnr: float | None = None
    top1: float | None = None
    per_output: bool = False

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        """Parse ``exact``, ``none`` or ``metric=value`` pairs joined by commas.

        Raises:
            UsageError: an unknown metric, a bad or out-of-range number, a repeated metric,
                or empty text.
        """
        items = [i.strip() for i in text.split(",") if i.strip()]
        if not items:
            raise UsageError("empty --tolerance: use exact, or metric=value pairs such as cosine=0.999")
        values: dict[str, object] = {}
        for item in items:
            key, value = _parse_item(item)
            if key in values:
                raise UsageError(f"--tolerance gives {key} twice")
            values[key] = value
        values.pop("none", None)
        return cls(**values)

    def __str__(self) -> str:
        parts = ["exact"] if self.exact else []
        parts += [f"{m}={_format_number(getattr(self, m))}" for m in _METRICS if getattr(self, m) is not None]
        parts += ["per_output"] if self.per_output else []
        return ",".join(parts) or "none"

    def merge(self, other: Tolerance) -> Tolerance:
        """The budget of two passes together: per metric, the looser bound.

        A metric bounded by only one side keeps that bound (the pass that declared it still
        needs it); ``exact`` survives only when both sides are exact, since any lossy budget
        is looser than exactness. ``per_output`` survives when either side has it (judging a
        class-score output by top-1 alone is the looser reading).
        """
        merged = {"exact": self.exact and other.exact, "per_output": self.per_output or other.per_output}
        for metric, (_, upper, _) in _METRICS.items():
            mine, theirs = getattr(self, metric), getattr(other, metric)
            if mine is None or theirs is None:
                merged[metric] = theirs if mine is None else mine
            else:
                merged[metric] = max(mine, theirs) if upper else min(mine, theirs)
        return Tolerance(**merged)

    def check(self, metrics: Iterable[OutputParity] | ParityReport, generated: bool | None = None) -> list[str]:
        """One line per broken bound, e.g. ``"logits: cosine 0.9981 < 0.999"``; empty if it holds.

        ``generated``: the outputs come from generated inputs (default: what a ParityReport says).
        """
        outputs = getattr(metrics, "outputs", metrics)
        if generated is None:
            generated = bool(getattr(metrics, "generated", False))
        failures: list[str] = []
        for out in outputs:
            failures += self._check_one(out, generated)
        return failures

    def judged_by(self, out: OutputParity, generated: bool = False) -> list[str]:
        """The bounds that apply to ``out``, e.g. ``["top1"]`` or ``["exact"]``, in text order."""
        by_top1 = self.per_output and self.top1 is not None and out.top1 is not None and not generated
        names = ["exact"] if self.exact and not by_top1 else []
        for metric, (attr, _, _) in _METRICS.items():
            if getattr(self, metric) is None or getattr(out, attr) is None:
                continue
            if self.per_output and (metric == "top1") != by_top1:
                continue
            names.append(metric)
        return names

    def _check_one(self, out: OutputParity, generated: bool = False) -> list[str]:
        if out.error:
            return [f"{out.name}: {out.error}"]
        failures = []
        applied = self.judged_by(out, generated)
        if "exact" in applied:
            atol, rtol = exact_bounds(out.dtype)
            bound = atol + rtol * out.max_ref
            if not out.max_abs <= bound:
                failures.append(
                    f"{out.name}: max_abs {out.max_abs:.3g} > {atol:g} + {rtol:g} × "
                    f"max|a| = {bound:.3g} (exact{'' if out.dtype not in _HALF_EPS else ', ' + out.dtype})"
                )
        for metric, (attr, upper, _) in _METRICS.items():
            bound, value = getattr(self, metric), getattr(out, attr)
            if metric not in applied:
                continue
            if not (value <= bound if upper else value >= bound):
                failures.append(
                    f"{out.name}: {metric} {value:.6g} {'>' if upper else '<'} {_format_number(bound)}"
                )
        return failures


def exact_bounds(dtype: str) -> tuple[float, float]:
    """(atol, rtol) of ``exact`` for an output of numpy dtype name ``dtype``."""
    eps = _HALF_EPS.get(dtype)
    if eps is None:
        return EXACT_ATOL, EXACT_RTOL
    return max(EXACT_ATOL, eps), max(EXACT_RTOL, 10 * eps)


def _parse_item(item: str) -> tuple[str, object]:
    lowered = item.lower()
    if lowered in ("exact", "none", "per_output"):
        return lowered, True
    key, sep, text = lowered.partition("=")
    key = _ALIASES.get(key.strip(), key.strip())
    if not sep or key not in _METRICS:
        raise UsageError(
            f"unknown tolerance {item!r} (use exact, none, per_output, or {', '.join(m + '=N' for m in _METRICS)})"
        )
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"tolerance {key}: {text.strip()!r} is not a number") from None
    low, high = _METRICS[key][2]
    if not (low <= value <= high) or math.isnan(value):
        raise UsageError(f"tolerance {key}={text.strip()} is out of range [{low:g}, {high:g}]")
    return key, value


def _format_number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
