"""fold-constants under dynamic dims: what the computed shapes fix folds, dynamic dims stay dynamic."""

from __future__ import annotations

import numpy as np
import onnx

from onnxslim.core.context import PassContext
from onnxslim.ir import shapes as shapes_module
from onnxslim.ir.io import to_graph
from onnxslim.passes.fold_constants import FoldConstants
from onnxslim.passes.remove_noops import RemoveNoops
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

def _computing(model: onnx.ModelProto) -> list[str]:
    return [op for op in op_types(model) if op != "Constant"]


GATHER_KNOWN_AND_DYNAMIC = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,4] x) => (float[N,12] y) {
    s = Shape(x)
    i0 = Constant<value = int64 {0}>()
    i1 = Constant<value = int64 {1}>()
    i2 = Constant<value = int64 {2}>()
    zero = Constant<value = int64[1] {0}>()
    d0 = Gather(s, i0)
    d1 = Gather(s, i1)
    d2 = Gather(s, i2)
    m = Mul(d1, d2)
    mu = Unsqueeze(m, zero)
    d0u = Unsqueeze(d0, zero)
    shape = Concat<axis = 0>(d0u, mu)
    y = Reshape(x, shape)
}"""


def test_shape_gathered_on_known_axes_folds_and_the_dynamic_axis_stays(rng):
    model = model_from_text(GATHER_KNOWN_AND_DYNAMIC)
    out, result = run_pass(FoldConstants(), model)
    assert result.modified and result.stats["shape_folded"] == 1  # Mul(d1, d2) = 12: its inputs die with it
    assert _computing(out) == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for n in (1, 5):
        assert_parity(model, out, {"x": rng.normal(size=(n, 3, 4)).astype(np.float32)})
    assert not run_pass(FoldConstants(), out)[1].modified


def test_slice_of_known_axes_folds_to_a_constant_shape(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,4] x) => (float[M,3,4] y) {
    s = Shape(x)
    starts = Constant<value = int64[1] {1}>()
    ends = Constant<value = int64[1] {3}>()
    tail = Slice(s, starts, ends)
    minus = Constant<value = int64[1] {-1}>()
    shape = Concat<axis = 0>(minus, tail)
    r = Relu(x)
    y = Reshape(r, shape)
}"""
    model = model_from_text(text)
    out, result = run_pass(FoldConstants(), model)
    assert result.modified
    assert _computing(out) == ["Relu", "Reshape"]
    shape = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}["shape"]
    assert shape.tolist() == [-1, 3, 4] and shape.dtype == np.int64
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 4)).astype(np.float32)})


# A recognizer's tail as exporters write it at opset 12 (Unsqueeze takes its axes as an
# attribute there, and onnx's data propagation does not follow it): the time axis W is
# dynamic, the batch is fixed at 1, and the LSTM's initial state is a ConstantOfShape.
RECOGNIZER = """<ir_version: 7, opset_import: ["": 12]>
g (float[1,8,W] x) => (float[T,1,1,4] y) {
    t = Transpose<perm = [2, 0, 1]>(x)
    s = Shape(t)
    i0 = Constant<value = int64 {0}>()
    d0 = Gather<axis = 0>(s, i0)
    d0u = Unsqueeze<axes = [0]>(d0)
    one = Constant<value = int64[1] {1}>()
    eight = Constant<value = int64[1] {8}>()
    target = Concat<axis = 0>(d0u, one, eight)
    r = Reshape(t, target)
    rs = Shape(r)
    i1 = Constant<value = int64 {1}>()
    b = Gather<axis = 0>(rs, i1)
    bu = Unsqueeze<axes = [0]>(b)
    dirs = Constant<value = int64[1] {1}>()
    hidden = Constant<value = int64[1] {4}>()
    state_shape = Concat<axis = 0>(dirs, bu, hidden)
    h0 = ConstantOfShape(state_shape)
    c0 = ConstantOfShape(state_shape)
    y, yh, yc = LSTM<hidden_size = 4>(r, w, rr, bias, , h0, c0)
}"""


def _recognizer(rng):
    return model_from_text(RECOGNIZER, {
        "w": rng.normal(size=(1, 16, 8)).astype(np.float32),
        "rr": rng.normal(size=(1, 16, 4)).astype(np.float32),
        "bias": rng.normal(size=(1, 32)).astype(np.float32),
    })


def test_recognizer_state_shape_folds_through_opset12_unsqueeze_and_zero_state_drops(rng):
    model = _recognizer(rng)
    out, result = run_pass(FoldConstants(), model)
    assert result.modified
    ops = _computing(out)
    assert "ConstantOfShape" not in ops and ops.count("Shape") == 1  # the time axis stays dynamic
    assert ops == ["Transpose", "Shape", "Gather", "Unsqueeze", "Concat", "Reshape", "LSTM"]
    out2, result2 = run_pass(RemoveNoops(), out)
    assert result2.stats == {"removed": 1, "zero_state": 1}
    assert list(out2.graph.node[-1].input)[5:] == ["", ""]  # omitted initial state: zeros by definition
    for width in (3, 11):
        feeds = {"x": rng.normal(size=(1, 8, width)).astype(np.float32)}
        assert_parity(model, out, feeds)
        assert_parity(model, out2, feeds)
    assert not run_pass(FoldConstants(), out2)[1].modified
    assert not run_pass(RemoveNoops(), out2)[1].modified


def test_declared_value_info_is_not_trusted_over_the_computed_shape(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,12] x) => (int64[1] y) {
    r = Relu(x)
    s = Shape<end = 1>(r)
    y = Identity(s)
}"""
    model = model_from_text(text)
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, [2, 12]))
    onnx.checker.check_model(model, full_check=True)
    out, result = run_pass(FoldConstants(), model)
    assert not result.modified
    assert "Shape" in op_types(out)


def test_a_model_onnx_cannot_infer_gets_no_shape_folding_and_no_error(monkeypatch, rng):
    def fail(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("unsupported")

    monkeypatch.setattr(shapes_module.onnx.shape_inference, "infer_shapes", fail)
    model = model_from_text(GATHER_KNOWN_AND_DYNAMIC)
    assert shapes_module.computed_shapes(to_graph(model), model) == {}
    out, result = run_pass(FoldConstants(), model, PassContext(model))
    assert not result.modified
    assert op_types(out) == op_types(model)


def test_slice_of_a_shape_vector_follows_onnx_clamping(rng):
    """The element-wise Slice of shape values agrees with onnx's reference Slice (negative steps too)."""
    from onnx.reference import ReferenceEvaluator

    from onnxslim.ir.shapes import _slice_indices

    for _ in range(150):
        dim = int(rng.integers(0, 6))
        start, end = (int(v) for v in rng.integers(-8, 9, size=2))
        end = int(rng.choice([end, 2**63 - 1, -(2**63)]))
        step = int(rng.choice([1, 2, 3, -1, -2]))
        node = onnx.helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"])
        consts = [onnx.numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s", start), ("e", end), ("a", 0), ("st", step))]
        graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.INT64, [dim])],
                                       [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, None)], consts)
        expected = ReferenceEvaluator(onnx.helper.make_model(graph)).run(None, {"x": np.arange(dim, dtype=np.int64)})[0]
        assert list(_slice_indices(dim, start, end, step)) == expected.tolist(), (dim, start, end, step)
