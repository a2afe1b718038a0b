"""quantize on MatMuls ORT has no integer kernel for, and on weights shared by several layers.

1-D operands (a vector weight, a 4-D × 1-D product, a 1-D activation the graph states or only the
data shows) are declined with a reason, never a crash; a weight read by several layers
(ALBERT shares each layer's weights across all layers) is quantized for each of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.core.context import PassContext
from onnxslim.passes.quantize import Quantize, QuantizeOptions
from onnxslim.testing import model_from_text, op_types, run_model, run_pass

FAST = {"check_speed": False, "speed": "off"}


def _quantize(model, batches, **options):
    return run_pass(Quantize(QuantizeOptions(**{**FAST, **options})), model, PassContext(model, calibration=batches))


CASES = {
    "vector weight": ("""<ir_version: 8, opset_import: ["": 17]>
g (float[N,16] x) => (float[N] y) { y = MatMul(x, w) }""", {"w": (16,)}, (8, 16), "weight of rank 1"),
    "4-D x 1-D": ("""<ir_version: 8, opset_import: ["": 17]>
g (float[N,2,3,16] x) => (float[N,2,3] y) { y = MatMul(x, w) }""", {"w": (16,)}, (8, 2, 3, 16), "weight of rank 1"),
    "1-D activation stated": ("""<ir_version: 8, opset_import: ["": 17]>
g (float[16] x) => (float[8] y) { y = MatMul(x, w) }""", {"w": (16, 8)}, (16,), "1-D activation"),
    "1-D activation shown by the data": ("""<ir_version: 8, opset_import: ["": 17]>
g (float[4,16] x) => (float[8] y) {
    v = Reshape(x, flat)
    y = MatMul(v, w)
}""", {"w": (64, 8), "flat": None}, (4, 16), "1-D activation"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matmul_with_a_1d_operand_is_declined(rng, case):
    text, shapes, x_shape, reason = CASES[case]
    weights = {k: rng.normal(size=s).astype(np.float32) if s else np.array([-1], np.int64) for k, s in shapes.items()}
    model = model_from_text(text, weights)
    batches = [{"x": rng.normal(size=x_shape).astype(np.float32)} for _ in range(2)]
    out, result = _quantize(model, batches)
    assert not result.modified
    assert any(reason in d.reason for d in result.declines), result.declines
    x = batches[0]["x"]
    np.testing.assert_array_equal(run_model(out, {"x": x})[0], run_model(model, {"x": x})[0])


SHARED = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,6,32] x) => (float[N,6,32] y) {
    m0 = MatMul(x, w)
    a0 = Add(m0, b)
    h0 = Relu(a0)
    m1 = MatMul(h0, w)
    a1 = Add(m1, b)
    h1 = Relu(a1)
    m2 = MatMul(h1, w)
    a2 = Add(m2, b)
    y = LayerNormalization<axis=-1>(a2, g, beta)
}"""


@pytest.mark.parametrize("options", [{}, {"target_cosine": 1.0, "max_excluded": 0.67}])
def test_layers_sharing_one_weight_quantize(rng, options):
    weights = {"w": rng.normal(size=(32, 32)).astype(np.float32) * 0.25, "b": rng.normal(size=32).astype(np.float32),
               "g": np.ones(32, np.float32), "beta": np.zeros(32, np.float32)}
    model = model_from_text(SHARED, weights)
    batches = [{"x": rng.normal(size=(8, 6, 32)).astype(np.float32)} for _ in range(4)]
    out, result = _quantize(model, batches, **options)
    assert result.modified
    x = rng.normal(size=(4, 6, 32)).astype(np.float32)
    a, b = run_model(model, {"x": x})[0].ravel(), run_model(out, {"x": x})[0].ravel()
    assert a @ b / np.sqrt((a @ a) * (b @ b)) > 0.98
    assert "MatMul" in op_types(out)


SHARED_BY_IDENTITY = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,6,32] x) => (float[N,6,32] y) {
    w1 = Identity(w)
    w2 = Identity(w)
    m0 = MatMul(x, w)
    h0 = Relu(m0)
    m1 = MatMul(h0, w1)
    h1 = Relu(m1)
    y = MatMul(h1, w2)
}"""


def test_weight_shared_through_identity_copies_is_a_constant_weight(rng):
    """PyTorch's export of ALBERT: layers 2.. read ``Identity(W)``, which once counted as an activation
    (its 4 kept calibration rows then fed the probe: "MatMulIntegerToFloat ... dimension mismatch")."""
    model = model_from_text(SHARED_BY_IDENTITY, {"w": rng.normal(size=(32, 32)).astype(np.float32) * 0.25})
    batches = [{"x": rng.normal(size=(8, 6, 32)).astype(np.float32)} for _ in range(4)]
    out, result = _quantize(model, batches)
    assert result.stats["quantized_nodes"] == 3
    assert "Identity" not in op_types(out)
    producers = {o: n.op_type for n in out.graph.node for o in n.output}
    matmuls = [n for n in out.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) == 3 and all(producers.get(n.input[1]) == "DequantizeLinear" for n in matmuls)
    x = rng.normal(size=(4, 6, 32)).astype(np.float32)
    a, b = run_model(model, {"x": x})[0].ravel(), run_model(out, {"x": x})[0].ravel()
    assert a @ b / np.sqrt((a @ a) * (b @ b)) > 0.98


FLOAT64 = {
    "stated": """<ir_version: 8, opset_import: ["": 17]>
g (double[N,16] x) => (double[N,8] y) { y = MatMul(x, w) }""",
    "shown by the data": """<ir_version: 8, opset_import: ["": 17]>
g (double[N,16] x) => (double[N,8] y) {
    h = Relu(x)
    y = MatMul(h, w)
}""",
}


@pytest.mark.parametrize("case", list(FLOAT64))
def test_float64_activations_are_declined(rng, case):
    """QuantizeLinear takes no float64: the flexattention `double` node tests once sent a float64
    activation to the per-layer probe ("Unexpected input data type ... tensor(double)")."""
    model = model_from_text(FLOAT64[case], {"w": rng.normal(size=(16, 8))})
    batches = [{"x": rng.normal(size=(8, 16))} for _ in range(2)]
    out, result = _quantize(model, batches)
    assert not result.modified
    assert any("float64" in d.reason for d in result.declines), result.declines
    np.testing.assert_array_equal(run_model(out, batches[0])[0], run_model(model, batches[0])[0])
