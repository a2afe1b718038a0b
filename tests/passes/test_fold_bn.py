"""fold-bn: Conv/Gemm + BatchNormalization become one node with the same outputs."""

from __future__ import annotations

import numpy as np

from onnxslim.passes.fold_bn import FoldBatchNorm
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

CONV_BN = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
    c = Conv<pads=[1,1,1,1]>(x, w, b)
    y = BatchNormalization<epsilon=0.001>(c, gamma, beta, mean, var)
}"""


def _bn_weights(rng, channels):
    return {
        "gamma": rng.uniform(0.5, 2, channels).astype(np.float32),
        "beta": rng.normal(size=channels).astype(np.float32),
        "mean": rng.normal(size=channels).astype(np.float32),
        "var": rng.uniform(0.1, 2, channels).astype(np.float32),
    }


def test_fold_bn_into_conv(rng):
    weights = {"w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    model = model_from_text(CONV_BN, {**weights, **_bn_weights(rng, 4)})
    out, result = run_pass(FoldBatchNorm(), model)
    assert result.modified and result.stats["folded"] == 1
    assert op_types(out) == ["Conv"]
    feeds = {"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)}
    assert_parity(model, out, feeds)
    _, again = run_pass(FoldBatchNorm(), out)
    assert not again.modified


def test_fold_bn_declines_when_conv_output_has_other_readers(rng):
    text = CONV_BN.replace("=> (float[N,4,8,8] y)", "=> (float[N,4,8,8] y, float[N,4,8,8] c)")
    weights = {"w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    model = model_from_text(text, {**weights, **_bn_weights(rng, 4)})
    out, result = run_pass(FoldBatchNorm(), model)
    assert not result.modified
    assert "other readers" in result.declines[0].reason
    assert op_types(out) == ["Conv", "BatchNormalization"]


def test_fold_bn_into_gemm_with_constant_node_weights(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,5] x) => (float[N,3] y) {
    w = Constant<value = float[3,5] {%s}>()
    h = Gemm<transB=1, beta=0.5>(x, w, c)
    y = BatchNormalization(h, gamma, beta, mean, var)
}""" % ",".join(str(v) for v in rng.normal(size=15).round(3))
    model = model_from_text(text, {"c": rng.normal(size=3).astype(np.float32), **_bn_weights(rng, 3)})
    out, result = run_pass(FoldBatchNorm(), model)
    assert result.modified
    assert [t for t in op_types(out) if t != "Constant"] == ["Gemm"]  # the old weight waits for dce
    assert_parity(model, out, {"x": rng.normal(size=(4, 5)).astype(np.float32)})
