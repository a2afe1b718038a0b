"""The models the project ships: interface as the contract says, and the exact pipeline keeps them exact."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest

from onnxslim import api
from onnxslim.testing import models_module

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())
INPUT_SHAPES = {"mlp": ["N", 784], "cnn": ["N", 1, 28, 28], "transformer": ["N", 8, 8]}


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", sorted(INPUT_SHAPES))
def test_shipped_model_matches_the_contract(name):
    path = MODELS / f"{name}.onnx"
    assert path.stat().st_size < 2 * 1024 * 1024
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    (inp,) = model.graph.input
    assert inp.name == "input" and [d if isinstance(d, int) else "N" for d in _dims(inp)] == INPUT_SHAPES[name]
    assert [o.name for o in model.graph.output] == ["logits"]
    for split in ("calib", "eval"):
        with np.load(MODELS / f"{name}_{split}.npz") as data:
            assert set(data.files) == {"input", "label"}
            assert list(data["input"].shape[1:]) == INPUT_SHAPES[name][1:]
    with np.load(MODELS / f"{name}_eval.npz") as data:
        assert len(data["label"]) == 360


@pytest.mark.parametrize("name", sorted(INPUT_SHAPES))
def test_default_pipeline_is_exact_on_held_back_digits(name, tmp_path):
    evaluate = models_module("evaluate")
    source, target = MODELS / f"{name}.onnx", tmp_path / f"{name}.slim.onnx"
    outcome = api.optimize(source, target, api.RunOptions(data=str(MODELS / f"{name}_eval.npz"), latency_seconds=0.5))
    jsonschema.validate(outcome.report, SCHEMA)
    assert outcome.exit_code == 0 and outcome.report["parity"]["held"]
    assert outcome.report["parity"]["samples"] == 360
    (logits,) = outcome.report["parity"]["outputs"]
    assert logits["top1"] == 1.0
    before = evaluate.accuracy(str(source), str(MODELS / f"{name}_eval.npz"))
    after = evaluate.accuracy(str(target), str(MODELS / f"{name}_eval.npz"))
    assert after[0] == before[0] and before[0] > 0.9
    if name == "cnn":
        assert "BatchNormalization" not in outcome.report["output"]["op_histogram"]
        assert outcome.report["input"]["op_histogram"]["BatchNormalization"] > 0
