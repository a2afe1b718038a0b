"""Explicit pass registry. A name registered twice by different classes is an error.

The second-registration check is what catches ``passes/`` being imported twice (once as
``onnxslim.passes`` and once as a top-level ``passes`` from the repository root).

The built-in passes are imported on the first lookup or listing, not when ``onnxslim`` is:
they pull in ONNX Runtime, which ``import onnxslim.errors`` or ``onnxslim --help`` never need.
The lossy ones wait until a pipeline names one (``onnxslim.passes.LAZY``).
"""

from __future__ import annotations

import importlib

from onnxslim.core.pass_base import Pass
from onnxslim.errors import OptionError

_REGISTRY: dict[str, type[Pass]] = {}


class RegistryError(RuntimeError):
    """A programming error in pass registration (never a user error)."""


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls:
        raise RegistryError(
            f"pass {cls.name!r} registered twice: {other.__module__} and {cls.__module__} "
            "(import the passes as onnxslim.passes, never as a top-level 'passes')"
        )
    _REGISTRY[cls.name] = cls
    return cls


def get_pass(name: str) -> type[Pass]:
    _register_builtins(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise OptionError(name, None, f"unknown pass (known passes: {known})") from None


def all_passes() -> list[type[Pass]]:
    """Registered passes, exact ones first, each group in name order."""
    _register_builtins(None)
    return sorted(_REGISTRY.values(), key=lambda c: (not c.exact, c.name))


def _register_builtins(name: str | None) -> None:
    """Import the pass modules that register ``name``: the package's own (the exact passes), then
    the lazy module of ``name`` (``onnxslim.passes.LAZY``); every lazy one for ``None`` or an
    unknown name, so that a listing or an error names them all. Python imports each once."""
    package = importlib.import_module("onnxslim.passes")
    if name in _REGISTRY:
        return
    modules = [package.LAZY[name]] if name in package.LAZY else list(package.LAZY.values())
    for module in modules:
        importlib.import_module(f"{package.__name__}.{module}")
