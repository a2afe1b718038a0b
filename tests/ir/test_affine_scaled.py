"""``affine._scaled``: the narrow-dtype product is bit for bit the float64 product rounded once."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.ir import affine


def _reference(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return (weight.astype(np.float64) * scale).astype(weight.dtype)


def _hard_values(rng: np.random.Generator, dtype, size: int) -> np.ndarray:
    """Normal values mixed with subnormals, the extremes, signed zeros and a NaN and infinities."""
    info = np.finfo(dtype)
    values = rng.standard_normal(size).astype(dtype)
    values[::7] = (rng.uniform(-1, 1, len(values[::7])) * info.smallest_normal).astype(dtype)  # subnormals
    values[1::11] = (rng.uniform(-1, 1, len(values[1::11])) * info.max).astype(dtype)
    values[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, info.smallest_subnormal]
    return values


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_scale_the_weight_dtype_holds_gives_the_float64_bits(rng, dtype):
    weight = _hard_values(rng, dtype, 64 * 97).reshape(64, 97)
    scale = _hard_values(rng, dtype, 70)[6:].astype(np.float64).reshape(-1, 1)  # fold's scales are finite
    assert np.all(np.isfinite(scale))
    with np.errstate(over="ignore", invalid="ignore"):
        got = affine._scaled(weight, scale)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), _reference(weight, scale).view(f"u{got.itemsize}"))


def test_a_scale_only_float64_holds_takes_the_float64_product(rng):
    weight = _hard_values(rng, np.float32, 32 * 9).reshape(32, 9)
    scale = (1.0 / np.arange(1, 33, dtype=np.float64)).reshape(-1, 1)  # 1/3 is no float32 number
    assert not np.array_equal(scale.astype(np.float32), scale)
    with np.errstate(over="ignore", invalid="ignore"):
        got = affine._scaled(weight, scale)
    np.testing.assert_array_equal(got.view(np.uint32), _reference(weight, scale).view(np.uint32))
    with np.errstate(over="ignore", invalid="ignore"):
        narrow = weight * scale.astype(np.float32)
    assert not np.array_equal(got.view(np.uint32), narrow.view(np.uint32))  # the float32 product would differ
