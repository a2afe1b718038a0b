"""fuse-pad: a zero, spatial-only Pad in front of Conv becomes the Conv's own padding."""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim.passes.fuse_pad import FusePad
from onnxslim.testing import assert_parity, model_from_text, op_types, run_pass

W = {"w": np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)}


def _model(pad_line: str, opset: int = 17, conv_attrs: str = "pads = [1, 0, 0, 1]", out: str = "y") -> str:
    return f"""<ir_version: 8, opset_import: ["": {opset}]>
g (float[N,3,7,9] x) => (float[N,4,?,?] {out}) <float[4,3,3,3] w> {{
    {pad_line}
    y = Conv<{conv_attrs}>(p, w)
}}"""


PAD_11 = """pads = Constant<value = int64[8] {0, 0, 1, 2, 0, 0, 2, 0}>()
    p = Pad(x, pads)"""
PAD_18_AXES = """pads = Constant<value = int64[4] {1, 2, 2, 0}>()
    axes = Constant<value = int64[2] {-2, -1}>()
    zero = Constant<value = float {0}>()
    p = Pad(x, pads, zero, axes)"""
PAD_2 = """p = Pad<pads = [0, 0, 1, 2, 0, 0, 2, 0]>(x)"""


@pytest.mark.parametrize(("pad", "opset"), [(PAD_11, 17), (PAD_18_AXES, 18), (PAD_2, 9)])
def test_a_zero_spatial_pad_moves_into_the_conv(pad, opset, rng):
    model = model_from_text(_model(pad, opset), W)
    out, result = run_pass(FusePad(), model)
    assert result.modified and result.stats == {"pads_fused": 1}
    assert "Pad" not in op_types(out)
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert [a.ints for a in conv.attribute if a.name == "pads"][0] == [2, 2, 2, 1]  # [1,0,0,1] + [1,2,2,0]
    for n in (1, 3):
        assert_parity(model, out, {"x": rng.normal(size=(n, 3, 7, 9)).astype(np.float32)})


@pytest.mark.parametrize(("pad", "reason"), [
    ("""pads = Constant<value = int64[8] {0, 0, 1, 1, 0, 0, 1, 1}>()
    p = Pad<mode = "reflect">(x, pads)""", "mode"),
    ("""pads = Constant<value = int64[8] {0, 1, 1, 1, 0, 0, 1, 1}>()
    p = Pad(x, pads)""", "channel"),
    ("""pads = Constant<value = int64[8] {0, 0, 1, 1, 0, 0, 1, 1}>()
    v = Constant<value = float {1}>()
    p = Pad(x, pads, v)""", "value other than 0"),
    ("""pads = Constant<value = int64[8] {0, 0, 1, -1, 0, 0, 1, 1}>()
    p = Pad(x, pads)""", "crops"),
])
def test_pads_that_are_not_a_convs_padding_stay(pad, reason):
    model = model_from_text(_model(pad), W)
    out, result = run_pass(FusePad(), model)
    assert not result.modified and "Pad" in op_types(out)
    assert reason in result.declines[0].reason


def test_a_valid_conv_takes_the_pad_as_its_padding(rng):
    model = model_from_text(_model(PAD_11, conv_attrs='auto_pad = "VALID", strides = [2, 2]'), W)
    out, result = run_pass(FusePad(), model)
    assert result.modified and "Pad" not in op_types(out)
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert {a.name: a.ints for a in conv.attribute}["pads"] == [1, 2, 2, 0]
    assert "auto_pad" not in {a.name for a in conv.attribute}
    assert_parity(model, out, {"x": rng.normal(size=(2, 3, 7, 9)).astype(np.float32)})


def test_a_pad_read_by_another_op_or_an_auto_padded_conv_stays():
    shared = """<ir_version: 8, opset_import: ["": 17]>
g (float[N,3,7,9] x) => (float[N,4,?,?] y, float[N,3,?,?] p) <float[4,3,3,3] w> {
    pads = Constant<value = int64[8] {0, 0, 1, 1, 0, 0, 1, 1}>()
    p = Pad(x, pads)
    y = Conv(p, w)
}"""
    assert not run_pass(FusePad(), model_from_text(shared, W))[1].modified
    auto = model_from_text(_model(PAD_11, conv_attrs='auto_pad = "SAME_UPPER"'), W)
    assert not run_pass(FusePad(), auto)[1].modified
