"""Copies of a model's structure that leave its large tensors out.

``skeleton(model, replace)`` copies everything but the tensors for which ``replace`` returns a
substitute (an external-data reference): the copy costs the graph's structure, never the
weights. Two uses: the *weightless* copy (references into a stub file, values never read) on
which the checker, shape inference and ORT's node count run, and ``ir.io``'s writer of external
data, which streams each tensor into the data file and references it there, so a model is saved
without a second copy of its weights in memory. The caller's model is never modified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import onnx

Replace = Callable[[onnx.TensorProto], "onnx.TensorProto | None"]


def skeleton(model: onnx.ModelProto, replace: Replace) -> onnx.ModelProto:
    """A copy of ``model`` with every tensor ``t`` replaced by ``replace(t)`` unless that is None."""
    out = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name == "graph":
            out.graph.CopyFrom(_graph(value, replace))
        else:
            _copy_field(out, field, value)
    return out


def external_reference(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> onnx.TensorProto:
    """A TensorProto naming ``tensor``'s values at ``offset`` of the file ``location``."""
    ref = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                           doc_string=tensor.doc_string, data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = ref.external_data.add()
        entry.key, entry.value = key, value
    return ref


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every If/Loop/Scan body in it, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from subgraphs(g)


def iter_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto stored in ``graph`` and its subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from iter_tensors(attr.g)
            for sub in attr.graphs:
                yield from iter_tensors(sub)


def value_nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of the tensor's values wherever they are stored, read from its dims and type only
    (``len(tensor.raw_data)`` would copy the bytes out of the protobuf)."""
    if tensor.data_type == onnx.TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    count = math.prod(tensor.dims)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        itemsize = 8
    return count * itemsize


def _graph(graph: onnx.GraphProto, replace: Replace) -> onnx.GraphProto:
    out = onnx.GraphProto()
    for field, value in graph.ListFields():
        if field.name == "initializer":
            out.initializer.extend(_tensor(t, replace) for t in value)
        elif field.name == "node":
            out.node.extend(_node(n, replace) for n in value)
        else:
            _copy_field(out, field, value)
    return out


def _node(node: onnx.NodeProto, replace: Replace) -> onnx.NodeProto:
    if not any(a.HasField("t") or a.tensors or a.HasField("g") or a.graphs for a in node.attribute):
        return node  # extend() copies it: nothing heavy in it
    out = onnx.NodeProto()
    for field, value in node.ListFields():
        if field.name != "attribute":
            _copy_field(out, field, value)
    for attr in node.attribute:
        new = out.attribute.add()
        for field, value in attr.ListFields():
            if field.name == "t":
                new.t.CopyFrom(_tensor(value, replace))
            elif field.name == "tensors":
                new.tensors.extend(_tensor(t, replace) for t in value)
            elif field.name == "g":
                new.g.CopyFrom(_graph(value, replace))
            elif field.name == "graphs":
                new.graphs.extend(_graph(g, replace) for g in value)
            else:
                _copy_field(new, field, value)
    return out


def _tensor(tensor: onnx.TensorProto, replace: Replace) -> onnx.TensorProto:
    new = replace(tensor)
    return tensor if new is None else new


def _copy_field(out, field, value) -> None:
    if _repeated(field):
        getattr(out, field.name).extend(value)
    elif field.message_type is not None:
        getattr(out, field.name).CopyFrom(value)
    else:
        setattr(out, field.name, value)


def _repeated(field) -> bool:
    # protobuf >= 6 names it is_repeated; older ones only have label
    flag = getattr(field, "is_repeated", None)
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED
