"""Model statistics without a run: FLOPs from shape inference, ORT's node count on a stub."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import api
from onnxslim.ir import stats
from onnxslim.ir.io import to_graph
from onnxslim.ir.linear import linear_of

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


def test_the_note_counts_nodes_whose_size_stays_symbolic_not_report_keys(rng):
    """A Reshape to a shape read from an input: inference names its dims (unk__0, unk__1), so at
    the data's shapes the Reshape, the MatMul and the Relu after it count 0 — three nodes, which
    the note says (it once said 4: the report keys holding a symbol)."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["": 17]>
        g (float[batch, 32] x, int64[2] s) => (float[batch, 64] z) { r = Reshape(x, s)
        y = MatMul(r, w)
        z = Relu(y) }""")
    model.graph.initializer.append(numpy_helper.from_array(rng.normal(size=(32, 64)).astype(np.float32), "w"))
    report = stats.flops_report(model, {"x": (2, 32), "s": (2,)})
    assert report["flops"]["MatMul"] == 0 and "unk__" in report["flops_symbolic"]["MatMul"]
    assert report["notes"] == ["FLOPs: the shapes of 3 node(s) are unknown at the data's shapes; counted as 0"]


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
    monkeypatch.setattr(stats, "ZIP_EXACT_BYTES", 8 << 20)
    exact, estimated = stats.model_compressed_bytes(model)
    assert not estimated and exact == stats.compressed_bytes(model.SerializeToString())
    monkeypatch.setattr(stats, "ZIP_EXACT_BYTES", 0)
    guess, estimated = stats.model_compressed_bytes(model)
    assert estimated and abs(guess - exact) < 0.1 * exact


LAYERS = [  # (text of one layer, input shape, MACs counted by hand)
    ("y = Gemm<transA=1, transB=1>(x, w)", "float[6,4] x", {"w": (5, 6)}, (6, 4), 4 * 6 * 5),
    ("y = Gemm(x, w)", "float[4,6] x", {"w": (6, 5)}, (4, 6), 4 * 6 * 5),
    ("y = Conv<group=2, pads=[1,1,1,1]>(x, w)", "float[2,4,8,8] x", {"w": (6, 2, 3, 3)}, (2, 4, 8, 8),
     2 * 6 * 8 * 8 * (2 * 3 * 3)),
    ("y = Conv<strides=[2,2]>(x, w)", "float[1,3,9,9] x", {"w": (5, 3, 3, 3)}, (1, 3, 9, 9), 5 * 4 * 4 * 27),
    ("y = ConvTranspose<group=2, strides=[2,2]>(x, w)", "float[1,4,5,5] x", {"w": (4, 3, 2, 2)}, (1, 4, 5, 5),
     4 * 5 * 5 * 3 * 2 * 2),
    ("y = MatMul(x, w)", "float[2,3,6] x", {"w": (6, 5)}, (2, 3, 6), 2 * 3 * 6 * 5),
]


@pytest.mark.parametrize(("body", "signature", "weights", "x_shape", "macs"), LAYERS, ids=lambda v: str(v)[:30])
def test_flops_of_a_layer_are_twice_the_layer_views_macs(rng, body, signature, weights, x_shape, macs):
    """stats and the layer view (onnxslim.ir.linear) read transA/transB, groups and strides alike,
    and both agree with the MACs counted by hand."""
    model = onnx.parser.parse_model(f'<ir_version: 8, opset_import: ["": 17]> g ({signature}) => (float y) {{ {body} }}')
    model.graph.output[0].type.tensor_type.ClearField("shape")  # the output's shape is inference's to tell
    for name, shape in weights.items():
        model.graph.initializer.append(numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name))
    op = model.graph.node[0].op_type
    assert stats.flops(model)[op] == 2 * macs
    layer = linear_of(to_graph(model).nodes[0])
    assert layer.macs(x_shape) == macs


def test_flops_at_the_data_shapes_resolve_a_slice_to_a_computed_length(rng):
    """BERT's position embeddings: ``Slice(position_ids[1, 512], 0, Shape(ids)[1])``. onnx's data
    propagation gives the slice no length, so every layer after it had no shape and MiniLM's
    compute FLOPs were 0; the shape computation's value, given back as a constant, sizes it."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["": 17]>
        g (int64[batch, seq] ids) => (float[batch, seq, 64] y) {
            shape = Shape(ids)
            seq_len = Gather(shape, one)
            ends = Unsqueeze(seq_len, zero_axis)
            positions = Slice(position_ids, zero_start, ends, one_axis)
            p = Gather(table, positions)
            t = Gather(table, ids)
            h = Add(t, p)
            y = MatMul(h, w) }""")
    model.graph.initializer.extend([
        numpy_helper.from_array(np.arange(512, dtype=np.int64)[None], "position_ids"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
        numpy_helper.from_array(np.array([0], np.int64), "zero_start"),
        numpy_helper.from_array(np.array([1], np.int64), "one_axis"),
        numpy_helper.from_array(rng.normal(size=(512, 32)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.normal(size=(32, 64)).astype(np.float32), "w")])
    report = stats.flops_report(model, {"ids": (2, 7)})
    assert report["flops"]["MatMul"] == 2 * 2 * 7 * 32 * 64
    assert report["notes"] == []


def test_costs_measured_in_the_background_reach_the_caller_and_so_do_their_errors():
    future = api._in_background(lambda a, b=0: a + b, 2, b=3)
    assert future.result(timeout=10) == 5
    failing = api._in_background(stats.model_stats, None)  # not a model: an AttributeError
    with pytest.raises(AttributeError):
        failing.result(timeout=10)
