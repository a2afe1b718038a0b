"""Rank selection: one rule per run, each a pure function of the spectrum (and the error curve).

* ``energy``: the smallest r whose retained Σσ² share reaches the value. For the plain SVD that
  is the weight's energy; for the data-aware variant it is the output energy on the
  calibration rows (relative output error ≈ sqrt(1 − energy), bias aside).
* ``rank_ratio``: r = ceil(ratio × min(K, N)).
* ``param_ratio``: the largest r with r·(K + N) ≤ ratio × K·N: the layer keeps that share of
  its weight parameters.
* ``max_error``: the smallest r whose relative output error ‖Y − Ŷ‖_F / ‖Y‖_F on the
  calibration data is at most the value (needs calibration data).

A split saves parameters only when r·(K + N) < K·N; ``saves`` says whether it does.
"""

from __future__ import annotations

import math

import numpy as np

RULES = ("energy", "rank_ratio", "param_ratio", "max_error")


def choose_rank(rule: str, value: float, sigma: np.ndarray, shape: tuple[int, int],
                errors: np.ndarray | None = None) -> int:
    """The rank ``rule`` picks, between 1 and the number of singular values.

    Args:
        rule: one of ``RULES``.
        value: the rule's parameter.
        sigma: singular values, descending.
        shape: (K, N) of the weight.
        errors: relative output error at ranks 0..m (``factor.output_errors``); needed by
            ``max_error``.
    """
    m = len(sigma)
    k, n = shape
    if rule == "energy":
        squares = np.asarray(sigma, dtype=np.float64) ** 2
        total = squares.sum()
        if total <= 0:
            return 1
        retained = np.cumsum(squares) / total
        rank = int(np.searchsorted(retained, value - 1e-12) + 1)
    elif rule == "rank_ratio":
        rank = math.ceil(value * min(k, n) - 1e-9)
    elif rule == "param_ratio":
        rank = math.floor(value * k * n / (k + n) + 1e-9)
    elif rule == "max_error":
        if errors is None:
            raise ValueError("max_error needs the output error curve")
        within = np.nonzero(np.asarray(errors) <= value)[0]
        rank = int(within[0]) if within.size else m
    else:
        raise ValueError(f"unknown rank rule {rule!r}")
    return int(min(max(rank, 1), m))


def saves(rank: int, shape: tuple[int, int]) -> bool:
    """True when A (K×r) and B (r×N) hold fewer elements than W (K×N)."""
    k, n = shape
    return rank * (k + n) < k * n


def break_even(shape: tuple[int, int]) -> int:
    """The largest rank that still saves parameters (0 when none does)."""
    k, n = shape
    return max(0, (k * n - 1) // (k + n))
