"""Shared test helpers: tiny models from text, running a pass, parity with ONNX Runtime.

Import as ``from tests.helpers import ...`` is not possible under importlib mode; tests import
this file with ``import helpers`` thanks to ``tests/conftest.py`` putting tests/ on sys.path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.ir.io import to_graph, to_model
from onnxslim.runtime.session import make_session
# the tests judge an exact pass by the bound the library itself calls exact
from onnxslim.runtime.tolerance import EXACT_ATOL, EXACT_RTOL


def model_from_text(text: str, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """``onnx.parser`` model text plus initializers given as arrays."""
    model = onnx.parser.parse_model(text)
    for name, value in (weights or {}).items():
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def run_pass(the_pass: Pass, model: onnx.ModelProto, ctx: PassContext | None = None) -> tuple[onnx.ModelProto, PassResult]:
    """Run one pass on ``model`` the way the manager does; return the exported result."""
    ctx = ctx or PassContext(model)
    graph = to_graph(model)
    result = the_pass.run(graph, ctx)
    graph.toposort(recurse_functions=False, mode="nodes")
    out = to_model(graph, model)
    onnx.checker.check_model(out, full_check=True)
    return out, result


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    session = make_session(model, optimize=optimize)
    return session.run(None, feeds)


def assert_parity(before: onnx.ModelProto, after: onnx.ModelProto, feeds: dict[str, np.ndarray],
                  atol: float = EXACT_ATOL, rtol: float = EXACT_RTOL, levels: Sequence[bool] = (True, False)) -> None:
    """Outputs match at ORT's deployed level and, by default, with ORT's optimizations off too."""
    for optimize in levels:
        for a, b in zip(run_model(before, feeds, optimize), run_model(after, feeds, optimize)):
            np.testing.assert_allclose(b, a, atol=atol, rtol=rtol)


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def graph_of(model: onnx.ModelProto) -> gs.Graph:
    return to_graph(model)


def models_module(name: str):
    """Import ``models/<name>.py`` (fetch, realdata, evaluate) by path: models/ is not a package."""
    import importlib.util
    import sys
    from pathlib import Path

    key = f"onnxslim_models_{name}"
    if key in sys.modules:
        return sys.modules[key]
    path = Path(__file__).resolve().parents[1] / "models" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
