"""``refs.map_array``: a referenced tensor's values mapped in place (aligned) or read (unaligned)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxslim.ir import refs, stats
from onnxslim.ir.io import load_model


def _referenced(rng, tmp_path, monkeypatch):
    """A model of three 8 KB float weights loaded by reference (their offsets in the file vary)."""
    weights = [rng.standard_normal((32, 64)).astype(np.float32) for _ in range(3)]
    weights[1][::3] = 0  # nonzeros to count
    nodes = [helper.make_node("MatMul", ["X", "W0"], ["A"]), helper.make_node("Add", ["A", "W1"], ["B"]),
             helper.make_node("Mul", ["B", "W2"], ["Y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [32, 32])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [32, 64])],
                              [numpy_helper.from_array(w, f"W{i}") for i, w in enumerate(weights)])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    monkeypatch.setattr(refs, "REFERENCE_MIN_BYTES", 0)
    model = load_model(path)
    assert all(refs.is_reference(t) for t in model.graph.initializer)
    return model, weights


def test_mapped_values_are_the_file_s_values_aligned_or_not(rng, tmp_path, monkeypatch):
    model, weights = _referenced(rng, tmp_path, monkeypatch)
    for tensor, weight in zip(model.graph.initializer, weights):
        mapped = refs.map_array(tensor)
        assert mapped.flags.aligned and mapped.shape == weight.shape
        np.testing.assert_array_equal(mapped, weight)
        np.testing.assert_array_equal(mapped, refs.read_array(tensor))
    unaligned = onnx.TensorProto()
    unaligned.CopyFrom(model.graph.initializer[0])
    path, offset, length = refs.location(unaligned)
    shift = 1 if (offset + 1) % 4 else 2
    refs._set_reference(unaligned, path, offset + shift, length - 4)  # not a multiple of 4: read, not mapped
    unaligned.dims[:] = [(length - 4) // 4]
    expected = refs.read_array(unaligned)
    reads = []
    monkeypatch.setattr(refs, "read_array", lambda t: reads.append(t) or expected)
    got = refs.map_array(unaligned)
    assert reads == [unaligned] and got is expected  # numpy would loop slowly over unaligned floats


def test_nonzero_params_of_a_referenced_model(rng, tmp_path, monkeypatch):
    model, weights = _referenced(rng, tmp_path, monkeypatch)
    counted = stats.model_stats(model)
    assert counted.params == sum(w.size for w in weights)
    assert counted.nonzero_params == sum(int(np.count_nonzero(w)) for w in weights)
