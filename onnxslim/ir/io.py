"""Load and save models: external data, models over 2 GB, atomic writes, gs round trips.

A protobuf cannot be serialized above 2 GB, so a model whose tensors pass the threshold
is saved with external data; it is never turned into one byte string. The threshold is
``onnxslim.ir.external.LARGE_MODEL_BYTES``; tests lower it to exercise that path.

``onnx.checker`` (and shape inference, and ORT's node count in ``runtime.node_count``) never need the
weights' values, only their names, types and dims: they run on a *weightless* copy, where every
tensor of at least ``STUB_MIN_BYTES`` is a reference into a stub file. That copy costs a few
kilobytes whatever the model's size, where checking the model itself serialized it whole.

The external data of an output is ``OUT.onnx.data``; a file that a loaded model reads its
weights from is never written over (another name is chosen), so ``-o`` beside the input cannot
destroy the input's weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import google.protobuf.message
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import dtype_to_onnx
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from onnxslim.errors import ModelLoadError, UsageError
from onnxslim.ir import external, refs
from onnxslim.ir.nodes import subgraphs as node_subgraphs
from onnxslim.ir.weightless import _copy_field, _varint, external_reference, iter_tensors, skeleton, subgraphs, value_nbytes

logger = logging.getLogger(__name__)
# graphsurgeon prints its warnings to stdout, which is the user's ("Could not convert: UNDEFINED"
# for a ZipMap's map type, "colored module is not installed"): only its errors get through
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR

MIN_OPSET = 11
#: Tensors of at least this many bytes are stubbed out of the weightless copy.
STUB_MIN_BYTES = 4096
_STUB_FILE = "weights.stub"
#: External data files read by ``load_model`` in this process: never a save's target.
_SOURCES: set[Path] = set()
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
_MODEL_FIELDS = ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string")


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check a model with its external data; raise ``ModelLoadError`` on anything wrong.

    A model of ``refs.REFERENCE_MIN_BYTES`` or more is loaded by reference (``ir.refs``): its
    large float weights stay in their files until a pass reads them.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    by_reference = path.stat().st_size >= refs.REFERENCE_MIN_BYTES
    try:
        model = refs.load_inline(path) if by_reference else onnx.load(str(path), load_external_data=False)
    except (google.protobuf.message.DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"{path}: not an ONNX model, or truncated ({_first_line(exc)})") from None
    if model.ir_version == 0 or not model.HasField("graph") or not model.graph.output:
        raise ModelLoadError(f"{path}: not an ONNX model, or truncated (no graph or no outputs)")
    sources = _external_files(model, path.parent)
    missing = [p for p in sources if not p.is_file()]
    if missing:
        raise ModelLoadError(f"{path}: its external data file {missing[0]} does not exist")
    by_reference = by_reference or sum(value_nbytes(t) for t in iter_tensors(model.graph)) >= refs.REFERENCE_MIN_BYTES
    try:
        if by_reference:
            refs.reference_external(model, path.parent)
        else:
            onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, KeyError, onnx.checker.ValidationError) as exc:
        raise ModelLoadError(f"{path}: cannot read its external data ({_first_line(exc)})") from None
    _SOURCES.update(p.resolve() for p in sources)
    model = upgrade_legacy(model, path)
    try:
        check(model)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"{path}: rejected by onnx.checker: {_first_line(exc)}") from None
    return model


def check(model: onnx.ModelProto, path: str | os.PathLike | None = None) -> None:
    """onnx.checker on the model, by path on its weightless copy (``path`` is not needed)."""
    with tempfile.TemporaryDirectory(prefix="onnxslim-check-") as tmp:
        onnx.checker.check_model(write_weightless(model, tmp))


def weightless(model: onnx.ModelProto, floats_only: bool = False) -> onnx.ModelProto:
    """A copy of ``model`` whose tensors of ``STUB_MIN_BYTES`` or more are external references
    (offset 0 of ``weights.stub``, their own length): names, types and dims kept, values not.

    Small tensors (shapes, axes, scalars) keep their values, so shape inference with data
    propagation still sees them. Costs the graph's structure, never its weights. With
    ``floats_only`` integer tensors (indices, lookup tables) keep their values too.
    """
    def stub(tensor: onnx.TensorProto) -> onnx.TensorProto | None:
        size = value_nbytes(tensor)
        if size < STUB_MIN_BYTES or tensor.data_type == onnx.TensorProto.STRING:
            return None
        if floats_only and tensor.data_type not in _FLOAT_TYPES:
            return None
        return external_reference(tensor, _STUB_FILE, 0, size)

    return skeleton(model, stub)


def write_weightless(model: onnx.ModelProto, directory: str | os.PathLike, fill: int = 0) -> str:
    """Write ``weightless(model)`` and its stub file into ``directory``; return the .onnx path.

    The stub file is as long as the largest stubbed tensor; every stub reads its head. With
    ``fill`` 0 it is a sparse file (no disk, no memory); another byte writes it, for ORT, whose
    optimizations may remove an Add of an all-zero constant; only float tensors are stubbed then
    (an integer tensor filled with junk could be an out-of-range index that ORT folds).
    """
    stub = weightless(model, floats_only=bool(fill))
    longest = max((int(e.value) for t in iter_tensors(stub.graph) for e in t.external_data
                   if e.key == "length"), default=0)
    with open(os.path.join(directory, _STUB_FILE), "wb") as data:
        if fill and longest:
            chunk = bytes([fill]) * min(longest, 1 << 24)
            for start in range(0, longest, len(chunk)):
                data.write(chunk[: longest - start])
        else:
            data.truncate(longest)
    path = os.path.join(directory, "model.onnx")
    Path(path).write_bytes(stub.SerializeToString())
    return path


def _external_files(model: onnx.ModelProto, base: Path) -> list[Path]:
    """The external data files ``model`` names, relative to ``base``, each once."""
    files = {entry.value for t in iter_tensors(model.graph)
             if t.data_location == onnx.TensorProto.EXTERNAL for entry in t.external_data if entry.key == "location"}
    return [base / name for name in sorted(files)]


def is_large(model: onnx.ModelProto) -> bool:
    """True when the model's tensors would push one protobuf past ``external.LARGE_MODEL_BYTES``
    (referenced weights count: written, they are the model's)."""
    return sum(value_nbytes(t) for t in iter_tensors(model.graph)) >= external.LARGE_MODEL_BYTES


class Staged:
    """An output written into a temporary folder beside its target; ``commit`` moves it there.

    ``path`` is the staged .onnx: sessions and statistics read it before it is committed, and
    its external data already has its final name (``data_name``), so both files move as they are.
    """

    def __init__(self, target: Path, folder: str) -> None:
        self.target = target
        self.data_name = external_data_name(target)
        self.path = Path(folder) / target.name

    def commit(self) -> None:
        data = self.path.with_name(self.data_name)
        if data.exists():
            os.replace(data, self.target.with_name(self.data_name))
        os.replace(self.path, self.target)


@contextlib.contextmanager
def staged(path: str | os.PathLike) -> Iterator[Staged]:
    """A ``Staged`` output for ``path``; whatever was not committed is deleted on exit."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{path}: output directory {parent} does not exist")
    if not writable(parent):
        raise UsageError(f"{path}: output directory {parent} is not writable")
    with tempfile.TemporaryDirectory(dir=parent, prefix=".onnxslim-") as tmp:
        yield Staged(path, tmp)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (temp file + rename), with external data if large."""
    with staged(path) as stage:
        write_model(model, stage.path, stage.data_name if is_large(model) else None)
        stage.commit()


def write_model(model: onnx.ModelProto, path: str | os.PathLike, data_name: str | None = None) -> Path:
    """Write ``model`` to ``path``; with ``data_name``, its tensors of ``EXTERNAL_MIN_BYTES`` or
    more go to that file beside it. Each weight is written once, read from wherever it is (the
    proto, or the file a reference names): no second copy of the weights is made."""
    path = Path(path)
    if data_name is None:
        with open(path, "wb") as f:
            _write_inline(model, f, _proto_body)
        return path
    with open(path.with_name(data_name), "wb") as data:
        def move_out(tensor: onnx.TensorProto) -> onnx.TensorProto | None:
            body = _proto_body(tensor)
            if body is None or body[0] < EXTERNAL_MIN_BYTES:
                return None
            return external_reference(tensor, data_name, *_append(data, body))

        shell = skeleton(model, move_out)
    path.write_bytes(shell.SerializeToString())
    return path


def write_graph(graph: gs.Graph, template: onnx.ModelProto, path: str | os.PathLike,
                data_name: str | None = None) -> Path:
    """Export ``graph`` (as ``to_model``) to ``path`` streaming each weight once: from its array, or
    from the file a not-yet-read reference names. External data (``data_name``) when the graph's
    constants reach ``external.LARGE_MODEL_BYTES``. The graph is left as it was."""
    path = Path(path)
    constants = list(_constants_of(graph))
    to_file = sum(_nbytes(c) for c in constants) >= external.LARGE_MODEL_BYTES
    if not to_file:  # only initializers stream inline: gs exports the other constants itself
        top = {id(t) for t in graph.tensors().values()}
        constants = [c for c in constants if id(c) in top]
    swapped: list[tuple[gs.Constant, Any]] = []
    bodies: dict[str, Body] = {}
    data = open(path.with_name(data_name), "wb") if to_file else None
    try:
        for constant in constants:
            body, data_type = _graph_body(constant)
            if body is None or body[0] < EXTERNAL_MIN_BYTES:
                continue
            tensor = onnx.TensorProto(name=constant.name, data_type=data_type, dims=constant.shape)
            if data is not None:
                tensor = external_reference(tensor, data_name, *_append(data, body))
            else:
                tensor = external_reference(tensor, _PENDING, len(bodies), body[0])
                bodies[str(len(bodies))] = body
            swapped.append((constant, constant._values))
            constant._values = LazyValues(tensor)
        model = _export(graph, template)
    finally:
        if data is not None:
            data.close()
        for constant, values in swapped:
            constant._values = values
    if to_file:
        path.write_bytes(model.SerializeToString())
    else:
        with open(path, "wb") as f:
            _write_inline(model, f, lambda t: bodies[_pending(t)] if _pending(t) is not None else _proto_body(t))
    return path


#: (length, write(file)): a tensor's bytes, written without holding a second copy of them
Body = tuple[int, Callable[[BinaryIO], Any]]
EXTERNAL_MIN_BYTES = external.EXTERNAL_MIN_BYTES
_EXTERNAL_ALIGN = external.EXTERNAL_ALIGN
_PENDING = "<pending>"


def _proto_body(tensor: onnx.TensorProto) -> Body | None:
    """The bytes of a raw or referenced tensor; None for a tensor in typed fields (kept as it is)."""
    if refs.is_reference(tensor):
        return refs.location(tensor)[2], lambda f: refs.copy_reference(tensor, f)
    if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
        return None
    return value_nbytes(tensor), lambda f: f.write(tensor.raw_data)


def _graph_body(constant: gs.Constant) -> tuple[Body | None, int | None]:
    values = constant._values
    if isinstance(values, SparseValues) or values is None:
        return None, None
    if isinstance(values, LazyValues):
        return _proto_body(values.tensor), values.tensor.data_type
    data_type = _onnx_type(constant)
    array = values if isinstance(values, np.ndarray) else None
    if (array is None or data_type in (None, onnx.TensorProto.STRING) or array.dtype.byteorder == ">"
            or dtype_to_onnx(constant.export_dtype) != data_type):
        return None, None  # gs converts it on export
    return (array.nbytes, lambda f: f.write(memoryview(np.ascontiguousarray(array)).cast("B"))), data_type


def _append(data: BinaryIO, body: Body) -> tuple[int, int]:
    """Write ``body`` at the next aligned offset of ``data``; (offset, length)."""
    end = data.seek(0, os.SEEK_END)
    offset = end + (-end % _EXTERNAL_ALIGN)
    data.seek(offset)
    body[1](data)
    return offset, body[0]


def _pending(tensor: onnx.TensorProto) -> str | None:
    info = {e.key: e.value for e in tensor.external_data}
    return info.get("offset") if info.get("location") == _PENDING else None


def _write_inline(model: onnx.ModelProto, file: BinaryIO, body_of: Callable[[onnx.TensorProto], Body | None]) -> None:
    """Serialize ``model`` into ``file`` with one initializer's bytes in memory at a time.

    ``SerializeToString`` would hold the whole model a second time as one byte string. The
    output is the same message: the graph's initializers follow its other fields (a parser
    appends repeated fields in the order they come); an initializer with a body (``body_of``) is
    written as its fields without values, then its raw_data streamed from the body.
    """
    shell = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(shell, field, value)
    graph = onnx.GraphProto()
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(graph, field, value)
    graph_head = graph.SerializeToString()
    parts = []
    for tensor in model.graph.initializer:
        body = body_of(tensor)
        if body is None:
            parts.append((tensor.SerializeToString(), None))
            continue
        head = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                                doc_string=tensor.doc_string)
        parts.append((head.SerializeToString() + _RAW_DATA_TAG + _varint(body[0]), body))
    sizes = [len(head) + (body[0] if body else 0) for head, body in parts]
    graph_size = len(graph_head) + sum(1 + len(_varint(n)) + n for n in sizes)
    file.write(shell.SerializeToString())
    file.write(_GRAPH_TAG + _varint(graph_size) + graph_head)
    for (head, body), size in zip(parts, sizes):
        file.write(_INITIALIZER_TAG + _varint(size) + head)
        if body is not None:
            body[1](file)


_GRAPH_TAG = bytes([7 << 3 | 2])  # ModelProto.graph = 7, length-delimited
_INITIALIZER_TAG = bytes([5 << 3 | 2])  # GraphProto.initializer = 5
_RAW_DATA_TAG = bytes([9 << 3 | 2])  # TensorProto.raw_data = 9


def writable(directory: str | os.PathLike) -> bool:
    """True when a file can be created in ``directory`` (tried: root passes ``os.access`` for
    directories it still cannot write, such as a read-only mount or /proc)."""
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".onnxslim-"):
            return True
    except OSError:
        return False


def external_data_name(path: Path) -> str:
    """``OUT.onnx.data``, unless a loaded model reads its weights from that file: then the first
    free ``OUT.onnx.N.data``, so an output never replaces the input's weights."""
    name, n = path.name + ".data", 0
    while (path.parent / name).resolve() in _SOURCES:
        n += 1
        name = f"{path.name}.{n}.data"
    return name


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    graph = gs.import_onnx(_densify_sparse(model))
    for constant in _constants_of(graph):  # a referenced weight is read when a pass asks for it
        values = constant._values
        if type(values) is LazyValues and refs.is_reference(values.tensor):
            constant._values = constant.file_values = refs.FileValues(values.tensor)
    # gs takes a graph output's type from a value_info entry of the same name even when that
    # entry has no shape, dropping the output's declared shape (and the checker then rejects it).
    for tensor, declared in zip(graph.outputs, model.graph.output):
        if tensor.shape is None and declared.type.tensor_type.HasField("shape"):
            tensor.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                            for d in declared.type.tensor_type.shape.dim]
    _forget_unexportable_types(graph)
    return graph


def _forget_unexportable_types(graph: gs.Graph) -> None:
    """Drop the dtype gs read from an optional, map or opaque value, here and in every body.

    gs keeps such a type as its TypeProto but cannot write it back (its exporter fails with
    UnboundLocalError: an If returning an optional sequence, node test test_if_opt); without a
    dtype it writes an untyped value, and ``to_model`` gives back the declared type.
    """
    for tensor in graph.tensors().values():
        if getattr(tensor, "type", "tensor_type") not in ("tensor_type", "sequence_type", "sparse_tensor_type"):
            tensor.dtype = None
    for node in graph.nodes:
        for body in node_subgraphs(node):
            _forget_unexportable_types(body)


def _densify_sparse(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with dense tensors for sparse weights, or ``model`` itself when it has none.

    gs drops a Constant's ``sparse_value`` (leaving a Constant without a value) and loads a
    ``sparse_initializer`` as float64, so both are densified on import; ``prune-weights
    {storage=sparse}`` writes them again.
    """
    has_sparse = model.graph.sparse_initializer or any(
        a.name == "sparse_value" for n in model.graph.node if n.op_type == "Constant" for a in n.attribute)
    if not has_sparse:
        return model
    dense = onnx.ModelProto()
    dense.CopyFrom(model)
    for sparse in dense.graph.sparse_initializer:
        dense.graph.initializer.append(numpy_helper.from_array(sparse_to_dense(sparse), sparse.values.name))
    del dense.graph.sparse_initializer[:]
    for node in dense.graph.node:
        for attr in list(node.attribute):
            if node.op_type == "Constant" and attr.name == "sparse_value":
                array = sparse_to_dense(attr.sparse_tensor)
                node.attribute.remove(attr)
                node.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(array)))
    return dense


def sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """Dense array of a SparseTensorProto (linear [NNZ] or coordinate [NNZ, rank] indices)."""
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices)
    shape = tuple(sparse.dims)
    array = np.zeros(int(np.prod(shape)), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), shape)
    array[indices.reshape(-1)] = values
    return array.reshape(shape)


def to_model(graph: gs.Graph, template: onnx.ModelProto) -> onnx.ModelProto:
    """Export ``graph``, keeping the model-level fields of ``template`` that gs drops: a model
    that holds its weights (referenced ones are read), as ONNX Runtime takes it in memory."""
    model = _export(graph, template)
    refs.materialize(model)
    return model


def _export(graph: gs.Graph, template: onnx.ModelProto) -> onnx.ModelProto:
    model = gs.export_onnx(graph, do_type_check=False)
    for name in _MODEL_FIELDS:
        setattr(model, name, getattr(template, name))
    del model.metadata_props[:]
    model.metadata_props.extend(template.metadata_props)
    _restore_value_types(model.graph, template.graph)
    _restore_type_attributes(model.graph, template.graph)
    return model


def _restore_type_attributes(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """Give back the TYPE_PROTO attributes gs skips on import (``Optional<type=...>()`` without
    its input is refused without it); a node is known by its op and first output."""
    declared = {(n.op_type, n.output[0]): [a for a in n.attribute if a.type == onnx.AttributeProto.TYPE_PROTO]
                for g in subgraphs(original) for n in g.node if n.output}
    for g in subgraphs(graph):
        for node in g.node:
            have = {a.name for a in node.attribute}
            for attr in declared.get((node.op_type, node.output[0] if node.output else ""), []):
                if attr.name not in have:
                    node.attribute.append(attr)


def _restore_value_types(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """Give back the declared type of a graph input, output or value gs could not read, in
    the main graph and in every If/Loop/Scan body.

    gs knows tensors only: a sequence or map (ZipMap's output, an ai.onnx.ml model's
    probabilities) comes back as a tensor of UNDEFINED type, which ORT and the checker refuse.
    """
    declared = {v.name: v.type for g in subgraphs(original) for v in [*g.input, *g.output, *g.value_info]
                if v.type.WhichOneof("value") != "tensor_type"}
    for g in subgraphs(graph):
        for value in [*g.input, *g.output, *g.value_info]:
            if value.name in declared and not value.type.tensor_type.elem_type:
                value.type.CopyFrom(declared[value.name])


def export_weightless(graph: gs.Graph, template: onnx.ModelProto) -> onnx.ModelProto:
    """``to_model(graph, template)`` with every constant of ``STUB_MIN_BYTES`` or more exported
    as a stub reference (as ``weightless``): the checker's view of a graph, without copying
    its weights. The graph is left as it was."""
    swapped: list[tuple[gs.Constant, Any]] = []
    try:
        for constant in _constants_of(graph):
            if constant.dtype is None or constant._values is None or _nbytes(constant) < STUB_MIN_BYTES:
                continue
            data_type = None if isinstance(constant._values, SparseValues) else _onnx_type(constant)
            if data_type in (None, onnx.TensorProto.STRING):
                continue
            tensor = onnx.TensorProto(name=constant.name, data_type=data_type, dims=constant.shape)
            swapped.append((constant, constant._values))
            constant._values = LazyValues(external_reference(tensor, _STUB_FILE, 0, value_nbytes(tensor)))
        return _export(graph, template)
    finally:
        for constant, values in swapped:
            constant._values = values


def _constants_of(graph: gs.Graph) -> Iterator[gs.Constant]:
    """Every Constant of ``graph``, its nodes' attributes and its subgraphs, each once."""
    seen: set[int] = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        found = [t for t in g.tensors().values() if isinstance(t, gs.Constant)]
        for node in g.nodes:
            for value in node.attrs.values():
                if isinstance(value, gs.Constant):
                    found.append(value)
                elif isinstance(value, gs.Graph):
                    stack.append(value)
                elif isinstance(value, list):
                    stack.extend(v for v in value if isinstance(v, gs.Graph))
        for constant in found:
            if id(constant) not in seen:
                seen.add(id(constant))
                yield constant


def _nbytes(constant: gs.Constant) -> int:
    values = constant._values
    return int(values.nbytes) if hasattr(values, "nbytes") else 0


def _onnx_type(constant: gs.Constant) -> int | None:
    if isinstance(constant._values, LazyValues):
        return constant._values.tensor.data_type
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(constant.dtype))
    except (KeyError, TypeError, ValueError):
        return None


def file_bytes(path: str | os.PathLike) -> int:
    """File size plus the external data files it names."""
    path = Path(path)
    total = path.stat().st_size
    sidecar = path.with_name(path.name + ".data")
    return total + (sidecar.stat().st_size if sidecar.exists() else 0)


#: IR 4 (ONNX 1.3) is the first in which an initializer need not be listed as a graph input
INITIALIZERS_APART_IR = 4
#: The oldest opset ONNX Runtime runs: an upgrade from an older one cannot be checked against the
#: original's outputs. On the ONNX backend tests' 112 models at opsets 1-6 the converter's results
#: matched the expected outputs wherever ORT ran them (ORT refused 3 PRelu broadcasts; 5 Pads at IR
#: 3 failed before initializers apart from inputs were made valid at IR 4).
ORT_OLDEST_OPSET = 7


def upgrade_legacy(model: onnx.ModelProto, path: str | os.PathLike) -> onnx.ModelProto:
    """The model as the passes take it: initializers are constants, the opset at least ``MIN_OPSET``.

    * An initializer also listed as a graph input is an overridable default (IR >= 4) or, below
      IR 4, how every weight had to be declared. Either way it is treated as the constant it
      holds: it leaves the graph inputs (no data is asked for it) and the IR version rises to at
      least 4, where that is valid. The user's model file is not touched; the output model
      declares the weights as plain initializers, as current exporters do.
    * A model to upgrade is raised to IR 4 first, where the initializers the converter adds
      need not be listed as inputs.
    * An opset under ``MIN_OPSET`` is upgraded with ``onnx.version_converter``; a conversion that
      fails is refused (``ModelLoadError``: exit 2). Under ``ORT_OLDEST_OPSET`` the warning says
      that the upgrade itself is checked by onnx.checker alone: ONNX Runtime cannot run the original.
    """
    initializers = {t.name for t in model.graph.initializer}
    listed = [i for i in model.graph.input if i.name in initializers]
    if listed:
        logger.warning("%s: %d initializer(s) also listed as graph inputs are treated as constants and no "
                       "longer listed as inputs", path, len(listed))
        kept = [i for i in model.graph.input if i.name not in initializers]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.ir_version = max(model.ir_version, INITIALIZERS_APART_IR)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        return model
    # IR 4 takes every IR-3 model as it is, and the converter's adapters (Pad 2 -> 11) add
    # initializers that IR 3 would have to list as inputs.
    model.ir_version = max(model.ir_version, INITIALIZERS_APART_IR)
    try:
        upgraded = onnx.version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise ModelLoadError(f"{path}: opset {opset} is older than {MIN_OPSET} and onnx.version_converter "
                             f"could not upgrade it ({_first_line(exc)})") from None
    unchecked = (f"; ONNX Runtime runs opset {ORT_OLDEST_OPSET}+ only, so the upgrade is checked by onnx.checker, "
                 "not against the original's outputs") if opset < ORT_OLDEST_OPSET else ""
    logger.warning("%s: opset %d upgraded to %d with onnx.version_converter%s", path, opset, MIN_OPSET, unchecked)
    return upgraded


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
