"""svd: split Gemm, MatMul and 1×1 Conv weights into two low-rank factors.

    Y = op(X)·W + C   ->   Y = (op(X)·A)·B + C,   A: K×r,  B: r×N,  W ≈ A·B

Variants (see ``onnxslim.lowrank.factor`` for the math):

* plain SVD (default): truncation minimizes the weight error ‖W − AB‖_F = sqrt(Σ_{i>r} σ_i²);
* ``data_aware=true``: the SVD of W seen through the second moment M = Σ x xᵀ of the layer's
  input on the calibration data (whiten, decompose, unwhiten), so truncation minimizes the
  layer's output error instead. Each layer's stats then give the output error of plain SVD
  at the same rank beside its own (``plain_error``), i.e. the gain.

``refit=true`` (with calibration data) then fits the splits one by one in graph order, each to
the input the layers split before it really produce, and shifts its bias to keep the mean output
(``onnxslim.lowrank.refit``); the ranks stay those the rule chose.

Rank rules, one per run (two is a usage error): ``energy`` (retained Σσ²; of the weight,
or with ``data_aware`` of the output), ``rank_ratio`` (of min(K, N)), ``param_ratio`` (the share
of all candidate layers' weight parameters to keep, allocated so every layer reaches the same
relative error: output error when calibration data is given, weight error otherwise; a layer
whose rank would save nothing stays whole; ``allocation=sensitivity`` instead shares it by each
layer's measured effect on the graph outputs, see ``onnxslim.lowrank.sensitivity``) and ``max_error`` (per-layer relative output error
‖Y − Ŷ‖_F / ‖Y‖_F on the calibration data; needs ``--calibration-data``). With no rule given,
``energy=0.95`` applies.

Declines, with the reason: rank r where r·(K + N) ≥ K·N (nothing saved); a split that is not
faster than the original layer on the target provider (the latency gate, on by default:
each split and the original node are timed as tiny models at the layer's real input shape;
``latency_gate=false`` for size-only use). Gate decisions come from measurements, so they can
differ between runs; ``stats.latency`` lists each one. Also declined: shared, non-float or
non-2-D weights, Conv kernels other than 1×1, grouped Conv, and nodes that are already factors.

Parity: data-aware splits drop input directions the calibration data never showed, so verify
them with ``--data`` from the same distribution; generated normal inputs span every direction.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassOptions, PassResult, option
from onnxslim.core.registry import register_pass
from onnxslim.core.requires import CLEAN
from onnxslim.lowrank import factor, rank, refit, sensitivity
from onnxslim.lowrank.gating import LatencyGate
from onnxslim.ir.linear import Linear
from onnxslim.lowrank.layers import bias, match, split, weight
from onnxslim.lowrank.plan import Split, SvdPlan
from onnxslim.lowrank.whitening import collect_moments, probe_shapes
from onnxslim.runtime.parity import Tolerance

DEFAULT_RULE = ("energy", 0.95)
BUDGET = "cosine=0.98,top1=0.95,per_output"


@dataclasses.dataclass(frozen=True)
class SvdOptions(PassOptions):
    energy: float | None = option(None, "keep the smallest rank retaining this share of Σσ² (0, 1]; "
                                  "the default rule, at 0.95, when no rule is given")
    rank_ratio: float | None = option(None, "keep rank = ceil(ratio × min(K, N)), ratio in (0, 1]")
    param_ratio: float | None = option(None, "keep this share of the split layers' weight parameters, in (0, 1), "
                                       "allocated across layers at equal error (output error with calibration "
                                       "data, else weight error)")
    max_error: float | None = option(None, "smallest rank whose relative output error on calibration data "
                                     "is at most this, in (0, 1); needs --calibration-data")
    data_aware: bool = option(False, "whiten with the input's second moment from calibration data before "
                              "the SVD, so truncation minimizes the output error; needs --calibration-data")
    damping: float = option(0.1, "data-aware: added to M's eigenvalues, times their mean (>= 0)")
    latency_gate: bool = option(True, "keep a split only if it measures faster than the original layer "
                                "on the target provider (false: size-only)")
    min_speedup: float = option(1.0, "latency gate: original / split median time must exceed this (> 0)")
    exclude: tuple[str, ...] = option((), "node names never split")
    refit: bool = option(False, "fit each split, in graph order, to the input the layers split before it really "
                         "produce, and shift its bias to keep the mean output; needs --calibration-data")
    allocation: str = option("error", "param_ratio: how the budget is shared: 'error' (every layer at the same "
                             "relative error) or 'sensitivity' (each layer's measured effect on the graph outputs; "
                             "needs --calibration-data)", choices=("error", "sensitivity"))

    def validate(self) -> None:
        given = [name for name in rank.RULES if getattr(self, name) is not None]
        if len(given) > 1:
            raise self.error(given[1], f"give one rank rule per run, not {' and '.join(given)}")
        bounds = {"energy": (0.0, 1.0, True), "rank_ratio": (0.0, 1.0, True),
                  "param_ratio": (0.0, 1.0, False), "max_error": (0.0, 1.0, False)}
        for name in given:
            low, high, closed = bounds[name]
            value = getattr(self, name)
            if not (low < value < high or (closed and value == high)):
                raise self.error(name, f"must be in ({low:g}, {high:g}{']' if closed else ')'}, got {value!r}")
        if self.damping < 0:
            raise self.error("damping", f"must be >= 0, got {self.damping!r}")
        if self.min_speedup <= 0:
            raise self.error("min_speedup", f"must be > 0, got {self.min_speedup!r}")
        if self.allocation == "sensitivity" and self.param_ratio is None:
            raise self.error("allocation", "allocation=sensitivity shares a param_ratio budget; give param_ratio")

    def rule(self) -> tuple[str, float]:
        for name in rank.RULES:
            if getattr(self, name) is not None:
                return name, float(getattr(self, name))
        return DEFAULT_RULE


@register_pass
class LowRankSplit(Pass):
    """Split Gemm/MatMul/1×1 Conv weights into two low-rank factors (SVD, optionally data-aware)."""

    name = "svd"
    Options = SvdOptions
    exact = False
    requires = CLEAN

    def needs_calibration(self) -> bool:
        opts = self.options
        return (opts.data_aware or opts.refit or opts.max_error is not None
                or opts.allocation == "sensitivity")

    def tolerance(self) -> Tolerance:
        return Tolerance.parse(BUDGET)

    def plan(self, graph: gs.Graph, ctx: PassContext) -> SvdPlan:
        """The candidate layers and the declines; when the rank rule reads the weights alone, each
        layer's rank too. Runs and times no model: the latency gate, the refit and every rank that
        needs calibration data are listed as pending."""
        opts = self.options
        layers, declines = self._candidates(graph)
        data = self._reads_data(ctx)
        splits = None
        if layers and not data:
            splits, more = _plans(layers, opts, {})
            declines += more
        the_plan = SvdPlan.of(layers, splits, declines, opts, data)
        the_plan.cache.update(layers=layers, splits=splits)
        return the_plan

    def apply(self, graph: gs.Graph, ctx: PassContext, the_plan: SvdPlan) -> PassResult:
        """Split as ``the_plan`` says; what it left pending (ranks from data, gate, refit) is decided here."""
        opts = self.options
        if "layers" in the_plan.cache:
            layers, plans = the_plan.cache["layers"], the_plan.cache["splits"]
        else:  # a plan read back from JSON: find the layers again, and take its ranks where it gives them
            layers, _ = self._candidates(graph)
            plans = the_plan.splits(layers)
        declines = list(the_plan.declines)
        if plans is None:
            moments, shapes = {}, {}
            if layers:
                ctx.require_calibration(self.name)
                moments, shapes = collect_moments(ctx, graph, layers)
            probe = _Probe(ctx, graph) if opts.allocation == "sensitivity" else None
            plans, more = _plans(layers, opts, moments, probe)
            declines += more
        else:
            shapes, probe = {}, None
        timings: list[dict] = []
        if plans and opts.latency_gate:
            plans = self._gate(ctx, graph, plans, shapes, declines, timings)
        shifted = 0
        if opts.refit and plans:
            shifted = refit.sequential(ctx, graph, plans, opts.damping, split)
        else:
            for plan in plans:
                split(graph, plan.layer, plan.a, plan.b)
        stats = _stats(plans, layers, opts, timings)
        if opts.refit:
            stats["refit"] = {"layers": len(plans), "bias_shifted": shifted}
        if probe is not None:
            stats["allocation"] = "sensitivity"
            losses = getattr(probe, "losses", {})
            for info in stats["layers"]:
                if info["layer"] in losses:
                    info["probe_loss"] = round(losses[info["layer"]], 8)
        notes = []
        if timings:
            notes.append(f"latency gate: {sum(t['kept'] for t in timings)} of {len(timings)} splits measured "
                         "faster and kept; these choices come from timings and may differ between runs")
        return PassResult(modified=bool(plans), stats=stats, declines=declines, notes=notes)

    def _reads_data(self, ctx: PassContext) -> bool:
        """Whether the ranks come from calibration data (param_ratio uses it whenever it is given)."""
        return self.needs_calibration() or (self.options.rule()[0] == "param_ratio" and ctx.calibration is not None)

    def _candidates(self, graph: gs.Graph) -> tuple[list[Linear], list[Decline]]:
        layers: list[Linear] = []
        declines: list[Decline] = []
        for node in list(graph.nodes):
            found = match(node)
            if found is None:
                continue
            if isinstance(found, Decline):
                declines.append(found)
            elif found.name in self.options.exclude or node.name in self.options.exclude:
                declines.append(Decline(found.name, "excluded by the exclude option"))
            else:
                layers.append(found)
        return layers, declines

    def _gate(self, ctx: PassContext, graph: gs.Graph, plans: list[Split], shapes: dict,
              declines: list[Decline], timings: list[dict]) -> list[Split]:
        if any(p.layer.input.name not in shapes for p in plans):
            shapes = {**probe_shapes(ctx, graph, [p.layer for p in plans]), **shapes}
        gate = LatencyGate(ctx)
        kept = []
        for plan in plans:
            shape = shapes[plan.layer.input.name]
            timing = gate.measure(plan.layer, plan.a, plan.b, shape)
            ok = timing.speedup > self.options.min_speedup
            ctx.decide(f"svd: {plan.layer.name} as its rank-{plan.rank} split at input {list(shape)} "
                       f"(kept when original/split > {self.options.min_speedup})",
                       {"original": timing.original, "split": timing.split}, "split" if ok else "original")
            timings.append({"layer": plan.layer.name, "rank": plan.rank, "input_shape": list(shape),
                            "original_ms": round(timing.original_ms, 4), "split_ms": round(timing.split_ms, 4),
                            "kept": ok})
            plan.info.update(original_ms=round(timing.original_ms, 4), split_ms=round(timing.split_ms, 4))
            if ok:
                kept.append(plan)
            else:
                declines.append(Decline(plan.layer.name, (
                    f"the rank-{plan.rank} split is not faster on {ctx.target_provider}: "
                    f"{timing.split_ms:.4g} ms vs {timing.original_ms:.4g} ms at input {list(shape)} (measured)")))
        return kept


def _spectra(layers: list[Linear], opts: SvdOptions, moments: dict) -> list[tuple]:
    """Per layer: its spectrum and error curve (relative output error on calibration data,
    else relative weight error), ranks 0..m."""
    bases: dict = {}
    found = []
    for layer in layers:
        key = (layer.input.name, layer.feature_axis)
        m = moments.get(key)
        w = weight(layer)
        if opts.data_aware:
            if key not in bases:
                bases[key] = factor.eigen(m)
            spectrum = factor.whitened(w, m, opts.damping, bases[key])
        else:
            spectrum = factor.plain(w)
        curve = factor.output_errors(spectrum, m, w, bias(layer)[0]) if m is not None else None
        found.append((layer, spectrum, curve, m))
    return found


class _Probe:
    """Measures, on the first calibration batch, each layer's effect on the graph outputs."""

    def __init__(self, ctx: PassContext, graph: gs.Graph):
        self.ctx, self.graph = ctx, graph

    def coefficients(self, found: list[tuple]) -> list[float]:
        """c_i of the model loss_i(r) = c_i · e_i(r)² (``sensitivity``), one probe per layer."""
        layers, weights, errors = [], [], []
        for layer, spectrum, curve, _ in found:
            r = max(1, int(rank.break_even(layer.shape) * sensitivity.PROBE))
            a, b = spectrum.factors(r)
            layers.append(layer)
            weights.append(a @ b)
            errors.append(float(curve[r]))
        feeds = next(iter(self.ctx.calibration))
        losses = sensitivity.probe(self.ctx, self.ctx.export(self.graph), layers, weights, feeds)
        self.losses = dict(zip([layer.name for layer in layers], losses))
        return [loss / e**2 if e > 0 else 0.0 for loss, e in zip(losses, errors)]


def _plans(layers: list[Linear], opts: SvdOptions, moments: dict,
           probe: _Probe | None = None) -> tuple[list[Split], list[Decline]]:
    plans: list[Split] = []
    declines: list[Decline] = []
    shrinkable = []
    for layer in layers:
        if rank.break_even(layer.shape) < 1:
            k, n = layer.shape
            declines.append(Decline(layer.name, f"a {k}x{n} weight cannot shrink: any rank r has r·(K+N) ≥ K·N"))
        else:
            shrinkable.append(layer)
    found = _spectra(shrinkable, opts, moments)
    rule, value = opts.rule()
    if rule == "param_ratio" and probe is not None and found:
        coefficients = probe.coefficients(found)
        ranks = sensitivity.allocate([c for _, _, c, _ in found], coefficients,
                                     [layer.shape for layer, *_ in found], value)
    elif rule == "param_ratio":
        curves = [c if c is not None else rank.weight_errors(s.sigma) for _, s, c, _ in found]
        ranks = rank.allocate(curves, [layer.shape for layer, *_ in found], value)
    else:
        ranks = [rank.choose_rank(rule, value, s.sigma, layer.shape, c) for layer, s, c, _ in found]
    for (layer, spectrum, curve, m), r in zip(found, ranks):
        outcome = _plan(layer, spectrum, curve, m, r, f"{rule}={value:g}")
        (plans if isinstance(outcome, Split) else declines).append(outcome)
    return plans, declines


def _plan(layer: Linear, spectrum: factor.Spectrum, curve, moments, r: int | None, rule: str) -> Split | Decline:
    (k, n) = layer.shape
    if r is None:
        return Decline(layer.name, f"kept whole: {rule} allocates it a rank that saves nothing")
    if not rank.saves(r, layer.shape):
        return Decline(layer.name, (f"nothing saved: {rule} needs rank {r}, and {r}·({k}+{n}) = "
                                    f"{r * (k + n)} ≥ {k}·{n} = {k * n}"))
    info = {"layer": layer.name, "op": layer.node.op, "K": k, "N": n, "rank": r,
            "params_before": k * n, "params_after": r * (k + n)}
    if curve is not None:
        info["output_error"] = round(float(curve[r]), 6)
        if spectrum.whitened:
            w = weight(layer)
            baseline = factor.output_errors(factor.plain(w), moments, w, bias(layer)[0])
            info["plain_error"] = round(float(baseline[r]), 6)
    a, b = spectrum.factors(r)
    return Split(layer, r, a, b, info)


def _stats(plans: list[Split], layers: list[Linear], opts: SvdOptions, timings: list[dict]) -> dict:
    rule, value = opts.rule()
    before = sum(p.info["params_before"] for p in plans)
    after = sum(p.info["params_after"] for p in plans)
    total = sum(layer.shape[0] * layer.shape[1] for layer in layers)
    stats = {
        "rule": f"{rule}={value:g}",
        "data_aware": opts.data_aware,
        "candidates": len(layers),
        "split": len(plans),
        "weight_params_before": total,
        "weight_params_after": total - before + after,
        "layers": [p.info for p in plans],
    }
    if timings:
        stats["latency"] = timings
    return stats
