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
"""

from __future__ import annotations

import functools
import platform


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return bool({"avx512_vnni", "avx_vnni", "avx512vnni"} & flags)


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def saturation_risk(provider: str, activation_type: str, flags: frozenset[str] | None = None) -> bool:
    """True when uint8 x int8 products may saturate in int16 (x86 CPU without VNNI)."""
    if provider != "CPUExecutionProvider" or activation_type != "uint8":
        return False
    if flags is None and not is_x86():
        return False
    return not has_vnni(flags)


def describe(flags: frozenset[str] | None = None) -> str:
    flags = cpu_flags() if flags is None else flags
    simd = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return f"{simd}, {'VNNI' if has_vnni(flags) else 'no VNNI'}"
