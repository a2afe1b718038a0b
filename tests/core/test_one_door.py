"""One door to ONNX Runtime: the passes and the libraries they use run and time models only
through the pass context (``onnxslim/core/context.py``), which owns provider, threads, the
fixed-batch rule and the record of latency-driven choices.

Checked statically (ast), so an import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: package name -> folder, for the packages that must go through the context
GUARDED = {
    "onnxslim.passes": ROOT / "passes",
    "onnxslim.quant": ROOT / "onnxslim" / "quant",
    "onnxslim.lowrank": ROOT / "onnxslim" / "lowrank",
    "onnxslim.sparse": ROOT / "onnxslim" / "sparse",
    "onnxslim.analysis": ROOT / "onnxslim" / "analysis",
}
FORBIDDEN = ("onnxruntime", "onnxslim.runtime.session", "onnxslim.runtime.bench")


def _imports(source: str, package: str) -> list[str]:
    """Every module ``source`` imports (``from a import b`` counts as ``a`` and ``a.b``; relative
    imports resolved against ``package``), and modules named to ``importlib.import_module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("import_module", "__import__") and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append(node.args[0].value)
    return found


def _offences(source: str, package: str) -> list[str]:
    bad = [name for name in _imports(source, package)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    # CPU features are read in runtime/cpu.py and reached as ctx.cpu
    bad += [node.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/proc/" in node.value]
    return bad


def _modules():
    for package, folder in GUARDED.items():
        for path in sorted(folder.glob("*.py")):
            yield package, path


def test_the_guarded_packages_exist():
    assert all(folder.is_dir() for folder in GUARDED.values())
    assert len(list(_modules())) > 40


@pytest.mark.parametrize(("package", "path"), list(_modules()), ids=lambda v: getattr(v, "name", ""))
def test_no_guarded_module_opens_or_times_a_model_itself(package, path):
    assert _offences(path.read_text(encoding="utf-8"), package) == []


@pytest.mark.parametrize("source", [
    "import onnxruntime as ort",
    "import onnxruntime.quantization",
    "from onnxruntime import InferenceSession",
    "from onnxslim.runtime.session import make_session",
    "from onnxslim.runtime import bench",
    "from ..runtime.session import make_session",
    "from ..runtime import session",
    "def f():\n    from onnxslim.runtime.bench import measure_latency",
    "import importlib\nort = importlib.import_module('onnxruntime')",
    "FLAGS = open('/proc/cpuinfo').read()",
])
def test_the_check_catches_every_way_in(source):
    assert _offences(source, "onnxslim.quant")


@pytest.mark.parametrize("source", [
    "from onnxslim.core.context import PassContext",
    "from onnxslim.runtime.parity import Tolerance",
    "from ..runtime.feeds import random_feeds",
])
def test_the_check_lets_the_rest_through(source):
    assert _offences(source, "onnxslim.quant") == []
