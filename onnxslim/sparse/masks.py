"""Which weights go: exact counts per layer, global allocation, unstructured and N:M masks.

Counts are exact: a layer asked for sparsity ``s`` over ``n`` weights loses exactly
``round(s·n)`` of them (ties broken by position), so the fraction of zeros matches the request.

Global scope (one threshold across layers) compares scores normalized within each layer as
LAMP does (Lee et al., "Layer-adaptive sparsity for the magnitude-based pruning", ICLR 2021):

    lamp(u) = s_u / Σ_{v ≥ u} s_v      (weights of the layer sorted by ascending score s)

so a weight is compared by the share of its layer's remaining energy it carries; the largest
weight of every layer scores 1 and is the last to go, and small, dense-in-information layers
(a first convolution with 9 weights per filter) give little, large redundant ones give much.

N:M keeps at most N nonzeros in every block of M consecutive weights along the reduction
dimension (in ``layers.nm_perm`` order), zeroing the ``M − N`` lowest-scored of each block.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def target_count(sparsity: float, size: int) -> int:
    """Zeros a layer of ``size`` weights must hold at ``sparsity``."""
    return round(sparsity * size)


def lamp(scores: np.ndarray) -> np.ndarray:
    """LAMP scores of one layer's flattened ``scores`` (same shape)."""
    flat = scores.reshape(-1).astype(np.float64)
    order = np.argsort(flat, kind="stable")
    sorted_scores = flat[order]
    tail = np.cumsum(sorted_scores[::-1])[::-1]  # Σ_{v ≥ u}
    out = np.empty_like(flat)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[order] = np.where(tail > 0, sorted_scores / tail, 0.0)
    return out.reshape(scores.shape)


def allocate_global(layer_scores: Sequence[np.ndarray], total: int) -> list[int]:
    """Zeros per layer so that ``total`` weights go, lowest LAMP scores first across layers."""
    normalized = [lamp(s).reshape(-1) for s in layer_scores]
    sizes = [s.size for s in normalized]
    if total <= 0:
        return [0] * len(sizes)
    allv = np.concatenate(normalized)
    total = min(total, allv.size)
    chosen = np.argpartition(allv, total - 1)[:total] if total < allv.size else np.arange(allv.size)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    return np.bincount(owner[chosen], minlength=len(sizes)).tolist()


def unstructured_mask(scores: np.ndarray, count: int) -> np.ndarray:
    """True where a weight is zeroed: exactly the ``count`` lowest ``scores`` (stable ties)."""
    flat = scores.reshape(-1)
    mask = np.zeros(flat.size, dtype=bool)
    if count > 0:
        order = np.argsort(flat, kind="stable")
        mask[order[:count]] = True
    return mask.reshape(scores.shape)


def nm_mask(scores: np.ndarray, n: int, m: int, perm: np.ndarray) -> np.ndarray:
    """``[G, rows, cols]`` mask zeroing the ``m − n`` lowest scores in each block of ``m``."""
    g, rows, cols = scores.shape
    permuted = scores[:, :, perm].reshape(g, rows, cols // m, m)
    order = np.argsort(permuted, axis=-1, kind="stable")
    mask_p = np.zeros_like(permuted, dtype=bool)
    np.put_along_axis(mask_p, order[..., : m - n], True, axis=-1)
    mask = np.empty((g, rows, cols), dtype=bool)
    mask[:, :, perm] = mask_p.reshape(g, rows, cols)
    return mask


def holds_nm(mats: np.ndarray, n: int, m: int, perm: np.ndarray) -> bool:
    """Whether every block of ``m`` (in ``perm`` order) has at most ``n`` nonzeros."""
    g, rows, cols = mats.shape
    blocks = mats[:, :, perm].reshape(g, rows, cols // m, m)
    return bool(np.all(np.count_nonzero(blocks, axis=-1) <= n))


def split_counts(count: int, sizes: Sequence[int]) -> list[int]:
    """``count`` split over parts of ``sizes`` in proportion, summing exactly to ``count``."""
    total = sum(sizes)
    if total == 0:
        return [0] * len(sizes)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    marks = np.rint(bounds * (count / total)).astype(np.int64)
    return np.diff(marks).tolist()
