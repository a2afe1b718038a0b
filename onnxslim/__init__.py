"""onnxslim: compress ONNX models and prove the result still computes the same thing."""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("onnxruntime") is None:  # pragma: no cover - depends on the install
    raise ImportError(
        "onnxslim needs ONNX Runtime: install it with the 'cpu' extra (pip install 'onnxslim[cpu]') "
        "or the 'gpu' extra (pip install 'onnxslim[gpu]')"
    )

__version__ = "0.1.0"
