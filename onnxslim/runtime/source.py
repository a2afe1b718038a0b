"""The data source type every ``--data`` / ``--calibration-data`` form is read through."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

LABEL_KEY = "label"
Batch = dict[str, np.ndarray]


class DataSource:
    """A re-iterable stream of feed dicts; each ``iter()`` starts over from the first sample."""

    def __init__(
        self,
        description: str,
        batches: Callable[[], Iterator[tuple[Batch, np.ndarray | None]]],
        *,
        num_samples: int | None,
        len_hint: int | None,
        is_random: bool = False,
        has_labels: bool = False,
    ) -> None:
        self.description = description
        self.num_samples = num_samples
        self.len_hint = len_hint
        self.is_random = is_random
        self.has_labels = has_labels
        self._batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return (feeds for feeds, _ in self._batches())

    def with_labels(self) -> Iterator[tuple[Batch, np.ndarray | None]]:
        """(feeds, labels) pairs; labels is None when the source has none."""
        return self._batches()

    def labels(self) -> Iterator[np.ndarray]:
        """Label batches aligned with ``iter(self)``; empty when the source has no labels."""
        return (labels for _, labels in self._batches() if labels is not None)

    def __repr__(self) -> str:
        return f"DataSource({self.description!r})"
