"""prune-weights: zero weights of Conv, ConvTranspose, Gemm and MatMul (lossy).

Sparsity is the fraction of zeros over every weight the pass may prune (layers excluded by
``exclude``, ``min_params``, an N:M pattern that does not fit, a shared or non-constant weight
are listed in the declines and do not count). Counts are exact: per layer ``round(s·n)``, or in
global scope ``round(s·Σn)`` over all layers together.

    criterion   magnitude |w|; activation |w|·‖x_j‖; reconstruct (SparseGPT: OBS saliency
                w²/[H⁻¹]_jj, with the kept weights updated to keep each layer's output).
                The last two need --calibration-data; H = XᵀX of each layer's input.
    scope       global (default): one threshold across layers on LAMP-normalized scores, so
                sensitive layers give little; layer: the same sparsity in every layer.
    pattern     unstructured, or 2:4 / 4:8 (at most N nonzeros in every M consecutive weights
                along the reduction dimension; input channels for Conv). N:M is 50% per layer.
    sequential  reconstruct: prune layer by layer in depth order, each refit to the original
                model's output from its already pruned inputs (onnxslim.sparse.sequential).
    storage     dense, or sparse: each pruned weight becomes a Constant with a sparse_value
                when that is smaller than the dense tensor (the choice is reported per tensor).

ONNX Runtime densifies sparse weights when it loads a model: sparsity saves file and download
size, not latency on dense kernels. Run fold-bn first on Conv-BN models: pre-BN magnitudes are
not comparable across channels.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassOptions, PassResult, option
from onnxslim.core.registry import register_pass
from onnxslim.core.relay import Relay
from onnxslim.core.requires import CLEAN
from onnxslim.ir.linear import Linear, drop_unread
from onnxslim.ir.nodes import prefix
from onnxslim.runtime.parity import Tolerance
from onnxslim.sparse import masks as masklib
from onnxslim.sparse import sequential, storage
from onnxslim.sparse.criteria import HessianAccumulator, scores, supports_data
from onnxslim.sparse.layers import find_layers, from_mats, matches, nm_cols, nm_perm, to_mats
from onnxslim.sparse.plan import WeightPlan
from onnxslim.sparse.reconstruct import prune_group, upper_inverse_factor

logger = logging.getLogger(__name__)

SIZE_NOTE = ("ONNX Runtime densifies sparse weights when it loads a model: unstructured sparsity saves "
             "disk and download size (see output bytes, compressed_bytes and nonzero_params), not latency "
             "on dense kernels")
NM_NOTE = ("N:M sparsity is what sparse tensor cores accelerate (TensorRT with sparsity enabled); "
           "ONNX Runtime's CPU and CUDA kernels run it dense")
ALREADY = "the weights already hold this request: they are kept as they are"
ROWS_PER_SAMPLE = 32  # input rows per calibration sample a convolution's H sees at most (seeded subsample)
REFIT_ROWS = 4  # sequential refit only with at least this many calibration rows per input feature
MAX_STAGES = 8  # sequential reconstruction: at most this many extra calibration runs (depths are grouped)
REFERENCE_BYTES = 512 << 20  # the original model's inputs kept for the later stages at most (else it runs again)
RELAY_BYTES = 512 << 20  # activations one stage's run hands to the next at most (else the next runs its prefix)


@dataclasses.dataclass(frozen=True)
class PruneWeightsOptions(PassOptions):
    sparsity: float = option(0.5, "fraction of zeros over the weights the pass may prune, in [0, 1); "
                                  "N:M patterns fix it at 0.5")
    criterion: str = option("magnitude", "importance: magnitude |w|; activation |w|*||x_j|| and "
                                         "reconstruct (SparseGPT-style OBS updates) need --calibration-data",
                            choices=("magnitude", "activation", "reconstruct"))
    pattern: str = option("unstructured", "unstructured, or N:M along the reduction dimension",
                          choices=("unstructured", "2:4", "4:8"))
    scope: str = option("global", "global: one threshold across layers on per-layer normalized (LAMP) "
                                  "scores, sensitive layers give less; layer: the same sparsity everywhere",
                        choices=("global", "layer"))
    layer_sparsity: tuple[str, ...] = option((), "per-layer overrides 'GLOB=S' on node or weight names, "
                                                 "e.g. \"/fc1/*=0.9;/head/Gemm=0.2\"")
    exclude: tuple[str, ...] = option((), "node or weight names (globs) never pruned")
    min_params: int = option(0, "layers with fewer weights are left dense")
    storage: str = option("dense", "sparse: store each pruned weight as a sparse Constant when smaller",
                          choices=("dense", "sparse"))
    samples: int = option(512, "calibration samples used by the data-aware criteria")
    sequential: bool = option(True, "reconstruct: gather each layer's H from the already pruned layers "
                                    "before it (one calibration run per depth), as SparseGPT does")
    damp: float = option(0.1, "reconstruct: damping added to H, as a fraction of its mean diagonal")

    def validate(self) -> None:
        if not 0.0 <= self.sparsity < 1.0 or math.isnan(self.sparsity):
            raise self.error("sparsity", f"must be in [0, 1), got {self.sparsity}")
        if self.pattern != "unstructured" and self.sparsity != 0.5:
            raise self.error("sparsity", f"pattern {self.pattern} fixes sparsity at 0.5, got {self.sparsity}")
        for item in self.layer_sparsity:
            _parse_override(item, self)
        if self.min_params < 0:
            raise self.error("min_params", f"must be >= 0, got {self.min_params}")
        if self.samples < 1:
            raise self.error("samples", f"must be >= 1, got {self.samples}")
        if not 0.0 < self.damp < 10.0:
            raise self.error("damp", f"must be in (0, 10), got {self.damp}")


@register_pass
class PruneWeights(Pass):
    """Zero the least important weights of Conv/ConvTranspose/Gemm/MatMul."""

    name = "prune-weights"
    exact = False
    requires = CLEAN  # BN folded first: pre-BN weight magnitudes are not comparable across channels

    Options = PruneWeightsOptions

    def needs_calibration(self) -> bool:
        return self.options.criterion != "magnitude"

    def tolerance(self) -> Tolerance:
        """Budget by sparsity: cosine 0.95 up to 50%, 0.8 up to 75%, 0.5 above; per output, class
        scores by top-1 (0.9, 0.75, 0.5) on real data (on generated inputs top-1 is a coin flip)."""
        s = 0.5 if self.options.pattern != "unstructured" else self.options.sparsity
        cosine, top1 = (0.95, 0.9) if s <= 0.5 else (0.8, 0.75) if s <= 0.75 else (0.5, 0.5)
        return Tolerance(cosine=cosine, top1=top1, per_output=True)

    def plan(self, graph: gs.Graph, ctx: PassContext) -> WeightPlan:
        """The layers to prune and the declines; with the magnitude criterion (or per-layer counts) also
        how many zeros each gets. Runs no model."""
        opts = self.options
        layers, declines = self._select(graph)
        summary = {"criterion": opts.criterion, "pattern": opts.pattern, "scope": opts.scope,
                   "target_sparsity": 0.5 if opts.pattern != "unstructured" else opts.sparsity,
                   "layers": len(layers), "prunable_params": int(sum(l.stored.size for l in layers))}
        layer_scores, counts = None, None
        if layers and not self.needs_calibration():
            layer_scores = [scores(opts.criterion, to_mats(l), None, opts.damp, None) for l in layers]
            counts = self._counts(layers, layer_scores, {}, ctx)
        elif layers and (opts.scope == "layer" or _nm(opts.pattern)):  # counts that ignore the scores
            counts = self._counts(layers, [], {}, ctx)
        notes = [ALREADY] if counts is not None and self._already(layers, counts) else []
        notes += ([SIZE_NOTE, NM_NOTE] if _nm(opts.pattern) else [SIZE_NOTE]) + _bn_note(layers) if layers else []
        plan = WeightPlan.of(layers, counts, declines, opts, summary, notes)
        plan.cache.update(layers=layers, scores=layer_scores)
        return plan

    def apply(self, graph: gs.Graph, ctx: PassContext, plan: WeightPlan) -> PassResult:
        """Prune as ``plan`` says: its layers, its zeros per layer where it gives them."""
        opts = self.options
        self._thin: list[str] = []
        layers = plan.cache.get("layers")
        if layers is None:  # a plan read back from JSON: select again (selection reads the graph alone)
            layers, _ = self._select(graph)
            plan.check(layers)
        declines = list(plan.declines)
        if not layers:
            return PassResult(False, {"layers": 0}, declines)
        zeros_before = int(sum(l.stored.size - np.count_nonzero(l.stored) for l in layers))
        in_order = opts.criterion == "reconstruct" and opts.sequential
        stages = sequential.stages(graph, layers, MAX_STAGES) if in_order else [0] * len(layers)
        later = [[layers[i] for i, s in enumerate(stages) if s == stage] for stage in sorted(set(stages)) if stage > 0]
        ahead = sequential.ReferenceRows(later, lambda: ctx.rng(4), ROWS_PER_SAMPLE, REFERENCE_BYTES)
        relay = Relay(ctx, RELAY_BYTES)
        order = sorted(set(stages))

        def handover(stage: int) -> tuple[list, list[str] | None]:  # the nodes pruned after this run, the next run's
            after = [s for s in order if s > stage]
            then = [layers[i].input.name for i, s in enumerate(stages) if after and s == after[0]]
            return [layers[i].node for i, s in enumerate(stages) if s == stage], then or None
        hessians, used, _ = (self._hessians(graph, ctx, layers, ahead=ahead, relay=(relay, *handover(0)))
                             if self.needs_calibration() else ({}, 0, {}))
        factors = self._factors(layers, hessians)
        layer_scores = plan.cache.get("scores") or [
            scores(opts.criterion, to_mats(l), hessians.get(id(l)), opts.damp, factors.get(id(l))) for l in layers]
        counts = plan.counts() or self._counts(layers, layer_scores, hessians, ctx)
        changed, per_layer, choices = 0, [], []
        if self._already(layers, counts):  # pruned to this request before: keep every weight as it is
            for layer in layers:
                changed += self._keep(graph, layer, layer.stored, choices, per_layer)
            return PassResult(changed > 0, self._stats(layers, per_layer, declines, choices, used, zeros_before),
                              declines, [SIZE_NOTE])
        original = graph.copy() if in_order and max(stages) > 0 and ahead.rows is None else None
        mats = [to_mats(l) for l in layers]
        for stage in sorted(set(stages)):
            todo = [i for i, s in enumerate(stages) if s == stage]
            if stage > 0:  # inputs now come through pruned layers: gather H (and the cross term) again
                fresh, cross = self._hessians(graph, ctx, [layers[i] for i in todo], original, ahead.rows,
                                              relay=(relay, *handover(stage)))[::2]
                hessians.update(fresh)
                for i in todo if ahead.rows is not None else ():  # used: free them
                    del ahead.rows[id(layers[i])]
                factors.update(self._factors([layers[i] for i in todo], hessians))
                for i in todo:
                    if cross[id(layers[i])] is not None:
                        mats[i] = sequential.aim_at_original(mats[i], cross[id(layers[i])],
                                                             hessians[id(layers[i])], factors[id(layers[i])], opts.damp)
                    layer_scores[i] = scores(opts.criterion, mats[i], hessians[id(layers[i])], opts.damp,
                                             factors[id(layers[i])])
            for i in todo:
                changed += self._apply(graph, layers[i], mats[i], layer_scores[i], counts[i], hessians,
                                       factors.get(id(layers[i])), choices, per_layer)
        stats = self._stats(layers, per_layer, declines, choices, used, zeros_before)
        notes = [SIZE_NOTE, NM_NOTE] if _nm(opts.pattern) else [SIZE_NOTE]
        notes += _bn_note(layers)
        if self.needs_calibration() and self._thin:
            notes.append(f"{len(self._thin)} layers saw fewer calibration rows than input features, so their "
                         f"statistics are underdetermined (after a global pool a layer gets one row per sample); "
                         f"give more --calibration-data samples: " + ", ".join(self._thin[:8])
                         + (", ..." if len(self._thin) > 8 else ""))
        return PassResult(changed > 0, stats, declines, notes)

    def _factors(self, layers: list[Linear], hessians: dict[int, np.ndarray]) -> dict[int, list[np.ndarray]]:
        """Per reconstruct layer and group, ``U`` with ``UᵀU = H⁻¹`` (shared by scores and updates)."""
        if self.options.criterion != "reconstruct":
            return {}
        return {id(l): [upper_inverse_factor(h, self.options.damp) for h in hessians[id(l)]] for l in layers}

    def _already(self, layers: list[Linear], counts: list[int]) -> bool:
        """Whether the weights already hold the request: the zeros of every layer (in the N:M
        pattern when asked), or in global scope the total, overridden layers aside, so that a data-aware
        allocation seeing inputs the first run made dead does not move zeros between layers."""
        opts = self.options
        nm = _nm(opts.pattern)
        zeros = [layer.stored.size - np.count_nonzero(layer.stored) for layer in layers]
        pooled = opts.scope == "global" and not nm
        fixed = [any(matches(l, (_parse_override(o, opts)[0],)) for o in opts.layer_sparsity) for l in layers]
        for layer, zero, count, own in zip(layers, zeros, counts, fixed):
            if (own or not pooled) and zero != count:
                return False
            if nm and not masklib.holds_nm(to_mats(layer), *nm, nm_perm(layer)):
                return False
        free = [i for i, own in enumerate(fixed) if not own]
        return not pooled or sum(zeros[i] for i in free) == sum(counts[i] for i in free)

    def _apply(self, graph, layer, mats, sc, count, hessians, factors, choices, per_layer) -> int:
        new = self._prune(layer, mats, sc, count, hessians.get(id(layer)), factors)
        return self._keep(graph, layer, new, choices, per_layer)

    def _keep(self, graph, layer, new, choices, per_layer) -> int:
        per_layer.append({"layer": layer.name, "op": layer.op, "weights": layer.stored.size,
                          "zeros": int(new.size - np.count_nonzero(new)),
                          "sparsity": round(float(1 - np.count_nonzero(new) / new.size), 4)})
        return self._write(graph, layer, new, choices)

    # -- selection -------------------------------------------------------------------------

    def _select(self, graph: gs.Graph) -> tuple[list[Linear], list[Decline]]:
        opts = self.options
        found, skipped = find_layers(graph)
        declines = [Decline(where, reason) for where, reason in skipped]
        nm = _nm(opts.pattern)
        layers = []
        for layer in found:
            reason = None
            hit = next((p for p in opts.exclude if matches(layer, (p,))), None)
            if hit is not None:
                reason = f"excluded by exclude={hit!r}"
            elif layer.stored.size < opts.min_params:
                reason = f"{layer.stored.size} weights, fewer than min_params={opts.min_params}"
            elif nm and nm_cols(layer) % nm[1]:
                reason = f"reduction run of {nm_cols(layer)} is not a multiple of {nm[1]}: {opts.pattern} does not fit"
            elif self.needs_calibration():
                reason = supports_data(layer)
            if reason:
                declines.append(Decline(layer.name, reason))
            else:
                layers.append(layer)
        return layers, declines

    # -- calibration -----------------------------------------------------------------------

    def _hessians(self, graph: gs.Graph, ctx: PassContext, layers: list[Linear], original: gs.Graph | None = None,
                  kept: dict[int, list[np.ndarray]] | None = None, ahead: sequential.ReferenceRows | None = None,
                  relay: tuple | None = None) -> tuple[dict[int, np.ndarray], int, dict[int, np.ndarray]]:
        """H of each layer's input; with ``original``, or the original model's rows ``kept`` by the
        first run, also the cross term with the original model's input. ``ahead`` samples, in the
        first run, the rows the later stages will need; ``relay`` is (``Relay``, the nodes
        pruned after this run, the next run's tensors)."""
        ctx.require_calibration(self.name)
        rng = ctx.rng(4)
        acc = {id(l): HessianAccumulator(l, ROWS_PER_SAMPLE, rng) for l in layers}
        names = list(dict.fromkeys(l.input.name for l in layers))
        references = (ctx.activations(prefix(original, names), names) if original is not None
                      else itertools.repeat(None))
        used = 0
        runs = (relay[0].activations(graph, names, relay[1], relay[2]) if relay is not None
                else ctx.activations(prefix(graph, names), names))
        for batch, (values, reference) in enumerate(zip(runs, references)):
            samples = len(next(iter(values.values())))
            for layer in layers:
                x, ref = values[layer.input.name], None if kept is None else kept[id(layer)][batch]
                if isinstance(ref, sequential.Raw):
                    acc[id(layer)].add(x, ref.x, samples)
                elif ref is not None:
                    acc[id(layer)].add(x, samples=samples, ref_rows=ref)
                else:
                    acc[id(layer)].add(x, None if reference is None else reference[layer.input.name], samples)
            if ahead is not None:
                ahead.add(values, samples)
            used += samples
            if used >= self.options.samples:
                break
        hessians = {k: a.result() for k, a in acc.items()}
        if original is None and kept is None:  # the first run sees every layer: name those whose H is underdetermined
            self._thin = [f"{a.layer.name} ({a.rows_seen} rows, {a.h.shape[1]} features)" for a in acc.values()
                          if a.rows_seen < a.h.shape[1]]
        # the refit to the original outputs has cols² unknowns per group: with too few rows it overfits
        refits = {k: a.cross_result() if a.rows_seen >= REFIT_ROWS * a.h.shape[1] else None for k, a in acc.items()}
        return hessians, used, refits

    # -- how many go where -----------------------------------------------------------------

    def _counts(self, layers: list[Linear], layer_scores: list[np.ndarray], hessians: dict, ctx: PassContext) -> list[int]:
        opts = self.options
        nm = _nm(opts.pattern)
        if nm:
            return [l.stored.size * (nm[1] - nm[0]) // nm[1] for l in layers]
        fixed: dict[int, int] = {}
        for i, layer in enumerate(layers):
            for item in opts.layer_sparsity:
                pattern, value = _parse_override(item, opts)
                if matches(layer, (pattern,)):
                    fixed[i] = masklib.target_count(value, layer.stored.size)
        free = [i for i in range(len(layers)) if i not in fixed]
        counts = dict(fixed)
        if opts.scope == "layer":
            counts.update({i: masklib.target_count(opts.sparsity, layers[i].stored.size) for i in free})
        else:
            total = masklib.target_count(opts.sparsity, sum(l.stored.size for l in layers)) - sum(fixed.values())
            if total < 0 or total > sum(layers[i].stored.size for i in free):
                ctx.warn(f"prune-weights: layer_sparsity overrides make sparsity={opts.sparsity} unreachable")
                total = min(max(total, 0), sum(layers[i].stored.size for i in free))
            counts.update(zip(free, masklib.allocate_global([layer_scores[i] for i in free], total)))
        return [counts[i] for i in range(len(layers))]

    # -- apply -----------------------------------------------------------------------------

    def _prune(self, layer: Linear, mats: np.ndarray, sc: np.ndarray, count: int, h: np.ndarray | None,
               factors: list[np.ndarray] | None = None) -> np.ndarray:
        opts = self.options
        nm = _nm(opts.pattern)
        perm = nm_perm(layer) if nm else None
        if opts.criterion == "reconstruct":
            mask = masklib.nm_mask(sc, *nm, perm) if nm else masklib.unstructured_mask(sc, count)
            out = np.empty(mats.shape)
            for g in range(mats.shape[0]):
                out[g] = prune_group(mats[g], h[g], opts.damp, count=int(mask[g].sum()), nm=nm, perm=perm,
                                     saliency=sc[g], u=factors[g] if factors else None)
            return from_mats(layer, out)
        mask = masklib.nm_mask(sc, *nm, perm) if nm else masklib.unstructured_mask(sc, count)
        return from_mats(layer, np.where(mask, 0, mats))

    def _write(self, graph: gs.Graph, layer: Linear, new: np.ndarray, choices: list[dict]) -> int:
        """Point the layer at ``new`` (dense or sparse); 1 if the graph changed."""
        same = np.array_equal(new, layer.stored)
        if self.options.storage == "sparse":
            choice, sparse = storage.choose(new, layer.tensor.name)
            choices.append(choice.to_dict() | {"layer": layer.name})
            if sparse is not None:
                old = layer.tensor
                storage.store_sparse(graph, layer.node, 1, sparse, new.dtype, new.shape)
                drop_unread(graph, old)
                return 1
        if same:
            return 0
        layer.write(graph, new, "pruned")
        return 1

    def _stats(self, layers, per_layer, declines, choices, used, zeros_before) -> dict:
        opts = self.options
        total = sum(l.stored.size for l in layers)
        zeros = sum(p["zeros"] for p in per_layer)
        stats = {
            "criterion": opts.criterion, "pattern": opts.pattern, "scope": opts.scope,
            "target_sparsity": 0.5 if opts.pattern != "unstructured" else opts.sparsity,
            "sparsity": round(zeros / total, 6) if total else 0.0,
            "prunable_params": total,
            "zeros_before": zeros_before,
            "zeros": zeros,
            "nonzero_after": total - zeros,
            "layers": per_layer,
            "excluded": [d.to_dict() for d in declines],
        }
        if used:
            stats["calibration_samples"] = used
        if opts.storage == "sparse":
            stats["storage"] = choices
        return stats


def _nm(pattern: str) -> tuple[int, int] | None:
    if pattern == "unstructured":
        return None
    n, m = pattern.split(":")
    return int(n), int(m)


def _parse_override(item: str, opts: PassOptions) -> tuple[str, float]:
    pattern, sep, value = item.rpartition("=")
    if not sep:
        pattern, sep, value = item.rpartition(":")
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or not pattern or not 0.0 <= number < 1.0:
        raise opts.error("layer_sparsity", f"items are GLOB=S with S in [0, 1), got {item!r}")
    return pattern, number


def _bn_note(layers: list[Linear]) -> list[str]:
    before_bn = [l.name for l in layers
                 if any(n.op == "BatchNormalization" for n in itertools.chain.from_iterable(
                     t.outputs for t in l.node.outputs))]
    if not before_bn:
        return []
    return [(f"{len(before_bn)} pruned layers feed a BatchNormalization: run fold-bn before prune-weights "
             "so weight magnitudes are comparable")]
