"""svd: low-rank splits of Gemm, MatMul and 1×1 Conv; rank rules; data-aware whitening; the gate."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnxslim.passes.svd import LowRankSplit, SvdOptions

from onnxslim.core.context import LatencyStats, PassContext
from onnxslim.core.pipeline import parse
from onnxslim.errors import OptionError, UsageError
from onnxslim.ir.io import to_graph
from onnxslim.lowrank import factor, gating, rank, refit, sensitivity
from onnxslim.ir.linear import Linear
from onnxslim.lowrank.layers import match, split, weight
from onnxslim.testing import assert_parity, model_from_text, models_module, op_types, run_model, run_pass

# A full-rank split is K·N products rearranged: round-off only, a little above EXACT.
ROUNDOFF_ATOL, ROUNDOFF_RTOL = 1e-4, 1e-4

MATMUL = """<ir_version: 8, opset_import: ["": 17]>
g (float[B,S,{k}] x) => (float[B,S,{n}] y) {{
    y = MatMul(x, w)
}}"""

GEMM = """<ir_version: 8, opset_import: ["": 17]>
g (float[{xa},{xb}] x) => (float[M,{n}] y) {{
    y = Gemm<transA={ta}, transB={tb}, alpha=0.7, beta=1.3>(x, w, c)
}}"""

CONV = """<ir_version: 8, opset_import: ["": 17]>
g (float[B,{k},6,6] x) => (float[B,{n},3,3] y) {{
    y = Conv<strides=[2,2], pads=[0,0,0,0]>(x, w, b)
}}"""


def size_only(**kwargs) -> LowRankSplit:
    return LowRankSplit(SvdOptions(latency_gate=False, **kwargs))


def low_rank(rng, k, n, r):
    return (rng.normal(size=(k, r)) @ rng.normal(size=(r, n))).astype(np.float32)


def factors_of(model: onnx.ModelProto) -> list[np.ndarray]:
    return [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if "_svd_" in i.name]


# --- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("opts", "msg"), [
    ({"energy": 0.9, "rank_ratio": 0.5}, "one rank rule per run"),
    ({"max_error": 0.02, "param_ratio": 0.5}, "one rank rule per run"),
    ({"energy": 0.0}, "energy.*\\(0, 1\\]"),
    ({"rank_ratio": 1.5}, "rank_ratio"),
    ({"param_ratio": 1.0}, "param_ratio.*\\(0, 1\\)"),
    ({"max_error": -0.1}, "max_error"),
    ({"damping": -1.0}, "damping"),
    ({"min_speedup": 0.0}, "min_speedup"),
])
def test_options_are_validated(opts, msg):
    with pytest.raises(OptionError, match=msg):
        SvdOptions(**opts)


def test_two_rules_in_pipeline_text_is_a_usage_error():
    with pytest.raises(OptionError, match="one rank rule"):
        parse("svd{energy=0.95,max_error=0.02}")
    spec = parse("svd{max_error=0.02,data_aware=true}").specs()[0]
    assert spec.create().needs_calibration()
    assert not parse("svd{energy=0.95}").specs()[0].create().needs_calibration()
    assert SvdOptions().rule() == ("energy", 0.95)  # the documented default


def test_data_aware_without_calibration_is_a_usage_error(rng):
    model = model_from_text(MATMUL.format(k=32, n=24), {"w": rng.normal(size=(32, 24)).astype(np.float32)})
    with pytest.raises(UsageError, match="calibration"):
        run_pass(size_only(data_aware=True, rank_ratio=0.25), model)


# --- exactness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["matmul", "gemm", "gemm_ta_tb", "conv"])
def test_full_rank_split_reproduces_outputs(rng, variant):
    """The rewrite itself is exact: full-rank factors give the original outputs to round-off."""
    if variant == "matmul":
        model = model_from_text(MATMUL.format(k=12, n=10), {"w": rng.normal(size=(12, 10)).astype(np.float32)})
        feeds = {"x": rng.normal(size=(2, 5, 12)).astype(np.float32)}
    elif variant.startswith("gemm"):
        ta = tb = int(variant == "gemm_ta_tb")
        text = GEMM.format(xa=12 if ta else "M", xb="M" if ta else 12, n=10, ta=ta, tb=tb)
        w = rng.normal(size=(10, 12) if tb else (12, 10)).astype(np.float32)
        model = model_from_text(text, {"w": w, "c": rng.normal(size=10).astype(np.float32)})
        feeds = {"x": rng.normal(size=(12, 4) if ta else (4, 12)).astype(np.float32)}
    else:
        model = model_from_text(CONV.format(k=12, n=10), {"w": rng.normal(size=(10, 12, 1, 1)).astype(np.float32),
                                                         "b": rng.normal(size=10).astype(np.float32)})
        feeds = {"x": rng.normal(size=(2, 12, 6, 6)).astype(np.float32)}
    graph = to_graph(model)
    layer = match(graph.nodes[0])
    assert isinstance(layer, Linear)
    a, b = factor.plain(weight(layer)).factors(min(layer.shape))
    split(graph, layer, a, b)
    graph.toposort()
    out = PassContext(model).export(graph)
    onnx.checker.check_model(out, full_check=True)
    assert op_types(out) == [model.graph.node[0].op_type] * 2
    assert_parity(model, out, feeds, ROUNDOFF_ATOL, ROUNDOFF_RTOL)


def test_exactly_low_rank_weight_is_split_without_loss(rng):
    model = model_from_text(MATMUL.format(k=48, n=40), {"w": low_rank(rng, 48, 40, 4)})
    out, result = run_pass(size_only(energy=0.999999), model)
    assert result.modified and result.stats["layers"][0]["rank"] == 4
    assert op_types(out) == ["MatMul", "MatMul"]
    assert [f.shape for f in factors_of(out)] == [(48, 4), (4, 40)]
    assert_parity(model, out, {"x": rng.normal(size=(3, 7, 48)).astype(np.float32)}, ROUNDOFF_ATOL, ROUNDOFF_RTOL)
    _, again = run_pass(size_only(energy=0.999999), out)
    assert not again.modified
    assert any("already a low-rank factor" in d.reason for d in again.declines)


@given(k=st.integers(8, 40), n=st.integers(8, 40), ratio=st.floats(0.05, 0.45), seed=st.integers(0, 99))
def test_plain_weight_error_is_the_dropped_singular_values(k, n, ratio, seed):
    """‖W − A·B‖_F = sqrt(Σ_{i>r} σ_i²) for the factors the pass writes into the model."""
    w = np.random.default_rng(seed).normal(size=(k, n)).astype(np.float32)
    model = model_from_text(MATMUL.format(k=k, n=n), {"w": w})
    out, result = run_pass(size_only(rank_ratio=ratio), model)
    r = rank.choose_rank("rank_ratio", ratio, np.ones(min(k, n)), (k, n))
    if not rank.saves(r, (k, n)):
        assert not result.modified and "nothing saved" in result.declines[0].reason
        return
    a, b = factors_of(out)
    sigma = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    error = np.linalg.norm(w.astype(np.float64) - a.astype(np.float64) @ b.astype(np.float64))
    np.testing.assert_allclose(error, np.sqrt(np.sum(sigma[r:] ** 2)), rtol=1e-4, atol=1e-5)


def test_allocate_meets_the_budget_at_equal_error():
    rng = np.random.default_rng(1)
    shapes = [(64, 64), (64, 256), (256, 64)]
    curves = [rank.weight_errors(np.sort(rng.gamma(1.0, size=min(s)))[::-1] ** p) for s, p in zip(shapes, (1, 3, 6))]
    ranks = rank.allocate(curves, shapes, 0.4)
    kept = sum(r * (k + n) if r else k * n for r, (k, n) in zip(ranks, shapes))
    assert kept <= 0.4 * sum(k * n for k, n in shapes)
    errors = [c[r] for c, r in zip(curves, ranks) if r]
    threshold = max(errors)
    # no layer could have used a smaller rank at that threshold: each rank is the least that reaches it
    assert all(c[r - 1] > threshold for c, r in zip(curves, ranks) if r and r > 1)
    assert ranks[2] is not None and (ranks[0] is None or ranks[2] < ranks[0])  # fastest decay gives up most rank


# --- structure of each op ----------------------------------------------------------------------

def test_gemm_with_transposes_alpha_beta_and_bias(rng):
    w = low_rank(rng, 40, 48, 5)  # stored N×K for transB=1
    model = model_from_text(GEMM.format(xa=48, xb="M", n=40, ta=1, tb=1), {"w": w, "c": rng.normal(size=40).astype(np.float32)})
    out, result = run_pass(size_only(energy=0.999999), model)
    assert result.modified and op_types(out) == ["Gemm", "Gemm"]
    first, second = out.graph.node
    assert {a.name: a.i for a in first.attribute} == {"transA": 1} and list(second.input)[2] == "c"
    assert_parity(model, out, {"x": rng.normal(size=(48, 6)).astype(np.float32)}, ROUNDOFF_ATOL, ROUNDOFF_RTOL)


def test_conv_1x1_with_stride_and_constant_node_weight(rng):
    w = low_rank(rng, 32, 24, 3).T.reshape(24, 32, 1, 1)
    values = ",".join(f"{v:.6f}" for v in w.ravel())
    constant = f"    w = Constant<value = float[24,32,1,1] {{{values}}}>()\n"
    text = CONV.format(k=32, n=24).replace("{\n", "{\n" + constant, 1)
    model = model_from_text(text, {"b": rng.normal(size=24).astype(np.float32)})
    out, result = run_pass(size_only(energy=0.999999), model)
    assert result.modified and result.stats["layers"][0]["rank"] == 3
    assert [t for t in op_types(out) if t != "Constant"] == ["Conv", "Conv"]
    assert_parity(model, out, {"x": rng.normal(size=(2, 32, 6, 6)).astype(np.float32)}, ROUNDOFF_ATOL, ROUNDOFF_RTOL)


@pytest.mark.parametrize(("text", "weights", "reason"), [
    (MATMUL.format(k=16, n=16), {"w": "normal:16x16"}, "nothing saved"),
    (MATMUL.format(k=4, n=1), {"w": "normal:4x1"}, "cannot shrink"),
    ("""<ir_version: 8, opset_import: ["": 17]>
g (float[B,32] x) => (float[B,32] y) { h = MatMul(x, w)
 y = MatMul(h, w) }""", {"w": "normal:32x32"}, "shared by 2 nodes"),
    ("""<ir_version: 8, opset_import: ["": 17]>
g (float[B,32] x) => (float[B,32] y) { w1 = Identity(w)
 w2 = Identity(w)
 h = MatMul(x, w1)
 y = MatMul(h, w2) }""", {"w": "normal:32x32"}, "shared by 2 nodes"),
    ("""<ir_version: 8, opset_import: ["": 17]>
g (float[B,8,6,6] x) => (float[B,8,4,4] y) { y = Conv(x, w) }""", {"w": "normal:8x8x3x3"}, "only 1x1"),
])
def test_declines_with_a_reason(rng, text, weights, reason):
    arrays = {k: rng.normal(size=[int(d) for d in v.split(":")[1].split("x")]).astype(np.float32)
              for k, v in weights.items()}
    out, result = run_pass(size_only(rank_ratio=1.0) if "16" in text else size_only(), model_from_text(text, arrays))
    assert not result.modified
    assert any(reason in d.reason for d in result.declines), result.declines
    assert op_types(out) == [n.op_type for n in model_from_text(text, arrays).graph.node]


def test_exclude_leaves_a_node_alone(rng):
    model = model_from_text(MATMUL.format(k=48, n=40).replace("y = MatMul", "y = MatMul"), {"w": low_rank(rng, 48, 40, 4)})
    name = to_graph(model).nodes[0].name or to_graph(model).nodes[0].outputs[0].name
    _, result = run_pass(size_only(energy=0.99, exclude=(name,)), model)
    assert not result.modified and "excluded" in result.declines[0].reason


# --- data-aware, error budgets ----------------------------------------------------------------

def _subspace_problem(rng, k=64, n=48, dims=6, batches=3):
    """A full-rank weight whose inputs live in a few directions: the data-aware case."""
    basis = rng.normal(size=(dims, k))
    calib = [{"x": (rng.normal(size=(32, dims)) @ basis + 0.01 * rng.normal(size=(32, k))).astype(np.float32)}
             for _ in range(batches)]
    text = f"""<ir_version: 8, opset_import: ["": 17]>
g (float[B,{k}] x) => (float[B,{n}] y) {{ y = Gemm(x, w, c) }}"""
    model = model_from_text(text, {"w": rng.normal(size=(k, n)).astype(np.float32),
                                   "c": rng.normal(size=n).astype(np.float32)})
    return model, calib


def _relative_output_error(before, after, batches):
    num = den = 0.0
    for feeds in batches:
        (y,), (z,) = run_model(before, feeds), run_model(after, feeds)
        num += float(np.sum((y.astype(np.float64) - z) ** 2))
        den += float(np.sum(y.astype(np.float64) ** 2))
    return np.sqrt(num / den)


def test_data_aware_beats_plain_svd_at_equal_rank(rng):
    model, calib = _subspace_problem(rng)
    ctx = PassContext(model, calib)
    plain_out, plain = run_pass(size_only(rank_ratio=0.125), model, ctx)
    aware_out, aware = run_pass(size_only(rank_ratio=0.125, data_aware=True), model, ctx)
    assert plain.stats["layers"][0]["rank"] == aware.stats["layers"][0]["rank"] == 6
    measured_plain = _relative_output_error(model, plain_out, calib)
    measured_aware = _relative_output_error(model, aware_out, calib)
    assert measured_aware < 0.05
    assert measured_plain > 0.3
    info = aware.stats["layers"][0]
    assert info["output_error"] < info["plain_error"]
    np.testing.assert_allclose(info["output_error"], measured_aware, rtol=0.05, atol=1e-3)
    np.testing.assert_allclose(info["plain_error"], measured_plain, rtol=0.05)


@pytest.mark.parametrize(("data_aware", "budget"), [(False, 0.5), (True, 0.1)])
def test_max_error_holds_on_calibration_data(rng, data_aware, budget):
    model, calib = _subspace_problem(rng)
    out, result = run_pass(size_only(max_error=budget, data_aware=data_aware), model, PassContext(model, calib))
    info = result.stats["layers"][0]
    assert result.modified and info["output_error"] <= budget
    assert _relative_output_error(model, out, calib) <= budget + 1e-3
    # the rank is the smallest that meets the budget
    tighter, _ = run_pass(size_only(rank_ratio=(info["rank"] - 1) / 48, data_aware=data_aware), model,
                          PassContext(model, calib))
    assert _relative_output_error(model, tighter, calib) > budget


def test_energy_of_the_whitened_spectrum_bounds_the_output_error(rng):
    model, calib = _subspace_problem(rng)
    graph = to_graph(model)
    layer = match(graph.nodes[0])
    moments = factor.Moments(np.zeros((64, 64)), np.zeros(64), 0)
    for feeds in calib:
        x = feeds["x"].astype(np.float64)
        moments = factor.Moments(moments.second + x.T @ x, moments.first + x.sum(0), moments.rows + len(x))
    spectrum = factor.whitened(weight(layer), moments, damping=0.0)
    errors = factor.output_errors(spectrum, moments, weight(layer), None)
    np.testing.assert_allclose(errors[:-1] ** 2, 1 - np.concatenate([[0.0], spectrum.energy()[:-1]]), atol=1e-9)


# --- latency gate --------------------------------------------------------------------------------

def test_gate_declines_a_split_measured_slower(rng, monkeypatch):
    def stats(ms):
        return LatencyStats(ms, ms, ms, ms, 10, 1, 1, "CPUExecutionProvider")

    monkeypatch.setattr(gating.LatencyGate, "measure", lambda self, *a: gating.Timing(stats(1.0), stats(1.5)))
    model = model_from_text(MATMUL.format(k=48, n=40), {"w": low_rank(rng, 48, 40, 4)})
    out, result = run_pass(LowRankSplit(SvdOptions(energy=0.999999)), model)
    assert not result.modified and op_types(out) == ["MatMul"]
    assert "not faster" in result.declines[0].reason and "(measured)" in result.declines[0].reason
    assert result.stats["latency"][0]["kept"] is False


def test_gate_measures_at_the_real_input_shape_and_lists_its_choices(rng):
    model = model_from_text(MATMUL.format(k=64, n=64), {"w": low_rank(rng, 64, 64, 4)})
    calib = [{"x": rng.normal(size=(2, 9, 64)).astype(np.float32)}]
    ctx = PassContext(model, calib)
    _, result = run_pass(LowRankSplit(SvdOptions(energy=0.999999)), model, ctx)
    (timing,) = result.stats["latency"]
    assert timing["input_shape"] == [2, 9, 64] and timing["rank"] == 4
    assert timing["kept"] == result.modified
    # the context's record of the choice: what was timed, the numbers, what was chosen
    (decision,) = ctx.decisions
    assert decision.timed_ms == {"original": timing["original_ms"], "split": timing["split_ms"]}
    assert decision.chosen == ("split" if timing["kept"] else "original") and decision.batch == 2
    if timing["original_ms"] != timing["split_ms"]:  # the report rounds to 4 digits; the gate does not
        assert timing["kept"] == (timing["original_ms"] / timing["split_ms"] > 1.0)
    assert any("may differ between runs" in n for n in result.notes)


def test_tiny_models_time_the_same_computation(rng):
    model = model_from_text(GEMM.format(xa="M", xb=24, n=16, ta=0, tb=1),
                            {"w": rng.normal(size=(16, 24)).astype(np.float32), "c": rng.normal(size=16).astype(np.float32)})
    layer = match(to_graph(model).nodes[0])
    a, b = factor.plain(weight(layer)).factors(16)
    original, candidate = gating.tiny_models(layer, a, b, (5, 24), model)
    feeds = {"x": rng.normal(size=(5, 24)).astype(np.float32)}
    np.testing.assert_allclose(run_model(candidate, feeds)[0], run_model(original, feeds)[0], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(run_model(original, feeds)[0], run_model(model, feeds)[0], atol=1e-6)


# --- shipped models, end to end -------------------------------------------------------------------

def _evaluate(repo):
    return models_module("evaluate")


def test_cli_data_aware_mlp(repo, tmp_path):
    from click.testing import CliRunner

    from onnxslim.cli import cli

    out, report = tmp_path / "mlp.svd.onnx", tmp_path / "r.json"
    args = [str(repo / "models/mlp.onnx"), "-o", str(out), "--passes", "svd{max_error=0.07,data_aware=true,latency_gate=false}",
            "--calibration-data", str(repo / "models/mlp_calib.npz"), "--data", str(repo / "models/mlp_eval.npz"),
            "--report", str(report)]
    result = CliRunner().invoke(cli, ["optimize", *args])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    jsonschema.validate(doc, json.loads((repo / "docs/report.schema.json").read_text()))
    *inserted, record = doc["passes"]
    assert all(r["inserted"] for r in inserted) and record["name"] == "svd" and not record["inserted"]
    stats = record["stats"]
    assert stats["split"] >= 2 and stats["weight_params_after"] < 0.2 * stats["weight_params_before"]
    assert all(layer["output_error"] <= 0.07 < layer["plain_error"] for layer in stats["layers"])
    acc, *_ = _evaluate(repo).accuracy(str(out), str(repo / "models/mlp_eval.npz"))
    base, *_ = _evaluate(repo).accuracy(str(repo / "models/mlp.onnx"), str(repo / "models/mlp_eval.npz"))
    assert acc >= base - 0.02


def test_transformer_matmuls_split_with_batched_activations(repo):
    model = onnx.load(str(repo / "models/transformer.onnx"))
    data = np.load(repo / "models/transformer_calib.npz")["input"][:128]
    calib = [{"input": data[:64]}, {"input": data[64:]}]
    out, result = run_pass(size_only(param_ratio=0.5, data_aware=True), model, PassContext(model, calib))
    assert result.stats["split"] >= 10
    assert sum(t == "MatMul" for t in op_types(out)) > sum(t == "MatMul" for t in op_types(model))
    (y,), (z,) = run_model(model, calib[0]), run_model(out, calib[0])
    assert np.mean(y.argmax(1) == z.argmax(1)) > 0.8


# --- real models (fetched) ----------------------------------------------------------------------

@pytest.mark.slow
def test_ppocr_det_constant_node_weights_and_dynamic_dims(fetched):
    """PP-OCRv4 det: weights in Constant nodes, every dim dynamic, many 1x1 convolutions."""
    realdata = models_module("realdata")
    model = onnx.load(str(fetched("ppocr_det")))
    name = model.graph.input[0].name
    calib = [{name: realdata.text_page(160, 160, seed=seed)} for seed in (0, 1)]
    test = realdata.text_page(160, 160, seed=3)
    out, result = run_pass(size_only(param_ratio=0.8, data_aware=True), model, PassContext(model, calib))
    stats = result.stats
    assert stats["split"] >= 10 and stats["weight_params_after"] <= 0.81 * stats["weight_params_before"]
    assert any("only 1x1" in d.reason for d in result.declines)
    (y,), (z,) = run_model(model, {name: test}), run_model(out, {name: test})
    assert np.corrcoef(y.ravel(), z.ravel())[0, 1] > 0.98  # measured 0.9935 with one calibration page


@pytest.mark.slow
def test_minilm_projections_split_and_keep_retrieval(fetched):
    fetch, realdata = models_module("fetch"), models_module("realdata")
    model = onnx.load(str(fetched("minilm")))
    vocab = str(fetch.minilm_vocab())
    sentences = realdata.sentences()
    calib = [realdata.tokenize(sentences[i:i + 20], vocab) for i in range(0, 40, 20)]
    later = tuple(n.name for n in model.graph.node if n.op_type == "MatMul" and "/layer.0/" not in n.name)
    out, result = run_pass(size_only(param_ratio=0.7, data_aware=True, exclude=later), model, PassContext(model, calib))
    assert result.stats["split"] >= 2 and any("excluded" in d.reason for d in result.declines)
    queries, passages, relevant = realdata.retrieval_set()
    feeds = realdata.tokenize(queries + passages, vocab)
    (ref,), (emb,) = (run_model(m, feeds)[1:] for m in (model, out))
    assert np.mean(np.sum(ref * emb, axis=1)) > 0.9  # measured 0.982, top-1 retrieval 0.95
    top = np.argmax(emb[:20] @ emb[20:].T, axis=1)
    assert np.mean(top == np.asarray(relevant)) >= 0.85


# --- allocation by measured sensitivity --------------------------------------------------------

TWO_BRANCHES = """<ir_version: 8, opset_import: ["": 17]>
g (float[B,48] x) => (float[B,48] y) {
    a = MatMul(x, w1)
    b = MatMul(x, w2)
    s = Mul(b, tiny)
    y = Add(a, s)
}"""


def _two_branches(rng):
    """Two equal layers, one of which barely reaches the output: only the measured
    sensitivity tells them apart."""
    def decaying():
        q1, q2 = np.linalg.qr(rng.normal(size=(48, 48)))[0], np.linalg.qr(rng.normal(size=(48, 48)))[0]
        return ((q1 * 0.85 ** np.arange(48)) @ q2).astype(np.float32)

    model = model_from_text(TWO_BRANCHES, {"w1": decaying(), "w2": decaying(),
                                           "tiny": np.array([0.01], dtype=np.float32)})
    calib = [{"x": rng.normal(size=(32, 48)).astype(np.float32)} for _ in range(2)]
    return model, calib


def test_sensitivity_option_is_validated_and_needs_calibration():
    with pytest.raises(OptionError, match="allocation"):
        SvdOptions(energy=0.9, allocation="sensitivity")
    with pytest.raises(OptionError, match="allocation"):
        SvdOptions(param_ratio=0.5, allocation="loss")
    spec = parse("svd{param_ratio=0.7,allocation=sensitivity}").specs()[0]
    assert spec.create().needs_calibration()
    assert not parse("svd{param_ratio=0.7}").specs()[0].create().needs_calibration()


def test_sensitivity_allocation_spends_the_budget_where_the_output_feels_it(rng):
    model, calib = _two_branches(rng)
    errors, results = {}, {}
    for alloc in ("error", "sensitivity"):
        out, result = run_pass(size_only(param_ratio=0.5, allocation=alloc), model, PassContext(model, calib))
        assert result.stats["weight_params_after"] <= 0.5 * result.stats["weight_params_before"]
        errors[alloc], results[alloc] = _relative_output_error(model, out, calib), result
    ranks = {d["layer"]: d["rank"] for d in results["sensitivity"].stats["layers"]}
    names = sorted(ranks)  # the two MatMuls: w1's branch first in the graph
    by_weight = {n.inputs[1].name: n.name or n.outputs[0].name for n in to_graph(model).nodes if n.op == "MatMul"}
    assert ranks[by_weight["w2"]] < ranks[by_weight["w1"]], ranks
    assert all("probe_loss" in d for d in results["sensitivity"].stats["layers"]) and len(names) == 2
    assert errors["sensitivity"] < 0.5 * errors["error"], errors


def test_sensitivity_allocate_meets_the_budget_and_prefers_cheap_layers():
    rng = np.random.default_rng(3)
    shapes = [(64, 64), (64, 64), (64, 256)]
    curves = [rank.weight_errors(np.sort(rng.gamma(1.0, size=min(s)))[::-1]) for s in shapes]
    for ratio in (0.2, 0.5, 0.8):
        ranks = sensitivity.allocate(curves, [1.0, 100.0, 1.0], shapes, ratio)
        kept = sum(r * (k + n) if r else k * n for r, (k, n) in zip(ranks, shapes))
        assert kept <= ratio * sum(k * n for k, n in shapes) + 1e-9
        assert ranks[1] is None or ranks[0] is not None and ranks[1] >= ranks[0]  # the sensitive twin keeps more
    assert sensitivity.allocate(curves, [1.0, 1.0, 1.0], shapes, 0.001) == [1, 1, 1]  # unreachable: rank 1


@pytest.mark.parametrize("text", ["gemm", "conv"])
def test_probe_feeds_weights_in_the_nodes_own_layout(rng, text):
    if text == "gemm":
        model = model_from_text(GEMM.format(xa=24, xb="M", n=20, ta=1, tb=1),
                                {"w": rng.normal(size=(20, 24)).astype(np.float32),
                                 "c": rng.normal(size=20).astype(np.float32)})
        feeds = {"x": rng.normal(size=(24, 5)).astype(np.float32)}
    else:
        w = rng.normal(size=(12, 16, 1, 1)).astype(np.float32)
        values = ",".join(f"{v:.6f}" for v in w.ravel())
        constant = f"    w = Constant<value = float[12,16,1,1] {{{values}}}>()\n"
        model = model_from_text(CONV.format(k=16, n=12).replace("{\n", "{\n" + constant, 1),
                                {"b": rng.normal(size=12).astype(np.float32)})
        feeds = {"x": rng.normal(size=(2, 16, 6, 6)).astype(np.float32)}
    graph = to_graph(model)
    layer = next(found for node in graph.nodes if isinstance(found := match(node), Linear))
    ctx = PassContext(model, threads=1)
    same, zero = sensitivity.probe(ctx, ctx.export(graph), [layer, layer],
                                   [weight(layer), np.zeros_like(weight(layer))], feeds)
    assert same < 1e-6 < zero


TWO_LAYERS = """<ir_version: 8, opset_import: ["": 17]>
g (float[B,S,48] x) => (float[B,S,40] y) {
    h = MatMul(x, w1)
    hb = Add(h, b1)
    r = Relu(hb)
    z = MatMul(r, w2)
    y = Add(z, b2)
}"""


def _two_layers(rng):
    """Two stacked layers with correlated inputs: the second sees what the first's split gives it."""
    mix = rng.normal(size=(48, 48)) * 0.8 ** np.arange(48)[:, None]
    weights = {"w1": rng.normal(size=(48, 64)).astype(np.float32), "b1": rng.normal(size=64).astype(np.float32),
               "w2": rng.normal(size=(64, 40)).astype(np.float32), "b2": rng.normal(size=40).astype(np.float32)}
    calib = [{"x": (rng.normal(size=(4, 8, 48)) @ mix).astype(np.float32)} for _ in range(3)]
    return model_from_text(TWO_LAYERS, weights), calib


def test_refit_of_a_first_layer_is_the_data_aware_split(rng):
    """With the layer's own input (X' = X) the refit is the whitened SVD, damping included."""
    weight = rng.normal(size=(24, 16))
    x = rng.normal(size=(200, 24)) @ rng.normal(size=(24, 24))
    second = x.T @ x
    for damping in (0.0, 0.1):
        a, b = refit.fit(weight, second, second, 5, damping)
        expected = factor.whitened(weight, factor.Moments(second, x.sum(axis=0), len(x)), damping).factors(5)
        np.testing.assert_allclose(a @ b, expected[0] @ expected[1], rtol=1e-7, atol=1e-9)


def test_refit_corrects_what_the_earlier_splits_changed(rng):
    model, calib = _two_layers(rng)
    errors = {}
    for do_refit in (False, True):
        out, result = run_pass(size_only(rank_ratio=0.25, data_aware=True, damping=0.0, refit=do_refit),
                               model, PassContext(model, calib))
        assert result.stats["split"] == 2
        errors[do_refit] = _relative_output_error(model, out, calib)
    assert result.stats["refit"] == {"layers": 2, "bias_shifted": 2}
    # the last layer's refit is the least-squares optimum over its rank for the input it really
    # gets, of which the plain data-aware factors are one candidate
    assert errors[True] < errors[False], errors


def test_refit_keeps_the_mean_output_through_the_bias(rng):
    model, calib = _two_layers(rng)
    out, _ = run_pass(size_only(rank_ratio=0.25, data_aware=True, refit=True), model, PassContext(model, calib))
    reference = np.concatenate([run_model(model, f)[0].reshape(-1, 40) for f in calib])
    refitted = np.concatenate([run_model(out, f)[0].reshape(-1, 40) for f in calib])
    np.testing.assert_allclose(refitted.mean(axis=0), reference.mean(axis=0), atol=1e-3 * np.abs(reference).max())
    assert "b2_refit" in {i.name for i in out.graph.initializer}


def test_refit_needs_calibration_data(rng):
    assert parse("svd{param_ratio=0.7,data_aware=true,refit=true}").specs()[0].create().needs_calibration()
    model, _ = _two_layers(rng)
    with pytest.raises(UsageError, match="calibration"):
        run_pass(size_only(rank_ratio=0.25, refit=True), model, PassContext(model))
