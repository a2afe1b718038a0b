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


@pytest.mark.parametrize(("name", "passes", "pending"), [
    ("mlp", "svd", ["timed faster"]),
    ("transformer", "svd{data_aware=true,refit=true}", ["ranks: whitened spectra", "timed faster", "refit"]),
    ("cnn", "prune-weights{criterion=reconstruct}", ["reconstruct scores", "zeros per layer", "SparseGPT"]),
    ("transformer", "prune-weights{criterion=activation,scope=layer}", ["activation scores"]),
])
def test_dry_run_of_svd_and_prune_weights_runs_no_model_and_lists_what_needs_data(name, passes, pending, monkeypatch,
                                                                                  tmp_path):
    monkeypatch.setattr(onnxruntime, "InferenceSession", _no_session)
    outcome = optimize(MODELS / f"{name}.onnx", tmp_path / "out.onnx", RunOptions(
        passes=passes, calibration_data=str(MODELS / f"{name}_calib.npz"), dry_run=True))
    jsonschema.validate(outcome.report, SCHEMA)
    plan = outcome.report["plan"][-1]
    assert plan["pass"] == passes.split("{")[0] and plan["changes"]
    for phrase in pending:
        assert any(phrase in p for p in plan["pending"]), (phrase, plan["pending"])
    if passes.startswith("prune-weights"):  # per-layer scope: the zeros are known from the sizes alone
        zeros = [c.get("zeros") for c in plan["changes"]]
        assert zeros == ([round(0.5 * c["weights"]) for c in plan["changes"]] if "scope=layer" in passes
                         else [None] * len(zeros))
    else:  # plain SVD: the weights alone give each rank; whitened spectra need the data
        assert all(("rank" in c) == ("data_aware" not in passes) and c["K"] > 0 for c in plan["changes"])


def test_a_complete_prune_weights_plan_gives_each_layer_its_zeros_and_runs_no_model(monkeypatch, tmp_path):
    monkeypatch.setattr(onnxruntime, "InferenceSession", _no_session)
    outcome = optimize(MODELS / "mlp.onnx", tmp_path / "o.onnx", RunOptions(passes="prune-weights{sparsity=0.6}",
                                                                          dry_run=True))
    plan = outcome.report["plan"][-1]
    assert not plan["pending"] and len(plan["changes"]) == 3
    total = sum(c["weights"] for c in plan["changes"])
    assert sum(c["zeros"] for c in plan["changes"]) == plan["summary"]["zeros"] == round(0.6 * total)
    assert len({c["sparsity"] for c in plan["changes"]}) > 1  # global scope: the layers get different shares


def _plan_and_apply(the_pass, model):
    """Plan and apply on one graph; the plan as JSON (checked to round-trip) and its class."""
    from onnxslim.core.context import PassContext
    from onnxslim.ir.io import to_graph

    direct, ctx = to_graph(model), PassContext(model)
    plan = the_pass.plan(direct, ctx)
    the_pass.apply(direct, ctx, plan)
    doc = json.loads(json.dumps(plan.to_dict()))
    assert type(plan).from_dict(doc).to_dict() == doc
    return direct, ctx, doc, type(plan)


def _weights(graph) -> dict:
    import numpy as np

    return {n.name: [np.asarray(t.values) for t in n.inputs[1:] if hasattr(t, "values")] for n in graph.nodes}


@pytest.mark.parametrize("passes", ["svd{rank_ratio=0.4,latency_gate=false}", "prune-weights{sparsity=0.7}"])
def test_svd_and_prune_weights_plans_read_back_from_json_apply_as_made(passes):
    import numpy as np
    import onnx

    from onnxslim.core.pipeline import parse
    from onnxslim.ir.io import to_graph

    model = onnx.load(MODELS / "mlp.onnx")
    the_pass = parse(passes).specs()[0].create()
    direct, ctx, doc, plan_type = _plan_and_apply(the_pass, model)
    again = to_graph(model)
    the_pass.apply(again, ctx, plan_type.from_dict(doc))
    assert [n.name for n in again.nodes] == [n.name for n in direct.nodes]
    for name, values in _weights(direct).items():
        for a, b in zip(values, _weights(again)[name]):
            np.testing.assert_array_equal(a, b)


def test_a_prune_weights_plan_is_data_its_zeros_are_what_apply_gives():
    import numpy as np
    import onnx

    from onnxslim.ir.io import to_graph
    from onnxslim.passes.prune_weights import PruneWeights, PruneWeightsOptions

    model = onnx.load(MODELS / "mlp.onnx")
    the_pass = PruneWeights(PruneWeightsOptions(sparsity=0.5))
    _, ctx, doc, plan_type = _plan_and_apply(the_pass, model)
    assert doc["changes"][2]["where"] == "/fc3/Gemm" and doc["changes"][2]["zeros"] != 100
    doc["changes"][2]["zeros"] = 100
    graph = to_graph(model)
    the_pass.apply(graph, ctx, plan_type.from_dict(doc))
    fc3 = next(n for n in graph.nodes if n.name == "/fc3/Gemm")
    assert fc3.inputs[1].values.size - np.count_nonzero(fc3.inputs[1].values) == 100


def test_a_plan_made_on_another_graph_is_refused():
    import onnx

    from onnxslim.ir.io import to_graph
    from onnxslim.passes.svd import LowRankSplit, SvdOptions

    the_pass = LowRankSplit(SvdOptions(rank_ratio=0.5, latency_gate=False))
    _, ctx, doc, plan_type = _plan_and_apply(the_pass, onnx.load(MODELS / "mlp.onnx"))
    other = to_graph(onnx.load(MODELS / "transformer.onnx"))
    with pytest.raises(ValueError, match="another graph"):
        the_pass.apply(other, ctx, plan_type.from_dict(doc))
