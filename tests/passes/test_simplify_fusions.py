"""fuse-layernorm and fuse-gelu: standard ops replace the spelled-out forms, within `exact`."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.passes.fuse_gelu import FuseGelu
from onnxslim.passes.fuse_layernorm import FuseLayerNorm
from onnxslim.testing import assert_exact, model_from_text, op_types, run_pass


def _computing(model):
    return [op for op in op_types(model) if op != "Constant"]


LAYERNORM = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,T,8] x) => (float[N,T,8] y) {
    m = ReduceMean<axes = [-1]>(x)
    d = Sub(x, m)
    two = Constant<value = float {2.0}>()
    p = Pow(d, two)
    v = ReduceMean<axes = [-1]>(p)
    eps = Constant<value = float {1e-5}>()
    ve = Add(v, eps)
    s = Sqrt(ve)
    n = Div(d, s)
    g1 = Mul(n, gamma)
    y = Add(g1, beta)
}"""


def _layernorm(rng, text=LAYERNORM):
    return model_from_text(text, {"gamma": rng.normal(size=(8,)).astype(np.float32),
                                  "beta": rng.normal(size=(8,)).astype(np.float32)})


def test_layernorm_chain_becomes_layernormalization(rng):
    model = _layernorm(rng)
    out, result = run_pass(FuseLayerNorm(), model)
    assert result.stats == {"fused": 1}
    assert _computing(out) == ["LayerNormalization"] and out.graph.node[-1].output[0] == "y"
    assert_exact(model, out, {"x": (3 * rng.normal(size=(2, 5, 8)) + 1).astype(np.float32)})
    assert not run_pass(FuseLayerNorm(), out)[1].modified


def test_layernorm_with_mul_square_and_no_affine(rng):
    text = """<ir_version: 8, opset_import: ["": 18]>
g (float[N,8] x) => (float[N,8] y) {
    axes = Constant<value = int64[1] {1}>()
    m = ReduceMean(x, axes)
    d = Sub(x, m)
    p = Mul(d, d)
    v = ReduceMean(p, axes)
    eps = Constant<value = float {1e-6}>()
    ve = Add(eps, v)
    s = Sqrt(ve)
    y = Div(d, s)
}"""
    model = model_from_text(text)
    out, result = run_pass(FuseLayerNorm(), model)
    assert result.stats == {"fused": 1} and _computing(out) == ["LayerNormalization"]
    assert_exact(model, out, {"x": rng.normal(size=(4, 8)).astype(np.float32)})


def test_layernorm_declines_below_opset_17_non_trailing_axes_and_seen_intermediates(rng):
    old = model_from_text(LAYERNORM.replace('"": 17', '"": 13'), {"gamma": np.ones(8, np.float32), "beta": np.zeros(8, np.float32)})
    out, result = run_pass(FuseLayerNorm(), old)
    assert not result.modified and result.declines[0].reason == "opset 13 has no LayerNormalization (needs 17)"
    middle_axis = _layernorm(rng, LAYERNORM.replace("axes = [-1]", "axes = [1]").replace("float[N,T,8] x", "float[N,8,8] x")
                             .replace("float[N,T,8] y", "float[N,8,8] y"))
    assert not run_pass(FuseLayerNorm(), middle_axis)[1].modified
    seen = _layernorm(rng, LAYERNORM.replace("=> (float[N,T,8] y)", "=> (float[N,T,8] y, float[N,T,1] s)"))
    out, result = run_pass(FuseLayerNorm(), seen)
    assert not result.modified and "LayerNormalization" not in op_types(out)


GELU_FORMS = {
    "x_gate_half": """
    t = Div(x, sqrt2)
    e = Erf(t)
    g = Add(e, one)
    xg = Mul(x, g)
    y = Mul(xg, half)""",
    "x_half_gate": """
    t = Mul(x, rsqrt2)
    e = Erf(t)
    g = Add(one, e)
    xh = Mul(half, x)
    y = Mul(xh, g)""",
    "x_times_half_gate": """
    t = Div(x, sqrt2)
    e = Erf(t)
    g = Add(e, one)
    gh = Mul(g, half)
    y = Mul(x, gh)""",
}


def _gelu(form: str, opset: int = 20):
    text = f"""<ir_version: 9, opset_import: ["": {opset}]>
g (float[N,16] x) => (float[N,16] y) {{
    sqrt2 = Constant<value = float {{1.4142135}}>()
    rsqrt2 = Constant<value = float {{0.70710677}}>()
    one = Constant<value = float {{1.0}}>()
    half = Constant<value = float {{0.5}}>()
    {GELU_FORMS[form]}
}}"""
    return model_from_text(text)


@pytest.mark.parametrize("form", sorted(GELU_FORMS))
def test_erf_gelu_becomes_gelu(rng, form):
    model = _gelu(form)
    out, result = run_pass(FuseGelu(), model)
    assert result.stats == {"fused": 1}
    assert _computing(out) == ["Gelu"] and out.graph.node[-1].output[0] == "y"
    assert_exact(model, out, {"x": (4 * rng.normal(size=(3, 16))).astype(np.float32)})
    assert not run_pass(FuseGelu(), out)[1].modified


def test_gelu_declines_below_opset_20_and_on_wrong_constants():
    out, result = run_pass(FuseGelu(), _gelu("x_gate_half", opset=17))
    assert not result.modified and result.declines[0].reason == "opset 17 has no Gelu (needs 20)"
    assert "Erf" in op_types(out)
    text = """<ir_version: 9, opset_import: ["": 20]>
g (float[N,16] x) => (float[N,16] y) {
    c = Constant<value = float {1.5}>()
    one = Constant<value = float {1.0}>()
    half = Constant<value = float {0.5}>()
    t = Div(x, c)
    e = Erf(t)
    g = Add(e, one)
    xg = Mul(x, g)
    y = Mul(xg, half)
}"""
    assert not run_pass(FuseGelu(), model_from_text(text))[1].modified
