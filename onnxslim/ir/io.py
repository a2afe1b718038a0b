"""Load and save models: external data, models over 2 GB, atomic writes, gs round trips.

A protobuf cannot be serialized above 2 GB, so a model whose tensors pass the threshold
is saved with external data and checked through the path-based checker; it is never turned
into one byte string. The threshold is ``onnxslim.runtime.session.LARGE_MODEL_BYTES``; tests
lower it to exercise that path.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import google.protobuf.message
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from onnxslim.errors import ModelLoadError, UsageError
from onnxslim.runtime import session

logger = logging.getLogger(__name__)

MIN_OPSET = 11
_MODEL_FIELDS = ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string")


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and check a model with its external data; raise ``ModelLoadError`` on anything wrong."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (google.protobuf.message.DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"{path}: not an ONNX model, or truncated ({_first_line(exc)})") from None
    if model.ir_version == 0 or not model.HasField("graph") or not model.graph.output:
        raise ModelLoadError(f"{path}: not an ONNX model, or truncated (no graph or no outputs)")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot read its external data ({_first_line(exc)})") from None
    model = upgrade_legacy(model, path)
    try:
        check(model, path)
    except onnx.checker.ValidationError as exc:
        raise ModelLoadError(f"{path}: rejected by onnx.checker: {_first_line(exc)}") from None
    return model


def check(model: onnx.ModelProto, path: str | os.PathLike | None = None) -> None:
    """onnx.checker on the model; by path when it is too large to serialize."""
    if is_large(model):
        if path is None:
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "model.onnx"
                _save_external(model, target)
                onnx.checker.check_model(str(target))
            return
        onnx.checker.check_model(str(path))
    else:
        onnx.checker.check_model(model)


def is_large(model: onnx.ModelProto) -> bool:
    """True when the model's tensors would push one protobuf past ``session.LARGE_MODEL_BYTES``."""
    return session.tensor_bytes(model) >= session.LARGE_MODEL_BYTES


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` atomically (temp file + rename), with external data if large."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{path}: output directory {parent} does not exist")
    if not writable(parent):
        raise UsageError(f"{path}: output directory {parent} is not writable")
    with tempfile.TemporaryDirectory(dir=parent, prefix=".onnxslim-") as tmp:
        staged = Path(tmp) / path.name
        if is_large(model):
            _save_external(model, staged)
            data = staged.with_name(staged.name + ".data")
            os.replace(data, path.with_name(path.name + ".data"))
        else:
            staged.write_bytes(model.SerializeToString())
        os.replace(staged, path)


def writable(directory: str | os.PathLike) -> bool:
    """True when a file can be created in ``directory`` (tried: root passes ``os.access`` for
    directories it still cannot write, such as a read-only mount or /proc)."""
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".onnxslim-"):
            return True
    except OSError:
        return False


def _save_external(model: onnx.ModelProto, target: Path) -> None:
    """Save with every tensor in ``target``.data; ``model`` is left as it was (data in memory)."""
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=target.name + ".data",
        size_threshold=1024,
    )
    onnx.load_external_data_for_model(model, str(target.parent))  # saving moved the data out of the proto


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    graph = gs.import_onnx(_densify_sparse(model))
    # gs takes a graph output's type from a value_info entry of the same name even when that
    # entry has no shape, dropping the output's declared shape (and the checker then rejects it).
    for tensor, declared in zip(graph.outputs, model.graph.output):
        if tensor.shape is None and declared.type.tensor_type.HasField("shape"):
            tensor.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                            for d in declared.type.tensor_type.shape.dim]
    return graph


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
    """Export ``graph``, keeping the model-level fields of ``template`` that gs drops."""
    model = gs.export_onnx(graph, do_type_check=False)
    for name in _MODEL_FIELDS:
        setattr(model, name, getattr(template, name))
    del model.metadata_props[:]
    model.metadata_props.extend(template.metadata_props)
    return model


def file_bytes(path: str | os.PathLike) -> int:
    """File size plus the external data files it names."""
    path = Path(path)
    total = path.stat().st_size
    sidecar = path.with_name(path.name + ".data")
    return total + (sidecar.stat().st_size if sidecar.exists() else 0)


#: IR 4 (ONNX 1.3) is the first in which an initializer need not be listed as a graph input
INITIALIZERS_APART_IR = 4
#: the oldest opset onnx.version_converter upgrades reliably; older ones are refused
MIN_CONVERTIBLE_OPSET = 7


def upgrade_legacy(model: onnx.ModelProto, path: str | os.PathLike) -> onnx.ModelProto:
    """The model as the passes take it: initializers are constants, the opset at least ``MIN_OPSET``.

    * An initializer also listed as a graph input is an overridable default (IR >= 4) or, below
      IR 4, how every weight had to be declared. Either way it is treated as the constant it
      holds: it leaves the graph inputs (no data is asked for it) and the IR version rises to at
      least 4, where that is valid. The user's model file is not touched; the output model
      declares the weights as plain initializers, as current exporters do.
    * An opset from 7 up to ``MIN_OPSET`` is upgraded with ``onnx.version_converter``; older
      opsets, and a conversion that fails, are refused (``ModelLoadError``: exit 2).
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
    if opset < MIN_CONVERTIBLE_OPSET:
        raise ModelLoadError(f"{path}: opset {opset} is older than {MIN_CONVERTIBLE_OPSET}, the oldest upgraded "
                             f"here; upgrade it to {MIN_OPSET}+ first with onnx.version_converter.convert_version")
    try:
        upgraded = onnx.version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise ModelLoadError(f"{path}: opset {opset} is older than {MIN_OPSET} and onnx.version_converter "
                             f"could not upgrade it ({_first_line(exc)})") from None
    logger.warning("%s: opset %d upgraded to %d with onnx.version_converter", path, opset, MIN_OPSET)
    return upgraded


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
