"""The lossy passes are imported when a pipeline names them, and the listing still holds them all."""

from __future__ import annotations

import subprocess
import sys

from onnxslim.core import registry


def test_each_lazy_module_registers_the_pass_it_is_listed_for():
    import onnxslim.passes as package
    for name, module in package.LAZY.items():
        assert registry.get_pass(name).__module__ == f"onnxslim.passes.{module}"
    builtin_lossy = {cls.name for cls in registry.all_passes()
                     if not cls.exact and cls.__module__.startswith("onnxslim.passes.")}
    assert builtin_lossy == set(package.LAZY)  # every lossy pass is lazy, and the listing has them all


def _modules_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                          capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_default_pipeline_imports_no_lossy_pass():
    loaded = _modules_after("from onnxslim.api import DEFAULT_PIPELINE\nfrom onnxslim.core.pipeline import parse\n"
                            "parse(DEFAULT_PIPELINE)")
    assert "onnxslim.passes.fold_affine" in loaded
    assert not loaded & {"onnxslim.passes.quantize", "onnxslim.passes.svd", "onnxslim.passes.prune_channels",
                         "onnxslim.passes.prune_weights"}


def test_naming_a_lossy_pass_imports_only_its_module():
    loaded = _modules_after("from onnxslim.core.pipeline import parse\nparse('dce,svd')")
    assert "onnxslim.passes.svd" in loaded and "onnxslim.passes.quantize" not in loaded


def test_an_unknown_pass_is_told_among_all_of_them():
    code = ("from onnxslim.core.registry import get_pass\n"
            "try:\n    get_pass('no-such-pass')\nexcept Exception as exc:\n    print(str(exc).replace(' ', '_'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert all(name in done.stdout for name in ("prune-channels", "prune-weights", "quantize", "svd", "fold-affine"))
