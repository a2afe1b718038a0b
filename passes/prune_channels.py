"""prune-channels: remove whole channels from the ONNX graph and shrink everything coupled to them.

Plan, then apply:

1. ``channel_deps.analyze`` builds groups of coupled channels with the per-op rules of
   ``channel_rules`` (a residual Add couples every producer in its block; Concat/Split/Slice
   move channels by offsets; Flatten/Reshape into a Gemm/MatMul by a stride). A group that
   reaches a graph output, an op with no rule, a reshape with a non-constant shape... is frozen
   with a reason (shown by ``--dry-run`` and in the report's declines).
2. Importance per group (``channel_importance``): ``activation`` (default with calibration
   data), ``l1``, ``l2`` (default without, with a warning), ``bn``. ``ratio`` of each group's
   channels go (``scope=local``) or ``ratio`` of all prunable channels by one normalized
   ranking (``scope=global``), with per-group overrides (``group_ratio``); the kept count is
   rounded down to a multiple of ``round_to``, never below it, and a group narrower than
   2 × ``round_to`` is left whole (so is a group the ratio does not reach).
3. ``channel_apply.apply_plan`` slices weights, biases, normalization parameters, per-channel
   constants, shape constants and ``group`` attributes; shared constants are copied, never
   edited in place. Shapes are re-inferred in strict mode and every graph output must keep its
   shape.
4. With ``recover=true`` (needs calibration data), ``channel_recovery.refit`` refits each layer
   that reads pruned channels by least squares so that its output matches the original.

Parity budget ``cosine=0.9,top1=0.8``: judge it with real samples (``--data``); on generated
noise a pruned classifier's top-1 agreement says little.

Not idempotent by design: each run removes ``ratio`` of the channels that remain.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.analysis import channel_importance as imp
from onnxslim.analysis.channel_apply import apply_plan
from onnxslim.analysis.channel_deps import analyze
from onnxslim.analysis.channel_layout import kept_positions
from onnxslim.analysis.channel_plan import Analysis, ChannelPlan
from onnxslim.analysis.channel_recovery import refit
from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Pass, PassOptions, PassResult, option
from onnxslim.core.registry import register_pass
from onnxslim.core.requires import CLEAN
from onnxslim.ir.nodes import prefix
from onnxslim.ir.shapes import inferred_dims, refresh_shapes, strict_inference_ok
from onnxslim.runtime.parity import Tolerance

logger = logging.getLogger(__name__)

IMPORTANCE = ("auto", "activation", "l1", "l2", "bn")
BUDGET = "cosine=0.9,top1=0.8,per_output"


@dataclasses.dataclass(frozen=True)
class PruneChannelsOptions(PassOptions):
    ratio: float = option(0.25, "fraction of channels removed (per group, or overall with scope=global)")
    importance: str = option("auto", "activation (needs calibration data) | l1 | l2 | bn; auto: activation "
                             "with calibration data, else l2 with a warning", choices=IMPORTANCE)
    stat: str = option("effect", "activation statistic: effect = rms(x_c)·‖W[:,c]‖ at each consumer, "
                       "mean_abs = mean |x_c|, nonzero = fraction of nonzeros", choices=("effect", "mean_abs", "nonzero"))
    scope: str = option("local", "local: ratio of every group; global: one ranking over all groups",
                        choices=("local", "global"))
    round_to: int = option(8, "kept counts are multiples of this (never below it); groups narrower than twice it stay whole")
    recover: bool = option(False, "refit the layers that read pruned channels by least squares (needs calibration data)")
    recover_rows: int = option(1024, "rows (output positions) sampled per calibration batch and layer for the refit")
    exclude: tuple[str, ...] = option((), "node names whose output channels are never pruned")
    group_ratio: tuple[str, ...] = option((), "per-group ratios 'GLOB=R' matched on producer node names, "
                                          "e.g. \"/head/*=0;/backbone/*=0.5\" (first match wins)")

    def validate(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise self.error("ratio", f"must be in [0, 1), got {self.ratio}")
        for item in self.group_ratio:
            glob, _, value = item.rpartition("=")
            try:
                ok = bool(glob) and 0.0 <= float(value) < 1.0
            except ValueError:
                ok = False
            if not ok:
                raise self.error("group_ratio", f"items are GLOB=R with R in [0, 1), got {item!r}")
        if self.round_to < 1:
            raise self.error("round_to", f"must be >= 1, got {self.round_to}")
        if self.recover_rows < 16:
            raise self.error("recover_rows", f"must be >= 16, got {self.recover_rows}")


@register_pass
class PruneChannels(Pass):
    """Remove whole channels (Conv filters, Gemm/MatMul units) and propagate the new sizes."""

    name = "prune-channels"
    Options = PruneChannelsOptions
    exact = False
    requires = CLEAN

    def required(self) -> tuple[str, ...]:
        """The clean graph, BatchNormalization kept when it is what ranks the channels."""
        return tuple(n for n in CLEAN if n != "fold-bn") if self.options.importance == "bn" else CLEAN

    def needs_calibration(self) -> bool:
        return self.options.recover or self.options.importance == "activation"

    def tolerance(self) -> Tolerance:
        return Tolerance.parse(BUDGET)

    def plan(self, graph: gs.Graph, ctx: PassContext) -> ChannelPlan:
        """The groups, the channels each pruned group keeps, the frozen ones and why (toposorts)."""
        opts = self.options
        analysis, keep, importance = self.choose(graph, ctx)
        sizes = {g.id: g.size for g in analysis.prunable()}
        notes = analysis.lines()
        summary: dict[str, Any] = {
            "importance": importance, "groups": len(analysis.groups), "frozen_groups": len(analysis.frozen()),
            "pruned_groups": len(keep), "channels": sum(sizes.values()),
            "channels_removed": sum(sizes[g] - len(k) for g, k in keep.items()),
        }
        for g in analysis.prunable():
            kept = len(keep[g.id]) if g.id in keep else g.size
            why = "" if g.id in keep or opts.ratio == 0 else (
                f" (left whole: narrower than 2 x round_to={opts.round_to})" if g.size < 2 * opts.round_to else "")
            notes.append(f"group {g.id}: keep {kept} of {g.size}{why}")
        plan = ChannelPlan.of(analysis, keep, summary, notes)
        if importance == "activation" and analysis.prunable():
            plan.measured.append(f"channel importance: {opts.stat} of the channels' activations on the calibration data")
        if opts.recover and keep:
            plan.pending.append("least-squares refit of the layers reading pruned channels on the calibration "
                                "data (recover=true)")
        return plan

    def apply(self, graph: gs.Graph, ctx: PassContext, plan: ChannelPlan) -> PassResult:
        """Slice what ``plan`` keeps, re-infer shapes, and refit with ``recover``."""
        opts = self.options
        keep = plan.keep()
        graph.toposort()
        analysis = plan.cache.get("analysis") or analyze(graph, inferred_dims(ctx.export(graph)), opts.exclude)
        sizes = {g.id: g.size for g in analysis.prunable()}
        stale = [c["where"] for c in plan.changes if sizes.get(c["group"]) != c["channels"]]
        if stale:
            raise ValueError(f"the plan was made on another graph: its group of {stale[0]} is not this graph's")
        stats, notes = dict(plan.summary), list(plan.notes)
        if not keep:
            return PassResult(False, stats, list(plan.declines), notes)
        original = graph.copy() if opts.recover else None
        strict = strict_inference_ok(ctx.export(graph))
        if not strict:
            notes.append("the input model fails strict shape inference, so the result is checked non-strictly")
        stats.update(apply_plan(graph, analysis, keep))
        refresh_shapes(graph, ctx.template, strict)
        if original is not None:
            stats.update(self._recover(ctx, original, graph, analysis, keep, notes))
        return PassResult(True, stats, list(plan.declines), notes)

    def choose(self, graph: gs.Graph, ctx: PassContext) -> tuple[Analysis, dict[int, np.ndarray], str]:
        """The plan and the channels each pruned group keeps; changes nothing (but toposorts)."""
        graph.toposort()
        plan = analyze(graph, inferred_dims(ctx.export(graph)), self.options.exclude)
        importance = self._importance(ctx)
        scores = self._scores(plan, importance, graph, ctx)
        sizes = {g.id: g.size for g in plan.prunable()}
        keep = imp.choose_keep(scores, sizes, self.options.ratio, self.options.round_to, self.options.scope,
                               self._overrides(plan))
        return plan, keep, importance

    def _overrides(self, plan: Analysis) -> dict[int, float]:
        """Group id -> ratio from ``group_ratio``: the first glob matching any producer of the group."""
        out: dict[int, float] = {}
        for item in self.options.group_ratio:
            glob, _, value = item.rpartition("=")
            for g in plan.prunable():
                if g.id not in out and any(fnmatch.fnmatchcase(s.node, glob) for s in g.sources):
                    out[g.id] = float(value)
        return out

    def _importance(self, ctx: PassContext) -> str:
        chosen = self.options.importance
        if chosen == "auto":
            if ctx.calibration is not None:
                return "activation"
            ctx.warn("prune-channels: no calibration data, so channels are ranked by filter L2 norm "
                     "(pass --calibration-data for activation-based importance)")
            return "l2"
        return chosen

    def _scores(self, plan: Analysis, importance: str, graph: gs.Graph, ctx: PassContext) -> dict[int, np.ndarray]:
        groups = plan.prunable()
        stats = None
        if importance == "activation" and groups:
            members = imp.consumer_members(groups)
            names = sorted({m.tensor for m in members})
            # only the part of the graph that computes them: what follows the last one is not run
            stats = imp.collect_activations(ctx.activations(prefix(graph, names), names), members)
        scores = {}
        for g in groups:
            s = None
            if importance == "activation":
                s = imp.activation_scores(plan, g, stats, self.options.stat)
            elif importance == "bn":
                s = imp.bn_scores(plan, g)
            if s is None:
                s = imp.weight_scores(plan, g, "l1" if importance == "l1" else "l2")
            scores[g.id] = s
        return scores

    def _recover(self, ctx: PassContext, original: gs.Graph, graph: gs.Graph, plan: Analysis,
                 keep: dict[int, np.ndarray], notes: list[str]) -> dict[str, Any]:
        src_keep = plan.source_keep(keep)
        touched = {gid for gid in keep}
        consumers: dict[int, gs.Node] = {}
        for m in plan.members:
            if m.role == "consumer" and any(plan.group_of[s] in touched for s in m.sources()):
                consumers[id(m.node)] = m.node
        out_keep = {id(m.node): kept_positions(m.layout, src_keep) for m in plan.members
                    if m.role == "producer" and m.index == 1 and any(s in src_keep for s in m.sources())}
        fits, skipped = refit(ctx, original, graph, list(consumers.values()), out_keep,
                              self.options.recover_rows, ctx.rng(5))
        notes += skipped
        notes += [f"refit {f.node}: relative output error {f.error_before:.4f} -> {f.error_after:.4f}" for f in fits]
        before = float(np.mean([f.error_before for f in fits])) if fits else 0.0
        after = float(np.mean([f.error_after for f in fits])) if fits else 0.0
        return {"layers_refit": len(fits), "refit_error_before": round(before, 5), "refit_error_after": round(after, 5)}
