"""Latency gate: is the split faster than the layer it replaces, on the target provider?

Each candidate is timed as two tiny models side by side (``runtime.bench.measure_latency``,
interleaved): the original node alone, and the two split nodes, both fed random values at
the layer's real input shape, with the context's provider and threads. Timings of equal
configurations (op, attributes, weight shape, rank, input shape) are measured once and reused.

The outcome depends on the machine and its load, so a choice made here is not reproducible
byte for byte; the pass lists every such choice in its stats.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.ir.io import to_model
from onnxslim.ir.weights import constant_value
from onnxslim.lowrank.layers import Layer, match, split
from onnxslim.runtime.bench import measure_latency

WARMUP, REPEAT, MAX_SECONDS = 3, 25, 0.5


@dataclasses.dataclass(frozen=True)
class Timing:
    original_ms: float
    split_ms: float

    @property
    def speedup(self) -> float:
        return self.original_ms / self.split_ms if self.split_ms > 0 else float("inf")


class LatencyGate:
    """Times candidate splits for one pass run, caching equal configurations."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        self.cache: dict[tuple, Timing] = {}

    def measure(self, layer: Layer, a: np.ndarray, b: np.ndarray, input_shape: tuple[int, ...]) -> Timing:
        key = (layer.node.op, repr(sorted(layer.node.attrs.items())), layer.shape, a.shape[1],
               tuple(input_shape), len(layer.node.inputs), np.dtype(layer.dtype).str)
        if key not in self.cache:
            original, candidate = tiny_models(layer, a, b, input_shape, self.ctx.template)
            rng = self.ctx.rng(len(self.cache))
            feeds = {"x": rng.standard_normal(input_shape).astype(layer.dtype)}
            stats = measure_latency([original, candidate], feeds, self.ctx.target_provider, self.ctx.threads,
                                    warmup=WARMUP, repeat=REPEAT, max_seconds=MAX_SECONDS)
            self.cache[key] = Timing(stats[0].median_ms, stats[1].median_ms)
        return self.cache[key]


def tiny_models(layer: Layer, a: np.ndarray, b: np.ndarray, input_shape: tuple[int, ...],
                template: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The layer's node alone, and its split, each as a one-input model fed ``x``."""
    node = layer.node
    x = gs.Variable("x", dtype=layer.dtype, shape=list(input_shape))
    y = gs.Variable("y", dtype=layer.dtype)
    inputs = [x] + [gs.Constant(f"c{i}", np.ascontiguousarray(constant_value(t)))
                    for i, t in enumerate(node.inputs[1:], 1) if t.name]
    copy = gs.Node(node.op, node.name or "layer", dict(node.attrs), inputs=inputs, outputs=[y])
    opset = next((o.version for o in template.opset_import if o.domain in ("", "ai.onnx")), 17)
    graph = gs.Graph(nodes=[copy], inputs=[x], outputs=[y], opset=opset)
    original = to_model(graph, template)
    tiny = match(copy)
    assert isinstance(tiny, Layer), tiny
    split(graph, tiny, a, b)
    graph.toposort()
    return original, to_model(graph, template)
