"""An fp16 graph quantized as fp32: the float compute in fp32, Casts at the fp16 inputs and outputs.

ONNX Runtime's integer kernels (QLinearConv, MatMulIntegerToFloat, QLinearMatMul) take float32
scales and write float32, and its CPU provider has no fp16 kernel for most float ops (it runs
them between inserted Casts to float32 anyway). So the quantize pass works on a float32 copy of
an fp16 graph: every fp16 constant, tensor and type attribute becomes float32 (fp16 values are
exact in float32), each fp16 graph input is cast to float32 where it enters and each fp16 output
is cast back where it leaves. The model keeps its interface (names, fp16 types); the layers
quantized to int8 store half the bytes of their fp16 weights, the layers left in float store
float32 weights (twice their fp16 bytes; the report says how many).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.ir.weights import unique_name

_FP16 = onnx.TensorProto.FLOAT16
_FP32 = onnx.TensorProto.FLOAT
#: attributes that name an element type (Cast's ``to``, the generators' ``dtype``)
_TYPE_ATTRS = ("to", "dtype")


def has_fp16(graph: gs.Graph) -> bool:
    """Whether any graph input, output or constant of ``graph`` is fp16."""
    return any(_is_fp16(t) for t in graph.tensors().values())


def to_float32(graph: gs.Graph) -> int:
    """Rewrite ``graph`` (and its subgraphs) to compute in float32 in place; return how many fp16
    constants became float32. Graph inputs and outputs keep their names and fp16 types."""
    converted = _convert(graph, keep_boundary=True)
    for sub in graph.subgraphs(recursive=True):
        converted += _convert(sub, keep_boundary=False)
    for tensor in list(graph.inputs):
        if _is_fp16(tensor):
            inner = gs.Variable(unique_name(graph, f"{tensor.name}_f32"), dtype=np.float32, shape=tensor.shape)
            _redirect_readers(tensor, inner)
            graph.nodes.insert(0, gs.Node("Cast", unique_name(graph, f"{tensor.name}_to_f32"), {"to": _FP32},
                                          [tensor], [inner]))
    for tensor in list(graph.outputs):
        if _is_fp16(tensor) and not any(t is tensor for t in graph.inputs):
            inner = gs.Variable(unique_name(graph, f"{tensor.name}_f32"), dtype=np.float32, shape=tensor.shape)
            producer = tensor.inputs[0] if tensor.inputs else None
            if producer is None:
                continue
            producer.outputs[producer.outputs.index(tensor)] = inner
            _redirect_readers(tensor, inner)
            graph.nodes.append(gs.Node("Cast", unique_name(graph, f"{tensor.name}_to_f16"), {"to": _FP16},
                                       [inner], [tensor]))
    return converted


def _redirect_readers(tensor: gs.Tensor, new: gs.Tensor) -> None:
    for reader in list(tensor.outputs):
        for i, t in enumerate(reader.inputs):
            if t is tensor:
                reader.inputs[i] = new


def _convert(graph: gs.Graph, keep_boundary: bool) -> int:
    converted = 0
    boundary = {id(t) for t in (*graph.inputs, *graph.outputs)} if keep_boundary else set()
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant):
            if not isinstance(tensor.dtype, int) and np.dtype(tensor.dtype) == np.float16:
                tensor.values = tensor.values.astype(np.float32)
                # gs remembers the imported fp16 type to export; its setter refuses on current onnx
                tensor._export_dtype = None
                converted += 1
        elif _is_fp16(tensor) and id(tensor) not in boundary:
            tensor.dtype = np.float32
    for node in graph.nodes:
        for key in _TYPE_ATTRS:
            if node.attrs.get(key) == _FP16:
                node.attrs[key] = _FP32
        for key in ("value",):  # Constant, ConstantOfShape
            value = node.attrs.get(key)
            if isinstance(value, gs.Constant) and not isinstance(value.dtype, int) and np.dtype(value.dtype) == np.float16:
                node.attrs[key] = gs.Constant(value.name, value.values.astype(np.float32))
                converted += 1
    return converted


def _is_fp16(tensor: gs.Tensor) -> bool:
    dtype = tensor.dtype
    if dtype is None or isinstance(dtype, int):
        return dtype == _FP16
    try:
        return np.dtype(dtype) == np.float16
    except TypeError:
        return False
