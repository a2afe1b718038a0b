"""Sessions: provider names, optimization levels, threads, the >2 GB path, ORT node counts."""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest

from onnxslim.errors import UsageError
from onnxslim.ir import external
from onnxslim.ir.external import save_for_ort, tensor_bytes
from onnxslim.runtime.session import make_session, optimized_node_count, resolve_providers, run


def test_resolve_providers_maps_and_dedupes():
    assert resolve_providers(["cpu", " CPU ", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_resolve_providers_unknown_name():
    with pytest.raises(UsageError, match=r"unknown provider 'tpu' \(known: cpu, cuda, tensorrt\)"):
        resolve_providers(["tpu"])


def test_resolve_providers_missing_provider_names_what_to_install(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(
        UsageError, match=r"'cuda' is not available .*install onnxslim\[gpu\] \(onnxruntime-gpu\)"
    ) as info:
        resolve_providers(["cpu", "cuda"])
    assert "\n" not in str(info.value)


def test_resolve_providers_available_gpu(monkeypatch):
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert resolve_providers(["cuda", "cpu"]) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_resolve_providers_empty():
    with pytest.raises(UsageError, match="no execution provider"):
        resolve_providers([])


@pytest.mark.parametrize(
    ("optimize", "level"),
    [(True, ort.GraphOptimizationLevel.ORT_ENABLE_ALL), (False, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)],
)
def test_make_session_levels_and_threads(mlp, optimize, level):
    sess = make_session(mlp, threads=2, optimize=optimize)
    options = sess.get_session_options()
    assert options.graph_optimization_level == level
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 1
    assert options.log_severity_level == 4  # fatal only: errors reach us as exceptions
    x = np.ones((2, 4), np.float32)
    (y,) = run(sess, {"X": x, "unused": x})  # extra feeds are ignored
    assert y.shape == (2, 3)


def test_make_session_rejects_bad_threads(mlp):
    with pytest.raises(UsageError, match="threads"):
        make_session(mlp, threads=0)


def test_make_session_from_path(mlp, tmp_path):
    path = save_for_ort(mlp, str(tmp_path), force_external=False)
    assert make_session(path).get_outputs()[0].name == "Y"


def test_large_model_goes_through_external_data(chain, monkeypatch):
    model = chain(width=600)  # two 2400-byte initializers: above the 1 KiB external threshold
    before = model.SerializeToString()
    x = np.random.default_rng(0).standard_normal((3, 600)).astype(np.float32)
    expected = run(make_session(model), {"X": x})[0]
    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", 1)
    serialize = type(model).SerializeToString
    sizes = []

    def watched(self, *args, **kwargs):
        sizes.append(tensor_bytes(self))
        return serialize(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "SerializeToString", watched)
    try:
        sess = make_session(model)
    finally:
        monkeypatch.undo()
    assert sizes and max(sizes) == 0  # only the weightless graph went through protobuf
    assert os.path.exists(os.path.join(sess._onnxslim_tmpdir.name, "weights.bin"))
    np.testing.assert_array_equal(run(sess, {"X": x})[0], expected)
    assert model.SerializeToString() == before  # the caller's proto is restored


def test_tensor_bytes_counts_raw_and_typed_fields(chain):
    assert tensor_bytes(chain(width=10)) == 2 * 10 * 4


def test_optimized_node_count(build, monkeypatch):
    model = build(
        """g (float[N,4] X) => (float[N,4] Y) {
            A = Identity(X)
            B = Identity(A)
            C = Relu(B)
            Y = Identity(C)
        }"""
    )
    count = optimized_node_count(model)
    assert isinstance(count, int) and 1 <= count < len(model.graph.node)
    monkeypatch.setattr(external, "LARGE_MODEL_BYTES", 0)
    assert optimized_node_count(model) == count


def test_bfloat16_round_trip(build):
    model = build(
        "g (bfloat16[N,4] X) => (bfloat16[N,4] Y, float[N,4] Z) { Y = Identity(X)\n Z = Cast<to=1>(X) }"
    )
    x = np.arange(8, dtype=np.float32).reshape(2, 4).astype(ml_dtypes.bfloat16)
    y, z = run(make_session(model), {"X": x})
    assert y.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(y.astype(np.float32), z)
    np.testing.assert_array_equal(z, x.astype(np.float32))
