"""fold-affine and fuse-activations: exact rewrites, ORT parity, declines, constants in Constant nodes."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.passes.cleanup import DeadCodeElimination
from onnxslim.passes.fold_affine import FoldAffine
from onnxslim.passes.fuse_activations import FuseActivations
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

CONV_AFFINE = """<ir_version: 8, opset_import: ["": 12]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
    c = Conv<pads=[1,1,1,1]>(x, w, b)
    s = Constant<value = float[1] {1.7}>()
    m = Mul(s, c)
    y = Add(m, t)
}"""


def _conv_weights(rng, t_shape=(1,)):
    return {"w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32),
            "t": rng.normal(size=t_shape).astype(np.float32)}


@pytest.mark.parametrize("t_shape", [(1,), (4, 1, 1), (1, 4, 1, 1)])
def test_scalar_and_per_channel_scale_and_shift_fold_into_the_conv(rng, t_shape):
    """PP-OCRv4's learnable affine block: a scalar Mul (in a Constant node) and an Add after a Conv."""
    model = model_from_text(CONV_AFFINE, _conv_weights(rng, t_shape))
    out, result = run_pass(FoldAffine(), model)
    assert result.stats["folded"] == 2
    out, _ = run_pass(DeadCodeElimination(), out)
    assert op_types(out) == ["Conv"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)})
    _, again = run_pass(FoldAffine(), out)
    assert not again.modified


def test_gemm_without_bias_gets_one_and_div_sub_fold(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,6] x) => (float[N,5] y) {
    h = Gemm<transB=1, alpha=0.5>(x, w)
    d = Div(h, s)
    y = Sub(d, t)
}"""
    weights = {"w": rng.normal(size=(5, 6)).astype(np.float32), "s": rng.uniform(0.5, 2, 5).astype(np.float32),
               "t": rng.normal(size=5).astype(np.float32)}
    model = model_from_text(text, weights)
    out, result = run_pass(FoldAffine(), model)
    assert result.stats["folded"] == 2
    out, _ = run_pass(DeadCodeElimination(), out)
    assert op_types(out) == ["Gemm"]
    assert_parity(model, out, {"x": rng.normal(size=(3, 6)).astype(np.float32)})


def test_batchnorm_after_a_folded_add_folds_too(rng):
    """PP-OCRv4's ConvTranspose → Add → BatchNormalization: fold-bn meets the Add first, fold-affine
    folds the whole chain."""
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,5,5] x) => (float[N,3,10,10] y) {
    c = ConvTranspose<kernel_shape=[2,2], strides=[2,2]>(x, w)
    a = Add(c, t)
    y = BatchNormalization<epsilon=0.001>(a, gamma, beta, mean, var)
}"""
    weights = {"w": rng.normal(size=(4, 3, 2, 2)).astype(np.float32), "t": rng.normal(size=(3, 1, 1)).astype(np.float32),
               "gamma": rng.uniform(0.5, 2, 3).astype(np.float32), "beta": rng.normal(size=3).astype(np.float32),
               "mean": rng.normal(size=3).astype(np.float32), "var": rng.uniform(0.5, 2, 3).astype(np.float32)}
    model = model_from_text(text, weights)
    out, result = run_pass(FoldAffine(), model)
    assert result.stats["folded"] == 2
    out, _ = run_pass(DeadCodeElimination(), out)
    assert op_types(out) == ["ConvTranspose"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 4, 5, 5)).astype(np.float32)})


LAB_BEFORE_CONV = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,6,6] x) => (float[N,5,%s] y) {
    h = HardSwish(x)
    m = Mul(h, s)
    a = Add(m, t)
    y = Conv<%s>(a, w, b)
}"""


def _lab_weights(rng, s_shape=(1,), kernel=1):
    return {"s": rng.uniform(0.5, 2, s_shape).astype(np.float32), "t": rng.normal(size=s_shape).astype(np.float32),
            "w": rng.normal(size=(5, 4, kernel, kernel)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}


@pytest.mark.parametrize("s_shape", [(1,), (4, 1, 1), (1, 4, 1, 1)])
def test_scale_and_shift_before_an_unpadded_conv_fold_forward(rng, s_shape):
    """PP-OCRv4's learnable affine block after a hard-swish, read by a 1x1 conv."""
    model = model_from_text(LAB_BEFORE_CONV % ("6,6", "kernel_shape=[1,1]"), _lab_weights(rng, s_shape))
    out, result = run_pass(FoldAffine(), model)
    assert result.stats["folded_forward"] == 2
    out, _ = run_pass(DeadCodeElimination(), out)
    assert op_types(out) == ["HardSwish", "Conv"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 4, 6, 6)).astype(np.float32)})


def test_forward_fold_through_a_strided_3x3_conv_without_padding(rng):
    model = model_from_text(LAB_BEFORE_CONV % ("2,2", "kernel_shape=[3,3], strides=[2,2]"),
                            _lab_weights(rng, (1, 4, 1, 1), kernel=3))
    out, result = run_pass(FoldAffine(), model)
    assert result.stats["folded_forward"] == 2
    assert_parity(model, out, {"x": rng.normal(size=(2, 4, 6, 6)).astype(np.float32)})


@pytest.mark.parametrize("text,expected", [
    # padding: the border would hold t, not 0
    (LAB_BEFORE_CONV % ("6,6", "kernel_shape=[3,3], pads=[1,1,1,1]"), 0),
    # another reader that is not a Conv
    ("""<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,6,6] x) => (float[N,5,6,6] y, float[N,4,6,6] r) {
    h = HardSwish(x)
    m = Mul(h, s)
    a = Add(m, t)
    y = Conv<kernel_shape=[1,1]>(a, w, b)
    r = Relu(a)
}""", 0),
    # a per-channel Mul that broadcasts a 1-channel x to the Conv's 4 channels stays (the Add after it,
    # on 4 channels already, folds)
    ("""<ir_version: 8, opset_import: ["": 17]>
g (float[N,1,6,6] x) => (float[N,5,6,6] y) {
    m = Mul(x, s)
    a = Add(m, t)
    y = Conv<kernel_shape=[1,1]>(a, w, b)
}""", 1),
])
def test_no_forward_fold_where_it_would_not_be_exact(rng, text, expected):
    model = model_from_text(text, _lab_weights(rng, (1, 4, 1, 1), kernel=3 if "[3,3]" in text else 1))
    out, result = run_pass(FoldAffine(), model)
    assert result.stats["folded_forward"] == expected
    assert "Mul" in op_types(out)
    assert_parity(model, out, {"x": rng.normal(size=(2, 4 if "4,6,6] x" in text else 1, 6, 6)).astype(np.float32)})


@pytest.mark.parametrize("text,t_shape", [
    # another reader of the conv output
    ("""g (float[N,3,8,8] x) => (float[N,4,8,8] y, float[N,4,8,8] c) {
        c = Conv<pads=[1,1,1,1]>(x, w, b)
        y = Mul(c, t)
    }""", (1,)),
    # varies along the spatial axes, not per channel
    ("""g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
        c = Conv<pads=[1,1,1,1]>(x, w, b)
        y = Mul(c, t)
    }""", (8, 8)),
    # t / y is not affine in y
    ("""g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
        c = Conv<pads=[1,1,1,1]>(x, w, b)
        y = Div(t, c)
    }""", (1,)),
])
def test_folds_nothing_that_is_not_a_per_channel_affine_of_the_sole_reader(rng, text, t_shape):
    model = model_from_text('<ir_version: 8, opset_import: ["": 17]>\n' + text, _conv_weights(rng, t_shape))
    _, result = run_pass(FoldAffine(), model)
    assert not result.modified


HARDSWISH = """<ir_version: 8, opset_import: ["": %d]>
g (float[N,4,5] x) => (float[N,4,5] y) {
    three = Constant<value = float {3.0}>()
    six = Constant<value = float {6.0}>()
    zero = Constant<value = float {0.0}>()
    a = Add(x, three)
    r = Clip(a, zero, six)
    %s
}"""


@pytest.mark.parametrize("opset,tail,fused", [
    (12, "m = Mul(x, r)\n    y = Div(m, six)", ["HardSigmoid", "Mul"]),  # PP-OCRv4's spelling
    (14, "m = Mul(r, x)\n    y = Div(m, six)", ["HardSwish"]),
    (14, "h = Div(r, six)\n    y = Mul(x, h)", ["HardSwish"]),
    (12, "y = Div(r, six)", ["HardSigmoid"]),
])
def test_hard_swish_and_hard_sigmoid_chains_become_one_op(rng, opset, tail, fused):
    model = model_from_text(HARDSWISH % (opset, tail))
    out, result = run_pass(FuseActivations(), model)
    assert result.modified
    out, _ = run_pass(DeadCodeElimination(), out)
    assert op_types(out) == fused
    x = rng.normal(scale=4, size=(2, 4, 5)).astype(np.float32)
    x[0, 0, :] = [-3, 3, 0, -6, 6]  # the kinks
    assert_parity(model, out, {"x": x})


def test_other_clip_bounds_and_shared_intermediates_stay(rng):
    model = model_from_text(HARDSWISH.replace("{6.0}", "{5.0}") % (14, "m = Mul(x, r)\n    y = Div(m, six)"))
    assert not run_pass(FuseActivations(), model)[1].modified
    shared = """<ir_version: 8, opset_import: ["": 14]>
g (float[N,4] x) => (float[N,4] y, float[N,4] r) {
    three = Constant<value = float {3.0}>()
    six = Constant<value = float {6.0}>()
    zero = Constant<value = float {0.0}>()
    a = Add(x, three)
    r = Clip(a, zero, six)
    m = Mul(x, r)
    y = Div(m, six)
}"""
    assert not run_pass(FuseActivations(), model_from_text(shared))[1].modified
