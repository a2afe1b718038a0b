"""Weights by reference: a large model's float tensors stay in their file until a pass reads them.

A model whose tensors hold ``REFERENCE_MIN_BYTES`` or more is loaded as a *referenced* model:
each float tensor of at least ``MIN_TENSOR_BYTES`` becomes an external-data reference with the
**absolute** path of the file holding its bytes (the model's own .onnx for inline weights, found
by walking the protobuf wire format without parsing the weights; its .data file otherwise). The
``ModelProto`` then costs the graph's structure, not its weights, and no copy of a weight exists
in memory until a pass asks for its values (``FileValues.load`` reads that one tensor).

Absolute locations are private to this process: ``ir.io`` resolves them when it writes a model
(each weight streamed once into the output) or exports one for ONNX Runtime, and the weightless
copies the checker sees replace them with stubs. Only float tensors are referenced: integer
tensors (indices, shapes) keep their values, which shape inference and ORT's folding may read.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxslim.ir.weightless import _varint, iter_tensors, value_nbytes

#: Models with at least this many tensor bytes are loaded by reference (smaller ones whole).
REFERENCE_MIN_BYTES = 64 << 20
#: Tensors smaller than this keep their values in the proto.
MIN_TENSOR_BYTES = 4096
_DTYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
           onnx.TensorProto.FLOAT16: np.float16}
_CHUNK = 16 << 20

# Protobuf field numbers (onnx.proto) walked on the wire.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_LEN = 2  # wire type of length-delimited fields


def load_inline(path: Path) -> onnx.ModelProto:
    """Parse the model at ``path`` with its large float initializers as references into ``path``.

    The file is memory-mapped and walked field by field; every other byte is parsed as usual.
    """
    path = path.resolve()
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        out = bytearray()
        for number, wire, start, body, end in _fields(data, 0, len(data)):
            if number == _MODEL_GRAPH and wire == _LEN:
                graph = _graph(data, body, end, str(path))
                out += _key(_MODEL_GRAPH, _LEN) + _varint(len(graph)) + graph
            else:
                out += data[start:end]
    model = onnx.ModelProto()
    model.ParseFromString(bytes(out))
    return model


def reference_external(model: onnx.ModelProto, base: Path) -> None:
    """Make ``model``'s external tensors absolute references (large floats) or load them inline."""
    for tensor in iter_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = (base / info["location"]).resolve()
        offset, length = int(info.get("offset", 0)), int(info.get("length", value_nbytes(tensor)))
        if location.stat().st_size < offset + length:
            raise ValueError(f"{location} is shorter than tensor {tensor.name!r} needs")
        if _referable(tensor):
            _set_reference(tensor, str(location), offset, length)
        else:
            tensor.raw_data = _read_bytes(str(location), offset, length)
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


def is_reference(tensor: onnx.TensorProto) -> bool:
    """True for a tensor whose values are in a file named by absolute path (see the module doc)."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        e.key == "location" and os.path.isabs(e.value) for e in tensor.external_data)


def has_references(model: onnx.ModelProto) -> bool:
    return any(is_reference(t) for t in iter_tensors(model.graph))


def location(tensor: onnx.TensorProto) -> tuple[str, int, int]:
    """(path, offset, length) of a reference."""
    info = {e.key: e.value for e in tensor.external_data}
    return info["location"], int(info.get("offset", 0)), int(info["length"])


def read_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The values of a reference, read from its file into a new array."""
    path, offset, length = location(tensor)
    dtype = np.dtype(_DTYPES[tensor.data_type])
    array = np.fromfile(path, dtype=dtype, count=length // dtype.itemsize, offset=offset)
    return array.reshape(tuple(tensor.dims))


def map_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The values of a reference as a read-only memory map of its file, for a reader that is done
    with them at once (statistics): the file's cached pages are read in place, with no copy (on
    the 100 M-parameter model's output, params and nonzeros of 400 MB in 0.11 s instead of 0.19 s).
    Values at an offset their dtype does not align (an inline tensor's raw bytes may sit anywhere)
    are read instead: numpy's loops over an unaligned array cost more than the copy (0.26 s
    against 0.19 s on the 100 M-parameter model's input). The map closes when the array goes;
    each holds a file descriptor, so never keep many."""
    path, offset, length = location(tensor)
    dtype = np.dtype(_DTYPES[tensor.data_type])
    if offset % dtype.alignment:
        return read_array(tensor)
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), offset + length - start, access=mmap.ACCESS_READ, offset=start)
    return np.frombuffer(mapped, dtype, length // dtype.itemsize, offset - start).reshape(tuple(tensor.dims))


def read_sample(tensor: onnx.TensorProto, start: int, size: int) -> bytes:
    """``size`` bytes of a reference's values from byte ``start``."""
    path, offset, _ = location(tensor)
    return _read_bytes(path, offset + start, size)


def copy_reference(tensor: onnx.TensorProto, out) -> int:
    """Append a reference's bytes to the binary file ``out`` in chunks; the bytes written."""
    path, offset, length = location(tensor)
    done = 0
    with open(path, "rb") as src:
        src.seek(offset)
        while done < length:
            chunk = src.read(min(_CHUNK, length - done))
            if not chunk:
                raise OSError(f"{path} ended before tensor {tensor.name!r} did")
            out.write(chunk)
            done += len(chunk)
    return done


def materialize(model: onnx.ModelProto) -> None:
    """Read every reference of ``model`` into its tensor (a self-contained model for ORT)."""
    for tensor in iter_tensors(model.graph):
        if is_reference(tensor):
            path, offset, length = location(tensor)
            tensor.raw_data = _read_bytes(path, offset, length)
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


class FileValues(LazyValues):
    """gs lazy values of a reference: ``load`` reads the tensor from its file (nothing before)."""

    def load(self) -> np.ndarray:
        return read_array(self.tensor)

    def strided(self, step: int) -> np.ndarray:
        """``load().reshape(-1)[::step]``, reading only those elements (a memory map, dropped)."""
        path, offset, length = location(self.tensor)
        dtype = np.dtype(_DTYPES[self.tensor.data_type])
        mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(length // dtype.itemsize,))
        return np.array(mapped[::step])  # a copy: the map goes with ``mapped``


def _referable(tensor: onnx.TensorProto) -> bool:
    return tensor.data_type in _DTYPES and value_nbytes(tensor) >= MIN_TENSOR_BYTES


def _set_reference(tensor: onnx.TensorProto, path: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", path), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _graph(data: mmap.mmap, start: int, end: int, path: str) -> bytes:
    out = bytearray()
    for number, wire, field_start, body, field_end in _fields(data, start, end):
        if number == _GRAPH_INITIALIZER and wire == _LEN:
            tensor = _tensor(data, body, field_end, path)
            out += _key(number, wire) + _varint(len(tensor)) + tensor
        else:
            out += data[field_start:field_end]
    return bytes(out)


def _tensor(data: mmap.mmap, start: int, end: int, path: str) -> bytes:
    """The initializer's bytes, its raw_data replaced by a reference when it is large enough."""
    head = bytearray()
    raw: tuple[int, int] | None = None
    for number, wire, field_start, body, field_end in _fields(data, start, end):
        if number == _TENSOR_RAW_DATA and wire == _LEN:
            raw = (body, field_end - body)
        else:
            head += data[field_start:field_end]
    tensor = onnx.TensorProto()
    tensor.ParseFromString(bytes(head))
    if raw is None:
        return bytes(data[start:end])
    if not _referable(tensor) or raw[1] != value_nbytes(tensor):
        return bytes(data[start:end])
    _set_reference(tensor, path, raw[0], raw[1])
    return tensor.SerializeToString()


def _fields(data: mmap.mmap, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, field end) of each field in [pos, end)."""
    while pos < end:
        start = pos
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
            body = start
        elif wire == 1:
            body, pos = pos, pos + 8
        elif wire == _LEN:
            length, body = _read_varint(data, pos)
            pos = body + length
        elif wire == 5:
            body, pos = pos, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {start}")
        if pos > end:
            raise ValueError(f"truncated protobuf field at byte {start}")
        yield number, wire, start, body, pos


def _read_varint(data: mmap.mmap, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _read_bytes(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OSError(f"{path} ends before byte {offset + length}")
    return data
