"""--metric: accuracy against labels, top1, cosine, and the user's module:function."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.errors import UsageError
from onnxslim.runtime.metric import Metric, MetricResult
from onnxslim.runtime.parity import ParityReport, _Accumulator


def _parity(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> ParityReport:
    outputs = []
    for name, (a, b) in pairs.items():
        acc = _Accumulator(name)
        acc.add(a, b)
        outputs.append(acc.result())
    return ParityReport(outputs, 1, 1)


def _run(metric: Metric, batches, max_drop=None):
    """Feed (feeds, labels, reference outputs, candidate outputs) batches as api._compare does."""
    collector = metric.collector(max_drop)
    for feeds, labels, ref, cand in batches:
        collector.add_inputs(feeds, labels)
        collector.add_outputs(ref, cand)
    return collector


def test_accuracy_counts_labels_on_the_output_that_fits_them():
    labels = np.array([0, 1, 2, 1])
    ref = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]]  # 3 of 4 right
    cand = np.eye(3, dtype=np.float32)[[0, 1, 0, 0]]  # 2 of 4 right
    embedding = np.zeros((4, 8), np.float32)
    batches = [({"x": np.zeros((2, 1))}, labels[:2], {"sentence_embedding": embedding[:2], "logits": ref[:2]},
                {"sentence_embedding": embedding[:2], "logits": cand[:2]}),
               ({"x": np.zeros((2, 1))}, labels[2:], {"sentence_embedding": embedding[2:], "logits": ref[2:]},
                {"sentence_embedding": embedding[2:], "logits": cand[2:]})]
    result = _run(Metric("accuracy"), batches, max_drop=20).evaluate(_parity({}))
    assert (result.original, result.result, result.output, result.samples) == (0.75, 0.5, "logits", 4)
    assert result.drop_points == pytest.approx(25.0) and result.held is False
    assert "dropped 25.00 points" in result.failure and "--max-drop 20" in result.failure


def test_accuracy_per_time_step_per_pixel_and_one_hot_labels():
    rng = np.random.default_rng(0)
    seq = rng.standard_normal((2, 5, 4)).astype(np.float32)
    labels = seq.argmax(-1)
    result = _run(Metric("accuracy"), [({"x": seq}, labels, {"y": seq}, {"y": seq})]).evaluate(_parity({}))
    assert (result.original, result.result) == (1.0, 1.0)
    maps = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    one_hot = np.eye(3, dtype=np.float32)[maps.argmax(1)].transpose(0, 3, 1, 2)
    result = _run(Metric("accuracy"), [({"x": maps}, one_hot, {"y": maps}, {"y": -maps})]).evaluate(_parity({}))
    assert result.original == 1.0 and result.result < 1.0


def test_accuracy_without_labels_or_fitting_output_is_a_usage_error():
    scores = np.zeros((2, 3), np.float32)
    with pytest.raises(UsageError, match="needs labels"):
        _run(Metric("accuracy"), [({"x": scores}, None, {"y": scores}, {"y": scores})])
    collector = _run(Metric("accuracy"), [({"x": scores}, np.zeros((2, 7)), {"y": scores}, {"y": scores})])
    with pytest.raises(UsageError, match=r"labels' shape \[2, 7\]"):
        collector.evaluate(_parity({}))


def test_top1_and_cosine_read_the_parity_report():
    a = np.eye(4, dtype=np.float32)
    b = a.copy()
    b[3] = [1, 0, 0, 0]
    parity = _parity({"logits": (a, b), "sentence_embedding": (np.ones((4, 4), np.float32), np.ones((4, 4), np.float32))})
    top1 = Metric("top1").collector(5).evaluate(parity)
    assert (top1.original, top1.result, top1.output, top1.drop_points) == (1.0, 0.75, "logits", 25.0)
    assert top1.held is False
    cosine = Metric("cosine").collector().evaluate(parity)
    assert cosine.output == "logits" and cosine.result == pytest.approx(0.75) and cosine.held is None
    with pytest.raises(UsageError, match="no output holds class scores"):
        Metric("top1").collector().evaluate(_parity({"sentence_embedding": (a, b)}))


def test_a_drop_equal_to_the_budget_holds():
    assert MetricResult("m", 0.93, 0.91, max_drop=2).held is True
    assert MetricResult("m", 0.93, 0.9099, max_drop=2).held is False
    assert MetricResult("m", 0.5, 0.6, max_drop=0).held is True  # a gain is no drop


METRIC_MODULE = '''
import numpy as np

def accuracy(outputs, data):
    return float((outputs["logits"].argmax(1) == data["label"]).mean())

def shapes(outputs, data):
    return float(len(outputs["seq"])) if isinstance(outputs["seq"], list) else -1.0

def broken(outputs, data):
    raise ValueError("no column 'score'")

def text(outputs, data):
    return "high"

not_callable = 3
'''


def test_module_function_gets_outputs_and_data_concatenated_over_batches(tmp_path, monkeypatch):
    (tmp_path / "user_metric_a.py").write_text(METRIC_MODULE)
    monkeypatch.chdir(tmp_path)
    ref = np.eye(3, dtype=np.float32)
    batches = [({"x": np.zeros((2, 1))}, np.array([0, 1]), {"logits": ref[:2]}, {"logits": ref[:2]}),
               ({"x": np.zeros((1, 1))}, np.array([1]), {"logits": ref[2:]}, {"logits": ref[[1]]})]
    result = _run(Metric("user_metric_a:accuracy"), batches).evaluate(_parity({}))
    assert (result.original, result.result) == (pytest.approx(2 / 3), 1.0)
    by_path = _run(Metric(str(tmp_path / "user_metric_a.py") + ":accuracy"), batches).evaluate(_parity({}))
    assert by_path.result == 1.0
    ragged = [({"x": np.zeros((1, t))}, None, {"seq": np.zeros((1, t))}, {"seq": np.zeros((1, t))}) for t in (3, 4)]
    assert _run(Metric("user_metric_a:shapes"), ragged).evaluate(_parity({})).original == 2.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("f1", "unknown --metric 'f1'"),
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
        ("user_metric_b:missing", "has no 'missing'"),
        ("user_metric_b:not_callable", "'not_callable' is not callable"),
        ("missing_file.py:fn", "cannot import"),
    ],
)
def test_bad_metric_specs_fail_when_parsed(spec, message, tmp_path, monkeypatch):
    (tmp_path / "user_metric_b.py").write_text(METRIC_MODULE)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=message):
        Metric(spec)


@pytest.mark.parametrize(("function", "message"), [("broken", "raised ValueError: no column 'score'"),
                                                    ("text", "returned 'high', not a finite number")])
def test_a_function_that_raises_or_returns_no_number_is_a_usage_error(function, message, tmp_path, monkeypatch):
    (tmp_path / "user_metric_c.py").write_text(METRIC_MODULE)
    monkeypatch.chdir(tmp_path)
    scores = np.eye(2, dtype=np.float32)
    collector = _run(Metric(f"user_metric_c:{function}"), [({"x": scores}, None, {"logits": scores}, {"logits": scores})])
    with pytest.raises(UsageError, match=message):
        collector.evaluate(_parity({}))
