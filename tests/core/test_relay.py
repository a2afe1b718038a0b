"""core.relay: a run starts from the previous run's values that the changed nodes do not reach."""

from __future__ import annotations

import numpy as np

from onnxslim.core.context import PassContext
from onnxslim.core.relay import Relay
from onnxslim.ir import nodes
from onnxslim.ir.io import to_graph
from onnxslim.testing import model_from_text

CHAIN = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,4] y) {
    a = Relu(x)
    b = MatMul(a, w1)
    c = Tanh(b)
    y = MatMul(c, w2)
}"""


def _setup(rng):
    model = model_from_text(CHAIN, {"w1": rng.normal(size=(4, 4)).astype(np.float32),
                                    "w2": rng.normal(size=(4, 4)).astype(np.float32)})
    data = [{"x": rng.normal(size=(3, 4)).astype(np.float32)} for _ in range(2)]
    return model, to_graph(model), PassContext(model, data)


def test_the_next_run_starts_after_the_changed_node_and_sees_its_change(rng, monkeypatch):
    model, graph, ctx = _setup(rng)
    cuts, between = [], nodes.between
    monkeypatch.setattr(nodes, "between", lambda g, given, names: (cuts.append(sorted(given)), between(g, given, names))[1])
    relay = Relay(ctx, 1 << 20)
    first = [v["a"].copy() for v in relay.activations(graph, ["a"], [], ["c"])]
    matmul = next(n for n in graph.nodes if n.op == "MatMul")
    relayed = [v["c"] for v in relay.activations(graph, ["c"], [matmul], None)]
    assert cuts == [["a"]]
    matmul.inputs[1].values = matmul.inputs[1].values * 2  # changed after the first run: the second run sees it
    relay = Relay(ctx, 1 << 20)
    list(relay.activations(graph, ["a"], [matmul], ["c"]))
    changed = [v["c"] for v in relay.activations(graph, ["c"], [], None)]
    w1 = matmul.inputs[1].values
    for a, c, d, x in zip(first, relayed, changed, ctx.calibration):
        np.testing.assert_allclose(a, np.maximum(x["x"], 0))
        np.testing.assert_allclose(d, np.tanh(a @ w1), rtol=1e-5)
        assert not np.allclose(c, d)


def test_a_run_whose_tensors_the_previous_run_holds_runs_nothing(rng, monkeypatch):
    model, graph, ctx = _setup(rng)
    relay = Relay(ctx, 1 << 20)
    first = [v["a"].copy() for v in relay.activations(graph, ["b"], [], ["a"])]
    monkeypatch.setattr(ctx, "activations", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    again = [v["a"] for v in relay.activations(graph, ["a"], [], None)]
    assert len(again) == 2 and all(np.array_equal(p, q) for p, q in zip(first, again))


def test_a_held_tensor_this_run_does_not_read_is_handed_on(rng):
    model, graph, ctx = _setup(rng)
    relay = Relay(ctx, 1 << 20)
    list(relay.activations(graph, ["b"], [], ["a", "b"]))  # holds a and b
    tanh = next(n for n in graph.nodes if n.op == "Tanh")
    list(relay.activations(graph, ["c"], [tanh], ["a", "y"]))  # reads b only; a still valid for the next
    assert sorted(relay.given) == ["a", "b"]  # b: Tanh reads it; a: no node of this run reads it
    last = list(relay.activations(graph, ["a"], [], None))
    assert all(np.array_equal(v["a"], np.maximum(x["x"], 0)) for v, x in zip(last, ctx.calibration))
