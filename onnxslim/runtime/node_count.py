"""ORT's node count of a model, on its weightless copy: what ORT's own optimizer leaves of it.

The count runs on the weightless copy (``ir.io.write_weightless``) with stub float weights:
ORT's fusions look at structure and small constants, which are kept as they are. The stub
fill 0x3F3F3F3F is 0.747 in float32, not the 0 or 1 that ORT's no-op elimination looks for.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import onnx

from onnxslim.ir.external import tensor_bytes
from onnxslim.ir.io import write_weightless
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
    with tempfile.TemporaryDirectory(prefix="onnxslim-nodes-") as tmp:
        path = write_weightless(model, tmp, fill=_ORT_STUB_FILL)
        if tensor_bytes(model) > ISOLATE_BYTES:
            return _count_in_child(path)
        try:
            return optimized_node_count(path), None
        except Exception as exc:  # noqa: BLE001 - any ORT refusal: the count is skipped, with why
            return None, _skipped(str(exc) or type(exc).__name__)


def _count_in_child(path: str) -> tuple[int | None, str | None]:
    code = "import sys; from onnxslim.runtime.session import optimized_node_count as c; print(c(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return int(done.stdout.split()[-1]), None
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return None, _skipped(lines[-1] if lines else f"exit code {done.returncode}")


def _skipped(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else message
    return f"nodes after ORT: skipped, ORT cannot build a session for this model ({first})"
