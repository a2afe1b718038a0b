"""What the benchmark scripts share: the repository paths and the models/ modules.

``models/`` is a folder of scripts, not a package, so its modules are imported by path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def models_module(name: str) -> ModuleType:
    """Import ``models/<name>.py`` (fetch, realdata, evaluate) once, under its own name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "models" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module
