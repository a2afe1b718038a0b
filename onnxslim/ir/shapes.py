"""Computed shapes, and the values of shape computations, for the folding passes.

``infer_shapes`` runs onnx's shape inference (``data_prop=True``, strict off) on a skeleton of
the graph: its nodes, its inputs as declared, small constants with their values (shape
arithmetic reads them) and large ones as typed inputs, so no weight is copied and a model over
2 GB is inferred like any other. Declared ``value_info`` and output shapes are left out: a shape
is only ever what inference computes from the inputs, never what an exporter claimed. A model
onnx cannot infer gets no shapes (an empty map), never an error.

``shape_values`` then propagates the values of integer shape vectors through Shape, Size,
Gather, Slice, Concat, (Un)Squeeze, Cast, Identity, integer Add/Sub/Mul and Equal, element by element:
an element is an int where every element it depends on is known, else unknown. ``Shape(x)`` of
``x: [batch, seq, 384]`` is ``[?, ?, 384]``; gathered at 2 it is the constant 384, gathered at 0
it stays dynamic. The tensors whose every element is known are returned with their values.

``inferred_dims`` and ``refresh_shapes`` serve the passes that change tensor widths
(prune-channels): shape inference on the exported model itself, strict when it can be, and
the check that the graph's outputs keep their shapes after the rewrite.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from onnxslim.ir.io import to_model
from onnxslim.ir.weights import constant_value

logger = logging.getLogger(__name__)

Dim = int | str | None  # a fixed size, a symbolic name, or unknown
Shape = tuple[Dim, ...]


class DimOf(NamedTuple):
    """An element not known as a number but known to equal dim ``axis`` of tensor ``tensor``."""

    tensor: str
    axis: int


Element = int | DimOf | None  # one element of a shape vector: known, a dim of a tensor, or not known
SMALL_CONSTANT_ELEMENTS = 64  # constants at most this large keep their values for data propagation
INT_TYPES = (np.int64, np.int32)


class Shapes(dict):
    """Computed shape per tensor name (None: rank unknown); ``types`` holds the element types."""

    def __init__(self) -> None:
        super().__init__()
        self.types: dict[str, int] = {}


def infer_shapes(graph: gs.Graph, template: onnx.ModelProto, hints: dict[str, Shape] | None = None) -> Shapes:
    """Shape of every tensor of ``graph``'s top level that onnx can infer (None: rank unknown).

    ``hints`` are shapes computed elsewhere (``computed_shapes``), given to onnx as value_info.
    """
    try:
        skeleton = _skeleton(graph, template)
        for name, dims in (hints or {}).items():
            skeleton.graph.value_info.append(onnx.helper.make_tensor_value_info(name, 0, list(dims)))
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - a model onnx cannot infer simply gets no shape-based folding
        logger.info("shape inference failed, no shape-based folding: %s", exc)
        return Shapes()
    shapes = Shapes()
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if info.type.HasField("tensor_type"):
            shapes[info.name] = _dims(info.type.tensor_type)
            if info.type.tensor_type.elem_type:
                shapes.types[info.name] = info.type.tensor_type.elem_type
    return shapes


def _dims(tensor_type: onnx.TypeProto.Tensor) -> Shape | None:
    if not tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return tuple(dims)


def _skeleton(graph: gs.Graph, template: onnx.ModelProto) -> onnx.ModelProto:
    inputs = [OnnxExporter.export_value_info_proto(t, do_type_check=False) for t in graph.inputs]
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    seen: set[str] = {t.name for t in graph.inputs}
    for node in graph.nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant) and tensor.name not in seen:
                seen.add(tensor.name)
                _add_constant(tensor.name, tensor, inputs, initializers)
        value = node.attrs.get("value") if node.op == "Constant" else None
        if isinstance(value, gs.Constant) and _elements(value) > SMALL_CONSTANT_ELEMENTS and node.outputs:
            _add_constant(node.outputs[0].name, value, inputs, initializers)  # typed input, no copy of the weight
            continue
        nodes.append(OnnxExporter.export_node(node))
    outputs = [onnx.helper.make_empty_tensor_value_info(t.name) for t in graph.outputs]
    functions = [OnnxExporter.export_function(f) for f in graph.functions]
    model = onnx.helper.make_model(
        onnx.helper.make_graph(nodes, "shapes", inputs, outputs, initializers),
        opset_imports=list(template.opset_import),
        functions=functions,
    )
    model.ir_version = max(template.ir_version, 4)  # initializers need not be listed as inputs
    return model


def _add_constant(name: str, constant: gs.Constant, inputs: list, initializers: list) -> None:
    if _elements(constant) <= SMALL_CONSTANT_ELEMENTS and not isinstance(constant.dtype, int):
        initializers.append(onnx.numpy_helper.from_array(np.asarray(constant.values), name))
        return
    elem_type = constant.dtype if isinstance(constant.dtype, int) else onnx.helper.np_dtype_to_tensor_dtype(np.dtype(constant.dtype))
    inputs.append(onnx.helper.make_tensor_value_info(name, elem_type, list(constant.shape)))


def _elements(constant: gs.Constant) -> int:
    return math.prod(constant.shape) if constant.shape is not None else 0


# --- values of shape computations -------------------------------------------------------------


def computed_shapes(graph: gs.Graph, template: onnx.ModelProto, rounds: int = 3) -> Shapes:
    """``infer_shapes``, refined where onnx's own data propagation stops short.

    onnx propagates shape values only through some ops and opsets (not opset-12 Unsqueeze, for
    one), so a ``Reshape`` to ``Concat(Unsqueeze(Gather(Shape(x), 0)), [1], [512])`` may get no
    shape at all. The element-wise values of ``shape_values`` give it ``[?, 1, 512]``; those
    shapes go back to onnx as hints and inference runs again, at most ``rounds`` times.
    """
    shapes = infer_shapes(graph, template)
    hints: dict[str, Shape] = {}
    for _ in range(rounds):
        if not shapes:
            break
        _, refined, _ = _propagate_graph(graph, shapes)
        new = {n: d for n, d in refined.items() if _more_specific(d, shapes.get(n))}
        if not new:
            break
        hints.update(new)
        shapes = infer_shapes(graph, template, hints) or shapes
    return shapes


def _more_specific(new: Shape, old: Shape | None) -> bool:
    if old is None:
        return True
    return len(new) == len(old) and any(isinstance(a, int) and not isinstance(b, int) for a, b in zip(new, old))


def shape_values(graph: gs.Graph, shapes: dict[str, Shape | None]) -> dict[str, np.ndarray]:
    """Values of the non-constant integer tensors of ``graph`` that the computed shapes fix.

    Only tensors computed from at least one ``Shape``/``Size`` appear (plain constant
    arithmetic is left to constant folding). Expects ``graph`` toposorted.
    """
    return _propagate_graph(graph, shapes)[0]


def shape_elements(graph: gs.Graph, shapes: dict[str, Shape | None]) -> dict[str, list[Element]]:
    """Element-wise values of the integer tensors computed from a ``Shape``: ints where the computed
    shapes fix them, :class:`DimOf` where an element is a dim of a tensor, None where neither."""
    return _propagate_graph(graph, shapes)[2]


def _propagate_graph(graph: gs.Graph, shapes: dict) -> tuple[dict[str, np.ndarray], dict[str, Shape], dict]:
    """(fully known shape values, output shapes of Reshape/ConstantOfShape from partial values,
    the element-wise values of every tracked tensor)."""
    partial: dict[str, tuple[list[Element], np.dtype, bool]] = {}  # name -> (elements, dtype, is scalar)
    known: dict[str, np.ndarray] = {}
    refined: dict[str, Shape] = {}
    for node in graph.nodes:
        if node.op in ("Reshape", "ConstantOfShape") and node.outputs and node.inputs[-1].name in partial:
            dims = _target_shape(node, shapes, partial[node.inputs[-1].name][0])
            if dims is not None:
                refined[node.outputs[0].name] = dims
        if node.domain not in (None, "", "ai.onnx") or len(node.outputs) != 1:
            continue
        result = _propagate(node, shapes, partial)
        if result is None:
            continue
        elements, dtype, scalar = result
        out = node.outputs[0]
        partial[out.name] = result
        if all(_is_int(e) for e in elements):
            value = np.array(elements, dtype=dtype)
            known[out.name] = value.reshape(()) if scalar else value
    return known, refined, {name: entry[0] for name, entry in partial.items()}


def _is_int(element: Element) -> bool:
    return isinstance(element, (int, np.integer))


def _target_shape(node: gs.Node, shapes: dict, elements: list[Element]) -> Shape | None:
    """Output shape of a Reshape or ConstantOfShape whose shape input is known element-wise."""
    if node.op == "ConstantOfShape":
        return tuple(elements)
    source = shapes.get(node.inputs[0].name)
    dims: list[Dim] = []
    for i, e in enumerate(elements):
        if e == 0 and not node.attrs.get("allowzero", 0):
            dims.append(source[i] if source is not None and i < len(source) and isinstance(source[i], int) else None)
        elif not _is_int(e) or e < 0:
            dims.append(None)  # -1 is left to onnx: it needs every other dim
        else:
            dims.append(e)
    return tuple(dims)


def _operand(tensor: gs.Tensor, shapes: dict, partial: dict) -> tuple[list[Element], np.dtype | None, bool] | None:
    """A tensor's elements: tracked, constant, or (a short vector of computed length) all unknown."""
    if tensor.name in partial:
        return partial[tensor.name]
    value = _small_int_constant(tensor)
    if value is not None:
        return [int(v) for v in value.reshape(-1)], value.dtype, value.ndim == 0
    dims = shapes.get(tensor.name)
    if dims == ():
        return [None], None, True
    if dims is not None and len(dims) == 1 and isinstance(dims[0], int) and dims[0] <= SMALL_CONSTANT_ELEMENTS:
        return [None] * dims[0], None, False
    return None


def _small_int_constant(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant) and _elements(tensor) > SMALL_CONSTANT_ELEMENTS:
        return None
    value = constant_value(tensor)
    if value is None or value.dtype not in INT_TYPES or value.ndim > 1 or value.size > SMALL_CONSTANT_ELEMENTS:
        return None
    return value


def _propagate(node: gs.Node, shapes: dict, partial: dict) -> tuple[list[Element], np.dtype, bool] | None:
    op = node.op
    if op == "Shape":
        dims = shapes.get(node.inputs[0].name)
        if dims is None:
            return None
        rank = len(dims)
        start, end = _clamp(node.attrs.get("start", 0), rank), _clamp(node.attrs.get("end", rank), rank)
        name = node.inputs[0].name
        elements = [d if isinstance(d, int) else DimOf(name, start + i) for i, d in enumerate(dims[start:end])]
        return elements, np.dtype(np.int64), False
    if op == "Size":
        dims = shapes.get(node.inputs[0].name)
        if dims is None or not all(isinstance(d, int) for d in dims):
            return None
        return [int(np.prod(dims, dtype=np.int64))], np.dtype(np.int64), True
    operands = [_operand(t, shapes, partial) if t.name else None for t in node.inputs]
    if not operands or operands[0] is None:
        return None
    if not any(t.name in partial for t in node.inputs if t.name):
        return None  # nothing computed from a shape: constant folding's job, or not known at all
    elements, dtype, scalar = operands[0]
    if op in ("Concat", "Add", "Sub", "Mul"):  # an operand known only by its length has no dtype of its own
        dtype = next((o[1] for o in operands if o is not None and o[1] is not None), dtype)
    if op in ("Identity",):
        return elements, dtype, scalar
    if op == "Cast":
        to = onnx.helper.tensor_dtype_to_np_dtype(node.attrs["to"])
        return (elements, to, scalar) if to in INT_TYPES else None
    if op == "Gather":
        return _gather(node, elements, dtype, scalar, operands)
    if op == "Slice":
        return _slice(node, elements, dtype, scalar, operands)
    if op == "Concat":
        if node.attrs.get("axis") not in (0, -1) or any(o is None or o[2] for o in operands):
            return None
        return [e for o in operands for e in o[0]], dtype, False
    if op == "Unsqueeze":
        return (elements, dtype, False) if scalar and _axes(node, operands) in ([0], [-1]) else None
    if op == "Squeeze":
        return (elements, dtype, True) if not scalar and len(elements) == 1 and _axes(node, operands) in (None, [0], [-1]) else None
    if op in ("Add", "Sub", "Mul") and len(operands) == 2 and operands[1] is not None:
        return _elementwise(op, operands[0], operands[1])
    if op == "Equal" and len(operands) == 2 and operands[1] is not None:
        return _equal(operands[0], operands[1])
    return None


def _clamp(index: int, rank: int) -> int:
    return min(max(index + rank if index < 0 else index, 0), rank)


NOT_CONSTANT_AXES = [None]  # an axes input whose value is unknown: matches no rule


def _axes(node: gs.Node, operands: Sequence) -> list[int | None] | None:
    """A (Un)Squeeze's axes: from the attribute or a constant input; None when none are given."""
    if "axes" in node.attrs:
        return list(node.attrs["axes"])
    if len(operands) > 1 and operands[1] is not None:
        return list(operands[1][0])
    return None if len(node.inputs) < 2 or not node.inputs[1].name else NOT_CONSTANT_AXES


def _gather(node, elements, dtype, scalar, operands):
    if scalar or node.attrs.get("axis", 0) not in (0, -1) or len(operands) < 2 or operands[1] is None:
        return None
    indices, _, index_scalar = operands[1]
    if any(not _is_int(i) or not -len(elements) <= i < len(elements) for i in indices):
        return None
    picked = [elements[i] for i in indices]
    return picked, dtype, index_scalar


def _slice(node, elements, dtype, scalar, operands):
    if scalar or len(operands) < 3 or any(o is None or len(o[0]) != 1 for o in operands[1:]):
        return None
    starts, ends = operands[1][0][0], operands[2][0][0]
    axes = operands[3][0][0] if len(operands) > 3 else 0
    steps = operands[4][0][0] if len(operands) > 4 else 1
    if not all(_is_int(v) for v in (starts, ends, axes, steps)) or axes not in (0, -1) or not steps:
        return None
    return [elements[i] for i in _slice_indices(len(elements), starts, ends, steps)], dtype, False


def _slice_indices(dim: int, start: int, end: int, step: int) -> range:
    """ONNX Slice's indices along one axis of size ``dim`` (clamped as the operator defines)."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, -1), dim - 1), min(max(end, -1), dim - 1), step)


def _elementwise(op: str, a, b):
    (ea, dtype, sa), (eb, _, sb) = a, b
    if len(ea) != len(eb) and 1 not in (len(ea), len(eb)):
        return None
    n = max(len(ea), len(eb))
    ea, eb = (ea * n if len(ea) == 1 else ea), (eb * n if len(eb) == 1 else eb)
    fn = {"Add": lambda x, y: x + y, "Sub": lambda x, y: x - y, "Mul": lambda x, y: x * y}[op]
    return [fn(x, y) if _is_int(x) and _is_int(y) else None for x, y in zip(ea, eb)], dtype, sa and sb


def _equal(a, b):
    """Element-wise Equal of shape values: known where both are numbers, and False where a dim
    (never negative) meets a negative number (exporters test a shape against -1)."""
    (ea, _, sa), (eb, _, sb) = a, b
    if len(ea) != len(eb) and 1 not in (len(ea), len(eb)):
        return None
    n = max(len(ea), len(eb))
    ea, eb = (ea * n if len(ea) == 1 else ea), (eb * n if len(eb) == 1 else eb)

    def equal(x, y):
        if _is_int(x) and _is_int(y):
            return bool(x == y)
        if (isinstance(x, DimOf) and _is_int(y) and y < 0) or (isinstance(y, DimOf) and _is_int(x) and x < 0):
            return False
        return None

    return [equal(x, y) for x, y in zip(ea, eb)], np.dtype(bool), sa and sb


def inferred_dims(model: onnx.ModelProto, strict: bool = False) -> dict[str, list[Dim]]:
    """Tensor name -> dims (int, symbolic name, or None) from ONNX shape inference on the model
    itself, declared shapes included (the channel analysis reads them as they are)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=strict)
    out: dict[str, list[Dim]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return out


def strict_inference_ok(model: onnx.ModelProto) -> bool:
    """True when ONNX shape inference accepts ``model`` in strict mode."""
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except onnx.shape_inference.InferenceError:
        return False
    return True


def refresh_shapes(graph: gs.Graph, template: onnx.ModelProto, strict: bool = True) -> None:
    """After a rewrite that changes tensor widths: drop stale intermediate shapes, re-infer
    (strictly unless told), and check every output keeps its shape.

    Raises:
        RuntimeError: inference fails, or an output's shape changed (a bug in the rewrite).
    """
    keep = {id(t) for t in [*graph.inputs, *graph.outputs]}
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and id(t) not in keep:
            t.shape = None
    try:
        shapes = inferred_dims(to_model(graph, template), strict=strict)
    except onnx.shape_inference.InferenceError as exc:
        raise RuntimeError(f"strict shape inference failed after the rewrite: {exc}") from exc
    for out in graph.outputs:
        new = shapes.get(out.name)
        if out.shape is not None and new is not None and len(new) == len(out.shape):
            changed = [(a, b) for a, b in zip(out.shape, new) if isinstance(a, int) and isinstance(b, int) and a != b]
            if changed or len(new) != len(out.shape):
                raise RuntimeError(f"output {out.name!r} changed shape {out.shape} -> {new}")
    for name, t in graph.tensors().items():
        if isinstance(t, gs.Variable) and id(t) not in keep and name in shapes:
            t.shape = shapes[name]
