"""The layer view (onnxslim.ir.linear): its K×N matrices compute what ONNX Runtime computes, for each
op, layout and group count; write-back round-trips and keeps the kind of source; sharing is seen."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxslim.ir.io import to_graph, to_model
from onnxslim.ir.linear import CONSTANT_NODE, INITIALIZER, linear_of
from onnxslim.testing import model_from_text, run_model


def _view(model: onnx.ModelProto, op: str):
    graph = to_graph(model)
    node = next(n for n in graph.nodes if n.op == op)
    return graph, linear_of(node, graph)


def _rows(x: np.ndarray, k: int, stride: int = 1) -> np.ndarray:
    """im2col of a 2-D NCHW input, no padding: [N·OH·OW, C, k, k] (channel, then kernel offset)."""
    n, c, h, w = x.shape
    oh, ow = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.empty((n, oh, ow, c, k, k), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
    return out.reshape(n * oh * ow, c, k * k), (n, oh, ow)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("trans_a", [0, 1])
def test_gemm_matrix_is_k_by_n_whatever_the_transposes(trans_a, trans_b, rng):
    k, n, m = 6, 5, 4
    w = rng.normal(size=(n, k) if trans_b else (k, n)).astype(np.float32)
    c = rng.normal(size=(n,)).astype(np.float32)
    x_shape = "4, 6" if not trans_a else "6, 4"
    model = model_from_text(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[{x_shape}] x) => (float[4, 5] y) {{ y = Gemm<transA={trans_a}, transB={trans_b}, alpha=2.0>(x, w, c) }}""",
                            {"w": w, "c": c})
    _, view = _view(model, "Gemm")
    assert view.shape == (k, n) and view.out_channels == n and view.groups == 1 and view.source == INITIALIZER
    assert not view.shared
    assert view.output_axis == (0 if trans_b else 1) and view.reduction_axis == (1 if trans_b else 0)
    assert view.feature_axis == (0 if trans_a else -1) and view.has_bias and not view.can_add_bias
    x = rng.normal(size=(m, k) if not trans_a else (k, m)).astype(np.float32)
    rows = np.moveaxis(x, view.feature_axis, -1)
    expected = run_model(model, {"x": x})[0]
    np.testing.assert_allclose(view.alpha * rows @ view.matrices()[0] + view.bias(), expected, rtol=1e-5, atol=1e-5)
    assert view.macs(list(x.shape)) == m * k * n
    np.testing.assert_array_equal(view.from_matrices(view.matrices()), w)


def test_matmul_with_batched_input(rng):
    w = rng.normal(size=(6, 3)).astype(np.float32)
    model = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 4, 6] x) => (float[2, 4, 3] y) { y = MatMul(x, w) }""", {"w": w})
    _, view = _view(model, "MatMul")
    assert view.shape == (6, 3) and view.output_axis == 1 and view.reduction_axis == 0 and view.can_add_bias is False
    x = rng.normal(size=(2, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(x @ view.matrices()[0], run_model(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    assert view.macs([2, 4, 6]) == 2 * 4 * 6 * 3 and view.macs(["batch", 4, 6]) is None


def test_a_batched_matmul_weight_has_no_single_output_axis(rng):
    w = rng.normal(size=(2, 6, 3)).astype(np.float32)
    model = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 4, 6] x) => (float[2, 4, 3] y) { y = MatMul(x, w) }""", {"w": w})
    _, view = _view(model, "MatMul")
    assert view.output_axis is None and view.macs([2, 4, 6]) is None
    with pytest.raises(ValueError, match="no single matrix"):
        view.matrices()


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_conv_matrices_are_im2col_per_group(groups, rng):
    cin, cout, k = 4, 8, 3
    w = rng.normal(size=(cout, cin // groups, k, k)).astype(np.float32)
    b = rng.normal(size=(cout,)).astype(np.float32)
    model = model_from_text(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 4, 7, 7] x) => (float[2, 8, 5, 5] y) {{ y = Conv<group={groups}>(x, w, b) }}""", {"w": w, "b": b})
    _, view = _view(model, "Conv")
    kk, n = view.shape
    assert (kk, n, view.groups, view.spatial) == (cin // groups * k * k, cout // groups, groups, k * k)
    assert view.out_channels == cout
    x = rng.normal(size=(2, cin, 7, 7)).astype(np.float32)
    patches, (bn, oh, ow) = _rows(x, k)
    mats = view.matrices()
    per_group = [patches[:, g * (cin // groups):(g + 1) * (cin // groups)].reshape(len(patches), -1) @ mats[g]
                 for g in range(groups)]
    y = np.concatenate(per_group, axis=1) + b  # [rows, Cout]
    y = y.reshape(bn, oh, ow, cout).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, run_model(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    assert view.macs([2, cin, 7, 7]) == int(np.prod(y.shape)) * kk
    assert view.output_axis == 0 and view.reduction_axis is None and view.feature_axis == 1
    np.testing.assert_array_equal(view.from_matrices(mats), w)


@pytest.mark.parametrize("auto_pad,pads,strides,expected", [
    ("NOTSET", [1, 1, 1, 1], [2, 2], [4, 4]), ("VALID", None, [1, 1], [5, 5]), ("SAME_UPPER", None, [2, 2], [4, 4])])
def test_conv_macs_follow_pads_and_strides(auto_pad, pads, strides, expected, rng):
    attrs = [f'auto_pad="{auto_pad}"', f"strides=[{strides[0]}, {strides[1]}]"] + ([f"pads={pads}"] if pads else [])
    model = model_from_text(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4, 7, 7] x) => (float[1, 8, ?, ?] y) {{ y = Conv<{", ".join(attrs)}>(x, w) }}""",
                            {"w": rng.normal(size=(8, 4, 3, 3)).astype(np.float32)})
    _, view = _view(model, "Conv")
    out = run_model(model, {"x": np.zeros((1, 4, 7, 7), np.float32)})[0]
    assert list(out.shape[2:]) == expected
    assert view.macs([1, 4, 7, 7]) == int(np.prod(out.shape)) * 4 * 9


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_reduces_over_input_channels(groups, rng):
    cin, cout, k = 4, 6, 2
    w = rng.normal(size=(cin, cout // groups, k, k)).astype(np.float32)
    model = model_from_text(f"""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4, 3, 3] x) => (float[1, 6, 6, 6] y) {{ y = ConvTranspose<group={groups}, strides=[2, 2]>(x, w) }}""",
                            {"w": w})
    _, view = _view(model, "ConvTranspose")
    kk, n = view.shape
    assert (kk, n) == (cin // groups, cout // groups * k * k) and view.output_axis == (1 if groups == 1 else None)
    assert view.out_channels == cout
    x = rng.normal(size=(1, cin, 3, 3)).astype(np.float32)
    rows = np.moveaxis(x, 1, -1).reshape(9, cin)
    cols = np.concatenate([rows[:, g * kk:(g + 1) * kk] @ view.matrices()[g] for g in range(groups)], axis=1)
    # stride = kernel: the patches do not overlap, so col2im is a reshape
    y = cols.reshape(3, 3, cout, k, k).transpose(2, 0, 3, 1, 4).reshape(cout, 6, 6)
    np.testing.assert_allclose(y[None], run_model(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    assert view.macs([1, cin, 3, 3]) == cin * 9 * n
    np.testing.assert_array_equal(view.from_matrices(view.matrices()), w)


def test_write_back_keeps_dtype_and_initializer_and_scales_the_output(rng):
    w = rng.normal(size=(6, 3)).astype(np.float16)
    model = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
        g (float16[4, 6] x) => (float16[4, 3] y) { y = Gemm<transB=1>(x, w) }""", {"w": w.T.copy()})
    graph, view = _view(model, "Gemm")
    new = view.write(graph, view.from_matrices(view.matrices() * 2.0), "x2")
    assert new.values.dtype == np.float16 and view.source == INITIALIZER and view.tensor is new
    out = to_model(graph.cleanup(), model)
    assert [i.name for i in out.graph.initializer] == [new.name]
    x = rng.normal(size=(4, 6)).astype(np.float16)
    np.testing.assert_allclose(run_model(out, {"x": x})[0], 2 * run_model(model, {"x": x})[0], rtol=1e-2, atol=1e-2)


def test_a_constant_node_weight_is_written_back_as_a_constant_node(rng):
    w = rng.normal(size=(6, 3)).astype(np.float32)
    h = onnx.helper
    model = h.make_model(h.make_graph(
        [h.make_node("Constant", [], ["w"], value=onnx.numpy_helper.from_array(w)), h.make_node("MatMul", ["x", "w"], ["y"])],
        "g", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 6])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 3])]), opset_imports=[h.make_opsetid("", 17)])
    graph, view = _view(model, "MatMul")
    assert view.source == CONSTANT_NODE
    np.testing.assert_array_equal(view.stored, w)
    view.write(graph, -view.stored, "neg")
    out = to_model(graph.toposort(), model)
    assert [n.op_type for n in out.graph.node] == ["Constant", "MatMul"] and not out.graph.initializer
    onnx.checker.check_model(out, full_check=True)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(run_model(out, {"x": x})[0], -(x @ w), rtol=1e-5, atol=1e-5)


def test_a_shared_weight_is_seen_through_identity_copies(rng):
    w = rng.normal(size=(6, 6)).astype(np.float32)
    model = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 6] x) => (float[4, 6] y) { w1 = Identity(w) w2 = Identity(w) h = MatMul(x, w1) y = MatMul(h, w2) }""",
                            {"w": w})
    graph = to_graph(model)
    views = [linear_of(n, graph) for n in graph.nodes if n.op == "MatMul"]
    assert [v.readers for v in views] == [2, 2] and all(v.shared and v.source == INITIALIZER for v in views)
    direct = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 6] x) => (float[4, 6] y) { h = MatMul(x, w) y = MatMul(h, w) }""", {"w": w})
    graph = to_graph(direct)
    assert all(linear_of(n, graph).shared for n in graph.nodes)


def test_a_vector_weight_is_k_to_one(rng):
    w = rng.normal(size=(6,)).astype(np.float32)
    model = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 6] x) => (float[4] y) { y = MatMul(x, w) }""", {"w": w})
    _, view = _view(model, "MatMul")
    assert view.shape == (6, 1) and view.output_axis is None and view.reduction_axis is None
    assert view.macs([4, 6]) is None  # no single matrix: the callers count it from the output


def test_a_product_of_activations_or_another_op_has_no_view():
    model = model_from_text("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 6] x, float[6, 3] w) => (float[4, 3] y) { y = MatMul(x, w) }""")
    graph = to_graph(model)
    assert linear_of(graph.nodes[0], graph) is None
