"""Test helpers for passes: tiny models from text, running a pass as the manager does, parity with
ONNX Runtime under the library's own ``exact`` bound.

They live in the library, not in ``tests/``, because the tests run in pytest's importlib mode,
where a helper module inside ``tests/`` cannot be imported (pytest's documented advice: keep test
utilities with the library, fixtures in ``conftest.py``). Anyone writing a pass can use them too.
``prune_nets`` holds the channel-pruning test networks and their soft-pruned reference;
``models_module`` loads the scripts of a source checkout's ``models/`` folder.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Pass, PassResult
from onnxslim.ir.io import to_graph, to_model
from onnxslim.runtime.session import make_session
# the tests judge an exact pass by the bound the library itself calls exact
from onnxslim.runtime.tolerance import EXACT_ATOL, EXACT_RTOL, exact_bounds

__all__ = ["EXACT_ATOL", "EXACT_RTOL", "assert_exact", "assert_parity", "model_from_text", "models_module",
           "op_types", "run_model", "run_pass"]


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
    """Outputs match element by element (``|b - a| ≤ atol + rtol·|a|``, stricter than ``exact``) at
    ORT's deployed level and, by default, with ORT's optimizations off too."""
    for optimize in levels:
        for a, b in zip(run_model(before, feeds, optimize), run_model(after, feeds, optimize)):
            np.testing.assert_allclose(b, a, atol=atol, rtol=rtol)


def assert_exact(before: onnx.ModelProto, after: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """The contract's ``exact`` on every output, shapes and dtypes equal, at ORT's deployed level and
    with its optimizations off: max_abs ≤ atol + rtol × max|a|, the bounds ``exact_bounds`` gives
    the output's dtype."""
    for optimize in (True, False):
        for a, b in zip(run_model(before, feeds, optimize), run_model(after, feeds, optimize)):
            assert a.shape == b.shape and a.dtype == b.dtype
            if not a.size:
                continue
            atol, rtol = exact_bounds(str(a.dtype))
            budget = atol + rtol * float(np.max(np.abs(a)))
            err = float(np.max(np.abs(a.astype(np.float64) - b)))
            assert err <= budget, f"max_abs {err:.3g} > {budget:.3g}"


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def models_module(name: str, folder: str = "models") -> types.ModuleType:
    """Import ``models/<name>.py`` (fetch, realdata, evaluate, corpus...) of the source checkout by
    path, once (``folder="benchmarks"`` for a benchmark script): those scripts are not shipped with
    the package, their folders are no packages, and putting them on ``sys.path`` would let their
    generic names (``corpus``, ``evaluate``) shadow installed packages."""
    key = f"onnxslim_{folder}_{name}"
    if key in sys.modules:
        return sys.modules[key]
    path = Path(__file__).resolve().parents[2] / folder / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {folder}/ scripts exist only in a source checkout")
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
