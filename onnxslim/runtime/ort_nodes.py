"""ORT's top-level node count of a model file, importing nothing but ONNX Runtime.

``node_count`` runs this module as a child process for large models: ``python -m
onnxslim.runtime.ort_nodes`` reads model paths from stdin and answers each with a line (``serve``);
``python -m onnxslim.runtime.ort_nodes MODEL.onnx`` prints one count. Importing onnx there
cost 0.7-1.2 s per child on the 2-core benchmark machine (almost all of it ml_dtypes' extension
module, which onnx imports), three times ORT's own import and more than ORT's session on the
100 M-parameter model: so this module reads ORT's optimized model with a protobuf wire walk
instead of ``onnx.load``, and imports only ``onnxruntime`` and the standard library.

The count uses ``ORT_ENABLE_EXTENDED`` (constant folding, redundancy elimination, operator
fusions) rather than ``ORT_ENABLE_ALL``: the extra level adds layout transforms (NCHWc reorders
on CPU) that depend on the host's SIMD width, so the count would differ from machine to machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence

import onnxruntime as ort

#: ORT severity 4 = fatal only: a model ORT cannot load raises, and the caller says why.
_QUIET_SEVERITY = 4
#: Tensors of the optimized model from this size go to its side file, which is never read: the
#: count needs the graph's structure only, and the .onnx stays small whatever the model's size
#: (one protobuf cannot pass 2 GiB).
_SIDE_FILE_MIN_BYTES = 1024
_SIDE_FILE = "optimized.bin"
# Protobuf field numbers (onnx.proto) and wire types walked by ``graph_node_count``.
_MODEL_GRAPH, _GRAPH_NODE = 7, 1
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def optimized_node_count(path: str | os.PathLike[str], providers: Sequence[str] = ("CPUExecutionProvider",)) -> int:
    """Top-level node count of the model at ``path`` after ORT's own graph optimizations.

    Raises whatever ORT raises when it cannot build a session for the model.
    """
    try:
        return _count(path, providers, discard_weights=True)
    except Exception:  # noqa: BLE001 - whatever refused, a real side file decides (and its error is the one raised)
        return _count(path, providers, discard_weights=False)


def _count(path: str | os.PathLike[str], providers: Sequence[str], discard_weights: bool) -> int:
    """The count, ORT's optimized model written to a temporary folder. ``discard_weights``: its side
    file is a link to the null device, so the weights ORT writes there go nowhere.

    ORT cannot be told not to save the weights, and writing them was most of a count's time: on
    the 100 M-parameter model's stub, 1.2-1.6 s (0.8-1.1 s of it system time) with a real side
    file against 0.4 s through the link, on the 2-core benchmark machine.
    """
    options = ort.SessionOptions()
    options.log_severity_level = _QUIET_SEVERITY
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.disable_prepacking", "1")  # no kernel runs: no packed weights
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory(prefix="onnxslim-ortopt-") as tmp:
        out_path = os.path.join(tmp, "optimized.onnx")
        options.optimized_model_filepath = out_path
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", _SIDE_FILE)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(_SIDE_FILE_MIN_BYTES))
        if discard_weights:
            os.symlink(os.devnull, os.path.join(tmp, _SIDE_FILE))  # OSError (no symlinks): the caller retries
        ort.InferenceSession(os.fspath(path), options, providers=list(providers))
        with open(out_path, "rb") as f:
            return graph_node_count(f.read())


def graph_node_count(model: bytes) -> int:
    """``len(onnx.load_from_string(model).graph.node)``, without parsing anything else.

    Protobuf merges repeated occurrences of a message field, so the nodes of every ``graph``
    field of the model count.
    """
    return sum(sum(1 for number, _ in _fields(model, start, end) if number == _GRAPH_NODE)
               for number, (start, end) in _fields(model, 0, len(model)) if number == _MODEL_GRAPH)


def _fields(data: bytes, start: int, end: int):
    """(field number, (body start, body end)) of each length-delimited field in ``data[start:end]``;
    scalar fields are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == _VARINT:
            _, pos = _varint(data, pos)
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("truncated protobuf: a field runs past its message")
            yield key >> 3, (pos, pos + length)
            pos += length
        else:  # groups (3, 4) are not used by onnx.proto
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if pos != end:
        raise ValueError("truncated protobuf: the last field runs past its message")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def serve(lines, out) -> None:
    """For each model path read from ``lines``, one line on ``out``: its count, or ``!`` and the
    first line of why ORT refused it. Ends when ``lines`` does (the parent is done)."""
    for line in lines:
        try:
            answer = str(optimized_node_count(line.rstrip("\n")))
        except Exception as exc:  # noqa: BLE001 - any refusal is the answer, the child serves on
            answer = "!" + ((str(exc).strip() or type(exc).__name__).splitlines() or [""])[0]
        out.write(answer + "\n")
        out.flush()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.stdout.write(f"{optimized_node_count(sys.argv[1])}\n")  # the child's answer, as serve() writes it
    else:
        serve(sys.stdin, sys.stdout)
