"""Latency gate: is the split faster than the layer it replaces, on the target provider?

Each candidate is timed as two tiny models side by side (``PassContext.time``, interleaved):
the original node alone, and the two split nodes, both fed random values at the layer's real
input shape, with the context's provider and threads (None: ORT's default pool). Timings of equal
configurations (op, attributes, weight shape, rank, input shape) are measured once and reused.

The outcome depends on the machine and its load, so a choice made here is not reproducible
byte for byte; the pass lists every such choice in its stats.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.core.context import LatencyStats, PassContext
from onnxslim.ir.io import to_model
from onnxslim.ir.weights import constant_value
from onnxslim.ir.linear import Linear
from onnxslim.lowrank.layers import match, split

WARMUP, REPEAT, MAX_SECONDS = 3, 25, 0.5


@dataclasses.dataclass(frozen=True)
class Timing:
    """The latency of the original layer and of its split."""

    original: LatencyStats
    split: LatencyStats

    @property
    def original_ms(self) -> float:
        return self.original.median_ms

    @property
    def split_ms(self) -> float:
        return self.split.median_ms

    @property
    def speedup(self) -> float:
        return self.original_ms / self.split_ms if self.split_ms > 0 else float("inf")


class LatencyGate:
    """Times candidate splits for one pass run, caching equal configurations."""

    def __init__(self, ctx: PassContext) -> None:
        self.ctx = ctx
        self.cache: dict[tuple, Timing] = {}

    def measure(self, layer: Linear, a: np.ndarray, b: np.ndarray, input_shape: tuple[int, ...]) -> Timing:
        key = (layer.node.op, repr(sorted(layer.node.attrs.items())), layer.shape, a.shape[1],
               tuple(input_shape), len(layer.node.inputs), layer.stored.dtype.str)
        if key not in self.cache:
            original, candidate = tiny_models(layer, a, b, input_shape, self.ctx.template)
            rng = self.ctx.rng(len(self.cache))
            feeds = {"x": rng.standard_normal(input_shape).astype(layer.stored.dtype)}
            # the context's threads as they are: None times on ORT's default pool, as the layer will run
            stats = self.ctx.time([original, candidate], feeds, threads=self.ctx.threads,
                                  warmup=WARMUP, repeat=REPEAT, max_seconds=MAX_SECONDS)
            self.cache[key] = Timing(stats[0], stats[1])
        return self.cache[key]


def tiny_models(layer: Linear, a: np.ndarray, b: np.ndarray, input_shape: tuple[int, ...],
                template: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The layer's node alone, and its split, each as a one-input model fed ``x``."""
    node = layer.node
    x = gs.Variable("x", dtype=layer.stored.dtype, shape=list(input_shape))
    y = gs.Variable("y", dtype=layer.stored.dtype)
    inputs = [x] + [gs.Constant(f"c{i}", np.ascontiguousarray(constant_value(t)))
                    for i, t in enumerate(node.inputs[1:], 1) if t.name]
    copy = gs.Node(node.op, node.name or "layer", dict(node.attrs), inputs=inputs, outputs=[y])
    opset = next((o.version for o in template.opset_import if o.domain in ("", "ai.onnx")), 17)
    graph = gs.Graph(nodes=[copy], inputs=[x], outputs=[y], opset=opset)
    original = to_model(graph, template)
    tiny = match(copy)
    assert isinstance(tiny, Linear), tiny
    split(graph, tiny, a, b)
    graph.toposort()
    return original, to_model(graph, template)
