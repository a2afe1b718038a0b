"""ONNX Runtime sessions: provider names, optimization levels, threads and >2 GB models.

Parity that decides whether a model ships runs at ORT's deployed level (``ORT_ENABLE_ALL``), so
quantized graphs execute the real integer kernels; ``optimize=False`` (``ORT_DISABLE_ALL``) is
the extra check of exact passes and the level used to expose intermediate tensors.

A protobuf message cannot be serialized past 2 GiB, so a model whose tensors add up to
``ir.external.LARGE_MODEL_BYTES`` or more is written to a temporary directory with external data
(``ir.external.save_for_ort``) and loaded by path. The caller's ``ModelProto`` is left as it was.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort

from onnxslim.errors import DataError, UsageError
from onnxslim.ir import external
from onnxslim.ir.external import save_for_ort, tensor_bytes
from onnxslim.ir.refs import has_references
from onnxslim.runtime import ort_nodes

logger = logging.getLogger(__name__)

#: ORT severity 4 = fatal only: its warnings are noise for users, and its errors reach us as
#: exceptions (logged, they would print a second, coloured copy on stderr).
_LOG_SEVERITY = 4

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_INSTALL_HINTS = {
    "cpu": "install onnxslim[cpu] (onnxruntime)",
    "cuda": "install onnxslim[gpu] (onnxruntime-gpu) instead of onnxruntime",
    "tensorrt": "install onnxslim[gpu] (onnxruntime-gpu) instead of onnxruntime, plus TensorRT",
}


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Map CLI provider names (``cpu``, ``cuda``, ``tensorrt``) to ORT provider names.

    Full ORT names (``CUDAExecutionProvider``) are accepted too; duplicates are dropped.

    Raises:
        UsageError: an unknown name, or a provider this onnxruntime build lacks; the message
            names what to install.
    """
    available = set(ort.get_available_providers())
    by_full_name = {full.lower(): short for short, full in PROVIDER_NAMES.items()}
    resolved: list[str] = []
    for raw in names:
        key = raw.strip().lower()
        short = key if key in PROVIDER_NAMES else by_full_name.get(key)
        if short is None:
            known = ", ".join(PROVIDER_NAMES)
            raise UsageError(f"unknown provider {raw.strip()!r} (known: {known})")
        full = PROVIDER_NAMES[short]
        if full not in available:
            raise UsageError(
                f"provider {short!r} is not available in this onnxruntime build; {_INSTALL_HINTS[short]}"
            )
        if full not in resolved:
            resolved.append(full)
    if not resolved:
        raise UsageError("no execution provider given (known: cpu, cuda, tensorrt)")
    return resolved


def make_session(
    model: onnx.ModelProto | str | os.PathLike[str],
    provider: str = "CPUExecutionProvider",
    threads: int | None = None,
    optimize: bool = True,
) -> ort.InferenceSession:
    """Create an ORT session for ``model`` on one provider.

    Args:
        model: a ModelProto or the path of an .onnx file (external data resolved beside it).
        provider: an ORT provider name (see ``resolve_providers``); CPU is the fallback for
            nodes the provider cannot run, as ORT itself does.
        threads: intra-op threads; None lets ORT choose. Inter-op threads are always 1.
        optimize: True for ORT's deployed level (``ORT_ENABLE_ALL``), False for
            ``ORT_DISABLE_ALL``.

    Raises:
        UsageError: the provider failed to initialise (ORT would silently fall back to CPU,
            and every latency reported afterwards would be mislabelled).
    """
    options = _session_options(threads, optimize)
    providers = _provider_chain(provider)
    if not isinstance(model, onnx.ModelProto):
        session = ort.InferenceSession(os.fspath(model), options, providers=providers)
    elif tensor_bytes(model) < external.LARGE_MODEL_BYTES and not has_references(model):  # ORT refuses refs' absolute paths
        session = ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    else:
        session = _session_from_external(model, options, providers)
    if provider not in session.get_providers():
        raise UsageError(f"provider {provider!r} failed to initialise on this machine")
    return session


def optimized_node_count(
    model: onnx.ModelProto | str | os.PathLike[str], provider: str = "CPUExecutionProvider"
) -> int:
    """Top-level node count of ``model`` after ORT's own graph optimizations
    (``ort_nodes.optimized_node_count``: ``ORT_ENABLE_EXTENDED``, weights never read back).
    ORT logs nothing: a model it cannot load raises, and the caller says why.
    """
    if not isinstance(model, onnx.ModelProto):
        return ort_nodes.optimized_node_count(model, _provider_chain(provider))
    with tempfile.TemporaryDirectory(prefix="onnxslim-ortopt-") as tmp:
        path = save_for_ort(model, tmp, force_external=tensor_bytes(model) >= external.LARGE_MODEL_BYTES)
        return ort_nodes.optimized_node_count(path, _provider_chain(provider))


def run(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run ``session`` on ``feeds`` (only the session's inputs are passed); numpy outputs."""
    return bind(session, feeds)()


def bind(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> Callable[[], list[np.ndarray]]:
    """A zero-argument callable running ``session`` on ``feeds``, with all conversions done.

    Used by the benchmark so that the timed call is the ORT run alone. bfloat16 arrays
    (``ml_dtypes.bfloat16``) go through OrtValues, because ORT's numpy bridge rejects that
    dtype in both directions.

    Raises:
        DataError: ``feeds`` lacks one of the session's inputs.
    """
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise DataError(f"no data for model input(s) {', '.join(missing)} (got: {', '.join(feeds)})")
    feeds = {n: feeds[n] for n in names}
    if not any(_is_bfloat16(a) for a in feeds.values()) and not any(
        o.type == "tensor(bfloat16)" for o in session.get_outputs()
    ):
        return lambda: session.run(None, feeds)
    values = {n: _to_ortvalue(np.ascontiguousarray(a)) for n, a in feeds.items()}
    return lambda: [_ortvalue_to_numpy(v) for v in session.run_with_ort_values(None, values)]


def _session_from_external(model, options, providers) -> ort.InferenceSession:
    tmp = tempfile.TemporaryDirectory(prefix="onnxslim-large-", ignore_cleanup_errors=True)
    path = save_for_ort(model, tmp.name, force_external=True)
    logger.info("model is too large for one protobuf; loading it from %s", tmp.name)
    session = ort.InferenceSession(path, options, providers=providers)
    # ORT may memory-map the weights file: keep the directory alive as long as the session.
    session._onnxslim_tmpdir = tmp
    return session


def _session_options(threads: int | None, optimize: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.log_severity_level = _LOG_SEVERITY
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads is not None:
        if threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def _provider_chain(provider: str) -> list[str]:
    chain = [provider]
    if provider == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in ort.get_available_providers():
        chain.append("CUDAExecutionProvider")  # TensorRT hands unsupported subgraphs to CUDA
    if provider != "CPUExecutionProvider":
        chain.append("CPUExecutionProvider")
    return chain


def _is_bfloat16(array: np.ndarray) -> bool:
    return getattr(array, "dtype", None) is not None and array.dtype.name == "bfloat16"


def _to_ortvalue(array: np.ndarray) -> ort.OrtValue:
    if _is_bfloat16(array):
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            array.view(np.uint16), onnx.TensorProto.BFLOAT16
        )
    return ort.OrtValue.ortvalue_from_numpy(array)


def _ortvalue_to_numpy(value: ort.OrtValue) -> np.ndarray:
    if value.data_type() != "tensor(bfloat16)":
        return value.numpy()
    shape = tuple(value.shape())
    count = int(np.prod(shape, dtype=np.int64))
    # ORT cannot hand a bfloat16 tensor to numpy; copy its CPU buffer as uint16 and reinterpret.
    buffer = (ctypes.c_uint16 * count).from_address(value.data_ptr())
    return np.array(buffer, dtype=np.uint16).view(ml_dtypes.bfloat16).reshape(shape)
