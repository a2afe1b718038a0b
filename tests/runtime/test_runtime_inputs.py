"""Generated inputs the model can take: -1 dims, dim expressions, compared values, the ladder."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.runtime.feeds import bind_shapes, evaluate_dim, input_specs, random_feeds
from onnxslim.runtime.inputs import InputsError, batched_shapes, compared_values, resolve_inputs


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def vit_like() -> onnx.ModelProto:
    """x[-1,3,-1,-1] -> 4x4 patches -> 64 positions: only a 32x32 image runs."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.random((8, 3, 4, 4), np.float32), "W"),
               numpy_helper.from_array(rng.random((1, 64, 8), np.float32), "pos"),
               numpy_helper.from_array(np.array([0, 8, -1], np.int64), "shp")]
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], strides=[4, 4]),
             helper.make_node("Reshape", ["c", "shp"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Add", ["t", "pos"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, -1, -1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, None])
    model = _model(nodes, [x], [y], weights)
    for dim in (0, 2, 3):  # as old exporters write a dynamic dim
        model.graph.input[0].type.tensor_type.shape.dim[dim].dim_value = -1
    return model


def vad_like() -> onnx.ModelProto:
    """A sample-rate input compared with 16000 and 8000; only 8000 runs."""
    consts = [helper.make_tensor("c16k", TensorProto.INT64, [], [16000]),
              helper.make_tensor("c8k", TensorProto.INT64, [], [8000]),
              numpy_helper.from_array(np.array([3, -1], np.int64), "bad")]
    then = helper.make_graph([helper.make_node("Reshape", ["x", "bad"], ["o1"])], "then", [],
                             [helper.make_tensor_value_info("o1", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["o2"])], "else", [],
                              [helper.make_tensor_value_info("o2", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Cast", ["sr"], ["sr64"], to=TensorProto.INT64),
             helper.make_node("Equal", ["sr64", "c16k"], ["is16k"]),
             helper.make_node("Equal", ["c8k", "sr64"], ["is8k"]),
             helper.make_node("If", ["is16k"], ["y"], then_branch=then, else_branch=other)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None]),
               helper.make_tensor_value_info("is8k", TensorProto.BOOL, [])]
    return _model(nodes, inputs, outputs, consts)


def test_minus_one_dims_are_dynamic():
    spec = input_specs(vit_like())[0]
    assert spec.dims == (None, 3, None, None) and spec.is_dynamic
    assert bind_shapes(vit_like(), {"x": (2, 3, 48, 192)}) == {"x": (2, 3, 48, 192)}
    assert random_feeds(vit_like())["x"].shape == (1, 3, 224, 224)


@pytest.mark.parametrize(("text", "value"), [("past + seq", 24), ("2*seq", 32), ("past+seq-1", 23), ("seq", None),
                                             ("total", None), ("seq/3", 5), ("__import__('os')", None)])
def test_evaluate_dim(text, value):
    assert evaluate_dim(text, {"past": 8, "seq": 16}) == value


def test_symbols_shared_and_expressions_bound_after_their_terms():
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    mask = helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "past + seq"])
    past = helper.make_tensor_value_info("past", TensorProto.FLOAT, ["batch", 2, "past", 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["ids"], ["y"])], "g",
                                                [mask, ids, past], [y]))
    shapes = bind_shapes(model, {"ids": (2, 5)})
    assert shapes["mask"] == (2, 5 + shapes["past"][2]) and shapes["past"][0] == 2


def test_compared_values_follow_casts_and_both_operand_orders():
    assert compared_values(vad_like()) == {"sr": [16000, 8000]}


def test_ladder_finds_the_image_size_a_position_table_fixes():
    resolved = resolve_inputs(vit_like())
    assert resolved.shapes == {"x": (1, 3, 32, 32)}
    assert "spatial dims=32" in resolved.description


def test_ladder_tries_every_compared_value():
    resolved = resolve_inputs(vad_like())
    assert int(resolved.feeds["sr"]) == 8000 and "sr=8000" in resolved.description


def test_input_shape_is_honoured_and_a_wrong_one_names_the_flag():
    with pytest.raises(InputsError, match="input 'x'.*--input-shape"):
        resolve_inputs(vit_like(), {"x": (1, 3, 48, 48)})
    assert resolve_inputs(vit_like(), {"x": (2, 3, 32, 32)}).shapes == {"x": (2, 3, 32, 32)}


def test_a_model_ort_cannot_load_is_an_inputs_error():
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(InputsError, match="cannot load"):
        resolve_inputs(model)


def test_batched_shapes_keep_batch_one_where_a_larger_batch_does_not_run():
    resolved = resolve_inputs(vit_like())
    assert batched_shapes(vit_like(), resolved, 4)["x"] == (4, 3, 32, 32)
    fixed = helper.make_node("Reshape", ["x", "one"], ["y"])
    graph = helper.make_graph([fixed], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
                              [numpy_helper.from_array(np.array([2, 3], np.int64), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert batched_shapes(model, resolve_inputs(model), 4)["x"] == (1, 6)



def tile_like() -> onnx.ModelProto:
    """The ONNX test_tile node test, small: repeats drawn as ids in [0, 100) multiply the output
    (test_tile's own asked for 2.1 GiB in float64 parity); the tests lower the limit instead."""
    nodes = [helper.make_node("Cast", ["repeats"], ["r"], to=TensorProto.INT64),
             helper.make_node("Tile", ["x", "r"], ["y"]), helper.make_node("Identity", ["x"], ["x_out"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1]),
              helper.make_tensor_value_info("repeats", TensorProto.INT32, [2])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None]),
               helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [1, 1])]
    return _model(nodes, inputs, outputs)


def test_value_inputs_take_1_when_generated_values_ask_for_too_much_memory(monkeypatch):
    from onnxslim.runtime import inputs

    assert inputs.value_inputs(tile_like()) == ["repeats"]
    monkeypatch.setattr(inputs, "MAX_OUTPUT_BYTES", 64)
    defaults = random_feeds(tile_like())["repeats"]
    assert 4 * int(np.prod(defaults)) + 4 > 64  # the generated repeats are refused ...
    resolved = resolve_inputs(tile_like())  # ... and repeats of 1 run
    assert resolved.feeds["repeats"].tolist() == [1, 1] and "repeats=1" in resolved.description


def test_outputs_too_large_on_every_candidate_name_the_value_input_and_the_flag(monkeypatch):
    from onnxslim.runtime import inputs

    monkeypatch.setattr(inputs, "MAX_OUTPUT_BYTES", 2)  # x_out alone takes 4 bytes
    with pytest.raises(InputsError, match=r"outputs take .* give the shape or values of input 'repeats' with --data"):
        resolve_inputs(tile_like())


def test_axes_inputs_take_1_then_0():
    """test_reduce_sum_*_negative_axes: ``axes`` generated as ids in [0, 100) are out of range."""
    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
              helper.make_tensor_value_info("axes", TensorProto.INT64, [1])]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    resolved = resolve_inputs(model)  # a rank-1 input: axis 1 is refused too, axis 0 runs
    assert resolved.feeds["axes"].tolist() == [0] and "axes=0" in resolved.description
