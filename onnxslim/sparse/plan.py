"""prune-weights' plan: the layers it would prune and how many zeros each gets, as data.

Selection (which layers, which are declined and why) reads the graph alone. With the magnitude
criterion the scores are the weights themselves, so the per-layer zero counts (and, in global
scope, their allocation across layers) are known too and the plan is complete. The data-aware
criteria score weights from calibration data: which weights go, and in global scope how many per
layer, are pending, and so are the reconstruct updates.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from onnxslim.core.pass_base import Decline, Plan
from onnxslim.ir.linear import Linear


@dataclasses.dataclass
class WeightPlan(Plan):
    """``changes``: one entry per selected layer (``where``: the node, ``weight``: its tensor,
    ``weights``: its size, ``zeros``: how many it gets where the graph alone says). The selected
    views and the magnitude scores stay in ``cache``."""

    @classmethod
    def of(cls, layers: list[Linear], counts: list[int] | None, declines: list[Decline], options: Any,
           summary: dict[str, Any], notes: list[str]) -> WeightPlan:
        changes = []
        for i, layer in enumerate(layers):
            change = {"where": layer.name, "op": layer.op, "weight": layer.tensor.name, "weights": int(layer.stored.size)}
            if counts is not None:
                change.update(zeros=int(counts[i]), sparsity=round(counts[i] / layer.stored.size, 4))
            changes.append(change)
        if counts is not None and layers:
            summary = {**summary, "zeros": int(sum(counts))}
        return cls("prune-weights", changes, list(declines), pending_choices(options, counts is None) if layers else [],
                   summary=summary, notes=list(notes))

    def counts(self) -> list[int] | None:
        """Zeros per selected layer, in graph order; None when the plan left them to calibration data."""
        if not self.changes or any("zeros" not in c for c in self.changes):
            return None
        return [int(c["zeros"]) for c in self.changes]

    def check(self, layers: list[Linear]) -> None:
        """Fail when the plan was made on another graph (other layers or sizes)."""
        made = [(c["where"], c["weights"]) for c in self.changes]
        here = [(layer.name, int(layer.stored.size)) for layer in layers]
        if made != here:
            first = next((m for m, h in zip(made, here) if m != h), (made or here)[0])
            raise ValueError(f"the plan was made on another graph: its layer {first[0]!r} is not this graph's")


def pending_choices(o: Any, counts_pending: bool) -> list[str]:
    """The choices the run makes from calibration data, with these options."""
    if o.criterion == "magnitude":
        return []
    out = [f"which weights are zeroed: {o.criterion} scores from calibration data "
           f"(H = XᵀX of each layer's input, at most {o.samples} samples)"]
    if counts_pending:
        out.append("zeros per layer: one threshold over the calibrated scores across layers (scope=global)")
    if o.criterion == "reconstruct":
        out.append("the kept weights updated to keep each layer's output (SparseGPT)"
                   + (", layer by layer in depth order from the already pruned inputs" if o.sequential else ""))
    return out
