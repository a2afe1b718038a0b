"""The import rules of issue 14: ir/ is the foundation, and the cheap entry points stay cheap.

``ir/`` imports nothing from ``core``, ``runtime`` or ``passes`` (read from the source, so an
import inside a function counts too); ``import onnxslim.errors`` and ``onnxslim --help`` do not
start ONNX Runtime (checked in a fresh interpreter, where nothing was imported before).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

IR = Path(__file__).resolve().parents[1] / "onnxslim" / "ir"
FORBIDDEN = ("onnxslim.core", "onnxslim.runtime", "onnxslim.passes", "onnxruntime")


def _imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, at any depth; ``from onnxslim import x`` as onnxslim.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("path", sorted(IR.glob("*.py")), ids=lambda p: p.name)
def test_ir_imports_nothing_above_it(path):
    bad = [f"{path.name}:{line} imports {name}" for line, name in _imported(path)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, "; ".join(bad)


def test_the_rule_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from onnxslim import runtime\n    import onnxslim.core.context\n")
    assert {name for _, name in _imported(sample)} >= {"onnxslim.runtime", "onnxslim.core.context"}


@pytest.mark.parametrize("code", [
    "import onnxslim.errors",
    "from onnxslim.cli import main; main(['--help'])",
    "from onnxslim.cli import main; main(['optimize', '--help'])",
    "from onnxslim.cli import main; main(['inspect', '--help'])",
])
def test_cheap_entry_points_do_not_import_onnxruntime(code):
    probe = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\nprint('onnxruntime' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_the_library_itself_still_registers_every_pass():
    done = subprocess.run([sys.executable, "-c", "from onnxslim.core.registry import get_pass; "
                           "print(get_pass('fold-constants').name)"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "fold-constants"
