"""Sparse storage: lossless round trip, and sparse only where it is smaller."""

from __future__ import annotations

import numpy as np

from onnxslim.sparse import storage


def _pruned(rng, shape, sparsity):
    w = rng.normal(size=shape).astype(np.float32)
    w[rng.random(shape) < sparsity] = 0
    return w


def test_sparse_round_trip_is_lossless(rng):
    w = _pruned(rng, (16, 3, 3, 3), 0.8)
    np.testing.assert_array_equal(storage.to_dense(storage.to_sparse(w, "w")), w)


def test_choice_is_dense_at_low_sparsity_and_sparse_at_high(rng):
    low, _ = storage.choose(_pruned(rng, (128, 128), 0.2), "a")
    high, proto = storage.choose(_pruned(rng, (128, 128), 0.9), "b")
    assert low.format == "dense" and low.sparse_bytes >= low.dense_bytes
    assert high.format == "sparse" and high.sparse_bytes < high.dense_bytes and proto is not None
    assert high.nonzeros == proto.values.dims[0]
