"""Constant weights, wherever an exporter put them.

A weight may be an initializer (a ``gs.Constant`` tensor) or the output of a ``Constant`` node
(Paddle exports have no initializers at all). Every pass reads weights through
``constant_value``, so both look the same. ``replace_input`` writes a new initializer;
``onnxslim.ir.linear.write_input`` (and the layer view's ``write``) keeps the old one's kind.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx_graphsurgeon as gs

_SCALAR_ATTRS = {
    "value_float": np.float32,
    "value_floats": np.float32,
    "value_int": np.int64,
    "value_ints": np.int64,
}


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The array behind ``tensor`` if it is constant, else None.

    Constants of types numpy cannot hold (bfloat16, float8, int4) count as not constant: reading
    them through gs casts them, and a pass must never change a tensor's type behind the user's back.
    """
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values) if _numpy_typed(tensor) else None
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Identity" and tensor.inputs[0].domain in ("", "ai.onnx", None) \
            and tensor.inputs[0].inputs:
        # PyTorch writes a weight shared by several layers (ALBERT) as Identity copies of one initializer
        return constant_value(tensor.inputs[0].inputs[0])
    if len(tensor.inputs) != 1 or tensor.inputs[0].op != "Constant":
        return None
    attrs = tensor.inputs[0].attrs
    if isinstance(attrs.get("value"), gs.Constant):
        value = attrs["value"]
        return np.asarray(value.values) if _numpy_typed(value) else None
    for key, dtype in _SCALAR_ATTRS.items():
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    return None


def is_constant(tensor: gs.Tensor) -> bool:
    return constant_value(tensor) is not None


def _numpy_typed(constant: gs.Constant) -> bool:
    # gs reports types numpy lacks as the TensorProto enum (an int) instead of a numpy dtype.
    return not isinstance(constant.dtype, int)


def replace_input(graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray, suffix: str) -> gs.Constant:
    """Point ``node.inputs[index]`` at a new constant holding ``values``.

    The old tensor is never edited in place: another node may share it. It is left for
    ``dce`` to remove once unused.
    """
    old = node.inputs[index]
    new = gs.Constant(unique_name(graph, f"{old.name}_{suffix}"), np.ascontiguousarray(values))
    node.inputs[index] = new
    release(old)
    return new


def release(constant: gs.Tensor) -> None:
    """Drop the values read from a weight's file (``ir.refs``) once no node reads the weight.

    gs tensors and their input/output lists form reference cycles: a replaced weight would stay
    in memory until the next garbage collection, so a pass replacing every weight would hold the
    model twice. Its reference stays: a late reader reads it from the file again.
    """
    reference = getattr(constant, "file_values", None)
    if reference is not None and not constant.outputs and not constant.inputs:
        constant._values = reference


def unique_name(graph: gs.Graph, base: str) -> str:
    taken = graph_tensor_names(graph)
    if base not in taken:
        return base
    for i in itertools.count(1):
        candidate = f"{base}_{i}"
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable")


def graph_tensor_names(graph: gs.Graph) -> set[str]:
    names = set(graph.tensors().keys())
    names.update(n.name for n in graph.nodes)
    return names



WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantized_layers(graph: gs.Graph) -> list[gs.Node]:
    """Conv/ConvTranspose/Gemm/MatMul nodes whose weight is the output of a DequantizeLinear.

    Such a weight is not a constant to the lossy passes, so they leave the layer alone; the
    manager records that as a decline with its reason.
    """
    found = []
    for node in graph.nodes:
        if node.op in WEIGHTED_OPS and len(node.inputs) > 1:
            weight = node.inputs[1]
            if weight.inputs and weight.inputs[0].op == "DequantizeLinear":
                found.append(node)
    return found
