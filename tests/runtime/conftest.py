"""Tiny models shared by the runtime tests, written as ONNX text.

Builders are handed out as fixtures (``build``, ``chain``) because pytest runs in importlib
mode, where test modules cannot import this file.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

HEADER = '<ir_version: 10, opset_import: ["": 17]>'


def _parse(text: str, **initializers: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(HEADER + text)
    for name, value in initializers.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def _chain(scale: float = 2.0, shift: float = 1.0, width: int = 5) -> onnx.ModelProto:
    model = _parse(
        f"""g (float[N,{width}] X) => (float[N,{width}] Y) {{
            A = Relu(X)
            M = Mul(A, S)
            Y = Add(M, T)
        }}""",
        S=np.full(width, scale, np.float32),
        T=np.full(width, shift, np.float32),
    )
    for node, name in zip(model.graph.node, ("relu", "mul", "add"), strict=True):
        node.name = name
    return model


@pytest.fixture
def build():
    """build(text, **initializers) -> checked ModelProto (opset 17)."""
    return _parse


@pytest.fixture
def chain():
    """chain(scale, shift, width) -> Y = Relu(X) * scale + shift, nodes relu, mul, add."""
    return _chain


@pytest.fixture
def mlp() -> onnx.ModelProto:
    """Y[N,3] = Relu(X[N,4] @ W + B)."""
    rng = np.random.default_rng(0)
    return _parse(
        """g (float[N,4] X) => (float[N,3] Y) {
            H = MatMul(X, W)
            Z = Add(H, B)
            Y = Relu(Z)
        }""",
        W=rng.standard_normal((4, 3)).astype(np.float32),
        B=rng.standard_normal(3).astype(np.float32),
    )
