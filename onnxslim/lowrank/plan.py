"""svd's plan: the layers it would split and, where the weights alone decide it, their ranks.

Candidates (and the declines: shared, non-float, grouped, non-1×1 weights, factors already)
read the graph alone. The plain-SVD rank rules (``energy``, ``rank_ratio``, ``param_ratio``
without calibration data) read only the weights, so the plan then carries every layer's rank
and the size after. Data-aware spectra, ``max_error``, ``param_ratio`` with calibration data,
``allocation=sensitivity``, the latency gate (timings) and the refit are pending.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from onnxslim.core.pass_base import Decline, Plan
from onnxslim.ir.linear import Linear
from onnxslim.lowrank import factor
from onnxslim.lowrank.layers import weight


@dataclasses.dataclass
class Split:
    """One layer's decision: its rank and factors (W ≈ A·B), before the gate and the rewrite."""

    layer: Linear
    rank: int
    a: np.ndarray
    b: np.ndarray
    info: dict


@dataclasses.dataclass
class SvdPlan(Plan):
    """``changes``: one entry per layer to split (``where``, ``op``, ``K``, ``N``; with ``rank`` and the
    parameter counts when the rule read the weights alone), or, when the ranks need data, one per
    candidate. The views and the factors stay in ``cache``."""

    @classmethod
    def of(cls, layers: list[Linear], splits: list[Split] | None, declines: list[Decline], options: Any,
           reads_data: bool) -> SvdPlan:
        rule, value = options.rule()
        summary: dict[str, Any] = {"rule": f"{rule}={value:g}", "data_aware": options.data_aware,
                                   "candidates": len(layers)}
        if splits is None:
            changes = [{"where": layer.name, "op": layer.op, "K": layer.shape[0], "N": layer.shape[1]}
                       for layer in layers]
        else:
            changes = [{"where": s.layer.name, **{k: v for k, v in s.info.items() if k != "layer"}} for s in splits]
            summary.update(split=len(splits), weight_params_before=sum(c["params_before"] for c in changes),
                           weight_params_after=sum(c["params_after"] for c in changes))
        pending = pending_choices(options, reads_data) if changes else []
        return cls("svd", changes, list(declines), pending, summary=summary)

    def splits(self, layers: list[Linear]) -> list[Split] | None:
        """The plan's splits rebuilt on ``layers`` (the candidates found again): plain SVD at the plan's
        ranks; None when the plan gives no ranks (they need data)."""
        if any("rank" not in c for c in self.changes) or (not self.changes and self.pending):
            return None
        by_name = {layer.name: layer for layer in layers}
        out = []
        for change in self.changes:
            layer = by_name.get(change["where"])
            if layer is None or (change["K"], change["N"]) != layer.shape:
                raise ValueError(f"the plan was made on another graph: its layer {change['where']!r} is not this graph's")
            a, b = factor.plain(weight(layer)).factors(int(change["rank"]))
            info = {"layer": change["where"], **{k: v for k, v in change.items() if k != "where"}}
            out.append(Split(layer, int(change["rank"]), a, b, info))
        return out


def pending_choices(o: Any, reads_data: bool) -> list[str]:
    """The choices the run makes from calibration data or timings, with these options."""
    rule, value = o.rule()
    out = []
    if reads_data:
        what = "whitened spectra (data_aware)" if o.data_aware else f"the rank rule {rule}={value:g}"
        out.append(f"ranks: {what} from the layers' input moments on calibration data")
    if o.allocation == "sensitivity":
        out.append("rank allocation by each layer's measured effect on the graph outputs (one calibration batch)")
    if o.latency_gate:
        out.append(f"each split kept only if timed faster than its layer (original/split > {o.min_speedup:g})")
    if o.refit:
        out.append("the splits refit in graph order to the inputs the earlier splits produce (calibration data)")
    return out
