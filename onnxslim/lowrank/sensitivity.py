"""End-to-end sensitivity of the model's outputs to each layer's truncation, and the rank
allocation that uses it (``svd{param_ratio=..,allocation=sensitivity}``).

Equal per-layer error is a poor allocation for deep models: on all-MiniLM-L6-v2 the same
relative output error costs up to ~280× more sentence-embedding cosine in an FFN
down-projection than in a query projection (measured, c_i below). Here each layer is truncated alone, at half its
break-even rank, on the first calibration batch, and the drop of the graph outputs
``loss = mean over outputs and samples of (1 − cosine)`` is measured. The loss of layer i at
rank r is modelled as ``c_i · e_i(r)²`` (``e_i`` its closed-form relative output error; a small
perturbation costs 1 − cos ≈ ½‖δ‖²/‖y‖², quadratic), the layers' losses are taken as
additive, and the ranks (or "keep whole") minimizing the total loss within the parameter
budget are found by a Lagrangian bisection.

One ORT session serves every probe: the candidates' weights become graph inputs, fed the
original or the truncated values, so the model is built once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim.core.context import PassContext
from onnxslim.ir.linear import Linear

#: The probe truncates each layer to this share of its break-even rank.
PROBE = 0.5


def stored_weight(layer: Linear, weight: np.ndarray) -> np.ndarray:
    """The effective K×N ``weight`` in the node's own layout and dtype (inverse of ``layers.weight``)."""
    return layer.from_matrices((np.asarray(weight, dtype=np.float64) / layer.alpha)[None])


def _weights_as_inputs(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Turn the named weights (initializers or Constant outputs) into graph inputs, in place;
    return their stored values."""
    names = list(dict.fromkeys(names))
    wanted = set(names)
    values: dict[str, np.ndarray] = {}
    keep = [i for i in model.graph.initializer if i.name not in wanted]
    for init in model.graph.initializer:
        if init.name in wanted:
            values[init.name] = numpy_helper.to_array(init)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] in wanted:
            attr = next(a for a in node.attribute if a.name == "value")
            values[node.output[0]] = numpy_helper.to_array(attr.t)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for name in names:
        v = values[name]
        model.graph.input.append(onnx.helper.make_tensor_value_info(
            name, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), list(v.shape)))
    return values


def _loss(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    losses = []
    for y, ref in zip(outputs, reference):
        a = np.asarray(y, dtype=np.float64).reshape(max(1, y.shape[0] if y.ndim else 1), -1)
        b = np.asarray(ref, dtype=np.float64).reshape(a.shape)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        ok = (na > 0) & (nb > 0)
        cos = np.where(ok, np.sum(a * b, axis=1) / np.where(ok, na * nb, 1.0), 1.0)
        losses.append(np.mean(1.0 - cos))
    return float(np.mean(losses)) if losses else 0.0


def probe(ctx: PassContext, model: onnx.ModelProto, layers: Sequence[Linear], candidates: Sequence[np.ndarray],
          feeds: dict[str, np.ndarray]) -> list[float]:
    """The output loss with each layer alone replaced by its candidate K×N weight (one session of
    ``ctx``)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    names = [layer.node.inputs[1].name for layer in layers]
    stored = _weights_as_inputs(model, names)
    session = ctx.session(model)
    outputs = [name for name, kind in session.output_types.items()
               if kind.startswith("tensor(float") or kind == "tensor(double)"]
    base = {k: v for k, v in feeds.items() if k in session.inputs}
    base.update(stored)
    reference = list(session.run(base, outputs).values())
    losses = []
    for layer, name, weight in zip(layers, names, candidates):
        run = dict(base)
        run[name] = stored_weight(layer, weight)
        losses.append(_loss(list(session.run(run, outputs).values()), reference))
    return losses


def allocate(curves: Sequence[np.ndarray], coefficients: Sequence[float], shapes: Sequence[tuple[int, int]],
             ratio: float) -> list[int | None]:
    """Ranks (None: keep whole) minimizing Σ c_i·e_i(r_i)² with Σ params ≤ ratio × Σ K·N.

    Per layer the options are "whole" (loss 0, K·N parameters) and every rank 1..break-even
    (r·(K+N) parameters); for a multiplier λ each layer takes its option minimizing
    loss + λ·params, and λ is bisected (geometrically) to the smallest value meeting the budget.
    When even rank 1 everywhere misses the budget, every layer gets rank 1.
    """
    budget = ratio * sum(k * n for k, n in shapes)
    options = []
    for curve, c, (k, n) in zip(curves, coefficients, shapes):
        top = max(0, (k * n - 1) // (k + n))
        ranks = np.arange(1, min(top, len(curve) - 1) + 1)
        loss = c * np.asarray(curve, dtype=np.float64)[ranks] ** 2
        options.append((np.concatenate([[0.0], loss]), np.concatenate([[k * n], ranks * (k + n)]).astype(np.float64),
                        [None] + [int(r) for r in ranks]))

    def pick(lam: float) -> tuple[list[int | None], float]:
        chosen, total = [], 0.0
        for loss, params, ranks in options:
            i = int(np.argmin(loss + lam * params))
            chosen.append(ranks[i])
            total += params[i]
        return chosen, total

    if pick(1e300)[1] > budget:
        return [1 if len(r) > 1 else None for _, _, r in options]
    scale = max((float(np.max(o[0])) for o in options), default=0.0)
    if scale <= 0.0:
        return pick(1e300)[0]
    low, high = scale * 1e-16, scale * 1e-2
    while pick(high)[1] > budget:
        high *= 100.0
    for _ in range(100):
        mid = np.sqrt(low * high)
        if pick(mid)[1] <= budget:
            high = mid
        else:
            low = mid
        if high / low < 1.0 + 1e-9:
            break
    return pick(high)[0]
