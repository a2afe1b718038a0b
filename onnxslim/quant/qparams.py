"""Scale and zero-point math for QuantizeLinear/DequantizeLinear.

Activations (asymmetric, the classic mapping; the range is first widened to hold 0 so that
zero is exact):

    lo = min(min, 0),  hi = max(max, 0)
    scale = (hi - lo) / (qmax - qmin)
    zero_point = round(qmin - lo / scale)            clipped to [qmin, qmax]

Symmetric (int8 activations for TensorRT, and every weight): zero_point = 0 and
scale = max(|lo|, |hi|) / qmax, with qmax = 127 (or 63 for 7-bit "saturation-safe" weights,
whose products with uint8 activations cannot overflow the int16 pair sums of AVX2's
``vpmaddubsw``: 2 · 255 · 64 = 32640 < 32767).

Weights are quantized per output channel (axis 0 for Conv and transB Gemm, the last axis for
MatMul and Gemm, axis 1 for ConvTranspose) or per tensor. Bias becomes int32 with
scale = s_input · s_weight and zero point 0.

Round trip: inside [lo, hi], |dequantize(quantize(x)) - x| <= scale / 2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Smallest scale ever emitted: a constant-zero tensor still needs a positive scale.
MIN_SCALE = 1e-12

_RANGES = {"uint8": (0, 255, np.uint8), "int8": (-128, 127, np.int8), "int8_7bit": (-64, 63, np.int8),
           "int8_sym": (-127, 127, np.int8)}


@dataclasses.dataclass(frozen=True)
class QParams:
    """Quantization parameters of one tensor; ``scale``/``zero_point`` are scalars or 1-D."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.zero_point.dtype


def qrange(dtype: str) -> tuple[int, int, type]:
    """(qmin, qmax, numpy type) of ``uint8``, ``int8``, ``int8_sym`` (±127) or ``int8_7bit``."""
    return _RANGES[dtype]


def activation_params(lo: float, hi: float, dtype: str = "uint8", symmetric: bool = False) -> QParams:
    """Scalar parameters for an activation whose observed range is [lo, hi]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        qmin, qmax, np_type = qrange("int8")
        scale = max(abs(lo), abs(hi)) / qmax
        return QParams(np.float32(max(scale, MIN_SCALE)), np.array(0, dtype=np_type))
    qmin, qmax, np_type = qrange(dtype)
    scale = max((hi - lo) / (qmax - qmin), MIN_SCALE)
    zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return QParams(np.float32(scale), np.array(zero_point, dtype=np_type))


def weight_params(weight: np.ndarray, axis: int | None, bits7: bool = False) -> QParams:
    """Symmetric int8 parameters of a weight, per channel along ``axis`` (None: per tensor)."""
    qmax = 63 if bits7 else 127
    w = np.abs(weight.astype(np.float64))
    if axis is None:
        amax = np.asarray(w.max() if w.size else 0.0)
    else:
        amax = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).max(axis=1)
    scale = np.maximum(amax / qmax, MIN_SCALE).astype(np.float32)
    zero_point = np.zeros(scale.shape, dtype=np.int8)
    return QParams(scale, zero_point, axis if axis is not None else None)


def _broadcast(values: np.ndarray, params: QParams, ndim: int) -> np.ndarray:
    if params.axis is None or np.ndim(values) == 0:
        return values
    shape = [1] * ndim
    shape[params.axis] = -1
    return values.reshape(shape)


def quantize(x: np.ndarray, params: QParams, bits7: bool = False) -> np.ndarray:
    """QuantizeLinear in numpy (round half to even, as ONNX specifies)."""
    if params.dtype == np.uint8:
        qmin, qmax = 0, 255
    else:
        qmin, qmax = (-64, 63) if bits7 else (-128, 127)
    scale = _broadcast(params.scale.astype(np.float64), params, x.ndim)
    zp = _broadcast(params.zero_point.astype(np.float64), params, x.ndim)
    q = np.rint(x.astype(np.float64) / scale) + zp
    return np.clip(q, qmin, qmax).astype(params.dtype)


def dequantize(q: np.ndarray, params: QParams) -> np.ndarray:
    scale = _broadcast(params.scale.astype(np.float32), params, q.ndim)
    zp = _broadcast(params.zero_point.astype(np.float32), params, q.ndim)
    return ((q.astype(np.float32) - zp) * scale).astype(np.float32)


def bias_params(input_scale: np.ndarray, weight: QParams, bias: np.ndarray) -> tuple[np.ndarray, QParams]:
    """int32 bias and its parameters: scale = s_input · s_weight (per channel), zero point 0."""
    scale = (np.float64(input_scale) * weight.scale.astype(np.float64)).astype(np.float32)
    scale = np.broadcast_to(scale, bias.shape) if scale.ndim else scale
    q = np.rint(bias.astype(np.float64) / np.maximum(scale.astype(np.float64), MIN_SCALE))
    q = np.clip(q, -(2**31), 2**31 - 1).astype(np.int32)
    axis = 0 if np.ndim(scale) else None
    return q, QParams(np.ascontiguousarray(scale, dtype=np.float32), np.zeros(np.shape(scale), np.int32), axis)
