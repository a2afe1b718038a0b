"""Per-output parity between a reference model and a candidate, and tolerances over it.

Tolerances live in ``tolerance`` (``Tolerance`` is re-exported here).

Metrics, per output, with ``a`` the reference and ``b`` the candidate (CONTRACT.md
"Definitions"), accumulated over batches with running maxima and float64 sums, never by
concatenating outputs:

* ``max_abs`` = max|a − b|;  ``max_rel`` = max|a − b| / max|a| (0 when both are 0);
* ``cosine`` = Σab / √(Σa² Σb²) (1 when both are all zeros);
* ``sqnr_db`` = 10·log10(Σa² / Σ(a − b)²), +inf when a = b everywhere;
* ``top1``: the share of argmax decisions that agree along the class axis of an output shaped
  like class scores (see ``class_axis``): ``[N, C]`` and ``[N, T, C]`` along the last axis (one
  decision per row, or per time step), ``[N, C, H, W]`` along axis 1 (one per pixel of a
  segmentation map); None for other outputs.

``class_axis`` is a heuristic on what the model declares, since nothing in ONNX says "these are
class scores": the output is floating point, of rank 2, 3 or 4, its class axis holds C ≥ 2
entries, and its name says nothing of a non-class tensor (embedding, hidden state, feature,
pooled vector, recurrent state or cache, boxes, coordinates, anchors, keypoints, offsets, depth,
flow, attention). It errs on the side of a class axis: a tolerance then judges such an output by
top-1 only where the budget asks for it (``Tolerance.per_output``), and ``--tolerance`` overrides.

Elements equal in both (NaN included, and infinities of the same sign) count as exact
matches and add nothing to the sums; a NaN only in one model makes ``max_abs`` NaN, which
fails every tolerance.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from onnxslim.errors import DataError, UsageError
from onnxslim.runtime.session import make_session, run
from onnxslim.runtime.tolerance import Tolerance
from onnxslim.runtime.values import is_map_sequence, map_values

logger = logging.getLogger(__name__)


@dataclass
class OutputParity:
    """Metrics of one output over every batch compared; ``error`` set when not comparable."""

    name: str
    shape: tuple[int, ...] | None
    max_abs: float
    max_rel: float
    cosine: float
    sqnr_db: float
    top1: float | None
    max_ref: float
    elements: int
    error: str | None = None
    dtype: str = "float32"
    class_axis: int | None = None
    top1_decisions: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: non-finite numbers become the strings "inf", "-inf" and "nan"."""
        data = asdict(self)
        data["shape"] = list(self.shape) if self.shape is not None else None
        return {k: _json_number(v) for k, v in data.items()}


@dataclass
class ParityReport:
    """Parity of a candidate against a reference over some batches."""

    outputs: list[OutputParity]
    batches: int
    samples: int
    provider: str = "CPUExecutionProvider"
    optimize: bool = True
    #: the batches were generated inputs, where top-1 agreement says nothing of the task
    generated: bool = False

    def failures(self, tol: Tolerance) -> list[str]:
        return tol.check(self.outputs, generated=self.generated)

    def holds(self, tol: Tolerance) -> bool:
        return not self.failures(tol)

    def to_dict(self, tol: Tolerance | None = None) -> dict[str, object]:
        data: dict[str, object] = {
            "outputs": [o.to_dict() for o in self.outputs],
            "batches": self.batches,
            "samples": self.samples,
            "provider": self.provider,
            "ort_optimizations": self.optimize,
        }
        if tol is not None:
            data.update(tolerance=str(tol), held=self.holds(tol), failures=self.failures(tol))
            for out, entry in zip(self.outputs, data["outputs"], strict=True):
                entry["judged_by"] = tol.judged_by(out, generated=self.generated)
        return data


@dataclass
class Divergence:
    """The first reference node whose output diverges in the candidate."""

    node: str
    op_type: str
    tensor: str
    failures: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"node {self.node!r} ({self.op_type}) output {self.tensor!r}: {'; '.join(self.failures)}"


_NOT_SCORES = (
    "embed", "hidden", "feature", "pool", "vector", "state", "cache", "past", "present",
    "box", "coord", "anchor", "keypoint", "landmark", "offset", "depth", "flow", "attn", "attention",
)


def class_axis(shape: tuple[int, ...], dtype: np.dtype, name: str = "") -> int | None:
    """The axis holding class scores, or None (the rules are in the module docstring).

    ``[N, C]`` and ``[N, T, C]``: the last axis; ``[N, C, H, W]``: axis 1. ``sentence_embedding``
    [N, 384] and ``last_hidden_state`` [N, T, 384] are not class scores.
    """
    floating = dtype.kind == "f" or dtype.name == "bfloat16"
    if not floating or len(shape) not in (2, 3, 4) or any(w in name.lower() for w in _NOT_SCORES):
        return None
    axis = 1 if len(shape) == 4 else len(shape) - 1
    return axis if shape[axis] >= 2 else None


def is_class_scores(shape: tuple[int, ...], dtype: np.dtype, name: str = "") -> bool:
    """Whether an output gets a top-1 metric (``class_axis`` is not None)."""
    return class_axis(shape, dtype, name) is not None


def compare_models(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    batches: Iterable[Mapping[str, np.ndarray]],
    provider: str = "CPUExecutionProvider",
    threads: int | None = None,
    optimize: bool = True,
    *,
    generated: bool = False,
    observe: Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], None] | None = None,
    one_at_a_time: bool = False,
) -> ParityReport:
    """Run both models on the same batches and accumulate per-output metrics.

    Outputs are matched by name, or by position (with a warning) when the names differ but the
    counts agree. Each model gets only the feeds it declares as inputs. ``generated`` says the
    batches are generated inputs (see ``ParityReport.generated``); ``observe`` is handed each
    batch's outputs, reference then candidate, as dicts keyed by the reference's output names.
    ``one_at_a_time`` never holds both sessions at once (a model of gigabytes would be in memory
    twice): the reference runs every batch first and its outputs are kept, then the candidate.

    Raises:
        UsageError: the models' outputs cannot be matched.
        DataError: ``batches`` is empty or lacks an input.
    """
    if one_at_a_time:
        outputs = _one_at_a_time(reference, candidate, batches, provider, threads, optimize)
    else:
        outputs = _together(reference, candidate, batches, provider, threads, optimize)
    pairs = _match_outputs(*next(outputs))
    accumulators = [_Accumulator(name) for name, _, _ in pairs]
    count = samples = 0
    for feeds, ref_out, cand_out in outputs:
        for acc, (_, i, j) in zip(accumulators, pairs, strict=True):
            acc.add(ref_out[i], cand_out[j])
        if observe is not None:
            observe({n: ref_out[i] for n, i, _ in pairs}, {n: cand_out[j] for n, _, j in pairs})
        count += 1
        samples += _batch_size(feeds)
    if count == 0:
        raise DataError("no data to compare: the data source yielded no batches")
    return ParityReport([a.result() for a in accumulators], count, samples, provider, optimize, generated)


def _session_outputs(session) -> list[str]:
    return [o.name for o in session.get_outputs()]


def _together(reference, candidate, batches, provider, threads, optimize):
    """Yields both models' output names, then (feeds, reference outputs, candidate outputs) per batch."""
    ref_session = make_session(reference, provider, threads, optimize)
    cand_session = make_session(candidate, provider, threads, optimize)
    yield _session_outputs(ref_session), _session_outputs(cand_session)
    for feeds in batches:
        yield feeds, run(ref_session, feeds), run(cand_session, feeds)


def _one_at_a_time(reference, candidate, batches, provider, threads, optimize):
    """As ``_together``, with the reference's session freed before the candidate's is made."""
    ref_session = make_session(reference, provider, threads, optimize)
    ref_names = _session_outputs(ref_session)
    kept = [(feeds, run(ref_session, feeds)) for feeds in batches]
    del ref_session
    gc.collect()
    cand_session = make_session(candidate, provider, threads, optimize)
    yield ref_names, _session_outputs(cand_session)
    for feeds, ref_out in kept:
        yield feeds, ref_out, run(cand_session, feeds)


def first_divergence(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    feeds: Mapping[str, np.ndarray],
    tol: Tolerance,
    provider: str = "CPUExecutionProvider",
) -> Divergence | None:
    """The first node (reference order) whose output breaks ``tol`` in the candidate.

    Only tensors with the same name in both models are compared (produced by a node in the
    reference; a node output or an initializer in the candidate); tensors whose shapes differ
    are skipped, as a deliberate change (pruning) rather than a numeric divergence. Both
    models run at ``ORT_DISABLE_ALL`` so every tensor name survives. Returns None when no
    shared tensor diverges. Top-level graph only.
    """
    available = {o for n in candidate.graph.node for o in n.output if o}
    available |= {t.name for t in candidate.graph.initializer}
    names = list(dict.fromkeys(o for n in reference.graph.node for o in n.output if o in available))
    if not names:
        return None
    ref_values = _tensor_values(reference, names, feeds, provider)
    cand_values = _tensor_values(candidate, names, feeds, provider)
    for node in reference.graph.node:
        for tensor in (o for o in node.output if o in ref_values):
            acc = _Accumulator(tensor)
            acc.add(ref_values[tensor], cand_values[tensor])
            if acc.error:
                logger.debug("first_divergence: skipping %s: %s", tensor, acc.error)
                continue
            failures = tol.check([acc.result()])
            if failures:
                return Divergence(node.name, node.op_type, tensor, failures)
    return None


class _Accumulator:
    """Running sums and maxima of one output's metrics."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.shape: tuple[int, ...] | None = None
        self.error: str | None = None
        self.max_abs = self.max_ref = 0.0
        self.sum_ab = self.sum_aa = self.sum_bb = self.sum_err = 0.0
        self.elements = self.rows = self.agree = 0
        self.dtype = "float32"
        self.axis: int | None = None
        self.top1_applies = True

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if self.error:
            return
        a, b, self.error = _joined(a, b)
        if self.error:
            return
        if a.shape != b.shape:
            self.error = f"shape {list(b.shape)} differs from the reference's {list(a.shape)}"
            return
        if self.shape is None:
            self.shape, self.dtype = a.shape, a.dtype.name
            self.axis = class_axis(a.shape, a.dtype, self.name)
        self.elements += a.size
        same_axis = self.axis is not None and class_axis(a.shape, a.dtype, self.name) == self.axis
        self.top1_applies = self.top1_applies and same_axis
        if a.size == 0:
            return
        x, y = _as_float(a, b)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        x, y = np.where(same & ~np.isfinite(x), 0.0, x), np.where(same & ~np.isfinite(y), 0.0, y)
        err = np.where(same, 0.0, x - y)
        self.max_abs = float(np.maximum(self.max_abs, np.abs(err).max()))
        self.max_ref = float(np.maximum(self.max_ref, np.abs(x).max()))
        self.sum_ab += float(np.sum(x * y))
        self.sum_aa += float(np.sum(x * x))
        self.sum_bb += float(np.sum(y * y))
        self.sum_err += float(np.sum(err * err))
        if self.top1_applies:
            decisions = np.argmax(x, axis=self.axis) == np.argmax(y, axis=self.axis)
            self.rows += decisions.size
            self.agree += int(np.sum(decisions))

    def result(self) -> OutputParity:
        nan = math.nan
        if self.error:
            return OutputParity(
                self.name, self.shape, nan, nan, nan, nan, None, nan, self.elements, self.error, self.dtype
            )
        top1 = self.top1_applies and self.rows > 0
        return OutputParity(
            name=self.name,
            shape=self.shape,
            max_abs=self.max_abs,
            max_rel=_ratio(self.max_abs, self.max_ref),
            cosine=self._cosine(),
            sqnr_db=self._sqnr(),
            top1=self.agree / self.rows if top1 else None,
            max_ref=self.max_ref,
            elements=self.elements,
            dtype=self.dtype,
            class_axis=self.axis if top1 else None,
            top1_decisions=self.rows if top1 else 0,
        )

    def _cosine(self) -> float:
        if math.isnan(self.max_abs):
            return math.nan
        if self.sum_aa == 0 and self.sum_bb == 0:
            return 1.0
        denominator = math.sqrt(self.sum_aa * self.sum_bb)
        return self.sum_ab / denominator if denominator else 0.0

    def _sqnr(self) -> float:
        if math.isnan(self.max_abs):
            return math.nan
        if self.sum_err == 0:
            return math.inf
        return -math.inf if self.sum_aa == 0 else 10 * math.log10(self.sum_aa / self.sum_err)


def _match_outputs(ref: list[str], cand: list[str]) -> list[tuple[str, int, int]]:
    if set(ref) == set(cand):
        return [(name, i, cand.index(name)) for i, name in enumerate(ref)]
    if len(ref) == len(cand):
        logger.warning("output names differ (%s vs %s); comparing by position", ref, cand)
        return [(name, i, i) for i, name in enumerate(ref)]
    raise UsageError(
        f"the models' outputs differ: reference has {', '.join(ref)}; candidate has {', '.join(cand)}"
    )


def _tensor_values(model, names, feeds, provider) -> dict[str, np.ndarray]:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    produced = {o for n in exposed.graph.node for o in n.output} | {t.name for t in exposed.graph.initializer}
    # An output without a type is accepted by ORT, which infers it.
    exposed.graph.output.extend(
        onnx.ValueInfoProto(name=n) for n in names if n not in present and n in produced
    )
    session = make_session(exposed, provider, optimize=False)
    output_names = [o.name for o in session.get_outputs()]
    return dict(zip(output_names, run(session, feeds), strict=True))


def _joined(a, b) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Both outputs as arrays. A sequence of tensors of different shapes (SplitToSequence's
    uneven split) cannot be one array: its tensors are compared pairwise by shape, then joined
    flat. A sequence of maps (a ZipMap's class probabilities) is a [N, classes] array of values by
    sorted key, compared as numbers; sequences of one shape, or of strings, stay numpy's view of them."""
    if is_map_sequence(a) and is_map_sequence(b):
        if [sorted(x) for x in a] != [sorted(x) for x in b]:
            return np.asarray([]), np.asarray([]), "the maps' keys differ from the reference's"
        return map_values(a), map_values(b), None
    if not (isinstance(a, list) and isinstance(b, list)) or len({np.shape(x) for x in a + b}) <= 1:
        return np.asarray(a), np.asarray(b), None
    if [np.shape(x) for x in a] != [np.shape(x) for x in b]:
        return np.asarray([]), np.asarray([]), "the sequence's tensors differ in number or shape from the reference's"
    flat = lambda seq: np.concatenate([np.ravel(x) for x in seq])  # noqa: E731
    return flat(a), flat(b), None


def _as_float(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64; string outputs (a classifier's labels) as 1 where the reference's
    are and 1 or 0 where the result's equal them or not, so any changed label is an error of 1."""
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
        return np.ones(a.shape), (a == b).astype(np.float64)
    return a.astype(np.float64), b.astype(np.float64)


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def _batch_size(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and np.ndim(first) > 0 else 1


def _json_number(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


__all__ = [
    "Divergence",
    "OutputParity",
    "ParityReport",
    "Tolerance",
    "class_axis",
    "compare_models",
    "first_divergence",
    "is_class_scores",
]
