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
