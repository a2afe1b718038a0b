"""A lossy pass's requirements: the missing exact passes run first, recorded as inserted; the
Constant nodes a lossy pass orphans never reach the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from onnxslim import api
from onnxslim.core.context import PassContext
from onnxslim.core.manager import PassManager
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.core.pipeline import parse
from onnxslim.core.registry import register_pass
from onnxslim.ir.io import to_graph
from onnxslim.ir.weights import constant_value, replace_input
from onnxslim.testing import model_from_text

REPO = Path(__file__).resolve().parents[2]

CONV_BN = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
    i = Identity(x)
    c = Conv<pads=[1,1,1,1]>(i, w)
    y = BatchNormalization(c, s, b, m, v)
}"""


def _conv_bn(rng) -> onnx.ModelProto:
    weights = {"w": rng.normal(size=(4, 3, 3, 3)), "s": rng.uniform(0.5, 2, 4), "b": rng.normal(size=4),
               "m": rng.normal(size=4), "v": rng.uniform(0.5, 2, 4)}
    return model_from_text(CONV_BN, {k: v.astype(np.float32) for k, v in weights.items()})


@register_pass
class _NeedsFoldedBn(Pass):
    """Halves the first Conv weight; requires BN folded and dead nodes gone."""

    name = "test-needs-folded-bn"
    exact = False
    requires = ("remove-identity", "fold-bn", "dce")

    def run(self, graph, ctx):
        self.saw = sorted({n.op for n in graph.nodes})
        conv = next(n for n in graph.nodes if n.op == "Conv")
        replace_input(graph, conv, 1, constant_value(conv.inputs[1]) * 0.5, "halved")
        return PassResult(True)


def test_missing_requirements_run_first_and_are_recorded_as_inserted(rng):
    model = _conv_bn(rng)
    manager = PassManager(parse("test-needs-folded-bn"), PassContext(model))
    graph = manager.run(to_graph(model))
    names = [(r.name, r.inserted) for r in manager.records]
    assert names == [("remove-identity", True), ("fold-bn", True), ("dce", True), ("test-needs-folded-bn", False)]
    assert not any(n.op in ("BatchNormalization", "Identity") for n in graph.nodes)
    note = manager.records[-1].notes[0]
    assert "remove-identity, fold-bn, dce" in note and "inserted" in note


def test_requirements_already_in_the_pipeline_are_not_run_again(rng):
    model = _conv_bn(rng)
    manager = PassManager(parse("remove-identity,fold-bn,dce,test-needs-folded-bn"), PassContext(model))
    manager.run(to_graph(model))
    assert [(r.name, r.inserted) for r in manager.records] == [
        ("remove-identity", False), ("fold-bn", False), ("dce", False), ("test-needs-folded-bn", False)]
    assert not manager.records[-1].notes


def test_prune_channels_keeps_batch_norm_when_it_ranks_the_channels():
    from onnxslim.core.registry import get_pass

    assert "fold-bn" in get_pass("prune-channels")(get_pass("prune-channels").Options()).required()
    bn = get_pass("prune-channels")(get_pass("prune-channels").Options(importance="bn"))
    assert "fold-bn" not in bn.required() and "dce" in bn.required()
    assert "fold-bn" in get_pass("quantize").requires


def _as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same model with every initializer held by a Constant node (as Paddle exports write)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    consts = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in out.graph.initializer]
    names = {t.name for t in out.graph.initializer}
    kept_inputs = [i for i in out.graph.input if i.name not in names]
    del out.graph.initializer[:]
    del out.graph.input[:]
    out.graph.input.extend(kept_inputs)
    nodes = consts + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


@register_pass
class _HalveConv(_NeedsFoldedBn):
    name = "test-halve-conv"
    requires = ()


def test_a_lossy_pass_leaves_no_orphaned_constant_node(rng):
    model = _as_constant_nodes(_conv_bn(rng))
    manager = PassManager(parse("test-halve-conv"), PassContext(model))
    graph = manager.run(to_graph(model))
    orphans = [n.name for n in graph.nodes if n.op == "Constant" and not n.outputs[0].outputs]
    assert orphans == []
    assert sum(n.op == "Constant" for n in graph.nodes) == 4  # the BN's four; the old weight went


def test_prune_channels_on_constant_node_weights_writes_a_smaller_file(tmp_path):
    """Issue 12 item 13: pruned and refit weights must replace their Constant nodes, not add to them."""
    source = tmp_path / "cnn_constants.onnx"
    onnx.save(_as_constant_nodes(onnx.load(REPO / "models" / "cnn.onnx")), source)
    out = tmp_path / "pruned.onnx"
    outcome = api.optimize(source, out, api.RunOptions(
        passes="prune-channels{ratio=0.25,recover=true}", calibration_data=str(REPO / "models" / "cnn_calib.npz"),
        data=str(REPO / "models" / "cnn_eval.npz"), verify=False))
    assert outcome.exit_code == 0
    record = outcome.report["passes"][-1]
    assert record["name"] == "prune-channels" and record["stats"]["channels_removed"] > 0
    assert out.stat().st_size < 0.9 * source.stat().st_size
    graph = to_graph(onnx.load(out))
    assert not [n.name for n in graph.nodes if n.op == "Constant" and not n.outputs[0].outputs]
