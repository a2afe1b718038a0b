"""quantize: QDQ placement around each supported op, parameter math, calibration, exclusion loop."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import numpy_helper
from onnxslim.passes.quantize import Quantize, QuantizeOptions

from onnxslim.core.context import PassContext
from onnxslim.core.pipeline import parse
from onnxslim.errors import OptionError, UsageError
from onnxslim.ir.io import to_graph
from onnxslim.quant import calibration, cpu
from onnxslim.runtime.cpu import CpuFeatures
from onnxslim.quant.qparams import (
    activation_params,
    dequantize,
    quantize,
    weight_params,
)
from onnxslim.testing import model_from_text, op_types, run_model, run_pass

FAST = {"check_speed": False, "speed": "off"}  # no choices from measured latency in tests


def _quantize(model, batches, **options):
    ctx = PassContext(model, calibration=batches)
    out, result = run_pass(Quantize(QuantizeOptions(**{**FAST, **options})), model, ctx)
    return out, result, ctx


def _cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _batches(rng, name, shape, n=4, low=None):
    def make():
        x = rng.normal(size=shape).astype(np.float32)
        return np.abs(x) if low == 0 else x
    data = [{name: make()} for _ in range(n)]
    return data


def _consumers_of_dq(model, op):
    """Input names of the nodes of type ``op`` that come from DequantizeLinear."""
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [[producers.get(i) for i in n.input if i] for n in model.graph.node if n.op_type == op]


def _initializer(model, name):
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


# ---------------------------------------------------------------- parameter math


@given(st.floats(-50, 0), st.floats(0.01, 50), st.integers(0, 2**31 - 1))
def test_activation_roundtrip_error_within_half_step(lo, hi, seed):
    params = activation_params(lo, hi, "uint8")
    x = np.random.default_rng(seed).uniform(lo, hi, 1000).astype(np.float32)
    err = np.abs(dequantize(quantize(x, params), params) - x)
    assert err.max() <= params.scale / 2 * (1 + 1e-4) + 1e-7
    assert dequantize(quantize(np.zeros(1, np.float32), params), params)[0] == 0.0  # zero is exact


def test_activation_params_classic_mapping():
    p = activation_params(-1.0, 3.0, "uint8")
    assert np.isclose(p.scale, 4.0 / 255) and int(p.zero_point) == round(0 - (-1.0) / (4.0 / 255))
    p = activation_params(0.5, 2.0, "uint8")  # range widened to hold 0
    assert int(p.zero_point) == 0 and np.isclose(p.scale, 2.0 / 255)
    s = activation_params(-1.0, 3.0, symmetric=True)
    assert s.zero_point.dtype == np.int8 and int(s.zero_point) == 0 and np.isclose(s.scale, 3.0 / 127)


@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("bits7", [False, True])
def test_weight_roundtrip_per_channel_and_per_tensor(rng, axis, bits7):
    w = (rng.normal(size=(6, 5, 3)) * rng.uniform(0.01, 10, size=(6, 1, 1))).astype(np.float32)
    p = weight_params(w, axis, bits7)
    q = quantize(w, p, bits7)
    assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= (63 if bits7 else 127)
    scale = p.scale if axis is None else p.scale.reshape([-1 if i == axis else 1 for i in range(3)])
    assert np.all(np.abs(dequantize(q, p) - w) <= scale / 2 * (1 + 1e-4) + 1e-9)
    if axis is not None:
        assert p.scale.shape == (w.shape[axis],)


# ---------------------------------------------------------------- calibration


def test_streaming_statistics_do_not_depend_on_batching(rng):
    x = rng.normal(size=(64, 10)).astype(np.float32)
    whole = calibration.collect([{"t": x}], ["t"], "entropy")["t"]
    # the smallest rows first: the histogram's grid coarsens batch after batch, and ends the same
    x = x[np.argsort(np.abs(x).max(axis=1))]
    parts = [{"t": x[i:i + 8]} for i in range(0, 64, 8)]
    split = calibration.collect(parts, ["t"], "entropy")["t"]
    assert (whole.lo, whole.hi) == (split.lo, split.hi) and whole.width == split.width
    np.testing.assert_array_equal(whole.hist, split.hist)
    # the histogram is that of |x| on its grid: 2^e wide bins, between 2048 and 4096 of them over [0, max|x|]
    edges = np.arange(len(whole.hist) + 1) * whole.width
    np.testing.assert_array_equal(whole.hist, np.histogram(np.abs(x), bins=edges)[0])
    assert np.log2(whole.width) == int(np.log2(whole.width)) and 2048 <= whole.amax / whole.width <= 4096


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_histogram_methods_clip_a_rare_outlier(rng, method):
    x = rng.normal(size=200_000).astype(np.float32)
    x[0] = 1000.0
    stats = calibration.collect([{"t": x}], ["t"], method)["t"]
    t = calibration.threshold(stats, method, percentile=99.99)
    # the outlier is clipped, the bulk kept; mse weighs the outlier's own squared error, so it clips less
    assert 2.0 < t < (600.0 if method == "mse" else 100.0)
    assert calibration.threshold(stats, "minmax") == pytest.approx(1000.0)


def test_non_finite_values_are_ignored_in_ranges():
    x = np.array([-3.4e38, -np.inf, -1.0, 0.5, 2.0], np.float32)
    stats = calibration.collect([{"t": x[2:]}, {"t": x[:2]}], ["t"], "minmax")["t"]
    assert stats.hi == 2.0 and stats.lo == pytest.approx(-3.4e38)  # finite: kept (mixed precision handles it)


def test_scan_keeps_head_rows_and_channel_ranges(rng):
    x = rng.normal(size=(20, 3, 4)).astype(np.float32)
    x[13, 1, 2] = np.inf  # non-finite values never widen a range
    parts = [{"t": x[i:i + 6]} for i in range(0, 20, 6)]
    scan = calibration.scan(parts, ["t"], channels=["t"], keep={"t": 8})
    finite = np.where(np.isfinite(x), x, 0.0).reshape(-1, 4)
    np.testing.assert_array_equal(scan.channels["t"][0], finite.min(axis=0))
    np.testing.assert_array_equal(scan.channels["t"][1], finite.max(axis=0))
    np.testing.assert_array_equal(scan.kept["t"], x[:8])
    assert scan.samples == 20 and scan.stats["t"].hi == float(x[np.isfinite(x)].max())


def test_cpu_format_choice():
    avx2, vnni = CpuFeatures(frozenset({"avx2"})), CpuFeatures(frozenset({"avx2", "avx512_vnni"}))
    assert cpu.saturation_risk("CPUExecutionProvider", "uint8", avx2)
    assert not cpu.saturation_risk("CPUExecutionProvider", "uint8", vnni)
    assert not cpu.saturation_risk("TensorrtExecutionProvider", "uint8", avx2)
    assert not cpu.saturation_risk("CPUExecutionProvider", "uint8", CpuFeatures(frozenset(), x86=False))
    assert avx2.describe() == "avx2, no VNNI" and vnni.describe() == "avx2, VNNI"


# ---------------------------------------------------------------- placement per op

CONV_RELU_POOL = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,8,8] x) => (float[N,10] y) {
    c = Conv<pads=[1,1,1,1]>(x, w, b)
    r = Relu(c)
    p = MaxPool<kernel_shape=[2,2], strides=[2,2]>(r)
    f = Flatten(p)
    y = Gemm<transB=1>(f, fw, fb)
}"""


def _conv_weights(rng):
    return {"w": rng.normal(size=(8, 3, 3, 3)).astype(np.float32) * 0.3, "b": rng.normal(size=8).astype(np.float32),
            "fw": rng.normal(size=(10, 128)).astype(np.float32) * 0.1, "fb": rng.normal(size=10).astype(np.float32)}


def test_conv_relu_pool_gemm_placement_and_parity(rng):
    model = model_from_text(CONV_RELU_POOL, _conv_weights(rng))
    data = _batches(rng, "x", (8, 3, 8, 8))
    out, result, _ = _quantize(model, data)
    assert result.modified and result.stats["quantized_nodes"] == 2
    ops = op_types(out)
    assert "Relu" not in ops  # absorbed: uint8 Q with zero point 0 clips at 0
    assert ops.count("Conv") == 1 and ops.count("Gemm") == 1
    # every input of Conv and Gemm comes from a DequantizeLinear: x, weight and int32 bias
    assert _consumers_of_dq(out, "Conv") == [["DequantizeLinear"] * 3]
    assert _consumers_of_dq(out, "Gemm") == [["DequantizeLinear"] * 3]
    biases = [i for i in out.graph.initializer if i.data_type == onnx.TensorProto.INT32 and i.name.endswith("_q")]
    assert sorted(tuple(i.dims) for i in biases) == [(8,), (10,)]
    weights8 = [numpy_helper.to_array(i) for i in out.graph.initializer if i.data_type == onnx.TensorProto.INT8
                and i.name.endswith("_q")]
    assert {w.shape for w in weights8} == {(8, 3, 3, 3), (10, 128)}
    # MaxPool and Flatten pass through with their input's parameters: a Q follows each, same scale
    q_of = {n.input[0]: n for n in out.graph.node if n.op_type == "QuantizeLinear"}
    pool = next(n for n in out.graph.node if n.op_type == "MaxPool")
    producer_q = next(n for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "r")
    assert q_of[pool.output[0]].input[1:] == producer_q.input[1:] or np.array_equal(
        _initializer(out, q_of[pool.output[0]].input[1]), _initializer(out, producer_q.input[1]))
    feeds = {"x": rng.normal(size=(16, 3, 8, 8)).astype(np.float32)}
    ref = run_model(model, feeds)[0]
    for optimize in (True, False):  # real integer kernels and float-simulated Q/DQ
        assert _cosine(ref, run_model(out, feeds, optimize)[0]) > 0.99
    onnx.checker.check_model(out, full_check=True)
    _, again, _ = _quantize(out, data)
    assert not again.modified  # idempotent: quantized nodes decline
    assert any("already quantized" in d.reason for d in again.declines)


def test_per_tensor_option_gives_scalar_weight_scales(rng):
    model = model_from_text(CONV_RELU_POOL, _conv_weights(rng))
    out, result, _ = _quantize(model, _batches(rng, "x", (8, 3, 8, 8)), per_channel=False)
    assert result.stats["weights"] == "int8 per-tensor"
    inits = {i.name for i in out.graph.initializer}
    dq_weight = [n for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and _initializer(out, n.input[0]).dtype == np.int8]
    assert dq_weight and all(_initializer(out, n.input[1]).ndim == 0 for n in dq_weight)


@pytest.mark.parametrize("relu", [True, False])
def test_residual_add_concat_share_ranges(rng, relu):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,6,6] x) => (float[N,8,6,6] y) {
    a = Conv<pads=[1,1,1,1]>(x, w1, b1)
    s = Add(a, x)
    r = Relu(s)
    c0 = Conv(r, w2, b2)
    c = %s(c0)
    y = Concat<axis=1>(r, c)
}""" % ("Relu" if relu else "Identity")
    weights = {"w1": rng.normal(size=(4, 4, 3, 3)).astype(np.float32) * 0.2, "b1": np.zeros(4, np.float32),
               "w2": rng.normal(size=(4, 4, 1, 1)).astype(np.float32), "b2": np.ones(4, np.float32)}
    model = model_from_text(text, weights)
    out, result, _ = _quantize(model, _batches(rng, "x", (8, 4, 6, 6)))
    ops = op_types(out)
    assert "Add" in ops and "Relu" not in ops  # the Relus after the residual Add and the Conv are absorbed
    concat = next(n for n in out.graph.node if n.op_type == "Concat")
    producers = {o: n for n in out.graph.node for o in n.output}
    scales = [_initializer(out, producers[i].input[1]) for i in concat.input]
    out_q = next(n for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0].startswith("y"))
    same = [np.array_equal(s, _initializer(out, out_q.input[1])) for s in scales]
    # one common range; except that an absorbed Relu (zero point 0) never joins a range holding negatives
    assert same == ([True, True] if relu else [False, True])
    feeds = {"x": rng.normal(size=(4, 4, 6, 6)).astype(np.float32)}
    assert _cosine(run_model(model, feeds)[0], run_model(out, feeds)[0]) > 0.99
    assert [o.name for o in out.graph.output] == ["y"]
    assert result.stats["excluded"] == []


ATTENTION_SCORES = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,8] x) => (float[N,4,4] y) {
    q = MatMul(x, wq)
    k = MatMul(x, wk)
    kt = Transpose<perm=[0,2,1]>(k)
    s = MatMul(q, kt)
    %s
}"""


def test_transformer_matmuls_and_reshape_transpose(rng):
    weights = {"wq": rng.normal(size=(8, 8)).astype(np.float32), "wk": rng.normal(size=(8, 8)).astype(np.float32)}
    model = model_from_text(ATTENTION_SCORES % "y = Softmax<axis=-1>(s)", weights)
    out, result, _ = _quantize(model, _batches(rng, "x", (8, 4, 8)))
    assert result.stats["quantized_nodes"] == 3  # two weight MatMuls and the activation MatMul
    assert _consumers_of_dq(out, "MatMul") == [["DequantizeLinear"] * 2] * 3
    assert "Softmax" in op_types(out)  # no integer kernel: stays float
    _, float_act, _ = _quantize(model, _batches(rng, "x", (8, 4, 8)), activation_matmul=False)
    assert float_act.stats["quantized_nodes"] == 2
    assert any("two activations" in d.reason for d in float_act.declines)


def test_attention_scale_folds_into_a_dequantization_scale(rng):
    """Div(Q·Kᵀ, √d) after an integer MatMul: the constant moves into K's scale, the Div goes."""
    weights = {"wq": rng.normal(size=(8, 8)).astype(np.float32), "wk": rng.normal(size=(8, 8)).astype(np.float32),
               "c": np.array(np.sqrt(8), np.float32)}
    model = model_from_text(ATTENTION_SCORES % "d = Div(s, c)\n    y = Softmax<axis=-1>(d)", weights)
    data = _batches(rng, "x", (8, 4, 8))
    out, result, _ = _quantize(model, data, target_cosine=None)
    assert "Div" not in op_types(out) and result.stats["quantized_nodes"] == 3
    # the same quantized graph with the Div kept computes the same, up to float rounding
    graph = to_graph(out)
    (scores,) = [n for n in graph.nodes if n.op == "MatMul" and n.outputs[0].outputs[0].op == "Softmax"]
    dq = next(t.inputs[0] for t in scores.inputs if t.inputs[0].inputs[1].name.endswith("_x"))
    dq.inputs[1] = gs.Constant("unfolded", np.asarray(dq.inputs[1].values * np.sqrt(8), np.float32))
    raw = gs.Variable("raw", dtype=np.float32)
    softmax_in = scores.outputs[0]
    scores.outputs[0] = raw
    graph.nodes.append(gs.Node("Div", inputs=[raw, gs.Constant("c2", weights["c"])], outputs=[softmax_in]))
    graph.toposort()
    kept = PassContext(out).export(graph)
    feeds = {"x": data[0]["x"]}
    np.testing.assert_allclose(run_model(out, feeds)[0], run_model(kept, feeds)[0], atol=1e-5)


def test_conv_transpose_is_quantized(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,5,5] x) => (float[N,3,10,10] y) {
    y = ConvTranspose<strides=[2,2], kernel_shape=[2,2]>(x, w, b)
}"""
    model = model_from_text(text, {"w": rng.normal(size=(4, 3, 2, 2)).astype(np.float32),
                                   "b": rng.normal(size=3).astype(np.float32)})
    out, result, _ = _quantize(model, _batches(rng, "x", (4, 4, 5, 5)))
    assert result.stats["quantized_nodes"] == 1
    w_dq = next(n for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "w_q")
    assert {a.name: a.i for a in w_dq.attribute}.get("axis") == 1  # output channels of ConvTranspose
    feeds = {"x": rng.normal(size=(2, 4, 5, 5)).astype(np.float32)}
    assert _cosine(run_model(model, feeds)[0], run_model(out, feeds)[0]) > 0.99


def test_weights_in_constant_nodes(rng):
    w = rng.normal(size=(6, 5)).round(3)
    w_text, b_text = ",".join(map(str, w.ravel())), ",".join(map(str, rng.normal(size=6).round(3)))
    text = f"""<ir_version: 8, opset_import: ["": 17]>
g (float[N,5] x) => (float[N,6] y) {{
    w = Constant<value = float[6,5] {{{w_text}}}>()
    b = Constant<value = float[6] {{{b_text}}}>()
    y = Gemm<transB=1>(x, w, b)
}}"""
    model = model_from_text(text)
    out, result, _ = _quantize(model, _batches(rng, "x", (16, 5)))
    assert result.modified
    assert "Constant" not in op_types(out)  # the float weights are gone, not left beside the int8 copy
    feeds = {"x": rng.normal(size=(8, 5)).astype(np.float32)}
    assert _cosine(run_model(model, feeds)[0], run_model(out, feeds)[0]) > 0.99


def test_old_opset_is_upgraded(rng):
    text = CONV_RELU_POOL.replace('"": 17', '"": 11')
    model = model_from_text(text, _conv_weights(rng))
    out, result, _ = _quantize(model, _batches(rng, "x", (8, 3, 8, 8)))
    assert result.modified
    assert next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx")) >= 13


def test_declines_non_constant_weight_and_gemm_alpha(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,5] x, float[3,5] w) => (float[N,3] y, float[N,3] z) {
    y = Gemm<transB=1>(x, w)
    z = Gemm<transB=1, alpha=2.0>(x, c)
}"""
    model = model_from_text(text, {"c": rng.normal(size=(3, 5)).astype(np.float32)})
    data = [{"x": rng.normal(size=(4, 5)).astype(np.float32), "w": rng.normal(size=(3, 5)).astype(np.float32)}]
    _, result, _ = _quantize(model, data)
    assert not result.modified
    reasons = " | ".join(d.reason for d in result.declines)
    assert "not constant" in reasons and "alpha" in reasons


# ---------------------------------------------------------------- saturation and mixed precision


def test_saturation_all_gives_7bit_weights(rng):
    model = model_from_text(CONV_RELU_POOL, _conv_weights(rng))
    out, result, _ = _quantize(model, _batches(rng, "x", (8, 3, 8, 8)), saturation="all")
    assert len(result.stats["saturation_safe_layers"]) == 2
    for init in out.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype == np.int8 and value.size > 1:
            assert np.abs(value.astype(int)).max() <= 63


def _outlier_model(rng):
    """Two layers; the second's input has rare huge values, so its activation range is wrecked."""
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,16] x, float[N,16] m) => (float[N,16] y) {
    h = Gemm<transB=1>(x, w1, b1)
    hm = Add(h, m)
    y = Gemm<transB=1>(hm, w2, b2)
}"""
    weights = {"w1": rng.normal(size=(16, 16)).astype(np.float32) * 0.3, "b1": np.zeros(16, np.float32),
               "w2": rng.normal(size=(16, 16)).astype(np.float32) * 0.3, "b2": np.zeros(16, np.float32)}
    return model_from_text(text, weights)


def _outlier_data(rng, n=4):
    """The last batch holds one huge value; the first (used by the checks) holds none."""
    out = []
    for i in range(n):
        m = np.zeros((32, 16), np.float32)
        if i == n - 1:
            m[0, 0] = 1e4
        out.append({"x": rng.normal(size=(32, 16)).astype(np.float32), "m": m})
    return out


def test_exclusion_loop_keeps_the_harmful_layer_in_float(rng):
    model = _outlier_model(rng)
    data = _outlier_data(rng)
    _, plain, _ = _quantize(model, data, target_cosine=None, check_samples=32)
    assert plain.stats["output_cosine_calibration"] < 0.99 and plain.stats["excluded"] == []
    out, result, _ = _quantize(model, data, target_cosine=0.995, check_samples=32)
    excluded = result.stats["excluded"]
    assert [e["node"] for e in excluded] == ["Gemm_2"] or [e["op"] for e in excluded] == ["Gemm"]
    assert excluded[0]["layer_error"] > 0.05
    assert result.stats["output_cosine_calibration"] >= 0.995
    assert result.stats["int8_mac_fraction"] == pytest.approx(0.5)
    gemms = _consumers_of_dq(out, "Gemm")
    # one int8 (activation, weight, bias from DQ); the float one stores its weight as int8 (weight-only)
    assert sorted(g.count("DequantizeLinear") for g in gemms) == [1, 3]
    float_gemm = next(g for g in gemms if g.count("DequantizeLinear") == 1)
    assert float_gemm[1] == "DequantizeLinear" and float_gemm[0] != "DequantizeLinear"
    assert result.stats["weight_only"] == [excluded[0]["node"]]
    assert any("weight-only" in n for n in result.notes)


def test_weight_only_is_folded_when_its_dequantize_form_measures_slower(rng, monkeypatch):
    from onnxslim.runtime.bench import LatencyStats

    def timings(models, feeds, *args, **kwargs):
        # the first model of each comparison is the slower one: DequantizeLinear weight-only, then int8 vs fp32 ...
        ms = [2.0] + [1.0] * (len(models) - 1)
        return [LatencyStats(t, t, t, t, 30, 1, 1, "CPUExecutionProvider") for t in ms]

    monkeypatch.setattr(PassContext, "time", lambda self, models, feeds, **kw: timings(models, feeds))
    model, data = _outlier_model(rng), _outlier_data(rng)
    out, result, _ = _quantize(model, data, target_cosine=0.995, check_samples=32, check_speed=True, speed="off")
    excluded = [e["node"] for e in result.stats["excluded"]]
    assert result.stats["weight_only"] == excluded and result.stats["weight_only_folded"] == excluded
    assert any("weight-only folded" in n for n in result.notes)
    # ... so the excluded Gemm's weight is int8 · scale (Cast, Mul), which ORT folds to float at load
    assert sorted(g.count("DequantizeLinear") for g in _consumers_of_dq(out, "Gemm")) == [0, 3]
    assert ["Mul"] in [g[1:2] for g in _consumers_of_dq(out, "Gemm")]
    assert [n for n in _optimized_ops(out) if n in ("Cast", "Mul", "MatMulNBits")] == []
    assert result.stats["output_cosine_calibration"] >= 0.995


def _optimized_ops(model):
    """The op types of ``model`` as ORT runs it (basic optimizations: constant folding, no layouts)."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = f"{tmp}/opt.onnx"
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(f"{tmp}/opt.onnx").graph.node]


def test_weight_only_conv_is_folded_int8_and_measured(rng):
    """A 3x3 Conv kept in float stores its weight as int8 · scale (Cast, Mul) that ORT folds at load."""
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,8,8] x, float[N,8,8,8] m) => (float[N,8,8,8] y) {
    h = Conv<pads=[1,1,1,1]>(x, w1, b1)
    hm = Add(h, m)
    y = Conv<pads=[1,1,1,1], strides=[1,1]>(hm, w2, b2)
}"""
    weights = {"w1": rng.normal(size=(8, 4, 3, 3)).astype(np.float32) * 0.3, "b1": np.zeros(8, np.float32),
               "w2": rng.normal(size=(8, 8, 3, 3)).astype(np.float32) * 0.3, "b2": np.zeros(8, np.float32)}
    model = model_from_text(text, weights)
    data = []
    for i in range(4):
        m = np.zeros((32, 8, 8, 8), np.float32)
        if i == 3:
            m[0, 0, 0, 0] = 1e4  # wrecks the second Conv's input range (the checks use the first batch)
        data.append({"x": rng.normal(size=(32, 4, 8, 8)).astype(np.float32), "m": m})
    out, result, _ = _quantize(model, data, target_cosine=0.995, check_samples=32)
    excluded = [e["node"] for e in result.stats["excluded"]]
    assert len(excluded) == 1 and result.stats["weight_only"] == excluded
    float_conv = next(g for g in _consumers_of_dq(out, "Conv") if g.count("DequantizeLinear") == 0)
    assert float_conv[1] == "Mul"
    stored = [numpy_helper.to_array(i) for i in out.graph.initializer]
    assert sum(a.size for a in stored if a.dtype == np.int8) == 8 * 4 * 9 + 8 * 8 * 9
    assert "Cast" not in _optimized_ops(out)
    # the folded weight is the int8 weight dequantized: the float layer's error is int8 rounding only
    feeds = {k: v[:8] for k, v in data[0].items()}
    assert _cosine(run_model(model, feeds)[0], run_model(out, feeds)[0]) >= 0.995


def test_weight_only_is_dropped_when_it_breaks_the_budget(rng):
    model = _outlier_model(rng)
    weights = {i.name: numpy_helper.to_array(i).copy() for i in model.graph.initializer}
    weights["w1"][5] = 0.0  # feature 5 of the second layer's input is always 0 ...
    weights["w2"][:, 5] = 1000.0  # ... and its weights are huge: int8 columns lose every other weight
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    data = _outlier_data(rng)
    out, result, _ = _quantize(model, data, target_cosine=0.995, check_samples=32)
    assert [e["op"] for e in result.stats["excluded"]] == ["Gemm"]
    assert result.stats["output_cosine_calibration"] >= 0.995
    assert result.stats["weight_only"] == []  # measured, and kept in fp32
    assert sorted(g.count("DequantizeLinear") for g in _consumers_of_dq(out, "Gemm")) == [0, 3]


def test_dynamic_int8_serves_a_matmul_whose_calibrated_range_is_wrecked(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
    g (float[N,16] x, float[N,16] m) => (float[N,16] y) {
        h = MatMul(x, w1)
        hm = Add(h, m)
        y = MatMul(hm, w2)
    }"""
    model = model_from_text(text, {"w1": rng.normal(size=(16, 16)).astype(np.float32) * 0.3,
                                   "w2": rng.normal(size=(16, 16)).astype(np.float32) * 0.3})
    data = _outlier_data(rng)
    out, result, _ = _quantize(model, data, target_cosine=0.995, check_samples=32)
    second = next(n.name for n in to_graph(out).nodes if n.op == "MatMulInteger").rsplit("/dynamic_", 1)[0]
    assert result.stats["dynamic"] == [second] and result.stats["excluded"] == []
    # hm's channel 0 (the 1e4 outlier) stays float: 1 of the 16 input channels of half the MACs
    assert result.stats["dynamic_float_channels"] == {second: [0]}
    assert result.stats["int8_mac_fraction"] == round(1 - 0.5 / 16, 4)
    assert result.stats["output_cosine_calibration"] >= 0.995
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= set(op_types(out))
    feeds = data[0]
    assert _cosine(run_model(model, feeds)[0], run_model(out, feeds)[0]) >= 0.995
    assert any("dynamic int8" in n for n in result.notes)
    _, static_only, _ = _quantize(model, data, target_cosine=0.995, check_samples=32, dynamic=False)
    assert static_only.stats["dynamic"] == [] and [e["node"] for e in static_only.stats["excluded"]] == [second]


def test_target_out_of_reach_keeps_float_weights_and_warns(rng):
    model = _outlier_model(rng)
    data = _outlier_data(rng)
    # a target no quantized weight meets: the excluded layer keeps its float weight
    out, result, ctx = _quantize(model, data, target_cosine=0.9999999, check_samples=32)
    assert len(result.stats["excluded"]) == 1 and result.stats["weight_only"] == []
    assert sorted(g.count("DequantizeLinear") for g in _consumers_of_dq(out, "Gemm")) == [0, 3]
    assert any("target_cosine" in w for w in ctx.warnings)


def test_percentile_beats_minmax_on_outliers(rng):
    model = _outlier_model(rng)
    data = _outlier_data(rng)
    _, minmax, _ = _quantize(model, data, target_cosine=None, check_samples=32)
    _, pct, _ = _quantize(model, data, target_cosine=None, check_samples=32, method="percentile", percentile=99.0)
    assert pct.stats["output_cosine_calibration"] > minmax.stats["output_cosine_calibration"]


def test_speed_check_reports_latency(rng):
    model = model_from_text(CONV_RELU_POOL, _conv_weights(rng))
    _, result, _ = _quantize(model, _batches(rng, "x", (8, 3, 8, 8), n=2), check_speed=True)
    lat = result.stats["latency_ms"]
    assert lat["fp32"] > 0 and lat["int8"] > 0 and lat["provider"] == "CPUExecutionProvider"


# ---------------------------------------------------------------- options and the pipeline


def test_needs_calibration_and_tolerance():
    q = Quantize()
    assert q.needs_calibration() and not q.exact
    assert q.tolerance().cosine == pytest.approx(0.985)
    model = model_from_text(CONV_RELU_POOL, _conv_weights(np.random.default_rng(1)))
    with pytest.raises(UsageError, match="calibration"):
        PassContext(model).require_calibration("quantize")


@pytest.mark.parametrize(("opts", "msg"), [
    ({"method": "kl"}, "method"), ({"percentile": 10.0}, "percentile"), ({"max_excluded": 2.0}, "max_excluded"),
    ({"bins": 8}, "bins"), ({"require_speedup": True, "check_speed": False}, "require_speedup"),
])
def test_option_errors(opts, msg):
    with pytest.raises(OptionError, match=msg):
        QuantizeOptions(**opts)


def test_pipeline_text_round_trip():
    text = 'quantize{method=entropy,per_channel=false,target_cosine=none,exclude="/a/Conv;/b/Conv"}'
    pipeline = parse(text)
    assert parse(str(pipeline)) == pipeline
    options = pipeline.specs()[0].create().options
    assert options.method == "entropy" and options.target_cosine is None and options.exclude == ("/a/Conv", "/b/Conv")


def test_smoothing_moves_outlier_channels_into_weights(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,16] x) => (float[N,8] y, float[N,16] h) {
    h = LayerNormalization<axis=-1>(x, gamma, beta)
    y = MatMul(h, w)
}"""
    gamma = np.ones(16, np.float32)
    gamma[3] = 40.0  # one outlier channel, as in BERT's LayerNorm outputs
    weights = {"gamma": gamma, "beta": np.zeros(16, np.float32), "w": rng.normal(size=(16, 8)).astype(np.float32)}
    model = model_from_text(text, weights)
    data = _batches(rng, "x", (32, 16))
    out, result, _ = _quantize(model, data, target_cosine=None)
    assert result.stats["smoothed_inputs"] == ["h"]
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    assert mul.input[0] == "h"  # the float readers of h (the graph output here) keep the unscaled tensor
    plain_out, plain, _ = _quantize(model, data, target_cosine=None, smooth=None)
    assert plain.stats["smoothed_inputs"] == []
    feeds = {"x": rng.normal(size=(64, 16)).astype(np.float32)}
    ref, got, unsmoothed = run_model(model, feeds), run_model(out, feeds), run_model(plain_out, feeds)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-6, atol=1e-6)
    err = np.linalg.norm(got[0] - ref[0]) / np.linalg.norm(ref[0])
    err_plain = np.linalg.norm(unsmoothed[0] - ref[0]) / np.linalg.norm(ref[0])
    assert err < err_plain  # the outlier no longer takes the uint8 levels of every other channel


def test_only_layers_between_float_ops_are_timed_for_speed(rng):
    from onnxslim.quant.probe import absorbed_by, island

    from onnxslim.ir.io import to_graph
    from onnxslim.quant.placement import plan

    text = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,4,6,6] x) => (float[N,4,6,6] y) {
    a = Conv<pads=[1,1,1,1]>(x, w1)
    r = Relu(a)
    b = Conv<pads=[1,1,1,1]>(r, w2)
    h = HardSwish(b)
    c = Conv<pads=[1,1,1,1]>(h, w3)
    y = HardSwish(c)
}"""
    w = {f"w{i}": rng.normal(size=(4, 4, 3, 3)).astype(np.float32) for i in (1, 2, 3)}
    graph = to_graph(model_from_text(text, w))
    for i, node in enumerate(graph.nodes):
        node.name = f"n{i}"
    p = plan(graph, set(), True, True)
    convs = [n for n in graph.nodes if n.op == "Conv"]
    islands = [island(n, absorbed_by(n, p), p) for n in convs]
    # the first Conv reads the graph input (float) but feeds an int8 Conv; the second reads int8;
    # only the third sits between float ops (HardSwish in, HardSwish out)
    assert [(i, e.op if e is not None else None) for i, e in islands] == [
        (False, None), (False, None), (True, "HardSwish")]


def test_speed_exclusion_needs_a_clear_and_worthwhile_gain():
    from onnxslim.quant.probe import LayerProbe, LayerTiming, Probes
    from onnxslim.runtime.bench import LatencyStats

    def probe(name, float_ms, int8_ms):
        def stats(ms):
            return LatencyStats(ms, ms, ms, ms, 20, 1, 1, "CPUExecutionProvider")
        timing = LayerTiming(stats(float_ms), stats(int8_ms)) if float_ms is not None else None
        return LayerProbe(name, "Conv", 1, 0.01, 0.01, False, timing)

    layers = {p.node: p for p in [probe("big", 10.0, 9.0), probe("slow", 0.2, 0.5), probe("noise", 1.0, 1.04),
                                   probe("tiny", 0.01, 0.02), probe("untimed", None, None)]}
    # "noise" is within timing noise; "tiny" is 2x slower but saves 0.01 ms of 11.2 ms timed
    assert Probes(layers, {}).slow == {"slow"}


def test_embedding_tables_become_int8_rows(rng):
    text = """<ir_version: 8, opset_import: ["": 17]>
g (int64[N,5] ids) => (float[N,5,8] y) {
    e = Gather(table, ids)
    m = MatMul(e, w)
    p = Gather(small, ids)
    y = Add(m, p)
}"""
    table = (rng.normal(size=(400, 256)) * rng.uniform(0.01, 1.0, size=(400, 1))).astype(np.float32)
    weights = {"table": table, "small": rng.normal(size=(400, 8)).astype(np.float32),
               "w": rng.normal(size=(256, 8)).astype(np.float32)}
    model = model_from_text(text, weights)
    data = [{"ids": rng.integers(0, 400, size=(16, 5)).astype(np.int64)} for _ in range(2)]
    out, result, _ = _quantize(model, data)
    assert len(result.stats["int8_tables"]) == 1
    tables = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    assert tables["table_q"].dtype == np.int8 and tables["table_q"].shape == (400, 256)
    assert tables["table_s"].shape == (400,)  # one scale per row
    assert "table" not in tables and tables["small"].dtype == np.float32  # 3200 elements: left float
    assert "DequantizeLinear" not in [n.op_type for n in out.graph.node if "table" in "".join(n.input)]
    feeds = {"ids": rng.integers(0, 400, size=(4, 5)).astype(np.int64)}
    ref, got = run_model(model, feeds)[0], run_model(out, feeds)[0]
    assert _cosine(ref, got) > 0.99
    _, again, _ = _quantize(out, data)
    assert not again.modified  # idempotent
    _, quiet, _ = _quantize(model, data, tables=False)
    assert quiet.stats["int8_tables"] == []


def test_quantized_weights_are_shared_across_graph_copies_only_for_the_same_array(rng):
    from onnxslim.quant.qdq import QuantizedWeights

    w = rng.normal(size=(8, 4)).astype(np.float32)
    x, y = gs.Variable("x", np.float32, (2, 8)), gs.Variable("y", np.float32, (2, 4))
    first = gs.Constant("w", w)
    graph = gs.Graph(nodes=[gs.Node("MatMul", inputs=[x, first], outputs=[y])], inputs=[x], outputs=[y])
    copy = graph.copy().tensors()["w"]  # a graph copy shares the array
    assert copy is not first
    quantized = QuantizedWeights()
    params, q = quantized.get(first, 1, False)
    assert quantized.get(copy, 1, False)[1] is q
    assert quantized.get(copy, 1, True)[1] is not q  # another choice is another result
    other = gs.Constant("w", w * 2)  # same name, different values
    params2, q2 = quantized.get(other, 1, False)
    np.testing.assert_allclose(params2.scale, 2 * params.scale, rtol=1e-6)
    np.testing.assert_array_equal(q2, q)


def test_exclusion_search_checks_its_subset_count_on_every_check_sample():
    """The count found on the first SEARCH_ROWS samples is checked on all; where it misses there,
    the search goes on above it on all samples, and finds the fewest that meet the target."""
    import types

    from onnxslim.quant import mixed

    built = []

    def build(k, wo=frozenset(), dyn=frozenset(), fold_all=False, rows=None):
        # on the subset every layer in float gains 0.001; on all samples only 0.0005
        cosine = 0.99 + (0.001 if rows else 0.0005) * k
        built.append((k, rows))
        return mixed.Candidate(None, None, set(), cosine, [], [], {})

    search = object.__new__(mixed.MixedPrecision)
    search.options = types.SimpleNamespace(max_excluded=1.0)
    search.ranked = list(range(20))
    search.check = mixed.CheckData({"x": np.zeros((32, 2), np.float32)}, {})
    search.ctx = types.SimpleNamespace(warn=lambda message: built.append(message))
    search.build = build
    k, best = search._exclusion(0.9951)
    assert k == 11 and best.cosine >= 0.9951
    assert (6, mixed.SEARCH_ROWS) in built and (6, None) in built  # found on the subset, missed on all
    assert (10, None) in built and not any(isinstance(b, str) for b in built)  # 10 misses; no warning


# ---------------------------------------------------------------- never slower (injected timings)


class _TimedContext(PassContext):
    """A context whose latency says the second model (int8) takes ``ratio`` times the first (fp32)."""

    def __init__(self, *args, ratio: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.ratio = ratio

    def time(self, models, feeds, **options):
        from onnxslim.runtime.bench import LatencyStats

        def stats(ms):
            return LatencyStats(ms, ms, ms, ms, 10, 1, 1, self.target_provider)
        return [stats(1.0), stats(self.ratio)][: len(models)]


def _timed_quantize(rng, ratio, **options):
    model = model_from_text(CONV_RELU_POOL, _conv_weights(rng))
    ctx = _TimedContext(model, calibration=_batches(rng, "x", (8, 3, 8, 8)), ratio=ratio)
    opts = QuantizeOptions(**{"speed": "off", **options})
    return model, *run_pass(Quantize(opts), model, ctx), ctx


def test_int8_slower_than_fp32_falls_back_to_weight_only_storage(rng):
    model, out, result, ctx = _timed_quantize(rng, ratio=1.3)
    assert result.modified and result.stats["fallback"]["to"] == "weight_only"
    ops = op_types(out)
    assert "QuantizeLinear" not in ops and "DequantizeLinear" not in ops  # fp32's graph once loaded
    weights8 = [i for i in out.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert {tuple(i.dims) for i in weights8} == {(8, 3, 3, 3), (10, 128)}  # int8 in the file
    assert out.ByteSize() < 0.5 * model.ByteSize()
    assert any("weight-only" in w for w in ctx.warnings)
    (decision,) = ctx.decisions  # the context's record: what was timed, the numbers, what was chosen
    assert decision.timed_ms == {"fp32": 1.0, "int8": 1.3} and decision.chosen == "weight-only int8 or fp32"
    feeds = {"x": rng.normal(size=(4, 3, 8, 8)).astype(np.float32)}
    assert _cosine(run_model(model, feeds)[0], run_model(out, feeds)[0]) > 0.999


def test_int8_faster_is_kept(rng):
    _, out, result, ctx = _timed_quantize(rng, ratio=0.7)
    assert "fallback" not in result.stats and "QuantizeLinear" in op_types(out)
    assert [(d.timed_ms, d.chosen) for d in ctx.decisions] == [({"fp32": 1.0, "int8": 0.7}, "int8")]


def test_require_speedup_fails_when_int8_is_slower(rng):
    from onnxslim.errors import ParityError

    with pytest.raises(ParityError, match="require_speedup"):
        _timed_quantize(rng, ratio=1.3, require_speedup=True)
