"""The pass manager: repeat, verification between passes, per-pass parity and rollback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxslim.core.context import PassContext
from onnxslim.core.manager import PassManager
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.pipeline import parse
from onnxslim.core.registry import RegistryError, register_pass
from onnxslim.errors import PassError, UsageError, VerificationError
from onnxslim.ir.io import to_graph
from onnxslim.ir.weights import constant_value, replace_input
from onnxslim.testing import model_from_text

MLP = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,3] y) {
    a = Identity(x)
    b = Identity(a)
    c = Identity(b)
    h = Gemm<transB=1>(c, w1, b1)
    r = Relu(h)
    y = Gemm<transB=1>(r, w2, b2)
}"""


def _model(rng):
    weights = {"w1": rng.normal(size=(8, 4)), "b1": rng.normal(size=8), "w2": rng.normal(size=(3, 8)), "b2": rng.normal(size=3)}
    return model_from_text(MLP, {k: v.astype(np.float32) for k, v in weights.items()})


@register_pass
class _OneIdentity(Pass):
    """Removes one Identity per run (to test repeat)."""

    name = "test-one-identity"

    def run(self, graph, ctx):
        node = next((n for n in graph.nodes if n.op == "Identity"), None)
        if node is None:
            return PassResult(modified=False)
        src, out = node.inputs[0], node.outputs[0]
        for consumer in list(out.outputs):
            consumer.inputs[consumer.inputs.index(out)] = src
        node.inputs.clear()
        node.outputs.clear()
        graph.nodes.remove(node)
        return PassResult(modified=True)


@register_pass
class _DoubleWeight(Pass):
    """Doubles the last Gemm's weight: breaks parity on purpose."""

    name = "test-double-weight"

    def run(self, graph, ctx):
        gemm = [n for n in graph.nodes if n.op == "Gemm"][-1]
        replace_input(graph, gemm, 1, constant_value(gemm.inputs[1]) * 2, "doubled")
        return PassResult(modified=True)


@register_pass
class _Crash(Pass):
    """Raises, as a buggy pass would."""

    name = "test-crash"

    def run(self, graph, ctx):
        raise ZeroDivisionError("boom")


@register_pass
class _Dangle(Pass):
    """Leaves a node reading a tensor that nothing produces."""

    name = "test-dangle"

    def run(self, graph, ctx):
        graph.nodes[-1].inputs[0] = gs.Variable("ghost", dtype=np.float32)
        return PassResult(modified=True)


def test_repeat_runs_until_nothing_changes(rng):
    model = _model(rng)
    manager = PassManager(parse("repeat(10){test-one-identity}"), PassContext(model))
    graph = manager.run(to_graph(model))
    assert [n.op for n in graph.nodes] == ["Gemm", "Relu", "Gemm"]
    assert [r.changed for r in manager.records] == [True, True, True, False]


def test_repeat_stops_at_its_count(rng):
    model = _model(rng)
    manager = PassManager(parse("repeat(2){test-one-identity}"), PassContext(model))
    graph = manager.run(to_graph(model))
    assert [n.op for n in graph.nodes].count("Identity") == 1


def test_verify_each_rolls_back_a_pass_that_breaks_parity_and_names_the_node(rng):
    model = _model(rng)
    ctx = PassContext(model)
    feeds = [{"x": rng.normal(size=(4, 4)).astype(np.float32)}]
    manager = PassManager(parse("remove-identity,test-double-weight,dce"), ctx, parity_feeds=feeds)
    graph = manager.run(to_graph(model))
    record = manager.records[1]
    assert record.rolled_back and not record.changed
    assert record.parity["held"] is False
    assert any("test-double-weight" in w and "rolled back" in w for w in ctx.warnings)
    assert "first divergence at node" in ctx.warnings[0]
    weight = [constant_value(n.inputs[1]) for n in graph.nodes if n.op == "Gemm"][-1]
    np.testing.assert_array_equal(weight, onnx_weight(model, "w2"))
    assert [n.op for n in graph.nodes] == ["Gemm", "Relu", "Gemm"]  # the passes around it still ran


def onnx_weight(model, name):
    return next(onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_exception_in_a_pass_names_the_pass_and_pipeline(rng):
    model = _model(rng)
    with pytest.raises(PassError, match="pass test-crash failed in pipeline 'dce,test-crash'"):
        PassManager(parse("dce,test-crash"), PassContext(model)).run(to_graph(model))


def test_structural_verification_catches_a_dangling_input(rng):
    model = _model(rng)
    with pytest.raises(VerificationError, match="ghost"):
        PassManager(parse("test-dangle"), PassContext(model)).run(to_graph(model))


def test_calibration_requirement_is_checked_before_any_work(rng):
    @register_pass
    class _NeedsData(Pass):
        """Needs calibration data."""

        name = "test-needs-data"

        def run(self, graph, ctx):
            return PassResult(modified=False)

        def needs_calibration(self):
            return True

    model = _model(rng)
    with pytest.raises(UsageError, match="test-needs-data needs calibration data"):
        PassManager(parse("dce,test-needs-data"), PassContext(model)).check_requirements()


def test_registering_a_name_twice_is_an_error():
    class Other(Pass):
        """Another class under a taken name."""

        name = "dce"

        def run(self, graph, ctx):
            return PassResult(modified=False)

    with pytest.raises(RegistryError, match="registered twice"):
        register_pass(Other)


def test_importing_the_passes_folder_a_second_time_is_refused(repo):
    code = "import onnxslim, passes.cleanup"
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "registered twice" in proc.stderr



@register_pass
class _LossyNoop(Pass):
    """A lossy pass that finds nothing to do (it sees no constant weights)."""

    name = "test-lossy-noop"
    exact = False

    def run(self, graph, ctx):
        return PassResult(modified=False)


def test_lossy_passes_decline_already_quantized_layers_with_a_reason(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4] x) => (float[N,3] y) {
    w = DequantizeLinear(wq, scale, zero)
    y = MatMul(x, w)
}"""
    model = model_from_text(text, {"wq": rng.integers(-100, 100, size=(4, 3)).astype(np.int8),
                                   "scale": np.array(0.01, np.float32), "zero": np.array(0, np.int8)})
    model.graph.node[1].name = "matmul"
    manager = PassManager(parse("test-lossy-noop,dce"), PassContext(model))
    manager.run(to_graph(model))
    lossy, exact = manager.records
    assert [(d["where"], d["reason"]) for d in lossy.declines] == [
        ("matmul", "already quantized (its weight comes from DequantizeLinear): left as it is")]
    assert exact.declines == []


def test_constant_bytes_counts_initializers_and_constant_node_values():
    """What decides whether the manager collects cycles after each pass (``COLLECT_MIN_BYTES``)."""
    import onnx_graphsurgeon as gs

    from onnxslim.core.manager import constant_bytes

    x = gs.Variable("x", np.float32, [4])
    shape = gs.Variable("shape", np.int64, [10])
    y = gs.Variable("y", np.float32, [1000])
    nodes = [gs.Node("Constant", outputs=[shape], attrs={"value": gs.Constant("v", np.zeros(10, np.int64))}),
             gs.Node("Add", inputs=[x, gs.Constant("w", np.zeros(1000, np.float32))], outputs=[y])]
    assert constant_bytes(gs.Graph(nodes=nodes, inputs=[x], outputs=[y, shape])) == 4000 + 80
