"""The node count behind "nodes after ORT": the protobuf walk and the ORT-only child."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from onnxslim.runtime import ort_nodes
from onnxslim.runtime.session import optimized_node_count

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer"])
def test_graph_node_count_is_onnx_s_count(name):
    data = (MODELS / f"{name}.onnx").read_bytes()
    assert ort_nodes.graph_node_count(data) == len(onnx.load_from_string(data).graph.node)


def test_graph_node_count_adds_the_nodes_of_repeated_graph_fields(chain):
    model = chain()
    second = onnx.ModelProto()
    second.graph.node.add().op_type = "Relu"
    data = model.SerializeToString() + second.SerializeToString()  # protobuf merges the two graphs
    assert len(onnx.load_from_string(data).graph.node) == len(model.graph.node) + 1
    assert ort_nodes.graph_node_count(data) == len(model.graph.node) + 1


def test_graph_node_count_refuses_a_truncated_model(chain):
    data = chain().SerializeToString()
    with pytest.raises(ValueError, match="truncated"):
        ort_nodes.graph_node_count(data[:-3])


def test_child_prints_the_session_count_without_importing_onnx(build, tmp_path):
    model = build(
        """g (float[N,4] X) => (float[N,4] Y) {
            A = Identity(X)
            B = Relu(A)
            Y = Identity(B)
        }"""
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    code = ("import runpy, sys; sys.argv = ['ort_nodes', sys.argv[1]]; "
            "runpy.run_module('onnxslim.runtime.ort_nodes', run_name='__main__'); "
            "print('onnx' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    count, onnx_imported = done.stdout.split()
    assert int(count) == optimized_node_count(model) < len(model.graph.node)
    assert onnx_imported == "False"  # onnx (and ml_dtypes with it) would be most of the child's time


def _gemm_relu(rng, tmp_path) -> Path:
    """Gemm -> Relu -> Identity with a 64 KB weight: ORT puts it in the optimized model's side file."""
    from onnx import TensorProto, helper, numpy_helper
    weight = numpy_helper.from_array(rng.standard_normal((128, 128)).astype("float32"), "W")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W"], ["G"]), helper.make_node("Relu", ["G"], ["R"]),
         helper.make_node("Identity", ["R"], ["Y"])],
        "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 128])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 128])], [weight])
    path = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_weights_sent_to_the_null_device_leave_the_count_as_a_real_side_file_does(rng, tmp_path):
    path = _gemm_relu(rng, tmp_path)
    discarded = ort_nodes._count(path, ["CPUExecutionProvider"], discard_weights=True)
    written = ort_nodes._count(path, ["CPUExecutionProvider"], discard_weights=False)
    assert discarded == written == 1  # ORT fuses Gemm and Relu and drops the Identity


def test_without_symlinks_the_side_file_is_real(rng, tmp_path, monkeypatch):
    path = _gemm_relu(rng, tmp_path)

    def refuse(*_args, **_kwargs):
        raise OSError("symbolic links are not available")

    monkeypatch.setattr(ort_nodes.os, "symlink", refuse)
    assert ort_nodes.optimized_node_count(path) == 1


def test_a_model_ort_refuses_raises_ort_s_error(tmp_path):
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Mystery", ["X"], ["Y"], domain="nowhere")], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])])
    path = tmp_path / "mystery.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("nowhere", 1)]),
              path)
    with pytest.raises(Exception, match="Mystery|nowhere"):
        ort_nodes.optimized_node_count(path)


def test_large_models_share_one_child_that_survives_a_refusal(rng, tmp_path, monkeypatch):
    from onnxslim.runtime import node_count
    monkeypatch.setattr(node_count, "ISOLATE_BYTES", 0)  # every model counts in the child
    monkeypatch.setattr(node_count, "_CHILD", node_count._Child())
    good = onnx.load(_gemm_relu(rng, tmp_path))
    bad = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Mystery", ["X"], ["Y"], domain="nowhere")], "g",
        [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [1])]),
        opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("nowhere", 1)])
    assert node_count.ort_node_count(good) == (1, None)
    child = node_count._CHILD.process
    count, why = node_count.ort_node_count(bad)
    assert count is None and why.startswith("nodes after ORT: skipped") and "Mystery" in why
    assert node_count.ort_node_count(good) == (1, None)
    assert node_count._CHILD.process is child  # one child served all three


def test_a_child_that_dies_is_reported_and_replaced(rng, tmp_path, monkeypatch):
    from onnxslim.runtime import node_count
    monkeypatch.setattr(node_count, "ISOLATE_BYTES", 0)
    child = node_count._Child()
    monkeypatch.setattr(node_count, "_CHILD", child)
    good = onnx.load(_gemm_relu(rng, tmp_path))
    child.command = [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit('ORT crashed here')"]
    count, why = node_count.ort_node_count(good)
    assert count is None and why.startswith("nodes after ORT: skipped") and "ORT crashed here" in why
    child.command = node_count._Child.command
    assert node_count.ort_node_count(good) == (1, None)  # the next count starts a new child


def test_closing_reaps_the_child(rng, tmp_path, monkeypatch):
    from onnxslim.runtime import node_count
    monkeypatch.setattr(node_count, "ISOLATE_BYTES", 0)
    child = node_count._Child()
    monkeypatch.setattr(node_count, "_CHILD", child)
    assert node_count.ort_node_count(onnx.load(_gemm_relu(rng, tmp_path))) == (1, None)
    process = child.process
    child.close()
    assert process.returncode == 0 and child.process is None  # ended on its closed stdin, and reaped
    child.close()  # nothing left to close


def test_a_child_answering_nonsense_is_replaced(rng, tmp_path, monkeypatch):
    from onnxslim.runtime import node_count
    monkeypatch.setattr(node_count, "ISOLATE_BYTES", 0)
    child = node_count._Child()
    monkeypatch.setattr(node_count, "_CHILD", child)
    good = onnx.load(_gemm_relu(rng, tmp_path))
    child.command = [sys.executable, "-c", "import sys, time; sys.stdin.readline(); print('hello'); time.sleep(60)"]
    count, why = node_count.ort_node_count(good)
    assert count is None and "unexpected answer" in why and "hello" in why
    assert child.process is None  # the chatty child was ended
    child.command = node_count._Child.command
    assert node_count.ort_node_count(good) == (1, None)
