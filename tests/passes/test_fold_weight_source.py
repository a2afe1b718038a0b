"""fold-bn and fold-affine keep a weight where the model held it: a weight in a Constant node (Paddle
exports have no initializers) stays in a Constant node, an initializer stays an initializer, and a
weight another layer shares keeps its values for that layer. Exact against ONNX Runtime; the input
file is never touched."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

from onnxslim import api
from onnxslim.passes.fold_affine import FoldAffine
from onnxslim.passes.fold_bn import FoldBatchNorm
from onnxslim.testing import assert_parity, model_from_text, run_pass

CONV_BN = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
    c = Conv<pads=[1,1,1,1]>(x, w%s)
    y = BatchNormalization<epsilon=0.001>(c, gamma, beta, mean, var)
}"""

CONV_MUL_ADD = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,8,8] x) => (float[N,4,8,8] y) {
    c = Conv<pads=[1,1,1,1]>(x, w%s)
    m = Mul(c, s)
    y = Add(m, t)
}"""

# the scale and shift come before an unpadded Conv: they fold forward into it
MUL_ADD_CONV = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,8,8] x) => (float[N,4,6,6] y) {
    m = Mul(x, s)
    a = Add(m, t)
    y = Conv(a, w%s)
}"""


def _weights(rng, text: str, bias: bool) -> dict[str, np.ndarray]:
    w = {"w": rng.normal(size=(4, 3, 3, 3))}
    if bias:
        w["b"] = rng.normal(size=4)
    if "BatchNormalization" in text:
        w.update(gamma=rng.uniform(0.5, 2, 4), beta=rng.normal(size=4), mean=rng.normal(size=4), var=rng.uniform(0.1, 2, 4))
    else:
        channels = 3 if text is MUL_ADD_CONV else 4
        w.update(s=rng.uniform(0.5, 2, (channels, 1, 1)), t=rng.normal(size=(channels, 1, 1)))
    return {k: v.astype(np.float32) for k, v in w.items()}


def _in_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every initializer moved into a Constant node, as a Paddle export holds them."""
    nodes = [onnx.helper.make_node("Constant", [], [t.name], value=t) for t in model.graph.initializer]
    nodes += list(model.graph.node)
    del model.graph.initializer[:]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model


def _weight_producers(model: onnx.ModelProto) -> list[str]:
    """How each Conv's weight and bias are held: 'initializer' or 'Constant'."""
    made = {o: n.op_type for n in model.graph.node for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    return [("initializer" if name in inits else made.get(name, "?"))
            for n in model.graph.node if n.op_type == "Conv" for name in n.input[1:]]


CASES = [(CONV_BN, FoldBatchNorm), (CONV_MUL_ADD, FoldAffine), (MUL_ADD_CONV, FoldAffine)]


@pytest.mark.parametrize("bias", [", b", "", ', ""'])  # given, absent, or an empty optional input
@pytest.mark.parametrize(("text", "pass_"), CASES)
def test_weights_in_constant_nodes_stay_in_constant_nodes(rng, text, pass_, bias):
    model = _in_constant_nodes(model_from_text(text % bias, _weights(rng, text, bias == ", b")))
    out, result = run_pass(pass_(), model)
    assert result.modified
    assert [n.op_type for n in out.graph.node if n.op_type != "Constant"] == ["Conv"]
    assert not out.graph.initializer
    assert _weight_producers(out) == ["Constant", "Constant"]  # a bias the Conv lacked is added as one too
    assert len(out.graph.node[-1].input) == 3
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)})


@pytest.mark.parametrize(("text", "pass_"), CASES)
def test_initializers_stay_initializers(rng, text, pass_):
    model = model_from_text(text % ", b", _weights(rng, text, True))
    out, _ = run_pass(pass_(), model)
    assert [n.op_type for n in out.graph.node] == ["Conv"]
    assert _weight_producers(out) == ["initializer", "initializer"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)})


@pytest.mark.parametrize("held", ["initializer", "Constant"])
@pytest.mark.parametrize(("text", "pass_"), CASES[:2])
def test_a_shared_weight_keeps_its_values_for_its_other_reader(rng, text, pass_, held):
    """The second Conv reads the same weight: the fold writes a new one for the first Conv only."""
    shared = text.replace("=> (float[N,4,8,8] y)", "=> (float[N,4,8,8] y, float[N,4,8,8] z)").replace(
        "\n}", "\n    z = Conv<pads=[1,1,1,1]>(x, w, b)\n}")
    model = model_from_text(shared % ", b", _weights(rng, text, True))
    if held == "Constant":
        model = _in_constant_nodes(model)
    out, result = run_pass(pass_(), model)
    assert result.modified
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and convs[0].input[1] != convs[1].input[1]
    assert sorted(n.input[1] for n in convs).count("w") == 1  # the other reader still reads the original
    assert set(_weight_producers(out)) == {held}
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)})


@pytest.mark.parametrize(("text", "passes"), [(CONV_BN, "fold-bn"), (CONV_MUL_ADD, "fold-affine")])
def test_optimize_of_a_paddle_like_file_keeps_constant_nodes_and_the_input(tmp_path, rng, text, passes):
    model = _in_constant_nodes(model_from_text(text % ", b", _weights(rng, text, True)))
    source, target = tmp_path / "m.onnx", tmp_path / "m.slim.onnx"
    onnx.save(model, source)
    digest, mtime = hashlib.sha256(source.read_bytes()).digest(), source.stat().st_mtime_ns
    outcome = api.optimize(source, target, api.RunOptions(passes=f"{passes},dce", latency_seconds=0))
    assert outcome.exit_code == 0
    assert hashlib.sha256(source.read_bytes()).digest() == digest and source.stat().st_mtime_ns == mtime
    out = onnx.load(target)
    assert [n.op_type for n in out.graph.node if n.op_type != "Constant"] == ["Conv"]
    assert not out.graph.initializer and _weight_producers(out) == ["Constant", "Constant"]
    assert_parity(model, out, {"x": rng.normal(size=(3, 3, 8, 8)).astype(np.float32)})
