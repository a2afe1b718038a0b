"""Model statistics without a run: FLOPs from shape inference, ORT's node count on a stub."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxslim import api
from onnxslim.ir import stats

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "report.schema.json").read_text())


def _mlp(rng, custom: bool = False) -> onnx.ModelProto:
    """[batch, seq, 32] -> MatMul 32x64 -> Relu -> Reshape(0, -1) -> optionally a custom op."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Shape", ["r"], ["shape"], end=1),
        helper.make_node("Concat", ["shape", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y" if not custom else "flat"]),
    ]
    if custom:
        nodes.append(helper.make_node("Mystery", ["flat"], ["y"], domain="my.domain"))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None])],
        [numpy_helper.from_array(rng.normal(size=(32, 64)).astype(np.float32), "w"),
         numpy_helper.from_array(np.array([-1], np.int64), "minus_one")])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("my.domain", 1)] if custom else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def test_flops_are_a_polynomial_of_the_symbolic_dims_and_exact_at_the_data_shapes(rng):
    model = _mlp(rng)
    report = stats.flops_report(model, {"x": np.zeros((3, 5, 32), np.float32)})
    # MatMul: 2 * batch*seq*64 * 32; Relu one op per element; Shape, Concat and Reshape likewise
    assert report["flops_symbolic"]["MatMul"] == "4096*batch*seq"
    assert report["flops"]["MatMul"] == 4096 * 3 * 5
    relu_and_reshape = 2 * 3 * 5 * 64
    assert report["flops"]["elementwise"] == relu_and_reshape + 1 + 2  # Shape [1], Concat [2]
    assert report["flops"]["total"] == report["flops"]["compute"] + report["flops"]["elementwise"]
    assert stats.flops(model, {"x": (1, 1, 32)})["MatMul"] == 4096  # shapes work as well as arrays


def test_unknown_shapes_count_zero_with_a_note(rng):
    report = stats.flops_report(_mlp(rng, custom=True), {"x": (2, 2, 32)})
    assert report["flops"]["MatMul"] == 4096 * 4
    assert any("1 node(s)" in note for note in report["notes"])


def test_inspect_needs_no_runnable_model_and_ort_says_nothing(rng, tmp_path, capfd):
    path = tmp_path / "custom.onnx"
    onnx.save_model(_mlp(rng, custom=True), str(path))
    doc = api.inspect(path, {"x": (2, 7, 32)})
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # ORT's own log never reaches the terminal
    assert doc["nodes_optimized"] is None
    assert any("nodes after ORT: skipped" in note and "Mystery" in note for note in doc["notes"])
    assert doc["flops"]["MatMul"] == 4096 * 14
    assert doc["params"] == 32 * 64
    jsonschema.validate({"schema_version": 1, "tool_version": "x", "pipeline": "",
                         "environment": {"python": "", "onnx": "", "onnxruntime": "", "providers": [],
                                         "cpu": {"model": "", "flags": []}},
                         "input": {k: v for k, v in doc.items() if k in SCHEMA["$defs"]["model"]["properties"]}},
                        SCHEMA)


def test_ort_node_count_on_the_stub_matches_the_real_weights(rng, tmp_path):
    from onnxslim.runtime.node_count import ort_node_count
    from onnxslim.runtime.session import optimized_node_count
    model = _mlp(rng)
    count, note = ort_node_count(model)
    assert note is None and count == optimized_node_count(model)


def test_zip_size_of_a_large_model_is_estimated_from_samples(rng, monkeypatch):
    model = _mlp(rng)
    weights = np.repeat(rng.normal(size=(64, 1)).astype(np.float16).astype(np.float32), 4096, axis=1)
    model.graph.initializer.append(numpy_helper.from_array(weights, "big"))  # compresses well
    exact, estimated = stats.model_compressed_bytes(model)
    assert not estimated and exact == stats.compressed_bytes(model.SerializeToString())
    monkeypatch.setattr(stats, "ZIP_EXACT_BYTES", 0)
    guess, estimated = stats.model_compressed_bytes(model)
    assert estimated and abs(guess - exact) < 0.1 * exact


def test_costs_measured_in_the_background_reach_the_caller_and_so_do_their_errors():
    future = api._in_background(lambda a, b=0: a + b, 2, b=3)
    assert future.result(timeout=10) == 5
    failing = api._in_background(stats.model_stats, None)  # not a model: an AttributeError
    with pytest.raises(AttributeError):
        failing.result(timeout=10)
