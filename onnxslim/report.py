"""The JSON report: environment, model costs before and after, passes, parity, latency.

Its shape is fixed by ``docs/report.schema.json`` (a test validates every report against it).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnxslim import __version__

SCHEMA_VERSION = 1


def environment(providers: list[str]) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "providers": providers,
        "available_providers": ort.get_available_providers(),
        "cpu": cpu_description(),
    }


def cpu_description() -> dict[str, Any]:
    """CPU model name and the SIMD flags that decide which int8 kernels ORT runs."""
    model, flags = platform.processor() or "unknown", []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model in ("unknown", "", platform.processor()):
            model = value.strip()
        elif key.strip() == "flags":
            wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "f16c")
            flags = [f for f in value.split() if f in wanted]
            break
    return {"model": model, "flags": flags, "cores": os.cpu_count()}


def write_json(document: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``document`` atomically."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent or ".", prefix=".onnxslim-", suffix=".json", delete=False) as f:
        json.dump(document, f, indent=2, default=_jsonable)
        f.write("\n")
        tmp = f.name
    os.chmod(tmp, 0o666 & ~_umask())  # a temporary file is private (0600); a report is not
    os.replace(tmp, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def header(pipeline: str, providers: list[str]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool_version": __version__,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "environment": environment(providers),
        "pipeline": pipeline,
    }
