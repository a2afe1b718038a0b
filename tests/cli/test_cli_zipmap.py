"""A scikit-learn-style classifier whose probabilities leave through a ZipMap (a sequence of maps).

quantize checks int8 on the numeric outputs and the final parity compares the maps by their
values; with ``-q`` stdout stays empty (graphsurgeon printed its warnings there).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _classifier(path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["probabilities"], ["output_probability"], domain="ai.onnx.ml",
                         classlabels_int64s=[0, 1, 2]),
    ]
    maps = helper.make_sequence_type_proto(helper.make_map_type_proto(TensorProto.INT64,
                                                                      helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(nodes, "zipmap", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                               helper.make_value_info("output_probability", maps)], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_quantize_checks_a_zipmap_classifier_by_values_and_keeps_stdout_clean(tmp_path):
    source = tmp_path / "clf.onnx"
    _classifier(source)
    for passes in ("quantize{target_cosine=0.9,speed=off}", None):
        out = tmp_path / "out.onnx"
        args = [sys.executable, "-m", "onnxslim", "optimize", source, "-o", out, "--calibration-data", "random", "-q"]
        done = subprocess.run([*map(str, args), *(["--passes", passes] if passes else [])], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        assert out.exists()
        out.unlink()
