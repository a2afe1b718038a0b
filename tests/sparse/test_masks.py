"""Masks and counts: exact zeros per layer and globally, N:M in every block, LAMP allocation."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.sparse import masks


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_unstructured_mask_zeroes_exactly_the_requested_count(rng, sparsity):
    scores = rng.normal(size=(3, 17, 29)) ** 2
    count = masks.target_count(sparsity, scores.size)
    mask = masks.unstructured_mask(scores, count)
    assert mask.sum() == count == round(sparsity * scores.size)
    if 0 < count < scores.size:  # the lowest scores go
        assert scores[mask].max() <= scores[~mask].min()


def test_unstructured_mask_counts_ties_exactly():
    mask = masks.unstructured_mask(np.zeros((4, 4)), 5)
    assert mask.sum() == 5


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.9])
def test_global_allocation_sums_to_the_total_and_keeps_every_layer_alive(rng, sparsity):
    layers = [rng.normal(size=(64, 128)) ** 2, rng.normal(size=(32, 9)) ** 2 * 100, rng.normal(size=(10, 64)) ** 2]
    sizes = [s.size for s in layers]
    total = masks.target_count(sparsity, sum(sizes))
    counts = masks.allocate_global(layers, total)
    assert sum(counts) == total
    assert all(0 <= c < n for c, n in zip(counts, sizes))  # LAMP: each layer's largest weight scores 1


def test_lamp_spares_a_small_layer_whose_weights_carry_more_of_its_energy(rng):
    big = rng.normal(size=(256, 256)) ** 2  # many redundant weights
    small = np.abs(rng.normal(size=(8, 9))) ** 2
    counts = masks.allocate_global([big, small], masks.target_count(0.5, big.size + small.size))
    assert counts[1] / small.size < counts[0] / big.size


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_nm_mask_holds_the_pattern_in_every_block(rng, n, m):
    scores = rng.normal(size=(2, 12, 48)) ** 2
    perm = rng.permutation(48)
    mask = masks.nm_mask(scores, n, m, perm)
    blocks = mask[:, :, perm].reshape(2, 12, 48 // m, m)
    assert np.all(blocks.sum(axis=-1) == m - n)
    weights = np.where(mask, 0.0, 1.0)
    assert masks.holds_nm(weights, n, m, perm)
    assert not masks.holds_nm(np.ones_like(weights), n, m, perm)


def test_split_counts_is_exact_and_proportional():
    parts = masks.split_counts(101, [10, 30, 60, 100])
    assert sum(parts) == 101
    assert parts == sorted(parts)
