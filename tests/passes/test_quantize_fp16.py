"""quantize on fp16 models: the float compute becomes float32 between Casts at the fp16 inputs and
outputs (ORT's integer kernels take float32 scales), the interface stays fp16, ORT runs the result."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from onnxslim.core.context import PassContext
from onnxslim.ir.io import to_graph, to_model
from onnxslim.passes.quantize import Quantize, QuantizeOptions
from onnxslim.quant import fp16
from onnxslim.testing import model_from_text, op_types, run_model, run_pass

FAST = {"check_speed": False, "speed": "off"}

CONV_NET = """<ir_version: 8, opset_import: ["": 17]>
g (float16[N,3,16,16] x) => (float16[N,10] y) {
    c1 = Conv<pads=[1,1,1,1]>(x, w1, b1)
    r1 = Relu(c1)
    c2 = Conv<pads=[1,1,1,1]>(r1, w2, b2)
    r2 = Relu(c2)
    p = GlobalAveragePool(r2)
    f = Flatten(p)
    h = Cast<to=10>(f)
    y = Gemm<transB=1>(h, wf, bf)
}"""


def _conv_net(rng):
    w = {"w1": rng.normal(size=(16, 3, 3, 3)) * 0.3, "b1": rng.normal(size=16) * 0.1,
         "w2": rng.normal(size=(32, 16, 3, 3)) * 0.1, "b2": rng.normal(size=32) * 0.1,
         "wf": rng.normal(size=(10, 32)) * 0.3, "bf": rng.normal(size=10) * 0.1}
    return model_from_text(CONV_NET, {k: v.astype(np.float16) for k, v in w.items()})


def _cosine(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def test_fp16_conv_net_quantizes_and_keeps_its_fp16_interface(rng):
    model = _conv_net(rng)
    batches = [{"x": rng.normal(size=(8, 3, 16, 16)).astype(np.float16)} for _ in range(4)]
    out, result = run_pass(Quantize(QuantizeOptions(**FAST)), model, PassContext(model, calibration=batches))
    assert result.modified and result.stats["quantized_nodes"] == 3
    assert "QuantizeLinear" in op_types(out)
    assert [i.type.tensor_type.elem_type for i in out.graph.input] == [TensorProto.FLOAT16]
    assert [o.type.tensor_type.elem_type for o in out.graph.output] == [TensorProto.FLOAT16]
    assert [o.name for o in out.graph.output] == ["y"]
    x = rng.normal(size=(16, 3, 16, 16)).astype(np.float16)
    quantized, original = run_model(out, {"x": x})[0], run_model(model, {"x": x})[0]
    assert quantized.dtype == np.float16
    assert _cosine(quantized, original) > 0.99


def test_to_float32_computes_the_same_function(rng):
    model = _conv_net(rng)
    graph = to_graph(model)
    assert fp16.has_fp16(graph)
    assert fp16.to_float32(graph) == 6  # the six fp16 weights
    converted = to_model(graph, model)
    onnx.checker.check_model(converted, full_check=True)
    assert {t.data_type for t in converted.graph.initializer} == {TensorProto.FLOAT}
    assert op_types(converted)[0] == "Cast" and op_types(converted)[-1] == "Cast"
    x = rng.normal(size=(4, 3, 16, 16)).astype(np.float16)
    a, b = run_model(model, {"x": x})[0], run_model(converted, {"x": x})[0]
    eps16 = float(np.finfo(np.float16).eps)
    np.testing.assert_allclose(b.astype(np.float32), a.astype(np.float32), atol=8 * eps16 * np.abs(a).max())


def test_fp16_shipped_mlp_through_the_cli(repo, tmp_path):
    model = onnx.load(str(repo / "models" / "mlp.onnx"))
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    source = tmp_path / "mlp16.onnx"
    onnx.save(model, str(source))
    out = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", "onnxslim", "optimize", str(source), "-o", str(out), "-q",
                           "--passes", "quantize{check_speed=false,speed=off}",
                           "--calibration-data", str(repo / "models" / "mlp_calib.npz"),
                           "--data", str(repo / "models" / "mlp_eval.npz")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size < source.stat().st_size  # int8 weights: half of fp16's bytes
    data = np.load(repo / "models" / "mlp_eval.npz")
    logits = run_model(onnx.load(str(out)), {"input": data["input"].astype(np.float16)})[0]
    assert (logits.argmax(1) == data["label"]).mean() > 0.9
