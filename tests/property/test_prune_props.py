"""Property: hard-pruning equals soft-pruning (zeroing the same channels), on random networks.

Networks are chains of conv, residual, concat, depthwise (also with a channel multiplier),
grouped conv, BN-conv and per-channel scale blocks
with a GAP or a flatten→Gemm head (hypothesis draws them); the kept channels of every
prunable group are drawn at random. Zeroing the removed channels in the original model must
give the pruned model's outputs to fp32 round-off, strict shape inference must succeed, and
the output shape must not change.
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given
from hypothesis import strategies as st

from onnxslim.analysis.channel_deps import analyze
from onnxslim.ir.shapes import inferred_dims
from onnxslim.ir.stats import model_stats
from onnxslim.testing import prune_nets

KINDS = ["conv", "residual", "concat", "depthwise", "multiplier", "grouped", "bnconv", "scale"]
BLOCKS = st.lists(st.sampled_from(KINDS), min_size=1, max_size=4)


def _analyze(model):
    shapes = inferred_dims(model)
    return lambda graph: analyze(graph.toposort(), shapes)


@given(blocks=BLOCKS, width=st.integers(2, 8), head=st.sampled_from(["gap", "flatten"]),
       const_nodes=st.booleans(), seed=st.integers(0, 2**16))
def test_hard_prune_equals_soft_prune(blocks, width, head, const_nodes, seed):
    rng = np.random.default_rng(seed)
    model = prune_nets.random_net(rng, blocks, width, head, const_nodes=const_nodes)

    def keep_fn(plan):
        keep = {}
        for g in plan.prunable():
            n = int(rng.integers(1, g.size + 1))
            if n < g.size:
                keep[g.id] = np.sort(rng.choice(g.size, n, replace=False))
        return keep

    hard, soft, plan, keep = prune_nets.hard_and_soft(model, _analyze(model), keep_fn)
    onnx.checker.check_model(hard, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(hard, strict_mode=True)
    out_dims = [d.dim_value or d.dim_param for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["N", 4]
    # every rule here can prune (a residual Add over a Concat cuts its producers at the offsets; over
    # a depthwise-multiplier output it regroups them in pairs): the head reaches the graph output,
    # and one known limit freezes fail-closed: a grouped conv whose group boundary falls between
    # the 2 positions of one depthwise-multiplier channel
    head = [f"reaches graph output '{model.graph.output[0].name}'"]
    for g in plan.frozen():
        limit = "multiplier" in blocks and all("cannot be cut into its groups" in r for r in g.reasons)
        assert g.reasons == head or limit, plan.lines()
    feeds = prune_nets.feeds(rng)
    for a, b in zip(prune_nets.run(soft, feeds), prune_nets.run(hard, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())))
    if keep:
        assert model_stats(hard).params < model_stats(model).params
