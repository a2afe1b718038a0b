"""Calibration samples for the quantize pass: a capped source, and the activations of a graph on
it, through the engine's ``PassContext``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext, stacked_rows

logger = logging.getLogger(__name__)


#: rows per calibration run: exposing every quantized tensor of 32 samples at once overflows the
#: caches (MobileNetV2, 100 samples: 5.0 s in batches of 32, 3.3 s in batches of 8; ResNet-18 and
#: MiniLM unchanged)
CHUNK = 8


class LimitedSamples:
    """Re-iterable calibration source cut at ``limit`` samples (None: all), in batches of at most ``chunk`` rows.

    A model with a fixed batch B takes B rows at a time: the chunk and the cut are whole batches.
    A feed whose inputs do not share axis 0 counts as one sample and is never cut.
    """

    def __init__(self, source: Iterable[dict[str, np.ndarray]], limit: int | None, chunk: int = CHUNK,
                 batch: int | None = None) -> None:
        batch = batch or 1
        self.chunk = max(batch, chunk - chunk % batch)
        self.limit = None if limit is None else max(batch, limit - limit % batch)
        self.source = source

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        seen = 0
        for feeds in self.source:
            if self.limit is not None and seen >= self.limit:
                return
            n = stacked_rows(feeds)
            if n is None:  # one feed whose inputs do not share axis 0: one sample, fed as it is
                seen += 1
                yield feeds
                continue
            if self.limit is not None and seen + n > self.limit:
                feeds = {k: v[: self.limit - seen] for k, v in feeds.items()}
                n = self.limit - seen
            seen += n
            logger.info("quantize: calibration %d samples", seen)
            if n <= self.chunk:
                yield feeds
                continue
            for start in range(0, n, self.chunk):
                yield {k: v[start:start + self.chunk] for k, v in feeds.items()}


def activations(ctx: PassContext, graph: gs.Graph, names: Sequence[str],
                data: Iterable[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """``ctx.activations`` over ``data`` (a possibly limited calibration source).

    ORT keeps every graph output intact when it optimizes, so the deployed level is safe here
    and several times faster than ORT_DISABLE_ALL on conv nets.
    """
    return ctx.activations(graph, names, optimize=True, data=data)

