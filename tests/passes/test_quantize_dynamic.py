"""The dynamic int8 rewrite of a float MatMul (onnxslim.quant.dynamic)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxslim.core.context import PassContext
from onnxslim.ir.io import to_graph
from onnxslim.quant import cpu, dynamic
from onnxslim.runtime.cpu import host_cpu
from onnxslim.testing import model_from_text, op_types, run_model

#: where this CPU's u8·s8 kernels can saturate, the pass gives dynamic layers 7-bit weights
HOST_RISK = cpu.saturation_risk("CPUExecutionProvider", "uint8", host_cpu())

BATCHED = """<ir_version: 8, opset_import: ["": 17]>
g (float[B,S,64] x) => (float[B,S,48] y) {
    h = MatMul(x, w)
    y = Add(h, b)
}"""

CONSTANT_NODE = """<ir_version: 8, opset_import: ["": 17]>
g (float[B,64] x) => (float[B,48] y) {
    w = Constant<value = float[64,48] {%s}>()
    y = MatMul(x, w)
}"""


def _rewritten(model: onnx.ModelProto, bits7: bool | None = None) -> onnx.ModelProto:
    graph = to_graph(model)
    for node in [n for n in graph.nodes if dynamic.dynamic_ok(n)]:
        dynamic.rewrite(graph, node, bits7=HOST_RISK if bits7 is None else bits7)
    graph.cleanup().toposort()
    return PassContext(model).export(graph)


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("bits7", [None, True])
def test_batched_matmul_runs_in_int8_with_the_batch_range(rng, bits7):
    """Default (7-bit weights only where this CPU's kernels saturate) and forced 7-bit."""
    weights = {"w": rng.normal(size=(64, 48)).astype(np.float32) * np.linspace(0.1, 3, 48, dtype=np.float32),
               "b": rng.normal(size=48).astype(np.float32)}
    model = model_from_text(BATCHED, weights)
    out = _rewritten(model, bits7)
    onnx.checker.check_model(out, full_check=True)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= set(op_types(out)) and "MatMul" not in op_types(out)
    stored = {i.name: onnx.numpy_helper.to_array(i) for i in out.graph.initializer}
    (q,) = [v for v in stored.values() if v.dtype == np.int8 and v.ndim == 2]
    assert np.abs(q).max() == (63 if bits7 or HOST_RISK else 127)
    # two batches with ranges 100x apart: one static range could not serve both
    for scale in (0.01, 1.0):
        feeds = {"x": (scale * rng.normal(size=(2, 5, 64))).astype(np.float32)}
        (ref,), (got,) = run_model(model, feeds), run_model(out, feeds)
        assert _cosine(ref - weights["b"], got - weights["b"]) > 0.999


def test_weight_in_a_constant_node(rng):
    w = rng.normal(size=(64, 48)).astype(np.float32)
    model = model_from_text(CONSTANT_NODE % ", ".join(f"{v:.6f}" for v in w.ravel()))
    out = _rewritten(model)
    assert "Constant" not in op_types(out) and "MatMulInteger" in op_types(out)
    feeds = {"x": rng.normal(size=(4, 64)).astype(np.float32)}
    assert _cosine(run_model(model, feeds)[0], run_model(out, feeds)[0]) > 0.999


def test_ort_fuses_the_pattern_into_one_integer_kernel(rng, tmp_path):
    model = model_from_text(BATCHED, {"w": rng.normal(size=(64, 48)).astype(np.float32),
                                      "b": rng.normal(size=48).astype(np.float32)})
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(_rewritten(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "DynamicQuantizeMatMul" in fused and "MatMulInteger" not in fused, fused


def test_only_float_matmuls_with_a_constant_matrix_qualify(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
    g (float[B,64] x, float[64,48] v) => (float[B,48] y, float[B,48] z) {
        y = MatMul(x, w)
        z = MatMul(x, v)
    }"""
    graph = to_graph(model_from_text(text, {"w": rng.normal(size=(64, 48)).astype(np.float32)}))
    assert [dynamic.dynamic_ok(n) for n in graph.nodes] == [True, False]


def test_outlier_channels_are_the_few_that_dwarf_the_rest():
    absmax = np.linspace(0.5, 5.8, 1536)  # a smooth tail, as in MiniLM's FFN activations
    absmax[[7, 900]] = [24.6, 12.0]
    assert dynamic.outlier_channels(absmax).tolist() == [7, 900]
    assert dynamic.outlier_channels(np.linspace(1, 4, 1536)).tolist() == []  # even spread: none
    absmax[900] = 9.0  # 24.6 stands out from 9.0, but 9.0 not from 5.8
    assert dynamic.outlier_channels(absmax).tolist() == [7]
    # never more than K/128 channels, however uneven
    assert len(dynamic.outlier_channels(np.r_[np.full(40, 50.0), np.ones(1496)])) == 0


def test_outlier_channels_run_in_float_and_keep_the_range_for_the_rest(rng, tmp_path):
    """One input channel 30x the others: splitting it off keeps the others' resolution."""
    w = rng.normal(size=(256, 48)).astype(np.float32)
    model = model_from_text(BATCHED.replace("[B,S,64]", "[B,S,256]"), {"w": w, "b": np.zeros(48, np.float32)})
    x = rng.normal(size=(2, 5, 256)).astype(np.float32)
    x[..., 3] *= 30
    outliers = dynamic.outlier_channels(np.abs(x).reshape(-1, 256).max(0))
    assert outliers.tolist() == [3]
    errors = {}
    for split in (None, outliers):
        graph = to_graph(model)
        dynamic.rewrite(graph, graph.nodes[0], bits7=HOST_RISK, outliers=split)
        graph.cleanup().toposort()
        out = PassContext(model).export(graph)
        (ref,), (got,) = run_model(model, {"x": x}), run_model(out, {"x": x})
        errors[split is None] = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert errors[False] < errors[True] / 3, errors
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(out.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fused = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert "DynamicQuantizeMatMul" in fused and "MatMulInteger" not in fused, fused
