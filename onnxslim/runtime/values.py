"""Model outputs as arrays of numbers, for comparing a result with its reference.

ONNX Runtime returns a tensor as an array, a sequence of maps (a ZipMap's class probabilities, one
map per sample, as scikit-learn classifiers export them) as a list of dicts. A sequence of maps
compares as the ``[N, classes]`` array of its values by sorted key.
"""

from __future__ import annotations

import numpy as np


def is_map_sequence(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)


def map_values(maps: list[dict]) -> np.ndarray:
    """``[N, classes]``: row i holds map i's values by sorted key."""
    return np.asarray([[m[k] for k in sorted(m)] for m in maps])


def numbers(value: object) -> np.ndarray | None:
    """``value`` as an array of numbers (bool, integer or float), a sequence of maps as its values;
    None for anything else (strings, sequences of tensors)."""
    if is_map_sequence(value):
        return map_values(value)
    return value if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" else None
