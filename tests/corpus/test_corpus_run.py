"""The corpus runner's bookkeeping: the output comparison and what counts as a failure."""

from __future__ import annotations

import numpy as np

from onnxslim.testing import models_module

corpus_run = models_module("corpus_run")


def test_compare_uses_the_exact_rule_per_output() -> None:
    want = {"y": np.array([1.0, 100.0], np.float32)}
    assert corpus_run.compare({"y": want["y"] + np.float32(0.005)}, want) == []  # 0.005 <= 1e-5 + 1e-4 * 100
    assert corpus_run.compare({"y": want["y"] + np.float32(0.02)}, want)[0].startswith("y: max_abs")
    assert corpus_run.compare({}, want) == ["y: missing"]
    assert corpus_run.compare({"y": np.zeros(3, np.float32)}, want)[0].startswith("y: shape")


def test_compare_non_float_sequence_map_and_nan() -> None:
    assert corpus_run.compare({"l": np.array([1, 2])}, {"l": np.array([1, 3])}) == ["l: values differ (int64)"]
    probs = [{0: np.float32(0.25), 1: np.float32(0.75)}]
    assert corpus_run.compare({"p": probs}, {"p": probs}) == []
    assert corpus_run.compare({"p": [{0: np.float32(0.5)}]}, {"p": probs}) == ["p: map keys differ"]
    assert corpus_run.compare({"n": np.array([np.nan, 1.0])}, {"n": np.array([1.0, 1.0])}) \
        == ["n: nan/inf positions differ"]
    assert corpus_run.compare({"s": np.array(["a"])}, {"s": np.array(["a"])}) == []


def test_failures_skip_known_pairs_and_name_the_reason() -> None:
    results = {
        "node/a": {"optimize": {"exit": 3, "error": "onnxslim: error: internal error: boom"},
                   "inspect": {"exit": 0}},
        "node/b": {"optimize": {"exit": 0, "check": {"ort_loads": True, "matches": False, "error": "y: max_abs"}},
                   "verify": {"exit": "timeout"}, "dry-run": {"exit": 2, "changed_inputs": ["model.onnx"]}},
    }
    bad = corpus_run.failures(results)
    assert [b.split(":")[0] for b in bad] == ["node/a optimize", "node/b dry-run", "node/b optimize", "node/b verify"]
    assert "wrong output" in bad[2] and "changed inputs model.onnx" in bad[1]
    assert corpus_run.failures(results, {("node/a", "optimize"), ("node/b", "optimize"), ("node/b", "verify"),
                                         ("node/b", "dry-run")}) == []
    assert corpus_run.exit3_groups(results) == [("onnxslim: error: internal error: boom", 1, "node/a optimize")]
