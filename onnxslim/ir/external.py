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

from onnxslim.ir.weightless import iter_tensors, value_nbytes

logger = logging.getLogger(__name__)

#: Models whose tensors hold at least this many bytes go through a file with external data.
#: Below protobuf's 2 GiB limit with 64 MiB of headroom for the graph structure itself.
#: Tests monkeypatch it to exercise the large-model path with tiny models.
LARGE_MODEL_BYTES = 2**31 - 2**26

#: Tensors smaller than this stay inside the .onnx file when a model is externalized.
EXTERNAL_MIN_BYTES = 1024
#: External data offsets are page aligned so ORT may memory-map them.
EXTERNAL_ALIGN = 4096
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

    With ``force_external`` its tensors of ``EXTERNAL_MIN_BYTES`` or more go to ``data_name``
    beside it, streamed one at a time by ``ir.io.write_model`` (the one writer of models): the
    caller's proto is never modified, and no second copy of the weights is made.
    """
    from onnxslim.ir.io import write_model  # ir.io reads this module's thresholds at import

    path = write_model(model, os.path.join(directory, name), data_name if force_external else None)
    logger.debug("saved %s%s", path, f" with external data {data_name}" if force_external else "")
    return os.fspath(path)
