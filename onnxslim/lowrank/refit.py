"""Sequential refit: each split is fitted to the inputs the already-split layers really produce.

Splitting the layers one by one with their own input statistics ignores that every split
changes what the layers after it see. The refit walks the layers in graph order and, for each
one, fits its rank-r factors to reproduce the *original* layer's output from the input that the
*partly split* graph now gives it (the reduced-rank regression of the original output on the
new input):

    min over rank-r M of ‖X'·M − X·W‖_F        X: original input rows, X': current input rows

With ``C' = X'ᵀX' + δI = Q diag(d) Qᵀ`` (δ the relative damping of ``factor.whitened``) and the
cross moment ``C× = X'ᵀX``, the minimum is ``M = Q diag(d)^-½ · trunc_r(diag(d)^-½ Qᵀ C× W)``:
the whitened SVD, with the cross moment in place of the second moment (the damping pulls M
toward W: ``C×`` becomes ``C× + δI``). When X' = X (the first
layer, or no layer before it was split) it reduces to the data-aware split itself.

The layer's bias then absorbs the shift of the mean output, ``(Σx·W − Σx'·M) / rows``, where the
layer has a constant bias of its own (Gemm C, Conv B, or a constant Add right after a MatMul).

Layers reading the same tensor are fitted together from one pass over the calibration data.
Cost: per distinct input tensor, one streaming run of the original and of the current graph,
each cut to the nodes that compute that tensor, holding K×K moments only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.ir.nodes import prefix
from onnxslim.ir.weights import constant_value
from onnxslim.lowrank import factor
from onnxslim.ir.linear import Linear, write_input
from onnxslim.lowrank.layers import rows, weight


def _order(graph: gs.Graph, layers: Sequence[Linear]) -> list[list[Linear]]:
    """The layers grouped by input tensor, groups in graph (topological) order."""
    graph.toposort()
    position = {id(node): i for i, node in enumerate(graph.nodes)}
    groups: dict[tuple[str, int], list[Linear]] = {}
    for layer in sorted(layers, key=lambda la: position[id(la.node)]):
        groups.setdefault((layer.input.name, layer.feature_axis), []).append(layer)
    return list(groups.values())


def fit(weight: np.ndarray, second: np.ndarray, cross: np.ndarray, rank: int, damping: float
        ) -> tuple[np.ndarray, np.ndarray]:
    """Rank-``rank`` factors (A, B) minimizing ‖X'AB − XW‖ given X'ᵀX' and X'ᵀX (float64)."""
    eigenvalues, q = np.linalg.eigh(second)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    mean = float(eigenvalues.mean()) if eigenvalues.size else 0.0
    if mean <= 0.0:
        return factor.plain(weight).factors(rank)
    delta = damping * mean
    inv_root = 1.0 / np.sqrt(eigenvalues + delta)
    # the damping pulls M toward W, not toward 0: min ‖X'M − XW‖² + δ‖M − W‖²
    target = inv_root[:, None] * (q.T @ (cross @ weight + delta * weight))
    u, s, vt = np.linalg.svd(target, full_matrices=False)
    return factor.Spectrum(s, q @ (inv_root[:, None] * u), vt, whitened=True).factors(rank)


def _bias_tensor(graph: gs.Graph, layer: Linear) -> tuple[gs.Node, int] | None:
    """Where the layer's constant bias lives: (node, input index), or None if it has none."""
    node = layer.node
    n = layer.shape[1]
    if node.op in ("Gemm", "Conv"):
        if len(node.inputs) > 2 and node.inputs[2].name:
            value = constant_value(node.inputs[2])
            if value is not None and value.ndim >= 1 and value.size == n and value.shape[-1] == n:
                return node, 2
        return None
    consumers = node.outputs[0].outputs
    if len(consumers) != 1 or consumers[0].op != "Add" or node.outputs[0] in graph.outputs:
        return None
    add = consumers[0]
    index = 1 if add.inputs[0] is node.outputs[0] else 0
    value = constant_value(add.inputs[index])
    if value is None or value.ndim == 0 or value.size != n or value.shape[-1] != n:
        return None
    return add, index


def sequential(ctx: PassContext, graph: gs.Graph, plans: Sequence, damping: float, split) -> int:
    """Refit and split every plan's layer (``layer``, ``rank``) in graph order;
    ``split(graph, layer, a, b)`` rewrites. Returns how many layers had their bias shifted.
    """
    reference = graph.copy()
    rank_of = {id(plan.layer): plan.rank for plan in plans}
    shifted = 0
    for group in _order(graph, [plan.layer for plan in plans]):
        name = group[0].input.name
        k = group[0].shape[0]
        second, cross = np.zeros((k, k)), np.zeros((k, k))
        first_new, first_old, count = np.zeros(k), np.zeros(k), 0
        # only the nodes that compute the group's input, at ORT's full optimization (a graph
        # output survives its fusions): several times cheaper than the whole graph unoptimized
        pairs = zip(ctx.activations(prefix(reference, [name]), [name], optimize=True),
                    ctx.activations(prefix(graph, [name]), [name], optimize=True))
        for old_values, new_values in pairs:
            old, new = rows(group[0], old_values[name]), rows(group[0], new_values[name])
            second += new.T @ new
            cross += new.T @ old
            first_new += new.sum(axis=0)
            first_old += old.sum(axis=0)
            count += new.shape[0]
        for layer in group:
            w = weight(layer)
            a, b = fit(w, second, cross, rank_of[id(layer)], damping)
            shift = (first_old @ w - first_new @ (a @ b)) / max(count, 1)
            where = _bias_tensor(graph, layer)
            if where is not None:
                node, index = where
                stored = constant_value(node.inputs[index])
                if node is layer.node:  # the layer's own bias: Gemm's C is scaled by beta
                    shift = shift / layer.beta
                updated = (stored.astype(np.float64) + shift.reshape(stored.shape)).astype(stored.dtype)
                write_input(graph, node, index, updated, "refit")
                shifted += 1
            split(graph, layer, a, b)
    return shifted

