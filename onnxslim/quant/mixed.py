"""Automatic mixed precision: which layers stay float, run dynamic int8, or keep int8 weights only.

Every candidate is a whole quantized graph checked with ORT's real kernels on a few calibration
samples (its output cosine against fp32); ``budget`` is the cosine it must reach.

1. Exclusion: the layers with the largest measured error (the per-layer probes) go back to float,
   the fewest that meet ``target_cosine``: doubling, then bisection on the count.
2. Dynamic int8 (CPU): the excluded MatMuls run with their activation range taken per run
   (``onnxslim.quant.dynamic``, outlier input channels in float) if the budget still holds.
3. Weight-only: the layers still in float store int8 weights if the budget still holds
   (``onnxslim.quant.qdq``: folded for Conv; MatMul/Gemm behind a DequantizeLinear, or folded
   too when that measures slower: ``Outcome.refold``).

Steps 2 and 3 try all their layers, then the half with the smallest error: a full bisection
would cost one whole-model check per step.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import stacked_rows, take_rows
from onnxslim.quant import dynamic, smooth, weight_only
from onnxslim.quant.cpu import saturation_risk
from onnxslim.quant.placement import Placement, plan
from onnxslim.quant.probe import LayerProbe, Probes
from onnxslim.quant.qdq import (
    Names,
    QuantizedWeights,
    WeightChoice,
    fold_rescale,
    folds,
    materialize,
    quantize_tables,
)
from onnxslim.quant.qparams import QParams
from onnxslim.runtime.values import numbers

if TYPE_CHECKING:
    from onnxslim.core.context import PassContext

logger = logging.getLogger(__name__)

#: check samples the exclusion search runs on before its count is checked on all of them: each
#: candidate is a whole-model run (PP-OCRv4: 10 candidates, 0.6 s of each the run on 32 samples)
SEARCH_ROWS = 8


@dataclasses.dataclass
class Calibration:
    """What the quantize pass's streaming run over the calibration data gives the rest of it."""

    plan: Placement                                   # the placement (planned again after smoothing)
    activation_params: dict[str, QParams]        # per quantized activation tensor
    kept: dict[str, np.ndarray]                  # the first rows of the tensors the checks and probes read
    smoothed: dict[str, smooth.Smoothed]         # SmoothQuant: smoothed input -> its scales
    channel_absmax: dict[str, np.ndarray]        # MatMul/Gemm input -> max |x| per input channel
    whole: frozenset[str] = frozenset()          # kept tensors without the sample axis: never cut into rows


@dataclasses.dataclass
class CheckData:
    """The calibration samples every candidate graph is checked on, and fp32's outputs on them."""

    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        """Stacked samples; 1 for one feed whose inputs do not share axis 0 (fed as it is)."""
        return (stacked_rows(self.feeds) or 1) if self.feeds else 0

    @property
    def aligned(self) -> bool:
        """Whether every output holds one row per stacked sample on axis 0, so that the first rows
        of the feeds give the first rows of the reference (a sequence-first ``[T, N, C]`` output
        does not; one feed fed as it is is never cut)."""
        rows = stacked_rows(self.feeds) if self.feeds else None
        return rows is None or all(np.ndim(v) and len(v) == rows for v in self.reference.values())

    def cosine(self, result: dict[str, object], rows: int | None = None) -> float:
        """The lowest output cosine of ``result`` (a candidate's outputs on the first ``rows`` check
        samples, None: all) against the reference; a sequence of maps compares by its values."""
        values = {k: numbers(result[k]) for k in self.reference}
        return min(cosine_similarity(_rows_run(ref[:rows], values[k]), values[k]) for k, ref in self.reference.items())


@dataclasses.dataclass
class Candidate:
    """One checked graph: its plan, the layers in float, its output cosine, and the special layers."""

    graph: gs.Graph
    plan: Placement
    excluded: set[str]
    cosine: float
    weight_only: list[str]
    dynamic: list[str]
    float_channels: dict[str, tuple[list[int], int]]  # dynamic layer -> (outlier input channels kept float, K)


@dataclasses.dataclass
class Outcome:
    graph: gs.Graph
    plan: Placement
    excluded: list[LayerProbe]  # the layers left in float for their error
    cosine: float
    weight_only: list[str]
    dynamic: list[str]
    float_channels: dict[str, tuple[list[int], int]]
    refold: Callable[[], Candidate] | None  # the same choice, every weight-only layer folded (the speed check)


class MixedPrecision:
    """The search over one calibrated, probed graph (see the module docstring).

    ``work`` is the graph as calibrated (smoothed), ``options`` the quantize pass's.
    """

    def __init__(self, work: gs.Graph, options, activation_type: str, calibration: Calibration, probes: Probes,
                 check: CheckData, ctx: PassContext):
        self.quantized = QuantizedWeights()
        _load_constants(work)
        self.work, self.options, self.activation_type = work, options, activation_type
        self.calibration, self.probes, self.check, self.ctx = calibration, probes, check, ctx
        self.slow = probes.slow
        #: the layers in order of their measured error, largest first (the slow ones stay float anyway)
        self.ranked = sorted((p for p in probes.layers.values() if p.node not in self.slow), key=lambda p: -p.error)

    def build(self, excluded_count: int, weight_only_layers: frozenset[str] = frozenset(),
              dynamic_layers: frozenset[str] = frozenset(), fold_all: bool = False,
              rows: int | None = None) -> Candidate:
        """The graph with the ``excluded_count`` most harmful layers (and the slow ones) in float,
        checked on the first ``rows`` check samples (None: all)."""
        options = self.options
        exclude = {p.node for p in self.ranked[:excluded_count]} | self.slow
        chosen = plan(self.work, set(options.exclude) | exclude, options.activation_matmul,
                      self.activation_type == "uint8")
        g = self.work.copy()
        # smoothing scales taken from calibrated outliers would cost these layers' int8 weights precision
        smooth.undo(g, set(weight_only_layers) | set(dynamic_layers), self.calibration.smoothed)
        # weight-only compute is float: 8-bit weights (7 bits only avoid integer-kernel saturation)
        materialize(g, chosen, self.calibration.activation_params, self.probes.weight_choices,
                    {key: WeightChoice(options.per_channel) for key in weight_only_layers}, self.quantized, fold_all)
        float_channels = self._dynamic(g, dynamic_layers) if dynamic_layers else {}
        fold_rescale(g)
        if options.tables:
            quantize_tables(g, self.quantized)
        cosine = self.check.cosine(self.ctx.run(g, take_rows(self.check.feeds, rows)), rows)
        logger.debug("quantize: %d layers float (%d weight-only, %d dynamic): output cosine %.5f",
                     len(exclude), len(weight_only_layers), len(dynamic_layers), cosine)
        return Candidate(g, chosen, exclude, cosine, sorted(weight_only_layers), sorted(dynamic_layers), float_channels)

    def _dynamic(self, g: gs.Graph, dynamic_layers: frozenset[str]) -> dict[str, tuple[list[int], int]]:
        """Rewrite ``dynamic_layers`` of ``g`` to dynamic int8; their outlier input channels kept float."""
        float_channels: dict[str, tuple[list[int], int]] = {}
        names = Names(g)
        # 7-bit weights where this CPU's u8·s8 kernels can saturate, or where the probe saw it
        risk = saturation_risk(self.ctx.target_provider, "uint8", self.ctx.cpu)
        for node in [n for n in g.nodes if n.name in dynamic_layers]:
            absmax = self.calibration.channel_absmax.get(node.inputs[0].name)
            outliers = dynamic.outlier_channels(absmax) if absmax is not None else np.zeros(0, np.int64)
            if len(outliers):
                float_channels[node.name] = (outliers.tolist(), len(absmax))
            dynamic.rewrite(g, node, names, bits7=self.probes.weight_choices[node.name].bits7 or risk,
                            outliers=outliers)
        return float_channels

    def search(self, budget: float) -> Outcome:
        options = self.options
        excluded_count, best = 0, self.build(0)
        if options.target_cosine is not None and best.cosine < options.target_cosine:
            excluded_count, best = self._exclusion(options.target_cosine)
        if options.dynamic and self.ctx.target_provider == "CPUExecutionProvider" and best.cosine >= budget:
            nodes = {n.name: n for n in self.work.nodes}
            order = sorted((p for p in self.ranked[:excluded_count] if dynamic.dynamic_ok(nodes[p.node])),
                           key=lambda p: p.error)
            best = _all_then_half(best, [p.node for p in order], budget,
                                  lambda keys: self.build(excluded_count, dynamic_layers=keys))
        dynamic_layers = frozenset(best.dynamic)
        if best.cosine >= budget:
            errors = weight_only.errors(self.work, sorted(best.excluded - dynamic_layers), self.calibration.kept,
                                        self.calibration.smoothed, options.per_channel, self.ctx.run)
            best = _all_then_half(best, sorted(errors, key=errors.get), budget,
                                  lambda keys: self.build(excluded_count, keys, dynamic_layers))
        excluded = [p for p in self.ranked[:excluded_count] if p.node not in dynamic_layers]
        return Outcome(best.graph, best.plan, excluded, best.cosine, best.weight_only, best.dynamic,
                       best.float_channels, self._refold(excluded_count, best, dynamic_layers))

    def _refold(self, excluded_count: int, best: Candidate,
                dynamic_layers: frozenset[str]) -> Callable[[], Candidate] | None:
        """Builds ``best`` with its DequantizeLinear weight-only layers folded; None if it has none."""
        nodes = {n.name: n for n in self.work.nodes}
        if all(folds(nodes[key]) for key in best.weight_only):
            return None
        return lambda: self.build(excluded_count, frozenset(best.weight_only), dynamic_layers, fold_all=True)

    def _exclusion(self, target: float) -> tuple[int, Candidate]:
        """The fewest most-harmful layers in float that bring the output cosine to ``target``.

        The count is searched on the first ``SEARCH_ROWS`` check samples, then checked on all of
        them; where that check fails, the search goes on above it on all of them.
        """
        options = self.options
        limit = max(1, int(options.max_excluded * len(self.ranked)))
        lo = 0
        if self.check.rows > SEARCH_ROWS and self.check.aligned:  # else only all the rows give a reference
            k, _ = self._count(target, 0, limit, SEARCH_ROWS)
            best = self.build(k)
            if best.cosine >= target:
                return k, best
            lo = k
        k, best = (lo, best) if lo >= limit else self._count(target, lo, limit, None)
        if best.cosine < target:
            self.ctx.warn(f"quantize: output cosine {best.cosine:.4f} stays under target_cosine={target} with "
                          f"{limit} layers in float (max_excluded={options.max_excluded})")
        return k, best

    def _count(self, target: float, lo: int, limit: int, rows: int | None) -> tuple[int, Candidate]:
        """Doubling above ``lo`` (known to miss), then bisection: the fewest layers in float that meet
        ``target`` on the first ``rows`` check samples (all: None), or ``limit`` and its miss."""
        k = min(limit, max(1, 2 * lo))
        while True:
            trial = self.build(k, rows=rows)
            if trial.cosine >= target:
                break
            if k >= limit:
                return limit, trial
            lo, k = k, min(limit, 2 * k)
        hi, best = k, trial
        while hi - lo > 1:
            mid = (lo + hi) // 2
            trial = self.build(mid, rows=rows)
            if trial.cosine >= target:
                hi, best = mid, trial
            else:
                lo = mid
        return hi, best


def _rows_run(reference: np.ndarray, result: np.ndarray) -> np.ndarray:
    """The reference rows a result holds: a fixed-batch model runs whole batches only."""
    return reference[:len(result)] if np.ndim(reference) and np.ndim(result) else reference


def _all_then_half(best: Candidate, keys: list[str], budget: float, build_with) -> Candidate:
    """``build_with(all keys)`` if it meets the budget, else with the first half, else ``best``."""
    for chosen in (keys, keys[: len(keys) // 2]):
        if chosen:
            trial = build_with(frozenset(chosen))
            if trial.cosine >= budget:
                return trial
        if len(keys) < 2:
            break
    return best


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    den = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / den) if den > 0 else float(np.array_equal(a, b))


def _load_constants(graph: gs.Graph) -> None:
    """Read every constant array once, so that the candidates' graph copies share them (a lazily
    loaded constant is read anew by each copy) and ``QuantizedWeights`` recognizes them."""
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant):
            tensor.values  # noqa: B018 - loads and keeps the array
    for node in graph.nodes:
        if node.op == "Constant" and isinstance(node.attrs.get("value"), gs.Constant):
            node.attrs["value"].values  # noqa: B018
