"""The host CPU's features that decide which integer kernels ONNX Runtime runs.

Read from /proc/cpuinfo (empty flags where it is unavailable) and ``platform``; passes reach it
only through ``PassContext.cpu``, so a test can hand them any CPU (see ``quant/cpu.py`` for what
the flags mean to int8).
"""

from __future__ import annotations

import dataclasses
import functools
import platform

_VNNI = frozenset({"avx512_vnni", "avx_vnni", "avx512vnni"})


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """The feature flags of one CPU and whether it is x86 (where MLAS's AVX2 int8 path applies)."""

    flags: frozenset[str]
    x86: bool = True

    @property
    def vnni(self) -> bool:
        return bool(_VNNI & self.flags)

    def describe(self) -> str:
        simd = "avx512" if "avx512f" in self.flags else "avx2" if "avx2" in self.flags else "no avx2"
        return f"{simd}, {'VNNI' if self.vnni else 'no VNNI'}"


@functools.lru_cache(maxsize=1)
def host_cpu() -> CpuFeatures:
    """This machine's CPU."""
    return CpuFeatures(_cpu_flags(), platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"))


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
