"""prune-channels recovery costs a bounded number of calibration runs, whatever the depth."""

from __future__ import annotations

import numpy as np
from onnxslim.passes.prune_channels import PruneChannels, PruneChannelsOptions

from onnxslim.analysis import channel_recovery
from onnxslim.core.context import PassContext
from onnxslim.testing import model_from_text, run_pass

DEPTH = 14


def _deep_chain(rng):
    lines, weights, x = [], {}, "x"
    for i in range(DEPTH):
        cin = 3 if i == 0 else 16
        lines.append(f"c{i} = Conv<pads=[1,1,1,1]>({x}, w{i}, b{i})")
        lines.append(f"r{i} = Relu(c{i})")
        weights[f"w{i}"] = rng.normal(scale=0.3, size=(16, cin, 3, 3)).astype(np.float32)
        weights[f"b{i}"] = rng.normal(scale=0.1, size=16).astype(np.float32)
        x = f"r{i}"
    lines.append(f"y = GlobalAveragePool({x})")
    text = ("<ir_version: 8, opset_import: [\"\": 17]>\ng (float[N,3,8,8] x) => (float[N,16,1,1] y) {\n    "
            + "\n    ".join(lines) + "\n}")
    return model_from_text(text, weights)


class _CountingContext(PassContext):
    runs = 0

    def activations(self, *args, **kwargs):
        type(self).runs += 1
        return super().activations(*args, **kwargs)


def test_grouped_levels_keep_their_order_and_bound():
    levels = [[i] for i in range(20)]
    runs = channel_recovery._grouped(levels, 8)
    assert len(runs) <= 8 and [n for run in runs for n in run] == list(range(20))
    assert channel_recovery._grouped(levels[:3], 8) == [[0], [1], [2]]


def test_deep_chain_refit_uses_at_most_max_runs_plus_one(rng):
    model = _deep_chain(rng)
    data = [{"x": rng.normal(size=(8, 3, 8, 8)).astype(np.float32)} for _ in range(2)]
    ctx = _CountingContext(model, calibration=data)
    _CountingContext.runs = 0
    _, result = run_pass(PruneChannels(PruneChannelsOptions(ratio=0.5, importance="l2", recover=True)), model, ctx)
    assert result.stats["layers_refit"] >= DEPTH - 2  # one level per layer
    assert _CountingContext.runs <= 1 + channel_recovery.MAX_RUNS < DEPTH
    assert result.stats["refit_error_after"] < result.stats["refit_error_before"]
