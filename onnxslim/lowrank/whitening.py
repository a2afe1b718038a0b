"""Streaming second moments of the layers' inputs, and their real shapes.

The data-aware split and the ``max_error`` rule need, per layer, ``M = Σ x xᵀ`` over every input
row of the calibration data (a row: one token of a MatMul, one sample of a Gemm, one pixel of
a 1×1 Conv), plus ``Σ x`` and the row count for the output norm. They are accumulated batch by
batch from ``ctx.activations`` in float64: memory is K×K per distinct input tensor, whatever
the number of samples.

The latency gate needs the shape each layer really sees: the first calibration batch's, or
without calibration data, one run on generated inputs (``runtime.feeds`` defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext, expose_tensors
from onnxslim.lowrank.factor import Moments
from onnxslim.ir.linear import Linear
from onnxslim.lowrank.layers import rows
from onnxslim.runtime.feeds import random_feeds


def _key(layer: Linear) -> tuple[str, int]:
    return layer.input.name, layer.feature_axis


def collect_moments(ctx: PassContext, graph: gs.Graph, layers: Sequence[Linear]
                    ) -> tuple[dict[tuple[str, int], Moments], dict[str, tuple[int, ...]]]:
    """Moments per (input tensor, feature axis) over all calibration batches, and first-batch shapes."""
    by_key = {_key(layer): layer for layer in layers}
    names = sorted({name for name, _ in by_key})
    sums: dict[tuple[str, int], list] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for values in ctx.activations(graph, names):
        for key, layer in by_key.items():
            x = values[key[0]]
            shapes.setdefault(key[0], tuple(int(d) for d in x.shape))
            r = rows(layer, x)
            acc = sums.setdefault(key, [np.zeros((r.shape[1], r.shape[1])), np.zeros(r.shape[1]), 0])
            acc[0] += r.T @ r
            acc[1] += r.sum(axis=0)
            acc[2] += r.shape[0]
    return {key: Moments(m, s, n) for key, (m, s, n) in sums.items()}, shapes


def probe_shapes(ctx: PassContext, graph: gs.Graph, layers: Sequence[Linear]) -> dict[str, tuple[int, ...]]:
    """The input shape of every layer on one batch: calibration data if given, else generated."""
    names = sorted({layer.input.name for layer in layers})
    if ctx.calibration is not None:
        for values in ctx.activations(graph, names):
            return {n: tuple(int(d) for d in values[n].shape) for n in names}
    model = expose_tensors(ctx.export(graph), names)
    feeds = random_feeds(model, {}, ctx.seed)
    session = ctx.session(model, optimize=False)
    fetch = [n for n in names if n not in feeds]
    values = session.run({k: v for k, v in feeds.items() if k in session.inputs}, fetch)
    values.update(feeds)
    return {n: tuple(int(d) for d in values[n].shape) for n in names}
