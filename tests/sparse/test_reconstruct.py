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
from onnxslim.sparse.layers import Layer
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
])
def test_im2col_rows_times_the_matrix_view_give_the_convolution(rng, attrs):
    groups = attrs.get("group", 1)
    w = rng.normal(size=(6, 4 // groups, 3, 3)).astype(np.float32)
    x = rng.normal(size=(2, 4, 9, 8)).astype(np.float32)
    model = _conv_model(w, attrs, list(x.shape))
    y = make_session(model, optimize=False).run(None, {"X": x})[0]
    layer = Layer(gs.import_onnx(model).nodes[0], 1, w, groups=groups)
    patches = im2col(x, layer).reshape(-1, groups, 4 // groups * 9)
    ours = np.einsum("ngk,grk->ngr", patches, layer.to_mats()).reshape(patches.shape[0], -1)
    np.testing.assert_allclose(ours, np.moveaxis(y, 1, -1).reshape(-1, 6), atol=1e-4)
    acc = HessianAccumulator(layer, max_rows=10_000, rng=rng)
    acc.add(x)
    assert acc.h.shape == (groups, 4 // groups * 9, 4 // groups * 9)
