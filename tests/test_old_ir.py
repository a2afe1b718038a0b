"""Old IR: every weight also listed as a graph input (IR 3, what ``onnx.version_converter`` keeps),
and overridable initializers at IR >= 4, and opsets older than 11 (upgraded with the converter).

On load an initializer listed as an input is the constant it holds: it leaves the graph inputs
and the IR version rises to 4 (the first where that is valid), so the passes may fold it and the
output model is valid. The reference run is ONNX Runtime on the original file.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.errors import ModelLoadError
from onnxslim.ir import io as ir_io
from onnxslim.testing import EXACT_ATOL, EXACT_RTOL, run_model


def _old_model(opset: int, ir: int, listed: bool = True) -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool-Flatten-Gemm whose initializers are (``listed``) also graph inputs."""
    rng = np.random.default_rng(0)
    w = {"conv_w": rng.normal(size=(8, 3, 3, 3)) * 0.3, "conv_b": rng.normal(size=8) * 0.1,
         "bn_g": rng.uniform(0.5, 1.5, 8), "bn_b": rng.normal(size=8) * 0.1,
         "bn_m": rng.normal(size=8) * 0.1, "bn_v": rng.uniform(0.5, 1.5, 8),
         "fc_w": rng.normal(size=(10, 8 * 4 * 4)) * 0.1, "fc_b": rng.normal(size=10) * 0.1}
    w = {k: v.astype(np.float32) for k, v in w.items()}
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn_g", "bn_b", "bn_m", "bn_v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    if listed:
        inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in w.items()]
    graph = helper.make_graph(nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    onnx.checker.check_model(model)
    return model


def _optimize(*args):
    return subprocess.run([sys.executable, "-m", "onnxslim", "optimize", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize(("opset", "ir"), [(9, 3), (11, 3), (13, 8)])
def test_default_pipeline_on_initializers_listed_as_inputs(tmp_path, opset, ir):
    source = tmp_path / "old.onnx"
    onnx.save(_old_model(opset, ir), str(source))
    original = source.read_bytes()
    out = tmp_path / "out.onnx"
    done = _optimize(source, "-o", out)
    assert done.returncode == 0, done.stderr
    assert "initializer(s) also listed as graph inputs" in done.stderr
    assert source.read_bytes() == original
    result = onnx.load(str(out))
    onnx.checker.check_model(result, full_check=True)
    assert [i.name for i in result.graph.input] == ["x"]
    assert "BatchNormalization" not in [n.op_type for n in result.graph.node]  # the weights did fold
    assert result.ir_version >= 4
    assert next(o.version for o in result.opset_import if o.domain == "") >= ir_io.MIN_OPSET
    x = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    expected = run_model(_old_model(opset, ir), {"x": x})[0]  # ORT on the model as the user has it
    np.testing.assert_allclose(run_model(result, {"x": x})[0], expected, rtol=EXACT_RTOL, atol=EXACT_ATOL)


@pytest.mark.parametrize("passes", ["quantize{check_speed=false,speed=off}", "svd", "prune-channels"])
def test_lossy_passes_on_ir3(tmp_path, passes):
    source = tmp_path / "old.onnx"
    onnx.save(_old_model(9, 3), str(source))
    done = _optimize(source, "-o", tmp_path / "out.onnx", "--passes", passes, "--calibration-data", "random", "-q")
    assert done.returncode == 0, done.stderr
    result = onnx.load(str(tmp_path / "out.onnx"))
    assert [i.name for i in result.graph.input] == ["x"]
    run_model(result, {"x": np.zeros((1, 3, 8, 8), np.float32)})


def test_load_keeps_a_current_model_as_it_is(tmp_path):
    onnx.save(_old_model(13, 8, listed=False), str(tmp_path / "m.onnx"))
    model = ir_io.load_model(tmp_path / "m.onnx")
    assert model.ir_version == 8 and [i.name for i in model.graph.input] == ["x"]


def test_an_opset_the_converter_cannot_upgrade_is_refused(tmp_path):
    """Opset 6's BatchNormalization with a symbolic batch: the converter's adapter asserts."""
    onnx.save(_old_model(6, 3), str(tmp_path / "old.onnx"))
    with pytest.raises(ModelLoadError, match="opset 6 is older than 11 and onnx.version_converter could not"):
        ir_io.load_model(tmp_path / "old.onnx")
    done = _optimize(tmp_path / "old.onnx", "-o", tmp_path / "out.onnx")
    assert done.returncode == 2 and "version_converter" in done.stderr
    assert not (tmp_path / "out.onnx").exists()
