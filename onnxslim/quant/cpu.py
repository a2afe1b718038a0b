"""Which integer formats run fast on this machine.

ONNX Runtime's x86 int8 GEMM (MLAS) multiplies uint8 activations by int8 weights. Without
VNNI it uses AVX2's ``vpmaddubsw``, which adds two u8·s8 products into a *saturating* int16:
255 · 127 · 2 overflows it, so a layer whose inputs sit near the top of their range can
saturate (the digits CNN lost 40 points this way under onnxruntime's quantize_static).
With VNNI (``avx512_vnni`` or ``avx_vnni``) the products accumulate straight into int32.

* U8S8 (uint8 activations, int8 weights) is the fast path on every x86 CPU; S8S8 activations
  are shifted to uint8 inside MLAS at extra cost (measured 1.6-2.1x slower here).
* Without VNNI, weights of a layer that saturates get the 7-bit range [-64, 63]
  (``qparams.weight_params(bits7=True)``); ``quantize`` finds those layers with the real
  kernels (see ``passes/quantize.py``).

The CPU itself is read in ``runtime/cpu.py`` and handed over by the pass context (``ctx.cpu``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxslim.runtime.cpu import CpuFeatures


def saturation_risk(provider: str, activation_type: str, cpu: CpuFeatures) -> bool:
    """True when uint8 x int8 products may saturate in int16 (x86 CPU without VNNI)."""
    if provider != "CPUExecutionProvider" or activation_type != "uint8":
        return False
    return cpu.x86 and not cpu.vnni
