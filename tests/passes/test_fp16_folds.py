"""fp16 models through the exact folds: the math in float64, every tensor written back in its own
type, results as close to the fp32 computation as the unfolded fp16 model is; guarded divisions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto

from onnxslim.passes.cleanup import DeadCodeElimination
from onnxslim.passes.fold_affine import FoldAffine
from onnxslim.passes.fold_bn import FoldBatchNorm
from onnxslim.passes.fuse_activations import FuseActivations
from onnxslim.testing import model_from_text, op_types, run_model, run_pass

CONV_BN = """<ir_version: 8, opset_import: ["": 17]>
g ({t}[N,3,8,8] x) => ({t}[N,8,8,8] y) {{
    c = Conv<pads=[1,1,1,1]>(x, w, b)
    y = BatchNormalization<epsilon=1e-3>(c, gamma, beta, mean, var)
}}"""

CONV_AFFINE = """<ir_version: 8, opset_import: ["": 17]>
g ({t}[N,3,8,8] x) => ({t}[N,8,8,8] y) {{
    c = Conv<pads=[1,1,1,1]>(x, w, b)
    m = Mul(c, s)
    y = Add(m, t)
}}"""


def _weights(rng, dtype, zeros_in_scale=False):
    s = rng.uniform(0.5, 3, (8, 1, 1))
    if zeros_in_scale:
        s[::3] = 0.0  # DETR's masks: a Mul by a vector holding zeros
    w = {"w": rng.normal(size=(8, 3, 3, 3)) * 0.5, "b": rng.normal(size=8), "gamma": rng.uniform(0.5, 3, 8),
         "beta": rng.normal(size=8), "mean": rng.normal(size=8), "var": rng.uniform(0.01, 2, 8),
         "s": s, "t": rng.normal(size=(8, 1, 1))}
    return {k: v.astype(dtype) for k, v in w.items()}


def _fold(pass_, model):
    out, result = run_pass(pass_, model)
    out, _ = run_pass(DeadCodeElimination(), out)
    return out, result


@pytest.mark.parametrize(("text", "pass_"), [(CONV_BN, FoldBatchNorm), (CONV_AFFINE, FoldAffine)])
def test_fp16_fold_keeps_fp16_and_fp32_accuracy(rng, text, pass_):
    fp16 = model_from_text(text.format(t="float16"), _weights(np.random.default_rng(0), np.float16))
    fp32 = model_from_text(text.format(t="float"),  # the same fp16-rounded weights
                           {k: v.astype(np.float32) for k, v in _weights(np.random.default_rng(0), np.float16).items()})
    out, result = _fold(pass_(), fp16)
    assert result.modified and op_types(out) == ["Conv"]
    assert {t.data_type for t in out.graph.initializer} == {TensorProto.FLOAT16}
    assert out.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    x = rng.normal(size=(4, 3, 8, 8)).astype(np.float16)
    reference = run_model(fp32, {"x": x.astype(np.float32)})[0].astype(np.float64)  # same fp16 weights, fp32 math
    unfolded = run_model(fp16, {"x": x})[0].astype(np.float64)
    folded = run_model(out, {"x": x})[0].astype(np.float64)
    eps16 = float(np.finfo(np.float16).eps)
    # folding adds one fp16 rounding of the weights and removes one of the intermediate
    # output: the folded model stays as close to fp32 as the model it came from
    assert np.abs(folded - reference).max() <= 2 * np.abs(unfolded - reference).max() + eps16 * np.abs(reference).max()
    assert np.abs(folded - unfolded).max() <= 8 * eps16 * np.abs(reference).max()


def test_fp16_folded_weights_are_the_float64_product_rounded_once(rng):
    weights = _weights(rng, np.float16)
    out, _ = _fold(FoldBatchNorm(), model_from_text(CONV_BN.format(t="float16"), weights))
    folded = {t.name: t for t in out.graph.initializer}
    from onnx import numpy_helper
    w = numpy_helper.to_array(next(t for n, t in folded.items() if n.startswith("w")))
    g, v = weights["gamma"].astype(np.float64), weights["var"].astype(np.float64)
    scale = g / np.sqrt(v + np.float64(np.float32(1e-3)))
    expected = (weights["w"].astype(np.float64) * scale[:, None, None, None]).astype(np.float16)
    np.testing.assert_array_equal(w, expected)


HARDSWISH = """<ir_version: 8, opset_import: ["": 17]>
g (float16[N,8] x) => (float16[N,8] y) {
    a = Add(x, three)
    c = Clip(a, zero, six)
    m = Mul(x, c)
    y = Mul(m, sixth)
}"""


def test_fp16_hardswish_chain_fuses(rng):
    consts = {"three": np.float16(3.0), "zero": np.float16(0.0), "six": np.float16(6.0), "sixth": np.float16(1 / 6)}
    model = model_from_text(HARDSWISH, {k: np.asarray(v) for k, v in consts.items()})
    out, result = _fold(FuseActivations(), model)
    assert result.stats["hardswish"] == 1 and op_types(out) == ["HardSwish"]
    x = (rng.normal(size=(16, 8)) * 4).astype(np.float16)
    np.testing.assert_allclose(run_model(out, {"x": x})[0].astype(np.float32),
                               run_model(model, {"x": x})[0].astype(np.float32), atol=1e-2, rtol=2e-3)


def test_mul_by_a_vector_holding_zeros_folds_without_dividing(rng):
    model = model_from_text(CONV_AFFINE.format(t="float"), _weights(rng, np.float32, zeros_in_scale=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "divide by zero" RuntimeWarning fails the test
        out, result = _fold(FoldAffine(), model)
    assert result.stats["folded"] == 2
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_model(out, {"x": x})[0], run_model(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_batchnorm_with_zero_variance_and_epsilon_declines(rng):
    weights = _weights(rng, np.float32)
    weights["var"][2] = 0.0
    model = model_from_text(CONV_BN.format(t="float").replace("epsilon=1e-3", "epsilon=0.0"), weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, result = run_pass(FoldBatchNorm(), model)
    assert not result.modified
    assert "var + epsilon is not positive" in result.declines[0].reason
