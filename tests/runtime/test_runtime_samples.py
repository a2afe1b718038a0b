"""Data whose inputs do not share a sample axis: one-feed .npz files and ONNX test-data folders."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.errors import DataError
from onnxslim.runtime.data import open_data


@pytest.fixture
def stateful():
    """audio [batch, samples], state [2, batch, 4], sr scalar -> y."""
    inputs = [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    node = helper.make_node("Identity", ["state"], ["y"])
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, None, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feed(batch=1):
    return {"audio": np.ones((batch, 512), np.float32), "state": np.zeros((2, batch, 4), np.float64),
            "sr": np.array(16000, np.int64)}


def test_npz_files_whose_arrays_do_not_share_axis_0_are_fed_as_they_are(stateful, tmp_path):
    for i in range(3):
        np.savez(tmp_path / f"{i}.npz", **feed())
    source = open_data(tmp_path, stateful)
    batches = list(source)
    assert len(batches) == 3 and source.num_samples == 3
    assert batches[0]["state"].shape == (2, 1, 4) and batches[0]["state"].dtype == np.float32
    assert batches[0]["sr"].shape == () and int(batches[0]["sr"]) == 16000


def test_a_single_one_feed_npz(stateful, tmp_path):
    np.savez(tmp_path / "f.npz", **feed())
    assert len(list(open_data(tmp_path / "f.npz", stateful))) == 1


def test_one_feed_file_of_the_wrong_rank_is_refused(stateful, tmp_path):
    bad = feed()
    bad["state"] = np.zeros((2, 4), np.float32)
    np.savez(tmp_path / "f.npz", **bad)
    with pytest.raises(DataError, match="'state' is declared \\[2, batch, 4\\]"):
        open_data(tmp_path, stateful)


def _write_pb(folder, arrays, names=True):
    folder.mkdir(parents=True)
    for i, (name, array) in enumerate(arrays.items()):
        tensor = numpy_helper.from_array(array, name if names else "")
        (folder / f"input_{i}.pb").write_bytes(tensor.SerializeToString())
    (folder / "output_0.pb").write_bytes(numpy_helper.from_array(np.zeros(1, np.float32), "y").SerializeToString())


@pytest.mark.parametrize("names", [True, False])
def test_onnx_test_data_folder(stateful, tmp_path, names):
    _write_pb(tmp_path / "test_data_set_0", feed(), names)
    single = list(open_data(tmp_path / "test_data_set_0", stateful))
    assert len(single) == 1 and single[0]["state"].dtype == np.float32 and int(single[0]["sr"]) == 16000
    _write_pb(tmp_path / "test_data_set_1", feed(batch=2), names)
    sets = open_data(tmp_path, stateful)
    assert [b["audio"].shape for b in sets] == [(1, 512), (2, 512)]
    assert "2 ONNX test-data feeds" in sets.description


def test_onnx_test_data_of_another_model_is_refused(stateful, tmp_path):
    _write_pb(tmp_path / "t", {"audio": np.ones((1, 512), np.float32)})
    with pytest.raises(DataError, match="no data for input 'state'"):
        open_data(tmp_path / "t", stateful)


def test_optimize_with_an_onnx_test_data_folder(stateful, tmp_path):
    from onnxslim import api

    _write_pb(tmp_path / "test_data_set_0", feed())
    onnx.save(stateful, tmp_path / "m.onnx")
    outcome = api.optimize(tmp_path / "m.onnx", tmp_path / "o.onnx", api.RunOptions(data=str(tmp_path)))
    assert outcome.exit_code == 0 and outcome.report["parity"]["held"]
