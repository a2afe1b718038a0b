"""Verification on the user's data: the held-back part of --calibration-data that calibration never sees."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim import api, run_inputs
from onnxslim.runtime import holdout
from onnxslim.runtime.data import open_data

MODEL = 'g (float[N,4] X) => (float[N,4] Y) { Y = Relu(X) }'
FIXED = 'g (float[4,4] X) => (float[4,4] Y) { Y = Relu(X) }'


def _write(path, n):
    """Sample i holds the value i everywhere, and label i: rows say where they came from."""
    np.savez(path, X=np.repeat(np.arange(n, dtype=np.float32)[:, None], 4, axis=1), label=np.arange(n))
    return path


def _ids(source):
    parts = [(feeds["X"][:, 0].astype(int), labels) for feeds, labels in source.with_labels()]
    for rows, labels in parts:
        assert labels is not None and (rows == labels).all()  # labels travel with their rows
    return np.concatenate([rows for rows, _ in parts]).tolist(), [len(rows) for rows, _ in parts]


@pytest.mark.parametrize(("n", "calibration", "held"), [(512, 409, 103), (100, 80, 20), (50, 40, 10), (5, 4, 1), (2, 1, 1)])
def test_the_last_fifth_is_held_back(build, tmp_path, n, calibration, held):
    model = build(MODEL)
    cal, parity = holdout.split(open_data(_write(tmp_path / "c.npz", n), model), None)
    cal_ids, _ = _ids(cal)
    parity_ids, sizes = _ids(parity)
    assert cal_ids == list(range(calibration)) and parity_ids == list(range(calibration, n))
    assert (cal.num_samples, parity.num_samples) == (calibration, held)
    assert sizes[0] == min(held, 32)  # the piece cut at the boundary is joined into full batches again
    assert "held back" in parity.description and parity.has_labels


def test_too_few_samples_are_not_split(build, tmp_path):
    assert holdout.split(open_data(_write(tmp_path / "c.npz", 1), build(MODEL)), None) is None


def test_a_fixed_batch_splits_in_whole_batches(build, tmp_path):
    model = build(FIXED)
    cal, parity = holdout.split(open_data(_write(tmp_path / "c.npz", 22), model), 4)  # 5 batches of 4, 2 dropped
    assert _ids(cal) == (list(range(16)), [4, 4, 4, 4])
    assert _ids(parity) == (list(range(16, 20)), [4])
    assert holdout.split(open_data(_write(tmp_path / "d.npz", 7), model), 4) is None  # one batch of 4


def _inputs(model, options):
    return run_inputs.Inputs(model, options, ["CPUExecutionProvider"])


def test_calibration_never_sees_the_samples_parity_runs_on(build, tmp_path, monkeypatch):
    """Through api.optimize: what the PassContext gets as calibration and what parity compares."""
    model = build(MODEL)
    seen = []
    real_context = api.PassContext

    def recording_context(model, calibration, *args, **kwargs):
        seen.append(calibration)
        return real_context(model, calibration, *args, **kwargs)

    monkeypatch.setattr(api, "PassContext", recording_context)
    import onnx

    onnx.save(model, tmp_path / "m.onnx")
    options = api.RunOptions(calibration_data=str(_write(tmp_path / "c.npz", 60)), latency_seconds=0.01)
    outcome = api.optimize(tmp_path / "m.onnx", tmp_path / "o.onnx", options)
    cal_ids, _ = _ids(seen[0])
    assert cal_ids == list(range(48))
    parity = outcome.report["parity"]
    assert parity["samples"] == 12 and "last 12 samples, held back from calibration" in parity["data"]
    parity_ids, _ = _ids(run_inputs.parity_data(model, options, _inputs(model, options)))
    assert not set(cal_ids) & set(parity_ids) and sorted(cal_ids + parity_ids) == list(range(60))


def test_data_wins_and_random_calibration_is_never_parity_data(build, tmp_path):
    model = build(MODEL)
    calibration = str(_write(tmp_path / "c.npz", 60))
    data = str(_write(tmp_path / "d.npz", 7))
    with_data = api.RunOptions(data=data, calibration_data=calibration)
    assert _ids(run_inputs.parity_data(model, with_data, _inputs(model, with_data)))[0] == list(range(7))
    assert _ids(run_inputs.calibration_data(model, with_data, _inputs(model, with_data)))[0] == list(range(60))  # --data given: calibration sees all
    generated = run_inputs.parity_data(model, api.RunOptions(calibration_data="random"), _inputs(model, api.RunOptions()))
    assert generated.is_random and len(list(generated)) == 1


def test_one_sample_is_verified_on_with_a_warning(build, tmp_path):
    model = build(MODEL)
    options = api.RunOptions(calibration_data=str(_write(tmp_path / "c.npz", 1)))
    data = run_inputs.parity_data(model, options, _inputs(model, options))
    assert _ids(data)[0] == [0] and "calibration sees too" in data.description
    assert "too few to hold some back" in data.warnings[0]
    assert _ids(run_inputs.calibration_data(model, options, _inputs(model, options)))[0] == [0]
