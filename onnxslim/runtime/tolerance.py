"""Parity tolerances: ``--tolerance`` text, checking metrics against it, merging budgets.

Text is ``exact``, ``none``, or ``metric=value`` pairs joined by commas over the per-output
metrics of ``parity``: ``max_abs`` and ``max_rel`` are upper bounds; ``cosine``, ``sqnr`` (dB)
and ``top1`` are lower bounds. ``exact`` (the default of exact passes and ``verify``) means
max_abs ≤ 1e-5 + 1e-4 × max|a| on every output: max_rel alone means nothing for outputs near
zero. ``str()`` prints the canonical text (exact first, then metrics in the order above), and
``Tolerance.parse(str(t)) == t``.
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
    to outputs that have a top-1 metric. ``Tolerance()`` bounds nothing (text ``none``).
    """

    exact: bool = False
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    sqnr: float | None = None
    top1: float | None = None

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
        return ",".join(parts) or "none"

    def merge(self, other: Tolerance) -> Tolerance:
        """The budget of two passes together: per metric, the looser bound.

        A metric bounded by only one side keeps that bound (the pass that declared it still
        needs it); ``exact`` survives only when both sides are exact, since any lossy budget
        is looser than exactness.
        """
        merged = {"exact": self.exact and other.exact}
        for metric, (_, upper, _) in _METRICS.items():
            mine, theirs = getattr(self, metric), getattr(other, metric)
            if mine is None or theirs is None:
                merged[metric] = theirs if mine is None else mine
            else:
                merged[metric] = max(mine, theirs) if upper else min(mine, theirs)
        return Tolerance(**merged)

    def check(self, metrics: Iterable[OutputParity] | ParityReport) -> list[str]:
        """One line per broken bound, e.g. ``"logits: cosine 0.9981 < 0.999"``; empty if it holds."""
        outputs = getattr(metrics, "outputs", metrics)
        failures: list[str] = []
        for out in outputs:
            failures += self._check_one(out)
        return failures

    def _check_one(self, out: OutputParity) -> list[str]:
        if out.error:
            return [f"{out.name}: {out.error}"]
        failures = []
        if self.exact:
            bound = EXACT_ATOL + EXACT_RTOL * out.max_ref
            if not out.max_abs <= bound:
                failures.append(
                    f"{out.name}: max_abs {out.max_abs:.3g} > {EXACT_ATOL:g} + {EXACT_RTOL:g} × "
                    f"max|a| = {bound:.3g} (exact)"
                )
        for metric, (attr, upper, _) in _METRICS.items():
            bound, value = getattr(self, metric), getattr(out, attr)
            if bound is None or value is None:
                continue
            if not (value <= bound if upper else value >= bound):
                failures.append(
                    f"{out.name}: {metric} {value:.6g} {'>' if upper else '<'} {_format_number(bound)}"
                )
        return failures


def _parse_item(item: str) -> tuple[str, object]:
    lowered = item.lower()
    if lowered in ("exact", "none"):
        return lowered, True
    key, sep, text = lowered.partition("=")
    key = _ALIASES.get(key.strip(), key.strip())
    if not sep or key not in _METRICS:
        raise UsageError(
            f"unknown tolerance {item!r} (use exact, none, or {', '.join(m + '=N' for m in _METRICS)})"
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
