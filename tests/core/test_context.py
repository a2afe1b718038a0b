"""The pass context as the one door to ONNX Runtime: sessions, the fixed-batch rule, timings and
the record of latency-driven choices that reaches the report."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest

from onnxslim.core import context as context_module
from onnxslim.core.context import LatencyStats, PassContext
from onnxslim.core.manager import PassManager
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.pipeline import parse
from onnxslim.core.registry import register_pass
from onnxslim.ir.io import to_graph
from onnxslim.runtime.cpu import CpuFeatures
from onnxslim.testing import model_from_text

LINEAR = """<ir_version: 8, opset_import: ["": 17]>
g (float[{batch},3] x) => (float[{batch},2] y) {{
    y = MatMul(x, w)
}}"""


def _model(rng, batch="N"):
    return model_from_text(LINEAR.format(batch=batch), {"w": rng.normal(size=(3, 2)).astype(np.float32)})


def test_a_fixed_batch_model_runs_by_whole_batches_and_says_which_rows(rng):
    model = _model(rng, batch=4)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    session = PassContext(model).session(model, optimize=False)
    assert session.batch == 4
    y = session.run({"x": x})["y"]
    weight = next(t for t in to_graph(model).tensors().values() if isinstance(t, gs.Constant)).values
    np.testing.assert_allclose(y, x[:8] @ weight, rtol=1e-5, atol=1e-6)  # 2 whole batches; 2 rows dropped
    assert session.rows_run({"x": x})["x"].shape == (8, 3)


def test_a_model_without_a_fixed_batch_runs_whole(rng):
    model = _model(rng)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    ctx = PassContext(model)
    assert ctx.session(to_graph(model)).batch is None
    assert ctx.run(to_graph(model), {"x": x})["y"].shape == (10, 2)
    assert ctx.session(model).rows_run({"x": x})["x"] is x


def test_time_feeds_the_rows_asked_or_the_fixed_batch_with_the_contexts_threads(rng, monkeypatch):
    calls = []

    def fake(models, feeds, provider, threads, **options):
        calls.append(({k: v.shape[0] for k, v in feeds.items()}, provider, threads, options))
        return [LatencyStats(1.0, 1.0, 1.0, 1.0, 5, 1, threads, provider) for _ in models]

    monkeypatch.setattr(context_module, "measure_latency", fake)
    x = {"x": rng.normal(size=(8, 3)).astype(np.float32)}
    dynamic, fixed = _model(rng), _model(rng, batch=4)
    PassContext(dynamic).time([dynamic], x, rows=1, repeat=3)
    PassContext(fixed, threads=2).time([to_graph(fixed)], x, rows=1)
    PassContext(dynamic).time([dynamic], x, threads=None)
    assert calls == [({"x": 1}, "CPUExecutionProvider", 1, {"repeat": 3}),  # one thread unless told
                     ({"x": 4}, "CPUExecutionProvider", 2, {}),   # a fixed batch is fed whole
                     ({"x": 8}, "CPUExecutionProvider", None, {})]  # the feeds as given; ORT's own pool


def test_the_cpu_is_the_contexts(rng):
    model = _model(rng)
    assert PassContext(model, cpu=CpuFeatures(frozenset({"avx512_vnni"}))).cpu.vnni
    assert isinstance(PassContext(model).cpu, CpuFeatures)


@register_pass
class _TimesTwoModels(Pass):
    """Times the graph against itself and records a choice (to test the record)."""

    name = "test-times-two-models"

    def run(self, graph, ctx):
        feeds = {"x": np.ones((2, 3), np.float32)}
        first, second = ctx.time([graph, graph], feeds, rows=1, warmup=0, repeat=2, max_seconds=0.1)
        ctx.decide("test: the graph or itself", {"first": first, "second": second}, "first")
        return PassResult(modified=False)


def test_every_latency_decision_reaches_the_pass_record(rng):
    model = _model(rng)
    ctx = PassContext(model)
    manager = PassManager(parse("test-times-two-models,dce"), ctx)
    manager.run(to_graph(model))
    timed, dce = manager.records
    (decision,) = timed.to_dict()["latency_decisions"]
    assert decision["what"] == "test: the graph or itself" and decision["chosen"] == "first"
    assert set(decision["timed_ms"]) == {"first", "second"} and all(v > 0 for v in decision["timed_ms"].values())
    assert (decision["batch"], decision["threads"], decision["provider"]) == (1, 1, "CPUExecutionProvider")
    assert dce.latency_decisions == []


def test_values_computed_ahead_of_time_run_on_the_cpu_whatever_the_target(rng, monkeypatch):
    opened = []

    class FakeSession:
        def get_inputs(self):
            return []

        def get_outputs(self):
            return []

    def fake(model, provider="CPUExecutionProvider", threads=None, optimize=True):
        opened.append((provider, threads, optimize))
        return FakeSession()

    monkeypatch.setattr(context_module, "make_session", fake)
    model = _model(rng)
    ctx = PassContext(model, providers=("CUDAExecutionProvider",), threads=3)
    ctx.session(model, optimize=False, on_target=False)
    ctx.session(model)
    assert opened == [("CPUExecutionProvider", None, False), ("CUDAExecutionProvider", 3, True)]
