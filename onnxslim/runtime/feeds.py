"""Model inputs: their specs, ``--input-shape`` values, dynamic-dim binding and generated feeds.

Generated inputs (parity without ``--data``), per CONTRACT.md:

* floating inputs (float16/bfloat16/float32/float64): standard normal, seeded;
* integer inputs named like ``*mask*``: ones; named like ``*type*``: zeros; any other integer
  input is an id, uniform in ``[0, 100)`` unless the model tells a vocabulary size: when the
  input (directly or through a Cast) indexes a Gather whose data is a constant 2-D table, the
  bound is the table's first dimension (the smallest such table when there are several);
* bool inputs: true.

Each input draws from its own generator seeded by ``(seed, crc32(name))``, so changing one
input's shape does not change the values of the others.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxslim.errors import UsageError

Dim = int | str | None

DEFAULT_DIMS: dict[str, int] = {"batch": 1, "sequence": 16, "spatial": 224, "other": 16}
"""Values given to dynamic dims that neither ``--input-shape`` nor another input binds.

* ``batch`` (1): axis 0, or any axis whose name looks like a batch (``N``, ``batch``,
  ``batch_size``, ``bs``), or the one unnamed dynamic dim of a 3-D or higher input, neither
  first nor last, whose other dims are fixed (a recurrent state ``[2, ?, 128]``);
* ``sequence`` (16): axes named like a sequence (``seq``, ``sequence``, ``length``, ``len``,
  ``tokens``, ``time``);
* ``spatial`` (224): axes named like ``height``/``width``/``H``/``W``, and the last two axes
  of a 4-D input whose axis 1 is fixed (NCHW), or axes 1 and 2 of a 4-D input whose axis 3 is
  fixed to 1, 3 or 4 (NHWC);
* ``other`` (16): every other dynamic axis.

A dim named by a symbol (``dim_param``) takes the same value in every input that uses it, so
``--input-shape input_ids=1x128`` also sizes an ``attention_mask`` declared ``[batch, seq]``.
"""

#: Exclusive upper bound of generated ids when the model does not tell a vocabulary size.
DEFAULT_ID_BOUND = 100

_BATCH_NAMES = re.compile(r"^(n|b|bs|batch|batch_?size|.*batch.*)$", re.IGNORECASE)
_SEQUENCE_NAMES = re.compile(r"(seq|sequence|length|len|tokens?|time)", re.IGNORECASE)
_SPATIAL_NAMES = re.compile(r"^(h|w|height|width|.*height.*|.*width.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class InputSpec:
    """A graph input that is not an initializer.

    ``dims`` holds an int for a fixed dim, the symbol for a named dynamic dim and None for an
    unnamed one; ``dims`` is None when the rank itself is unknown.
    """

    name: str
    dtype: np.dtype
    dims: tuple[Dim, ...] | None

    @property
    def is_dynamic(self) -> bool:
        return self.dims is None or any(not isinstance(d, int) for d in self.dims)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs, in graph order.

    Raises:
        UsageError: an input is not a tensor (sequence, map, optional).
    """
    constants = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in constants:
            continue
        if not value.type.HasField("tensor_type"):
            kind = (value.type.WhichOneof("value") or "unknown").removesuffix("_type")
            raise UsageError(f"input {value.name!r} has {kind} type; only tensor inputs are supported")
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        specs.append(InputSpec(value.name, dtype, _dims(tensor)))
    return specs


def parse_input_shapes(texts: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``--input-shape`` values such as ``input=1x3x224x224``.

    The name is everything before the last ``=``; dims are positive integers joined by ``x``.

    Raises:
        UsageError: a malformed value or a name given twice.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, sep, dims_text = text.strip().rpartition("=")
        parts = dims_text.lower().split("x")
        if not sep or not name or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise UsageError(
                f"malformed --input-shape {text!r}: expected NAME=DxDx... with positive "
                f"integers, e.g. input=1x3x224x224"
            )
        if name in shapes:
            raise UsageError(f"--input-shape names input {name!r} twice")
        shapes[name] = tuple(int(p) for p in parts)
    return shapes


def bind_shape(
    spec: InputSpec,
    overrides: Mapping[str, Sequence[int]] | None = None,
    symbols: Mapping[str, int] | None = None,
    batch: int | None = None,
    defaults: Mapping[str, int] | None = None,
) -> tuple[int, ...]:
    """The concrete shape to feed ``spec``.

    Fixed dims are kept. An override for the input replaces every dim but must keep the rank
    and the fixed dims. Otherwise dynamic dims take, in order: ``symbols[dim_param]``,
    ``batch`` (axis 0 only), then ``defaults`` (by role, ``DEFAULT_DIMS`` where absent).

    Raises:
        UsageError: an override of the wrong rank or contradicting a fixed dim, or an input
            of unknown rank without an override.
    """
    override = (overrides or {}).get(spec.name)
    if override is not None:
        return _check_override(spec, tuple(int(d) for d in override))
    if spec.dims is None:
        raise UsageError(f"input {spec.name!r} has unknown rank; give it with --input-shape")
    symbols = symbols or {}
    shape = []
    for axis, dim in enumerate(spec.dims):
        if isinstance(dim, int):
            shape.append(dim)
        elif isinstance(dim, str) and dim in symbols:
            shape.append(int(symbols[dim]))
        elif isinstance(dim, str) and (value := evaluate_dim(dim, symbols)) is not None:
            shape.append(value)
        elif axis == 0 and batch is not None:
            shape.append(int(batch))
        else:
            role = dim_role(spec.dims, axis)
            shape.append(int((defaults or DEFAULT_DIMS).get(role, DEFAULT_DIMS[role])))
    return tuple(shape)


_DIM_EXPRESSION = re.compile(r"^[\w\s+\-*/()]+$")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


def evaluate_dim(text: str, symbols: Mapping[str, int]) -> int | None:
    """The value of a dim written as an expression of other dims (``past + seq``, ``2*s0``).

    Exporters write such dims for a total length (past + current) or a strided size. Returns
    None when ``text`` is a plain name or names a dim not bound yet, or the value is not a
    positive integer.
    """
    names = _IDENTIFIER.findall(text)
    if not _DIM_EXPRESSION.match(text) or names == [text.strip()] or any(n not in symbols for n in names):
        return None
    expression = _IDENTIFIER.sub(lambda m: str(int(symbols[m.group(0)])), text).replace("/", "//")
    try:
        value = eval(expression, {"__builtins__": {}}, {})  # noqa: S307 - digits and + - * / ( ) only
    except (SyntaxError, ZeroDivisionError, TypeError, ValueError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def bind_shapes(
    model: onnx.ModelProto,
    overrides: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    defaults: Mapping[str, int] | None = None,
    symbols: Mapping[str, int] | None = None,
) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every input, sharing symbolic dims across inputs.

    ``defaults`` replaces ``DEFAULT_DIMS`` by role and ``symbols`` presets named dims (the
    alternatives ``runtime.inputs`` tries when the defaults do not run).

    Raises:
        UsageError: an override names no input, or as ``bind_shape``.
    """
    specs = input_specs(model)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {s.name for s in specs})
    if unknown:
        names = ", ".join(s.name for s in specs)
        raise UsageError(f"--input-shape names no model input: {', '.join(unknown)} (inputs: {names})")
    symbols = dict(symbols or {})
    for spec in specs:
        if spec.name in overrides and spec.dims is not None:
            shape = bind_shape(spec, overrides)
            symbols.update({d: v for d, v in zip(spec.dims, shape, strict=True) if isinstance(d, str)})
    # A symbol takes its value where it is first met, so it is the same in every input; dims
    # written as expressions of other symbols are bound after those.
    bound: dict[str, tuple[int, ...]] = {}
    for spec in sorted(specs, key=_has_expression):
        bound[spec.name] = shape = bind_shape(spec, overrides, symbols, batch, defaults)
        if spec.dims is not None:
            for dim, value in zip(spec.dims, shape, strict=True):
                if isinstance(dim, str):
                    symbols.setdefault(dim, value)
    return {s.name: bound[s.name] for s in specs}


def _has_expression(spec: InputSpec) -> bool:
    return any(isinstance(d, str) and _IDENTIFIER.fullmatch(d.strip()) is None for d in spec.dims or ())


def random_feeds(
    model: onnx.ModelProto,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    batch: int | None = None,
    values: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Generated inputs for every model input (see the module docstring for the rules).

    Args:
        model: the model whose inputs are fed.
        shapes: ``--input-shape`` overrides (or resolved shapes), by input name.
        seed: the same seed gives the same arrays.
        batch: size of a dynamic axis 0 where no override gives it.
        values: inputs whose values matter (a sample rate), by name: broadcast to the shape.

    Raises:
        UsageError: a string input (it cannot be generated) or a bad shape override.
    """
    bound = bind_shapes(model, shapes, batch)
    vocab = vocabulary_sizes(model)
    feeds = {}
    for spec in input_specs(model):
        shape = bound[spec.name]
        _check_size(spec.name, shape, spec.dtype)
        if values and spec.name in values:
            feeds[spec.name] = np.broadcast_to(np.asarray(values[spec.name]), shape).astype(spec.dtype)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
        feeds[spec.name] = _generate(spec, shape, rng, vocab.get(spec.name))
    return feeds


#: A generated input larger than this is refused (an --input-shape typo would exhaust memory).
MAX_GENERATED_BYTES = 4 * 2**30


def _check_size(name: str, shape: Sequence[int], dtype: np.dtype) -> None:
    size = int(np.prod(shape, dtype=object)) * max(dtype.itemsize, 1)
    if size > MAX_GENERATED_BYTES:
        dims = "x".join(map(str, shape))
        raise UsageError(
            f"input {name!r} at shape {dims} would need {size / 2**30:.1f} GiB of generated data "
            f"(limit {MAX_GENERATED_BYTES // 2**30} GiB); give a smaller --input-shape or real --data"
        )


def vocabulary_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Input name -> rows of the smallest constant 2-D table a Gather indexes with it."""
    shapes = _constant_shapes(model.graph)
    aliases = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Cast" and n.input}
    sizes: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        table = shapes.get(node.input[0])
        if table is None or len(table) != 2 or _gather_axis(node) != 0:
            continue
        source = aliases.get(node.input[1], node.input[1])
        sizes[source] = min(sizes.get(source, table[0]), table[0])
    return sizes


def _generate(spec: InputSpec, shape, rng: np.random.Generator, vocab: int | None) -> np.ndarray:
    kind = spec.dtype.kind
    lowered = spec.name.lower()
    if spec.dtype.name == "bfloat16" or kind in "fc":
        return rng.standard_normal(shape).astype(spec.dtype)
    if kind == "b":
        return np.ones(shape, dtype=bool)
    if kind in "iu":
        if "mask" in lowered:
            return np.ones(shape, dtype=spec.dtype)
        if "type" in lowered:
            return np.zeros(shape, dtype=spec.dtype)
        high = vocab if vocab else DEFAULT_ID_BOUND
        return rng.integers(0, high, size=shape).astype(spec.dtype)
    raise UsageError(f"cannot generate values for input {spec.name!r} of type {spec.dtype}; pass --data")


_ANONYMOUS = ("", "?", "-1", "None", "unk")


def _dims(tensor: onnx.TypeProto.Tensor) -> tuple[Dim, ...] | None:
    if not tensor.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tensor.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        else:  # older exporters write -1 for a dynamic dim, Paddle names them all "?"
            dims.append(None if d.dim_param in _ANONYMOUS else d.dim_param)
    return tuple(dims)


def dim_role(dims: tuple[Dim, ...], axis: int) -> str:
    """``batch``, ``sequence``, ``spatial`` or ``other``: which ``DEFAULT_DIMS`` entry sizes the dim."""
    name = dims[axis] if isinstance(dims[axis], str) else ""
    if axis == 0 or _BATCH_NAMES.match(name):
        return "batch"
    if name and _SEQUENCE_NAMES.search(name):
        return "sequence"
    if name and _SPATIAL_NAMES.match(name):
        return "spatial"
    lone = sum(not isinstance(d, int) for d in dims) == 1 and 0 < axis < len(dims) - 1
    if lone and not name and len(dims) >= 3:
        return "batch"  # a recurrent state [layers, batch, hidden]: its one unnamed dynamic dim
    if len(dims) == 4:
        nchw = isinstance(dims[1], int) and axis in (2, 3)
        nhwc = dims[3] in (1, 3, 4) and axis in (1, 2)
        if nchw or nhwc:
            return "spatial"
    return "other"


def _check_override(spec: InputSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    if spec.dims is None:
        return shape
    text = "x".join(map(str, shape))
    if len(shape) != len(spec.dims):
        raise UsageError(
            f"--input-shape {spec.name}={text} has rank {len(shape)}, "
            f"but the input is declared {_format_dims(spec.dims)}"
        )
    for axis, (dim, value) in enumerate(zip(spec.dims, shape, strict=True)):
        if isinstance(dim, int) and dim != value:
            raise UsageError(
                f"--input-shape {spec.name}={text} sets axis {axis} to {value}, "
                f"but the input fixes it to {dim} ({_format_dims(spec.dims)})"
            )
    return shape


def _format_dims(dims: tuple[Dim, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _constant_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = tuple(node.attribute[0].t.dims)
    for node in graph.node:
        # A quantized embedding table is read through DequantizeLinear: same rows.
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    return shapes


def _gather_axis(node: onnx.NodeProto) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return 0
