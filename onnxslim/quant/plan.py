"""The quantize pass's plan: the placement as data, and the choices left to calibration and timing.

Placement (``onnxslim.quant.placement``) reads the graph alone, so it is the plan; what depends
on measurements (activation ranges, SmoothQuant, probes with the real kernels, mixed precision,
the per-layer and whole-model timings) is listed as pending, each with what it needs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import onnx_graphsurgeon as gs

from onnxslim.core.pass_base import Decline, Plan
from onnxslim.quant.cpu import saturation_risk
from onnxslim.quant.placement import Placement, node_key

if TYPE_CHECKING:
    from onnxslim.runtime.cpu import CpuFeatures


@dataclasses.dataclass
class QuantizePlan(Plan):
    """``changes``: one entry per quantized compute or integer node (``where``, ``op``, ``role``:
    ``compute``, ``integer`` or ``absorbed``), and one per activation tensor given a Q/DQ pair
    (``tensor``, its shared-range group). The placement and the prepared graph stay in ``cache``."""

    @classmethod
    def of_placement(cls, placement: Placement, work: gs.Graph, act_type: str, options: Any,
                     provider: str, cpu: CpuFeatures) -> QuantizePlan:
        ops = {node_key(n): n.op for n in work.nodes}
        changes: list[dict[str, Any]] = [
            *({"where": k, "op": ops[k], "role": "compute"} for k in placement.compute),
            *({"where": k, "op": ops[k], "role": "integer"} for k in placement.arith),
            *({"where": k, "op": ops[k], "role": "absorbed"} for k in placement.absorbed),
            *({"where": t, "tensor": "activation", "group": placement.group(t)} for t in placement.tensors),
        ]
        summary = {"activation_type": act_type,
                   "weights": "int8 per-channel" if options.per_channel else "int8 per-tensor",
                   "quantized_nodes": len(placement.compute), "quantized_tensors": len(placement.tensors),
                   "absorbed": len(placement.absorbed)}
        declines = [Decline(where, reason) for where, reason in placement.declines]
        declines += [Decline(name, "excluded by the exclude option") for name in options.exclude if name in ops]
        pending = pending_choices(options, provider, act_type, cpu) if placement.compute else []
        return cls("quantize", changes, declines, pending, summary=summary,
                   cache={"work": work, "placement": placement})


def pending_choices(o: Any, provider: str, act_type: str, cpu: CpuFeatures) -> list[str]:
    """The choices the run makes from calibration data or timings, with these options."""
    out = [f"activation scales and zero points ({o.method}): from calibration data"]
    if o.smooth is not None:
        out.append(f"SmoothQuant (alpha={o.smooth}) on MatMul/Gemm inputs whose calibrated channels show outliers")
    if o.saturation == "all":
        out.append("7-bit weights everywhere (saturation=all): the probes still run on calibration data")
    elif o.saturation == "auto" and saturation_risk(provider, act_type, cpu):
        out.append("7-bit weights for the layers whose probe on calibration data shows AVX2 int16 saturation")
    if o.speed == "auto" and provider == "CPUExecutionProvider":
        out.append("layers between float ops kept in float when their int8 probe is timed slower than float")
    if o.target_cosine is not None:
        out.append(f"mixed precision: the layers with the largest measured error kept in float until the output "
                   f"cosine on calibration samples reaches {o.target_cosine} (at most {o.max_excluded:g} of them)")
        if o.dynamic:
            out.append("float MatMuls run dynamic int8 where the budget still holds (calibration samples)")
        out.append("float layers store int8 weights (weight-only) where the budget still holds (calibration samples)")
    if o.check_speed:
        fallback = "fails (require_speedup=true)" if o.require_speedup else \
            "stores every weight int8 and folded instead (fp32's graph), if that holds the budget"
        out.append(f"fp32 against int8 timed on one calibration row; a slower int8 {fallback}")
    return out
