"""ORT's node count of a model, on its weightless copy: what ORT's own optimizer leaves of it.

The count runs on the weightless copy (``ir.io.write_weightless``) with stub float weights:
ORT's fusions look at structure and small constants, which are kept as they are. The stub
fill 0x3F3F3F3F is 0.747 in float32, not the 0 or 1 that ORT's no-op elimination looks for.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import subprocess
import sys
import tempfile
import threading

import onnx

from onnxslim.ir.io import write_weightless
from onnxslim.ir.stats import all_tensor_bytes
from onnxslim.runtime.session import optimized_node_count

#: Models with more tensor bytes than this get ORT's node count in a child process.
ISOLATE_BYTES = 64 << 20
_ORT_STUB_FILL = 0x3F
_CLOSE_SECONDS = 5


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
                return _CHILD.count(path)
            try:
                return optimized_node_count(path), None
            except Exception as exc:  # noqa: BLE001 - any ORT refusal: the count is skipped, with why
                return None, _skipped(str(exc) or type(exc).__name__)

    return _COUNTER.submit(count)


#: Two threads: the output's count starts as soon as the output is written instead of waiting for
#: the input's (ORT builds each session in C++, without the GIL; minilm: 0.7 s per count). Large
#: models take turns in the one child (``_Child``).
_COUNTER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="onnxslim-nodes")


class _Child:
    """The ORT child that counts large models, started at the first count and kept for the next:
    a run counts its input and its output, and a second child would pay Python's and ORT's
    start again (0.3 s of CPU here). It reads model paths on stdin and answers a line each
    (``ort_nodes.serve``); it ends when this process closes its stdin (``close``, at exit).
    """

    command = [sys.executable, "-m", "onnxslim.runtime.ort_nodes"]

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None
        self.log = None  # the child's stderr: read only to say why it died

    def count(self, path: str) -> tuple[int | None, str | None]:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                if self.log is not None:
                    self.log.close()
                self.log = tempfile.TemporaryFile()
                self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                stderr=self.log, text=True)
            try:
                self.process.stdin.write(path + "\n")
                self.process.stdin.flush()
                answer = self.process.stdout.readline().strip()
            except (BrokenPipeError, OSError):
                answer = ""
            if answer.startswith("!"):
                return None, _skipped(answer[1:])
            if answer.isdigit():
                return int(answer), None
            if answer:  # something else wrote on its stdout: the answers can no longer be trusted
                self.process.kill()
                self._death()
                return None, _skipped(f"unexpected answer from the counting process: {answer[:80]!r}")
            return None, _skipped(self._death())

    def close(self) -> None:
        """End the child (its stdin closes, it returns) and reap it, so its time and memory are
        accounted to this process as any child's are."""
        with self.lock:
            if self.process is None:
                return
            self.process.stdin.close()
            try:
                self.process.wait(timeout=_CLOSE_SECONDS)
            except subprocess.TimeoutExpired:  # still counting a model nobody waits for
                self.process.kill()
                self.process.wait()
            self.process = None
            self.log.close()
            self.log = None

    def _death(self) -> str:
        """Why the child stopped answering (its last stderr line); the next count starts another."""
        code = self.process.wait()
        self.process = None
        self.log.seek(0)
        lines = [line for line in self.log.read().decode(errors="replace").splitlines() if line.strip()]
        self.log.close()
        self.log = None
        return lines[-1] if lines else f"the counting process ended with exit code {code}"


_CHILD = _Child()
atexit.register(_CHILD.close)


def _skipped(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else message
    return f"nodes after ORT: skipped, ORT cannot build a session for this model ({first})"
