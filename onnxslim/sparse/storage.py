"""Sparse storage of a pruned weight, chosen per tensor by the bytes it really takes.

The format is a ``Constant`` node whose ``sparse_value`` attribute holds an ONNX
``SparseTensorProto`` (values plus linear int64 indices), rather than a graph-level
``sparse_initializer``: ONNX Runtime loads both (and densifies them at load, so latency does not
change), but a sparse initializer is typed ``sparse_tensor`` for shape inference and
``onnx.checker.check_model(full_check=True)`` rejects it as an input of MatMul/Gemm/Conv; a
``Constant`` node outputs a dense tensor and passes.

Indices are written in ``int64_data`` (protobuf varints: 1–3 bytes for the indices of typical
layers, instead of 8 in ``raw_data``); values in ``raw_data``. A tensor is stored sparsely only
when its serialized sparse form is smaller than the dense one, which with 4-byte floats happens
from roughly 45–65% zeros, depending on the tensor's size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from onnxslim.ir.io import sparse_to_dense
from onnxslim.ir.weights import unique_name


@dataclasses.dataclass
class Choice:
    """What was chosen for one tensor, with both sizes in bytes."""

    tensor: str
    format: str  # "sparse" or "dense"
    dense_bytes: int
    sparse_bytes: int
    nonzeros: int

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def to_sparse(array: np.ndarray, name: str) -> onnx.SparseTensorProto:
    """The ``SparseTensorProto`` of ``array`` (linear indices, varint-packed)."""
    flat = np.ascontiguousarray(array).reshape(-1)
    idx = np.flatnonzero(flat)
    values = numpy_helper.from_array(flat[idx], name)
    indices = helper.make_tensor(f"{name}_indices", onnx.TensorProto.INT64, [idx.size], idx.tolist())
    return helper.make_sparse_tensor(values, indices, list(array.shape))


# The inverse of ``to_sparse`` (either index layout of the ONNX spec) is the engine's own.
to_dense = sparse_to_dense


def dense_bytes(array: np.ndarray, name: str) -> int:
    return numpy_helper.from_array(np.ascontiguousarray(array), name).ByteSize()


def choose(array: np.ndarray, name: str) -> tuple[Choice, onnx.SparseTensorProto | None]:
    """Sparse when its serialized form is smaller than the dense tensor's."""
    sparse = to_sparse(array, name)
    choice = Choice(name, "dense", dense_bytes(array, name), sparse.ByteSize(), int(np.count_nonzero(array)))
    if choice.sparse_bytes < choice.dense_bytes:
        choice.format = "sparse"
        return choice, sparse
    return choice, None


def store_sparse(graph: gs.Graph, node: gs.Node, index: int, sparse: onnx.SparseTensorProto,
                 dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Point ``node.inputs[index]`` at a new ``Constant`` node holding ``sparse``."""
    name = unique_name(graph, f"{node.inputs[index].name}_sparse")
    sparse.values.name = name
    out = gs.Variable(name, dtype=dtype, shape=list(shape))
    const = gs.Node("Constant", name=unique_name(graph, f"{name}_const"), attrs={"sparse_value": sparse},
                    outputs=[out])
    graph.nodes.append(const)
    node.inputs[index] = out
