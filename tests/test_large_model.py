"""The real > 2 GB path: a 2.4 GB model with external data through the default pipeline.

Generated in the test (38 Gemm layers of 4000 x 4000, constant-filled weights, written tensor by
tensor), then ``optimize`` with verification: every exact pass, the checker and shape inference
on the weightless copy, the output written as OUT.onnx + OUT.onnx.data, the input's files left as
they were. It needs about 5 GB of disk and took 60 s on the 2-core machine (model generation
included). Its peak memory and wall time are measured by ``python benchmarks/simplify.py --huge``
(the same model), not here.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import onnx
import pytest

from onnxslim import api

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _large_models():
    spec = importlib.util.spec_from_file_location("large_models", REPO / "benchmarks" / "large_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def big_dir(tmp_path):
    """tmp_path, emptied after the test: pytest keeps the last runs' folders, 5 GB each here."""
    yield tmp_path
    for path in tmp_path.iterdir():
        path.unlink()


def test_a_model_over_2gb_goes_through_the_default_pipeline(big_dir):
    tmp_path = big_dir
    source = _large_models().dense_stack(tmp_path / "huge.onnx", 38, 4000, external=True, fill="constant")
    data = tmp_path / "huge.onnx.data"
    assert data.stat().st_size > 2**31
    before = {p.name: _digest(p) for p in (source, data)}
    target = tmp_path / "huge.slim.onnx"
    outcome = api.optimize(source, target, api.RunOptions(threads=1, latency_seconds=0.5))
    assert outcome.exit_code == 0, outcome.report.get("parity")
    assert outcome.report["parity"]["held"]
    assert {p.name: _digest(p) for p in (source, data)} == before
    assert (tmp_path / "huge.slim.onnx.data").stat().st_size > 2**31
    result = onnx.load(str(target), load_external_data=False)
    assert sum(1 for n in result.graph.node if n.op_type == "Mul") == 0  # fold-affine folded them
    assert outcome.report["input"]["nodes"] == 4 * 38 and outcome.report["output"]["nodes"] == 2 * 38
    assert outcome.report["latency"]["CPUExecutionProvider"]["interleaved"] is False  # one session at a time
