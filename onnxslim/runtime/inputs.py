"""Generated inputs that the model can take, found before any pass runs.

Without ``--data`` every check runs on generated inputs (``feeds.random_feeds``). Dynamic dims
and inputs whose values matter are resolved in this order:

1. ``--input-shape`` (binds every dim of that input, -1 and symbolic dims alike);
2. what the graph tells: a dim written as an expression of others (``past + seq``); the
   vocabulary of a Gather table an id input indexes; the constants a scalar input is compared
   with (a sample rate checked against 8000 and 16000 takes the largest of them);
3. the documented defaults (``feeds.DEFAULT_DIMS``).

The inputs are then run once in ONNX Runtime. When ORT refuses them, a short ladder of
alternatives is tried in this order, each changing only the dims the user did not give:

* every other value a scalar input is compared with;
* value inputs (integers a Tile, Expand, Reshape, Range, Slice, Pad, TopK, OneHot, Resize or
  ConstantOfShape reads as repeats, a shape or a count, or a Reduce*, Squeeze, Unsqueeze, CumSum
  or CumProd as axes) all at 1, then all at 0: ids in ``[0, 100)`` as repeats can ask for
  gigabytes, and as axes are out of range;
* spatial dims (``height``/``width``, the last two axes of an image) at 32, 64, 48, 128, 256,
  384, 512 and 640;
* sequence-like dims at 8, 32, 64, 128, 1, 512 and 16000 (audio samples), and dims named
  like ``past`` at 0;
* every other dynamic dim at 1, 8, 32, 64, 128, 512 and 16000 (audio samples);
* all free dynamic dims equal, at 1, 32 and 64.

The first that runs is used, and the report says which. A candidate whose outputs exceed
``MAX_OUTPUT_BYTES`` counts as refused: every check holds them, and their float64 copies, in
memory. When none runs, ``InputsError`` names the input ORT complained about (a value input
when the outputs were too large) and the flag to give (``--input-shape`` or ``--data``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim.errors import UsageError
from onnxslim.ir.weightless import subgraphs
from onnxslim.runtime.feeds import InputSpec, bind_shapes, dim_role, input_specs, random_feeds
from onnxslim.runtime.session import make_session

logger = logging.getLogger(__name__)

#: Alternatives tried per dim role, after the defaults (see the module docstring).
LADDER: dict[str, tuple[int, ...]] = {
    "spatial": (32, 64, 48, 128, 256, 384, 512, 640),
    "sequence": (8, 32, 64, 128, 1, 512, 16000),
    "other": (1, 8, 32, 64, 128, 512, 16000),
}
SAME_VALUE_LADDER = (1, 32, 64)
#: The ladder stops after this many tries or seconds, whichever comes first.
MAX_TRIES = 40
MAX_SECONDS = 60.0

#: Generated inputs whose outputs take more bytes than this count as not running (see above).
MAX_OUTPUT_BYTES = 256 * 2**20

_COMPARISONS = {"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"}
_PASS_THROUGH = {"Cast", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten", "CastLike"}
#: Operand positions read as repeats, a shape, a count or axes (not as data).
_VALUE_OPERANDS = {"Tile": (1,), "Expand": (1,), "Reshape": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
                   "Slice": (1, 2, 3, 4), "Pad": (1,), "TopK": (1,), "OneHot": (1,), "Resize": (3,),
                   "Upsample": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "CumSum": (1,), "CumProd": (1,),
                   **{f"Reduce{r}": (1,) for r in ("Sum", "Mean", "Max", "Min", "Prod", "L1", "L2", "LogSum",
                                                   "LogSumExp", "SumSquare")}}
#: The values value inputs take, in turn, after the defaults (1, then 0 for a rank-1 tensor's axis).
_VALUE_LADDER = (1, 0)


class InputsError(UsageError):
    """No generated input runs in ONNX Runtime; the message names the input and the flag."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One way to generate the inputs: role defaults, preset symbols and fixed values."""

    label: str
    defaults: Mapping[str, int] = dataclasses.field(default_factory=dict)
    symbols: Mapping[str, int] = dataclasses.field(default_factory=dict)
    values: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ResolvedInputs:
    """Inputs that ran in ORT: their shapes and fixed values, and how they were found."""

    shapes: dict[str, tuple[int, ...]]
    values: dict[str, np.ndarray]
    feeds: dict[str, np.ndarray]
    description: str

    def feeds_for(self, model: onnx.ModelProto, seed: int, batch: int | None = None) -> dict[str, np.ndarray]:
        """Inputs of the same shapes and fixed values for another seed (``batch`` resizes a
        dynamic axis 0)."""
        shapes = self.shapes if batch is None else with_batch(model, self.shapes, batch)
        return random_feeds(model, shapes, seed, values=self.values)


def resolve_inputs(
    model: onnx.ModelProto,
    overrides: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    provider: str = "CPUExecutionProvider",
    threads: int | None = None,
) -> ResolvedInputs:
    """Generated inputs that ``model`` runs on in ORT (see the module docstring).

    Raises:
        InputsError: ORT cannot build a session for the model, or refuses every candidate.
        UsageError: a bad ``--input-shape`` or an input that cannot be generated.
    """
    overrides = dict(overrides or {})
    random_feeds(model, overrides, seed)  # bad overrides and ungeneratable inputs fail here, as usage errors
    try:
        session = make_session(model, provider, threads, optimize=False)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise InputsError(f"ONNX Runtime cannot load the model: {first_line(exc)}") from None
    outputs = [o.name for o in session.get_outputs()]
    start, first_error, tries = time.monotonic(), None, 0
    for candidate in candidates(model, overrides):
        tries += 1
        try:
            feeds = random_feeds(model, _shapes(model, overrides, candidate), seed, values=candidate.values)
            _check_output_size(session.run(outputs, feeds))
        except UsageError:
            continue
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            first_error = first_error or first_line(exc)
            logger.debug("inputs %s: %s", candidate.label, first_line(exc))
            if tries >= MAX_TRIES or time.monotonic() - start > MAX_SECONDS:
                break
            continue
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        values = {k: np.asarray(v) for k, v in candidate.values.items()}
        return ResolvedInputs(shapes, values, feeds, _description(candidate, shapes, values, tries))
    raise InputsError(_failure(model, first_error, overrides))


def candidates(model: onnx.ModelProto, overrides: Mapping[str, Sequence[int]]) -> Iterator[Candidate]:
    """The defaults, then the ladder of alternatives (see the module docstring)."""
    specs = [s for s in input_specs(model) if s.name not in overrides]
    compared = compared_values(model)
    scalar_inputs = {s.name for s in specs if s.dims is not None and all(d == 1 for d in s.dims)}
    choices = {name: values for name, values in compared.items() if name in scalar_inputs}
    base = {name: np.asarray(values[0]) for name, values in choices.items()}
    yield Candidate("defaults", values=base)
    for name, values in choices.items():
        for value in values[1:]:
            yield Candidate(f"{name}={_number(value)}", values={**base, name: np.asarray(value)})
    fixed = [name for name in value_inputs(model) if name not in overrides and name not in base]
    for value in _VALUE_LADDER if fixed else ():
        yield Candidate(f"{', '.join(fixed)}={value}", values={**base, **{name: np.asarray(value) for name in fixed}})
    roles = _free_roles(specs)
    for role, alternatives in LADDER.items():
        if role in roles:
            for value in alternatives:
                yield Candidate(f"{role} dims={value}", defaults={role: value}, values=base)
    past = sorted({d for s in specs for d in s.dims or () if isinstance(d, str) and "past" in d.lower()})
    if past:
        yield Candidate("past dims=0", symbols=dict.fromkeys(past, 0), values=base)
    if len(roles) > 1:
        for value in SAME_VALUE_LADDER:
            yield Candidate(f"all dynamic dims={value}", defaults=dict.fromkeys(roles, value), values=base)


def compared_values(model: onnx.ModelProto) -> dict[str, list[float | int]]:
    """Input name -> the constants it is compared with anywhere in the graph, largest first."""
    inputs = {s.name for s in input_specs(model)}
    constants = _small_constants(model.graph)
    found: dict[str, set] = {}
    for graph in subgraphs(model.graph):
        aliases = {name: name for name in inputs}
        for node in graph.node:
            if node.op_type in _PASS_THROUGH and node.input and node.input[0] in aliases:
                aliases[node.output[0]] = aliases[node.input[0]]
            if node.op_type not in _COMPARISONS or len(node.input) != 2:
                continue
            for mine, other in (node.input, node.input[::-1]):
                if mine in aliases and other in constants:
                    found.setdefault(aliases[mine], set()).update(constants[other])
    return {name: sorted(values, reverse=True) for name, values in found.items()}


def value_inputs(model: onnx.ModelProto) -> list[str]:
    """Integer inputs an op reads (directly or through a Cast, Reshape...) as repeats, a shape or a
    count, in graph order."""
    specs = [s for s in input_specs(model) if s.dtype.kind in "iu"]
    found: set[str] = set()
    for graph in subgraphs(model.graph):
        aliases = {s.name: s.name for s in specs}
        for node in graph.node:
            if node.op_type in _PASS_THROUGH and node.input and node.input[0] in aliases:
                aliases[node.output[0]] = aliases[node.input[0]]
            for position in _VALUE_OPERANDS.get(node.op_type, ()):
                if position < len(node.input) and node.input[position] in aliases:
                    found.add(aliases[node.input[position]])
    return [s.name for s in specs if s.name in found]


class _TooLarge(Exception):
    """Outputs past ``MAX_OUTPUT_BYTES``: refused like an ORT error."""


def _check_output_size(outputs: list) -> None:
    size = sum(o.nbytes for o in outputs if isinstance(o, np.ndarray))
    if size > MAX_OUTPUT_BYTES:
        raise _TooLarge(f"the outputs take {size / 2**30:.2f} GiB on generated values "
                        f"(limit {MAX_OUTPUT_BYTES // 2**20} MiB)")


def with_batch(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], batch: int) -> dict[str, tuple[int, ...]]:
    """``shapes`` with axis 0 set to ``batch`` where the model declares axis 0 dynamic."""
    resized = dict(shapes)
    for spec in input_specs(model):
        shape = tuple(shapes.get(spec.name, ()))
        if spec.dims and shape and not isinstance(spec.dims[0], int):
            resized[spec.name] = (batch, *shape[1:])
    return resized


def batched_shapes(
    model: onnx.ModelProto, resolved: ResolvedInputs, batch: int, keep: Sequence[str] = (),
    provider: str = "CPUExecutionProvider", threads: int | None = None,
) -> dict[str, tuple[int, ...]]:
    """The resolved shapes with a dynamic axis 0 at ``batch`` (inputs in ``keep`` as given),
    when the model runs on them in ORT; else the resolved shapes as they are."""
    shapes = {**with_batch(model, resolved.shapes, batch), **{k: resolved.shapes[k] for k in keep}}
    if shapes == resolved.shapes:
        return shapes
    try:
        session = make_session(model, provider, threads, optimize=False)
        session.run(None, random_feeds(model, shapes, values=resolved.values))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        logger.info("inputs at batch %d do not run (%s); batch 1 it is", batch, first_line(exc))
        return dict(resolved.shapes)
    return shapes


def _shapes(model: onnx.ModelProto, overrides: Mapping[str, Sequence[int]], candidate: Candidate) -> dict[str, tuple[int, ...]]:
    return bind_shapes(model, overrides, defaults=candidate.defaults, symbols=candidate.symbols)


def _free_roles(specs: list[InputSpec]) -> list[str]:
    roles = []
    for spec in specs:
        for axis, dim in enumerate(spec.dims or ()):
            role = None if isinstance(dim, int) else dim_role(spec.dims, axis)
            if role not in (None, "batch") and role not in roles:
                roles.append(role)
    return roles


def _small_constants(graph: onnx.GraphProto) -> dict[str, list]:
    out: dict[str, list] = {}
    for g in subgraphs(graph):
        tensors = [(t.name, t) for t in g.initializer]
        tensors += [(n.output[0], a.t) for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
        for name, tensor in tensors:
            if int(np.prod(tensor.dims)) <= 4 and tensor.data_type != onnx.TensorProto.STRING:
                out[name] = [v.item() for v in numpy_helper.to_array(tensor).reshape(-1)]
    return out


def _description(candidate: Candidate, shapes, values, tries: int) -> str:
    dims = ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in shapes.items() if k not in values)
    fixed = "".join(f", {k}={_number(v)}" for k, v in values.items())
    how = "" if tries == 1 else f" (the defaults did not run; alternative {tries - 1}: {candidate.label})"
    return f"generated inputs {dims}{fixed}, seeded{how}"


def _failure(model: onnx.ModelProto, error: str | None, overrides) -> str:
    specs = input_specs(model)
    named = next((s.name for s in specs if error and f"'{s.name}'" in error), None)
    if named is None and error and "on generated values" in error:
        integers = [s.name for s in specs if s.dtype.kind in "iu"]
        named = next((name for name in value_inputs(model) or integers if name not in overrides), None)
    dynamic = [s.name for s in specs if s.is_dynamic]
    subject = named or next((n for n in dynamic if n not in overrides), None) or (dynamic or [s.name for s in specs] or ["?"])[0]
    if subject in overrides:
        hint = "another --input-shape (the one given does not run) or --data"
    else:
        hint = "--input-shape NAME=DxD... or --data" if subject in dynamic else "--data"
    return (f"no generated input runs in ONNX Runtime ({error or 'no error'}); "
            f"give the shape or values of input {subject!r} with {hint}")


def _number(value) -> str:
    array = np.asarray(value)
    return str(array.item()) if array.size == 1 else str(array.tolist())


def first_line(exc: BaseException) -> str:
    """ORT's message without its code prefix and source location, cut to 200 characters."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    line = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", line)
    line = re.sub(r"/onnxruntime_src/\S+:\d+ ", "", line)
    return line[:200]

