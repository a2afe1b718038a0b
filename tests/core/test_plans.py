"""Plans as data: every pass's plan is JSON and round-trips; a dry run of quantize runs no model."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import onnxruntime
import pytest

from onnxslim.api import RunOptions, optimize
from onnxslim.core.pass_base import Plan

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
SCHEMA = json.loads((REPO / "docs" / "report.schema.json").read_text())


def _no_session(*_args, **_kwargs):
    raise AssertionError("a dry run of quantize opened an ONNX Runtime session")


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_dry_run_of_quantize_runs_no_model_and_lists_what_needs_data(name, monkeypatch, tmp_path):
    monkeypatch.setattr(onnxruntime, "InferenceSession", _no_session)
    out = tmp_path / "out.onnx"
    outcome = optimize(MODELS / f"{name}.onnx", out, RunOptions(
        passes="quantize", calibration_data=str(MODELS / f"{name}_calib.npz"), dry_run=True))
    assert not out.exists()
    jsonschema.validate(outcome.report, SCHEMA)
    plan = outcome.report["plan"][-1]
    assert plan["pass"] == "quantize"
    compute = [c["where"] for c in plan["changes"] if c.get("role") == "compute"]
    assert len(compute) == plan["summary"]["quantized_nodes"] > 0
    assert any("calibration" in p for p in plan["pending"]) and any("timed" in p for p in plan["pending"])
    assert any(line.startswith("quantize: would change") for line in outcome.plan)
    assert any("decided when run: fp32 against int8 timed" in line for line in outcome.plan)


def test_plans_round_trip_through_json(tmp_path):
    outcome = optimize(MODELS / "cnn.onnx", tmp_path / "o.onnx", RunOptions(
        passes="fold-bn,prune-channels{importance=l1,ratio=0.5}", dry_run=True))
    for doc in outcome.report["plan"]:
        plain = {k: v for k, v in doc.items() if k not in ("options", "inserted")}
        assert Plan.from_dict(json.loads(json.dumps(plain))).to_dict() == plain
    pruned = next(p for p in outcome.report["plan"] if p["pass"] == "prune-channels")
    assert pruned["changes"] and not pruned["pending"]


def test_a_channel_plan_read_back_from_json_applies_as_made():
    import onnx

    from onnxslim.core.context import PassContext
    from onnxslim.ir.io import to_graph
    from onnxslim.passes.prune_channels import PruneChannels, PruneChannelsOptions

    model = onnx.load(MODELS / "cnn.onnx")
    the_pass = PruneChannels(PruneChannelsOptions(ratio=0.5, importance="l1"))
    direct, ctx = to_graph(model), PassContext(model)
    plan = the_pass.plan(direct, ctx)
    the_pass.apply(direct, ctx, plan)
    again = to_graph(model)
    read = type(plan).from_dict(json.loads(json.dumps(plan.to_dict())))
    the_pass.apply(again, ctx, read)
    assert [n.name for n in again.nodes] == [n.name for n in direct.nodes]
    assert {k: t.shape for k, t in again.tensors().items()} == {k: t.shape for k, t in direct.tensors().items()}
