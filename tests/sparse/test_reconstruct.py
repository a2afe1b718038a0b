"""One-shot reconstruction (SparseGPT-style) and the statistics it is built on."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from onnxslim.runtime.session import make_session
from onnxslim.sparse import masks
from onnxslim.sparse.criteria import HessianAccumulator, im2col, scores
from onnxslim.ir.linear import linear_of
from onnxslim.sparse.layers import from_mats, to_mats
from onnxslim.sparse.reconstruct import prune_group


def _layer_data(rng, rows=24, cols=64, samples=512):
    mixing = rng.normal(size=(cols, cols)) * (rng.random((cols, cols)) < 0.2) + np.eye(cols)
    scales = np.exp(rng.normal(size=cols))  # features of unequal scale and correlated, as real activations are
    x = (rng.normal(size=(samples, cols)) @ mixing) * scales
    w = rng.normal(size=(rows, cols))
    return w, x


def _relative_error(w, w_hat, x):
    return np.linalg.norm(x @ (w - w_hat).T) / np.linalg.norm(x @ w.T)


@pytest.mark.parametrize("sparsity", [0.5, 0.7, 0.9])
def test_reconstruction_lowers_layer_output_error_versus_magnitude(rng, sparsity):
    w, x = _layer_data(rng)
    h = x.T @ x / len(x)
    count = masks.target_count(sparsity, w.size)
    magnitude = np.where(masks.unstructured_mask(w**2, count), 0.0, w)
    rebuilt = prune_group(w, h, damp=0.01, count=count)
    assert w.size - np.count_nonzero(rebuilt) == count  # exact, like magnitude
    assert _relative_error(w, rebuilt, x) < 0.8 * _relative_error(w, magnitude, x)


def test_reconstruction_with_nm_keeps_the_pattern_and_beats_magnitude_nm(rng):
    w, x = _layer_data(rng)
    h = x.T @ x / len(x)
    perm = np.arange(w.shape[1])
    rebuilt = prune_group(w, h, damp=0.01, nm=(2, 4), perm=perm)
    assert masks.holds_nm(rebuilt[None], 2, 4, perm)
    magnitude = np.where(masks.nm_mask((w**2)[None], 2, 4, perm)[0], 0.0, w)
    assert _relative_error(w, rebuilt, x) < _relative_error(w, magnitude, x)


def test_dead_inputs_score_zero_for_data_aware_criteria(rng):
    w, x = _layer_data(rng, rows=4, cols=8)
    x[:, 3] = 0.0
    h = (x.T @ x / len(x))[None]
    for criterion in ("activation", "reconstruct"):
        s = scores(criterion, w[None], h, damp=0.01)
        assert np.all(s[0, :, 3] == 0) and np.all(s[0, :, :3] > 0)


def _conv_model(w, attrs, x_shape):
    node = helper.make_node("Conv", ["X", "W"], ["Y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, x_shape)],
                              [helper.make_tensor_value_info("Y", 1, None)], [onnx.numpy_helper.from_array(w, "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("attrs", [
    {"pads": [1, 1, 1, 1]},
    {"strides": [2, 2], "pads": [1, 0, 1, 2]},
    {"dilations": [2, 2]},
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"group": 2, "pads": [1, 1, 1, 1]},
    {"group": 4, "pads": [1, 1, 1, 1], "strides": [2, 1]},  # depthwise: per-group H of Πk columns
    {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
])
def test_im2col_rows_times_the_matrix_view_give_the_convolution(rng, attrs):
    groups = attrs.get("group", 1)
    cout = 8 if groups == 4 else 6
    w = rng.normal(size=(cout, 4 // groups, 3, 3)).astype(np.float32)
    x = rng.normal(size=(2, 4, 9, 8)).astype(np.float32)
    model = _conv_model(w, attrs, list(x.shape))
    y = make_session(model, optimize=False).run(None, {"X": x})[0]
    layer = linear_of(gs.import_onnx(model).nodes[0])
    patches = im2col(x, layer).reshape(-1, groups, 4 // groups * 9)
    ours = np.einsum("ngk,grk->ngr", patches, to_mats(layer)).reshape(patches.shape[0], -1)
    np.testing.assert_allclose(ours, np.moveaxis(y, 1, -1).reshape(-1, cout), atol=1e-4)
    acc = HessianAccumulator(layer, max_rows=10_000, rng=rng)
    acc.add(x)
    assert acc.h.shape == (groups, 4 // groups * 9, 4 // groups * 9)


def test_hessian_rows_are_capped_per_sample_whatever_the_batching(rng):
    """The same samples fed in one batch or one at a time give H from as many rows."""
    w = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    x = rng.normal(size=(6, 4, 10, 12)).astype(np.float32)
    model = _conv_model(w, {"group": 4, "pads": [1, 1, 1, 1]}, list(x.shape))
    layer = linear_of(gs.import_onnx(model).nodes[0])
    together = HessianAccumulator(layer, max_rows=20, rng=np.random.default_rng(0))
    together.add(x, samples=6)
    alone = HessianAccumulator(layer, max_rows=20, rng=np.random.default_rng(0))
    for row in x:
        alone.add(row[None], samples=1)
    assert together.rows_seen == alone.rows_seen == 6 * 20
    assert together.h.shape == (4, 9, 9)


@pytest.mark.parametrize(("op", "shape", "attrs"), [
    ("MatMul", (6, 5), {}),
    ("Gemm", (5, 6), {"transB": 1}),
    ("Gemm", (6, 5), {}),
    ("Conv", (6, 4, 3, 3), {"group": 2}),
    ("ConvTranspose", (4, 3, 2, 2), {"group": 2}),
])
def test_matrix_views_round_trip(rng, op, shape, attrs):
    w = rng.normal(size=shape).astype(np.float32)
    node = gs.Node(op, attrs=attrs, inputs=[gs.Variable("x"), gs.Constant("w", w)], outputs=[gs.Variable("y")])
    layer = linear_of(node)
    np.testing.assert_array_equal(from_mats(layer, to_mats(layer)), w)
    assert to_mats(layer).shape[0] == attrs.get("group", 1)


def test_conv_transpose_reconstruction_keeps_its_output_better_than_magnitude(rng):
    w = rng.normal(size=(8, 3, 2, 2)).astype(np.float32)
    x = (rng.normal(size=(16, 8, 5, 5)) * np.exp(rng.normal(size=(1, 8, 1, 1)))).astype(np.float32)
    node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], strides=[2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", 1, list(x.shape))],
                              [helper.make_tensor_value_info("Y", 1, None)], [onnx.numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    layer = linear_of(gs.import_onnx(model).nodes[0])
    acc = HessianAccumulator(layer, max_rows=10_000, rng=rng)
    acc.add(x)
    mats = to_mats(layer)
    count = masks.target_count(0.7, w.size)
    rebuilt = from_mats(layer, prune_group(mats[0], acc.result()[0], 0.01, count=count)[None])
    magnitude = from_mats(layer, np.where(masks.unstructured_mask(mats**2, count), 0, mats))

    def output(weights):
        model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(weights.astype(np.float32), "W"))
        return make_session(model, optimize=False).run(None, {"X": x})[0]

    reference = output(w)
    err = {name: np.linalg.norm(output(v) - reference) for name, v in (("rebuilt", rebuilt), ("magnitude", magnitude))}
    assert w.size - np.count_nonzero(rebuilt) == count
    assert err["rebuilt"] < 0.8 * err["magnitude"]


def test_refit_to_the_original_outputs_is_identity_on_unchanged_inputs_and_helps_on_changed_ones(rng):
    from onnxslim.sparse.reconstruct import upper_inverse_factor
    from onnxslim.sparse.sequential import aim_at_original

    w, x = _layer_data(rng, rows=8, cols=16, samples=400)
    h = x.T @ x / len(x)
    u = upper_inverse_factor(h, 0.1)
    same = aim_at_original(w[None], h[None], h[None], [u], 0.1)[0]
    np.testing.assert_allclose(same, w, rtol=1e-8, atol=1e-8)
    x_hat = x @ (np.eye(16) + 0.3 * rng.normal(size=(16, 16)))  # upstream pruning distorted the inputs
    h_hat, cross = x_hat.T @ x_hat / len(x), x_hat.T @ x / len(x)
    refit = aim_at_original(w[None], cross[None], h_hat[None], [upper_inverse_factor(h_hat, 0.1)], 0.1)[0]
    assert np.linalg.norm(x @ w.T - x_hat @ refit.T) < 0.5 * np.linalg.norm(x @ w.T - x_hat @ w.T)
