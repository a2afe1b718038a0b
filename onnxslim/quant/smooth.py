"""SmoothQuant-style outlier migration for MatMul/Gemm fed by float ops (transformers).

Some channels of a transformer's LayerNorm or GELU output are 10-100x larger than the rest, so
one per-tensor activation scale wastes most of the uint8 levels. For an input X [.., K] read by
layers with constant weights W [K, N] (Gemm with transB: [N, K]) the product is unchanged by

    X' = X · diag(1/s),   W' = diag(s) · W,   s_j = max|X_j|^α / max|W_j|^(1-α)

so the outliers move into the weights, which are quantized per output channel. X' is computed
by one Mul inserted before the readers (X itself keeps its other readers, e.g. the residual
Add). Applied only where the channel maxima are uneven (max / median > ``MIN_SPREAD``) and X
comes from a float op (inside an int8 chain the extra Mul would cost a requantization).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.ir.linear import linear_of
from onnxslim.ir.weights import constant_value, replace_input, unique_name
from onnxslim.quant.placement import Placement, node_key

#: channel-maximum spread (max / median) from which smoothing is applied
MIN_SPREAD = 5.0


def candidates(graph: gs.Graph, p: Placement) -> dict[str, list[gs.Node]]:
    """Input tensor -> the weight layers reading it, for inputs produced by float ops."""
    readers = p.readers()
    out: dict[str, list[gs.Node]] = {}
    compute = set(p.compute)
    for node in graph.nodes:
        if node_key(node) not in compute or node.op not in ("MatMul", "Gemm"):
            continue
        layer = linear_of(node)
        x = node.inputs[0]
        if layer is None or layer.trans_a or layer.stored.ndim != 2 or constant_value(x) is not None:
            continue
        source = x.inputs[0] if x.inputs else None
        if source is not None and (node_key(source) in readers or node_key(source) in p.absorbed
                                   or source.op == "DequantizeLinear"):
            continue
        out.setdefault(x.name, []).append(node)
    return out


@dataclasses.dataclass
class Smoothed:
    """One smoothed input X: X' = X · diag(``inv``) is ``output``; ``weights`` keeps, per reader
    node name, its weight before smoothing (unshared weights only), so that ``undo`` can restore it."""

    output: str
    inv: np.ndarray
    weights: dict[str, gs.Constant]


def apply(graph: gs.Graph, groups: dict[str, list[gs.Node]], ranges: dict[str, tuple[np.ndarray, np.ndarray]],
          alpha: float) -> dict[str, Smoothed]:
    """Insert the Mul and rescale the weights.

    ``ranges`` holds each candidate's per-channel (min, max) from the calibration scan. Returns,
    per smoothed tensor X, its ``Smoothed`` record: the caller derives X''s statistics from X's
    without another pass over the data.
    """
    tensors = graph.tensors()
    done: dict[str, Smoothed] = {}
    for name, nodes in groups.items():
        if name not in ranges:
            continue
        ax = np.maximum(np.abs(ranges[name][0]), np.abs(ranges[name][1])).astype(np.float64)
        if ax.size < 2 or np.median(ax) <= 0 or ax.max() / np.median(ax) < MIN_SPREAD:
            continue
        w_rows = np.max([_row_absmax(n) for n in nodes], axis=0)
        s = np.power(np.maximum(ax, 1e-8), alpha) / np.power(np.maximum(w_rows, 1e-8), 1.0 - alpha)
        s = np.clip(s, 1e-4, 1e4).astype(np.float64)
        x = tensors[name]
        inv = (1.0 / s).astype(np.float32)
        inv_const = gs.Constant(unique_name(graph, f"{name}_sm_s"), inv)
        y = gs.Variable(unique_name(graph, f"{name}_sm"))
        graph.nodes.append(gs.Node("Mul", "", {}, [x, inv_const], [y]))
        originals = {}
        for node in nodes:
            node.inputs[0] = y
            if isinstance(node.inputs[1], gs.Constant) and len(node.inputs[1].outputs) == 1:
                originals[node.name] = node.inputs[1]
            layer = linear_of(node)
            w = layer.stored.astype(np.float64)
            along_k = [1, 1]
            along_k[layer.reduction_axis] = -1  # X·diag(s⁻¹) · diag(s)·W: scale W's rows of K
            scaled = w * s.reshape(along_k)
            replace_input(graph, node, 1, scaled.astype(np.float32), "sm")
        done[name] = Smoothed(y.name, inv, originals)
    return done


def undo(graph: gs.Graph, keys: set[str], smoothed: dict[str, Smoothed]) -> None:
    """Give the nodes named ``keys`` their unsmoothed input and weight back.

    For layers kept in float: smoothing only helps a quantized input, and it makes a weight-only
    int8 weight worse (the outlier channels now sit in the weight).
    """
    by_output = {s.output: s for s in smoothed.values()}
    for node in list(graph.nodes):
        record = by_output.get(node.inputs[0].name) if node.name in keys and node.inputs else None
        if record is None or node.name not in record.weights:
            continue
        mul = node.inputs[0].inputs[0]
        original = record.weights[node.name]
        node.inputs[0] = mul.inputs[0]
        node.inputs[1] = gs.Constant(original.name, original.values)
        if not mul.outputs[0].outputs:
            mul.inputs.clear()
            mul.outputs.clear()
            graph.nodes.remove(mul)


def restorable(node: gs.Node, smoothed: dict[str, Smoothed]) -> bool:
    """Whether ``node`` reads no smoothed input, or one ``undo`` can take back."""
    record = next((s for s in smoothed.values() if s.output == node.inputs[0].name), None)
    return record is None or node.name in record.weights


def _row_absmax(node: gs.Node) -> np.ndarray:
    """max |W| of each of the K rows, over the outputs."""
    layer = linear_of(node)
    return np.abs(layer.stored.astype(np.float64)).max(axis=layer.output_axis)
