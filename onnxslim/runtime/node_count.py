"""ORT's node count of a model, on its weightless copy: what ORT's own optimizer leaves of it.

The count runs on the weightless copy (``ir.io.write_weightless``) with stub float weights:
ORT's fusions look at structure and small constants, which are kept as they are. The stub
fill 0x3F3F3F3F is 0.747 in float32, not the 0 or 1 that ORT's no-op elimination looks for.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import tempfile

import onnx

from onnxslim.ir.io import write_weightless
from onnxslim.ir.stats import all_tensor_bytes
from onnxslim.runtime.session import optimized_node_count

#: Models with more tensor bytes than this get ORT's node count in a child process.
ISOLATE_BYTES = 64 << 20
_ORT_STUB_FILL = 0x3F


def ort_node_count(model: onnx.ModelProto) -> tuple[int | None, str | None]:
    """Top-level node count after ORT's optimizations, on the weightless copy; None and the
    reason when ORT cannot build a session for the model.

    A model whose tensors pass ``ISOLATE_BYTES`` is counted in a child process: ORT's copy of
    its (stub) weights is then never part of this process's memory.
    """
    return count_later(model).result()


def count_later(model: onnx.ModelProto) -> concurrent.futures.Future:
    """``ort_node_count(model)`` as a future: the weightless copy is written now, ORT counts in a
    background thread (a child process for a large model) while the caller goes on."""
    tmp = tempfile.TemporaryDirectory(prefix="onnxslim-nodes-")
    try:
        path = write_weightless(model, tmp.name, fill=_ORT_STUB_FILL)
    except BaseException:
        tmp.cleanup()
        raise
    isolate = all_tensor_bytes(model) > ISOLATE_BYTES

    def count() -> tuple[int | None, str | None]:
        with tmp:
            if isolate:
                return _count_in_child(path)
            try:
                return optimized_node_count(path), None
            except Exception as exc:  # noqa: BLE001 - any ORT refusal: the count is skipped, with why
                return None, _skipped(str(exc) or type(exc).__name__)

    return _COUNTER.submit(count)


#: Two threads: the output's count starts as soon as the output is written instead of waiting for
#: the input's (ORT builds each session in C++, without the GIL; minilm: 0.7 s per count).
_COUNTER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="onnxslim-nodes")


def _count_in_child(path: str) -> tuple[int | None, str | None]:
    # ort_nodes imports ORT alone: onnx's import would be most of the child's time
    done = subprocess.run([sys.executable, "-m", "onnxslim.runtime.ort_nodes", path],
                          capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return int(done.stdout.split()[-1]), None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return None, _skipped(lines[-1] if lines else f"exit code {done.returncode}")


def _skipped(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else message
    return f"nodes after ORT: skipped, ORT cannot build a session for this model ({first})"
