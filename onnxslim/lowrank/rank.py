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


def weight_errors(sigma: np.ndarray) -> np.ndarray:
    """Relative weight error ‖W − W_r‖_F / ‖W‖_F at ranks 0..m, from the plain spectrum."""
    squares = np.asarray(sigma, dtype=np.float64) ** 2
    tail = np.concatenate([np.cumsum(squares[::-1])[::-1], [0.0]])
    return np.sqrt(tail / tail[0]) if tail[0] > 0 else np.zeros_like(tail)


def allocate(curves: list[np.ndarray], shapes: list[tuple[int, int]], ratio: float) -> list[int | None]:
    """Ranks that keep at most ``ratio`` of the layers' weight parameters, at equal error.

    Every layer gets the smallest rank whose error (its curve, indexed by rank) is at most a
    common threshold e; a layer whose rank would save nothing stays whole (None). e is the
    smallest threshold that meets the budget, found by bisection over the curves' values
    (the parameter count falls as e grows). When even rank 1 everywhere misses the budget,
    every layer gets rank 1.
    """
    budget = ratio * sum(k * n for k, n in shapes)
    thresholds = np.unique(np.concatenate([np.asarray(c)[1:] for c in curves])) if curves else np.zeros(1)

    def ranks_at(e: float) -> tuple[list[int | None], int]:
        chosen, params = [], 0
        for curve, (k, n) in zip(curves, shapes):
            within = np.nonzero(np.asarray(curve)[1:] <= e)[0]
            r = int(within[0]) + 1 if within.size else len(curve) - 1
            if saves(r, (k, n)):
                chosen.append(r)
                params += r * (k + n)
            else:
                chosen.append(None)
                params += k * n
        return chosen, params

    low, high = 0, len(thresholds) - 1
    while low < high:
        mid = (low + high) // 2
        if ranks_at(float(thresholds[mid]))[1] <= budget:
            high = mid
        else:
            low = mid + 1
    return ranks_at(float(thresholds[low]))[0]
