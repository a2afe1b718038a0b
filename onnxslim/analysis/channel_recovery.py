"""Least-squares recovery: refit the layers that read pruned channels, without training.

For each consumer (Conv with group=1, Gemm, MatMul with a constant weight) whose input lost
channels, find weights W' and bias b' that make its output on the pruned input match the
original model's output on the original input, over calibration samples:

    min ‖ [X' 1] Θ − Y ‖²_F + λ‖Θ − Θ₀‖²,   Θ = (AᵀA + λI)⁻¹ (AᵀY + λΘ₀),
    λ = tr(AᵀA)/d · (1e-4 + d/rows)

Θ₀ are the layer's pruned weights: with few samples per unknown (rows ≈ d) the ridge pulls the
fit back to them instead of overfitting.

X' are rows of the consumer's input in the pruned graph (im2col patches for a Conv), Y the
matching rows of the original consumer output (only its kept output channels); a ConvTranspose
whose kernel equals its stride maps each input pixel to its own k×k output patch, so its rows are
input pixels and its targets the patches (one bias per channel: the taps' intercepts averaged). AᵀA and AᵀY
are accumulated batch by batch in float64 from a random sample of at most ``rows`` output
positions per batch, so memory does not grow with the data. Consumers are refit level by
level in topological order: a layer is refit on inputs produced by the already-refit layers
above it. Levels are grouped into at most ``MAX_RUNS`` runs of consecutive levels (a deep
network has one level per layer: one calibration run each made the refit quadratic in depth ×
samples); a layer is refit on inputs from the layers refit in earlier runs, and each run computes
only what its inputs need that the previous run's refits changed (``core.relay.Relay``). The
relative output error ‖Y − Ŷ‖_F / ‖Y‖_F before and after the refit comes from the same normal
equations. Limits: 2-D Conv only; Gemm with transA=0; ConvTranspose only
with kernel = stride; unnamed nodes are not refit (reported).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.core.context import PassContext
from onnxslim.core.relay import Relay
from onnxslim.ir.linear import linear_of, write_input
from onnxslim.ir.nodes import prefix
from onnxslim.ir.weights import constant_value, unique_name

RIDGE = 1e-4
MAX_RUNS = 8  # calibration runs of the refit (levels are grouped), besides the one for the targets
RELAY_BYTES = 512 << 20  # activations one run hands to the next at most (else the next runs its whole prefix)


@dataclasses.dataclass
class LayerFit:
    node: str
    error_before: float
    error_after: float
    rows: int


@dataclasses.dataclass
class _Normal:
    gram: np.ndarray
    cross: np.ndarray
    yy: float = 0.0
    rows: int = 0


def refit(ctx: PassContext, original: gs.Graph, pruned: gs.Graph, consumers: Sequence[gs.Node],
          out_keep: Mapping[int, np.ndarray | None], rows: int, rng: np.random.Generator) -> tuple[list[LayerFit], list[str]]:
    """Refit ``consumers`` (nodes of ``pruned``) in place; returns fits and notes on layers skipped.

    ``original`` is a copy of ``pruned`` taken before pruning: its i-th node other than a
    ``Constant`` is the pruned graph's (pruning replaces the Constant nodes of the weights it
    slices, and adds none else). ``out_keep`` maps id(node) of a consumer whose own outputs were
    pruned to the kept ones.
    """
    twin = {id(n): o for n, o in zip(_computing(pruned), _computing(original))}
    todo, skipped = [], []
    for node in consumers:
        reason = _unsupported(node, twin.get(id(node)))
        if reason:
            skipped.append(f"{_label(node)}: not refit ({reason})")
        else:
            todo.append(node)
    fits: list[LayerFit] = []
    targets = _targets(ctx, [(n, twin[id(n)]) for n in todo], original, out_keep, rows, rng)
    levels = _grouped(_levels(pruned, {id(n) for n in todo}), MAX_RUNS)
    relay = Relay(ctx, RELAY_BYTES)  # each run starts from the values the previous refits left valid
    for i, level in enumerate(levels):
        then = [n.inputs[0].name for n in levels[i + 1]] if i + 1 < len(levels) else None
        fits += _refit_level(ctx, pruned, level, targets, relay, then)
    return fits, skipped


def _label(node: gs.Node) -> str:
    return node.name or f"{node.op}({node.outputs[0].name})"


def _unsupported(node: gs.Node | None, orig: gs.Node | None) -> str | None:
    if node is None or orig is None or orig.op != node.op:
        return "no counterpart in the original graph"
    if node.op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return f"{node.op} is not refit"
    layer = linear_of(node)
    if layer is None:
        return "the weight is not constant"
    if node.op == "ConvTranspose" and not _patchwise(node):
        return "only ConvTranspose with kernel = stride, no padding, group=1"
    if node.op == "Conv" and (layer.stored.ndim != 4 or layer.groups != 1):
        return "only 2-D Conv with group=1"
    if node.op == "Conv" and node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "auto_pad SAME is not refit"
    if layer.trans_a:
        return "Gemm with transA"
    return None


def _levels(graph: gs.Graph, consumers: set[int]) -> list[list[gs.Node]]:
    depth: dict[str, int] = {}
    levels: dict[int, list[gs.Node]] = {}
    for node in graph.nodes:
        d = max((depth.get(t.name, 0) for t in node.inputs if t.name), default=0)
        if id(node) in consumers:
            levels.setdefault(d, []).append(node)
            d += 1
        for t in node.outputs:
            depth[t.name] = d
    return [levels[k] for k in sorted(levels)]


def _grouped(levels: list[list[gs.Node]], most: int) -> list[list[gs.Node]]:
    """``levels`` merged into at most ``most`` runs of consecutive levels."""
    per = -(-len(levels) // most) if levels else 1
    return [[n for level in levels[i:i + per] for n in level] for i in range(0, len(levels), per)]


def _targets(ctx, pairs, original, out_keep, rows, rng) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """One pass over the original model: per consumer and batch, sampled positions and their outputs."""
    names = [o.outputs[0].name for _, o in pairs]
    targets: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {id(n): [] for n, _ in pairs}
    for values in ctx.activations(prefix(original, names), names):  # what follows the last one is not run
        for (node, _), yn in zip(pairs, names):
            y = np.asarray(values[yn])
            keep = out_keep.get(id(node))
            if node.op == "ConvTranspose":  # kernel = stride: one input pixel -> one k x k output patch
                k = node.attrs["kernel_shape"]
                n, o, h, w = y.shape[0], y.shape[1], y.shape[2] // k[0], y.shape[3] // k[1]
                patches = y.reshape(n, o, h, k[0], w, k[1]).transpose(0, 2, 4, 1, 3, 5).reshape(n * h * w, o, k[0] * k[1])
                pick = np.sort(rng.choice(len(patches), rows, replace=False)) if len(patches) > rows else np.arange(len(patches))
                target = patches[pick]
                if keep is not None:
                    target = target[:, keep]
                targets[id(node)].append((pick, target.reshape(len(pick), -1).astype(np.float64)))
                continue
            if node.op == "Conv":
                total = y.shape[0] * y.shape[2] * y.shape[3]
                pick = np.sort(rng.choice(total, rows, replace=False)) if total > rows else np.arange(total)
                ni, rem = np.divmod(pick, y.shape[2] * y.shape[3])
                hi, wi = np.divmod(rem, y.shape[3])
                target = y[ni, :, hi, wi]
            else:
                y2 = y.reshape(-1, y.shape[-1])
                pick = np.sort(rng.choice(y2.shape[0], rows, replace=False)) if y2.shape[0] > rows else np.arange(y2.shape[0])
                target = y2[pick]
            if keep is not None:
                target = target[:, keep]
            targets[id(node)].append((pick, target.astype(np.float64)))
    return targets


def _refit_level(ctx, pruned, nodes, targets, relay: Relay, then: list[str] | None) -> list[LayerFit]:
    x_names = [n.inputs[0].name for n in nodes]
    acc: dict[int, _Normal] = {}
    for batch, cur in enumerate(relay.activations(pruned, x_names, nodes, then)):
        for node, xn in zip(nodes, x_names):
            pick, y = targets[id(node)][batch]
            a = _design(node, np.asarray(cur[xn], np.float64), pick)
            if _intercept(node):
                a = np.concatenate([a, np.ones((a.shape[0], 1))], axis=1)
            normal = acc.get(id(node))
            if normal is None:
                normal = acc[id(node)] = _Normal(np.zeros((a.shape[1],) * 2), np.zeros((a.shape[1], y.shape[1])))
            normal.gram += a.T @ a
            normal.cross += a.T @ y
            normal.yy += float((y**2).sum())
            normal.rows += a.shape[0]
    fits = []
    for node in nodes:
        normal = acc.get(id(node))
        if normal is None or normal.rows == 0:
            continue
        theta0 = _current(node)
        d = normal.gram.shape[0]
        lam = np.trace(normal.gram) / d * (RIDGE + d / normal.rows) + 1e-12
        theta = np.linalg.solve(normal.gram + lam * np.eye(d), normal.cross + lam * theta0)
        if node.op == "ConvTranspose":  # one bias per output channel, shared by the k x k taps
            taps = int(np.prod(node.attrs["kernel_shape"]))
            theta[-1] = np.repeat(theta[-1].reshape(-1, taps).mean(1), taps)
        before, after = _error(normal, theta0), _error(normal, theta)
        if after < before:
            _write(pruned, node, theta)
        fits.append(LayerFit(_label(node), before, min(after, before), normal.rows))
    return fits


def _computing(graph: gs.Graph) -> list[gs.Node]:
    return [n for n in graph.nodes if n.op != "Constant"]


def _patchwise(node: gs.Node) -> bool:
    k = list(node.attrs.get("kernel_shape", []))
    return (len(k) == 2 and list(node.attrs.get("strides", [1, 1])) == k and not any(node.attrs.get("pads", [0] * 4))
            and linear_of(node).groups == 1 and list(node.attrs.get("dilations", [1, 1])) == [1, 1]
            and not any(node.attrs.get("output_padding", [0, 0])) and "output_shape" not in node.attrs
            and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


def _intercept(node: gs.Node) -> bool:
    """A MatMul has nowhere to put a bias unless an Add with a constant follows it."""
    return node.op != "MatMul" or _bias_add(node) is not None


def _error(n: _Normal, theta: np.ndarray) -> float:
    res = n.yy - 2 * float(np.sum(theta * n.cross)) + float(np.sum(theta * (n.gram @ theta)))
    return float(np.sqrt(max(res, 0.0) / max(n.yy, 1e-30)))


def _design(node: gs.Node, x: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Rows of the layer's input at the sampled output positions (im2col patches for a Conv)."""
    if node.op == "ConvTranspose":
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])[pick]
    if node.op != "Conv":
        return x.reshape(-1, x.shape[-1])[pick]
    w = constant_value(node.inputs[1])
    kh, kw = w.shape[2:]
    sh, sw = node.attrs.get("strides", [1, 1])
    dh, dw = node.attrs.get("dilations", [1, 1])
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    ni, rem = np.divmod(pick, oh * ow)
    hi, wi = np.divmod(rem, ow)
    hh = hi[:, None] * sh + np.arange(kh) * dh
    ww = wi[:, None] * sw + np.arange(kw) * dw
    c = np.arange(x.shape[1])
    patches = xp[ni[:, None, None, None], c[None, :, None, None], hh[:, None, :, None], ww[:, None, None, :]]
    return patches.reshape(len(pick), -1)


def _current(node: gs.Node) -> np.ndarray:
    """Θ of the layer as it stands (its K×N matrix, Gemm's alpha applied: rows of the design; bias last)."""
    layer = linear_of(node)  # group 1 (``_unsupported``): one matrix
    mat, out = layer.matrices()[0].astype(np.float64) * layer.alpha, layer.shape[1]
    if node.op == "MatMul" and not _intercept(node):
        return mat
    bias = np.zeros(out)
    if node.op == "ConvTranspose":
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = np.repeat(constant_value(node.inputs[2]).astype(np.float64), layer.spatial)
        return np.concatenate([mat, bias[None, :]], axis=0)
    if len(node.inputs) > 2 and node.inputs[2].name:
        b = constant_value(node.inputs[2]).astype(np.float64)
        b = b * layer.beta  # 1 but for Gemm
        bias = np.broadcast_to(b.reshape(-1) if b.size == out else b.reshape(-1)[:1], (out,)).copy()
    elif node.op == "MatMul":
        add = _bias_add(node)
        if add is not None:
            bias = constant_value(add[0].inputs[add[1]]).astype(np.float64).reshape(-1).copy()
    return np.concatenate([mat, bias[None, :]], axis=0)


def _bias_add(node: gs.Node) -> tuple[gs.Node, int] | None:
    """The Add right after a MatMul that holds its bias as a [N] constant, if any."""
    out = node.outputs[0]
    if len(out.outputs) != 1 or out.outputs[0].op != "Add":
        return None
    add = out.outputs[0]
    other = 1 if add.inputs[0] is out else 0
    value = constant_value(add.inputs[other])
    n = constant_value(node.inputs[1]).shape[1]
    return (add, other) if value is not None and value.size == n and value.shape[-1] == n else None


def _write(graph: gs.Graph, node: gs.Node, theta: np.ndarray) -> None:
    layer = linear_of(node)
    dtype = layer.stored.dtype
    mat, bias = (theta[:-1], theta[-1]) if _intercept(node) else (theta, None)
    layer.write(graph, layer.from_matrices((mat / layer.alpha)[None]), "refit")
    if node.op == "Conv":
        _set_bias(graph, node, bias.astype(dtype), 2)
    elif node.op == "ConvTranspose":
        _set_bias(graph, node, bias.reshape(-1, layer.spatial)[:, 0].astype(dtype), 2)
    elif node.op == "Gemm":
        beta = layer.beta
        if beta == 0 or len(node.inputs) < 3 or not node.inputs[2].name:
            node.attrs["beta"] = 1.0
            beta = 1.0
        _set_bias(graph, node, (bias / beta).astype(dtype), 2)
    else:
        add = _bias_add(node)
        if add is not None and bias is not None:
            old = constant_value(add[0].inputs[add[1]])
            write_input(graph, add[0], add[1], bias.reshape(old.shape).astype(old.dtype), "refit")


def _set_bias(graph: gs.Graph, node: gs.Node, bias: np.ndarray, index: int) -> None:
    if len(node.inputs) > index and node.inputs[index].name:
        old = constant_value(node.inputs[index])
        write_input(graph, node, index, bias.reshape(old.shape) if old.size == bias.size else bias, "refit")
        return
    while len(node.inputs) < index:
        node.inputs.append(gs.Variable.empty())
    name = unique_name(graph, f"{node.name}_bias_refit")
    node.inputs.append(gs.Constant(name, np.ascontiguousarray(bias)))
