"""Models over 2 GB: how many bytes a model's tensors hold, and the writer of external data.

A protobuf message cannot be serialized past 2 GiB, so a model whose tensors add up to
``LARGE_MODEL_BYTES`` or more is written with external data (``save_for_ort``) and loaded by
path. Sizes are read from each tensor's dims and type, never by serializing. Nothing here
needs ONNX Runtime: ``runtime.session`` loads what this writes, ``ir.io`` saves with it.
"""

from __future__ import annotations

import logging
import os

import onnx

from onnxslim.ir.weightless import external_reference, iter_tensors, skeleton, value_nbytes, write_model

logger = logging.getLogger(__name__)

#: Models whose tensors hold at least this many bytes go through a file with external data.
#: Below protobuf's 2 GiB limit with 64 MiB of headroom for the graph structure itself.
#: Tests monkeypatch it to exercise the large-model path with tiny models.
LARGE_MODEL_BYTES = 2**31 - 2**26

#: Tensors smaller than this stay inside the .onnx file when a model is externalized.
EXTERNAL_MIN_BYTES = 1024
#: External data offsets are page aligned so ORT may memory-map them.
_EXTERNAL_ALIGN = 4096
_EXTERNAL_FILE = "weights.bin"


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes held by the model's tensors (initializers, Constant values, subgraphs).

    Read from each tensor's dims and type: ``ModelProto.ByteSize()`` serializes the message
    under the upb protobuf backend (and fails past 2 GiB), and ``len(raw_data)`` copies it.
    """
    return sum(tensor_nbytes(t) for t in iter_tensors(model.graph))


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of the tensor's values inside the protobuf (0 when they are external)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    return value_nbytes(tensor)


def save_for_ort(model: onnx.ModelProto, directory: str, force_external: bool = True,
                 name: str = "model.onnx", data_name: str = _EXTERNAL_FILE) -> str:
    """Write ``model`` into ``directory`` for ORT to load by path; return the .onnx path.

    With ``force_external`` every raw tensor of at least 1 KiB is streamed, one at a time, into
    ``data_name`` beside it (offsets page aligned, so ORT may memory-map them), and the .onnx file
    is a skeleton of the model referencing them: the caller's proto is never modified, and no
    second copy of the weights is made.
    """
    path = os.path.join(directory, name)
    if not force_external:
        with open(path, "wb") as f:
            write_model(model, f)
        return path
    with open(os.path.join(directory, data_name), "wb") as data:
        def move_out(tensor: onnx.TensorProto) -> onnx.TensorProto | None:
            if not tensor.HasField("raw_data") or tensor_nbytes(tensor) < EXTERNAL_MIN_BYTES:
                return None
            end = data.seek(0, os.SEEK_END)
            offset = end + (-end % _EXTERNAL_ALIGN)
            data.seek(offset)
            length = data.write(tensor.raw_data)
            return external_reference(tensor, data_name, offset, length)

        shell = skeleton(model, move_out)
    with open(path, "wb") as f:
        f.write(shell.SerializeToString())
    logger.debug("saved %s with external data %s", path, data_name)
    return path
