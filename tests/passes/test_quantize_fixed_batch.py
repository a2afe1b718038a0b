"""quantize on a model whose declared batch is a fixed B: every run it makes feeds B rows at a time.

The shipped cnn re-declared with batch 1 and 4 (as exporters write it), through the CLI with a
stacked ``.npz`` and with a folder of one-sample files: ORT refuses any other row count
("Got invalid dimensions for input"), so a run of 32 stacked check rows fails the pass.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest

from onnxslim.core.context import PassContext, fixed_batch
from onnxslim.testing import run_model

FAST = "quantize{check_speed=false,speed=off}"


def _with_batch(repo, tmp_path, batch: int):
    model = onnx.load(str(repo / "models" / "cnn.onnx"))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    path = tmp_path / f"cnn_b{batch}.onnx"
    onnx.save(model, str(path))
    return path


def _optimize(*args):
    return subprocess.run([sys.executable, "-m", "onnxslim", "optimize", *map(str, args), "-q"],
                          capture_output=True, text=True)


@pytest.mark.parametrize("batch", [1, 4])
def test_quantize_fixed_batch_with_stacked_npz(repo, tmp_path, batch):
    path = _with_batch(repo, tmp_path, batch)
    out = tmp_path / "out.onnx"
    done = _optimize(path, "-o", out, "--passes", FAST, "--calibration-data", repo / "models" / "cnn_calib.npz",
                     "--data", repo / "models" / "cnn_eval.npz")
    assert done.returncode == 0, done.stderr
    quantized = onnx.load(str(out))
    assert "QuantizeLinear" in [n.op_type for n in quantized.graph.node]
    x = np.load(repo / "models" / "cnn_eval.npz")["input"][:batch]
    assert run_model(quantized, {"input": x})[0].shape == (batch, 10)


def test_quantize_fixed_batch_with_a_folder_of_single_samples(repo, tmp_path):
    path = _with_batch(repo, tmp_path, 4)
    folder = tmp_path / "calib"
    folder.mkdir()
    calib = np.load(repo / "models" / "cnn_calib.npz")["input"][:40]
    for i, row in enumerate(calib):
        np.savez(folder / f"{i:03d}.npz", input=row[None])
    done = _optimize(path, "-o", tmp_path / "out.onnx", "--passes", FAST, "--calibration-data", folder,
                     "--data", repo / "models" / "cnn_eval.npz")
    assert done.returncode == 0, done.stderr


def test_context_runs_a_fixed_batch_model_by_whole_batches(repo, tmp_path):
    model = onnx.load(str(_with_batch(repo, tmp_path, 4)))
    assert fixed_batch(model) == 4
    ctx = PassContext(model)
    from onnxslim.ir.io import to_graph
    x = np.load(repo / "models" / "cnn_eval.npz")["input"][:10]
    out = ctx.run(to_graph(model), {"input": x})["logits"]
    assert out.shape == (8, 10)  # two whole batches; the 2 rows left over cannot be fed
    np.testing.assert_allclose(out[4:], run_model(model, {"input": x[4:8]})[0], rtol=1e-5, atol=1e-5)
    assert fixed_batch(onnx.load(str(repo / "models" / "cnn.onnx"))) is None


def _unshared_axis0_model(tmp_path):
    """Q [2, 4, 8] (fixed batch 2) and a mask [4, 6] without the batch axis, as the ONNX attention
    tests declare them: the mask's rows are not samples and must never be stacked or cut."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.normal(size=(8, 6)).astype(np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["q", "w"], ["s"]), onnx.helper.make_node("Add", ["s", "mask"], ["y"])],
        "unshared", [onnx.helper.make_tensor_value_info("q", onnx.TensorProto.FLOAT, [2, 4, 8]),
                     onnx.helper.make_tensor_value_info("mask", onnx.TensorProto.FLOAT, [4, 6])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 4, 6])], [w])
    path = tmp_path / "unshared.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    return path


def test_quantize_feeds_inputs_that_do_not_share_axis_0_as_they_are(tmp_path):
    path = _unshared_axis0_model(tmp_path)
    out = tmp_path / "out.onnx"
    done = _optimize(path, "-o", out, "--passes", "quantize", "--calibration-data", "random")
    assert done.returncode == 0, done.stderr
    weights = [t for t in onnx.load(str(out)).graph.initializer]
    assert any(t.data_type == onnx.TensorProto.INT8 for t in weights)  # int8 compute or int8 weight storage


def test_quantize_a_matmul_of_two_inputs_with_different_axis_0(tmp_path):
    """The ONNX test_matmul_2d node test: a [3, 4] @ b [4, 3]; b's rows are not samples."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul_2d",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [3, 4]),
         onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [4, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3, 3])])
    path = tmp_path / "matmul_2d.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    out = tmp_path / "out.onnx"
    done = _optimize(path, "-o", out, "--passes", "quantize", "--calibration-data", "random")
    assert done.returncode == 0, done.stderr
    a, b = np.ones((3, 4), np.float32), np.ones((4, 3), np.float32)
    assert run_model(onnx.load(str(out)), {"a": a, "b": b})[0].shape == (3, 3)


def test_stacked_rows_tells_stacked_samples_from_one_feed():
    from onnxslim.core.context import stacked_rows, take_rows

    q, mask = np.zeros((2, 4, 8)), np.zeros((4, 6))
    assert stacked_rows({"q": q, "k": q}) == 2
    assert stacked_rows({"q": q, "mask": mask}) is None
    assert stacked_rows({"q": q, "rate": np.array(16000)}) is None
    assert take_rows({"q": q, "mask": mask}, 1)["mask"].shape == (4, 6)
    assert take_rows({"q": q, "k": q}, 1)["k"].shape == (1, 4, 8)


def test_quantize_fixed_batch_with_a_sequence_first_output(tmp_path):
    """A recognizer's ``[T, 1, C]`` output (the lstm_crnn corpus export): run one sample at a time,
    its outputs stack T rows per sample, so the first rows of them are not the first samples'."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
         helper.make_node("MatMul", ["t", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "seq_first",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 1, 4])], [w1, w2])
    path, out, calib = tmp_path / "seq.onnx", tmp_path / "out.onnx", tmp_path / "calib.npz"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    np.savez(calib, x=rng.standard_normal((40, 8, 6)).astype(np.float32))
    done = _optimize(path, "-o", out, "--passes", FAST, "--calibration-data", calib, "--data", calib)
    assert done.returncode == 0, done.stderr
    assert "QuantizeLinear" in [n.op_type for n in onnx.load(str(out)).graph.node]
