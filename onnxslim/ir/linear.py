"""One view of a weight-bearing layer: Conv, ConvTranspose, Gemm or MatMul with a constant weight.

Every such layer computes, for each of its ``G`` groups, a product of rows of ``K`` input features
by a ``K×N`` matrix (``K`` the reduction axis, ``N`` the outputs):

    Y_g = X_g · W_g  (+ bias)          X_g: [rows, K],  W_g: [K, N]

    op             stored weight             G      K              N              W_g from the stored W
    MatMul         [K, N]                    1      W.shape[-2]    W.shape[-1]    W (2-D weights only)
    Gemm           [K, N]; transB: [N, K]    1      K              N              W, or Wᵀ with transB
    Conv           [Cout, Cin/G, k...]       group  Cin/G·Πk       Cout/G         W[g·N:(g+1)·N].reshape(N, K)ᵀ
    ConvTranspose  [Cin, Cout/G, k...]       group  Cin/G          Cout/G·Πk      W[g·K:(g+1)·K].reshape(K, N)

A convolution's ``K`` runs input channel first, then kernel position (im2col order): the
feature ``c·Πk + p`` is channel ``c`` of the group at kernel offset ``p``. A transposed
convolution reduces over input channels only; its ``N`` columns are output channel first, then
kernel offset, which col2im adds into the output. Gemm's ``alpha`` and ``beta`` are not applied
to the matrices (the view gives them to whoever needs the effective product); ``transA`` only says
where the features sit in the input.

Axes: ``output_axis`` is the axis of the stored weight that indexes the outputs (the per-channel
quantization axis), ``reduction_axis`` the one holding ``K`` in a dense layer, ``feature_axis`` the
axis of the input activation holding the features. ``macs(input_shape)`` is rows · K · N summed
over the groups, rows being the input's feature vectors (a convolution: batch × output pixels; a
transposed one: batch × input pixels). ``mac_dims`` is that count from shapes alone, symbolic
dims included, for any such node (constant weight or not): the FLOPs of ``ir.stats``.

The weight may be an initializer, the output of a ``Constant`` node (Paddle exports have no
initializers), or an ``Identity`` of either (PyTorch's export of a weight shared by several
layers, ALBERT). ``readers`` counts the layers reading the underlying weight through such
copies, so a shared weight is seen as shared. ``write`` and ``write_bias`` put a new weight or
bias in the weight's dtype and the same kind of source (an initializer, or a new ``Constant``
node); the old one is never edited in place, since another node may read it: a shared weight
stays as it is for its other readers, and this node alone reads the new one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.ir.weights import constant_value, release, unique_name

OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
INITIALIZER, CONSTANT_NODE = "initializer", "constant-node"


@dataclasses.dataclass
class Linear:
    """A Conv/ConvTranspose/Gemm/MatMul node and its constant weight (input 1), as matrices."""

    node: gs.Node
    stored: np.ndarray  # the weight as stored (layout and dtype of the model)
    source: str  # INITIALIZER or CONSTANT_NODE, seen through Identity copies
    readers: int  # nodes reading the underlying weight, through Identity copies

    @property
    def op(self) -> str:
        return self.node.op

    @property
    def name(self) -> str:
        return self.node.name or self.node.outputs[0].name

    @property
    def tensor(self) -> gs.Tensor:
        """The weight tensor the node reads."""
        return self.node.inputs[1]

    @property
    def input(self) -> gs.Tensor:
        return self.node.inputs[0]

    @property
    def shared(self) -> bool:
        """Whether another node (or the graph's outputs) reads the same weight."""
        return self.readers > 1

    @property
    def groups(self) -> int:
        return int(self.node.attrs.get("group", 1)) if self.op in ("Conv", "ConvTranspose") else 1

    @property
    def trans_a(self) -> bool:
        return self.op == "Gemm" and bool(self.node.attrs.get("transA", 0))

    @property
    def trans_b(self) -> bool:
        return self.op == "Gemm" and bool(self.node.attrs.get("transB", 0))

    @property
    def alpha(self) -> float:
        return float(self.node.attrs.get("alpha", 1.0)) if self.op == "Gemm" else 1.0

    @property
    def beta(self) -> float:
        return float(self.node.attrs.get("beta", 1.0)) if self.op == "Gemm" else 1.0

    @property
    def spatial(self) -> int:
        """Kernel positions Πk of a convolution (1 for dense layers)."""
        return int(np.prod(self.stored.shape[2:])) if self.op in ("Conv", "ConvTranspose") else 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(K, N)`` of one group's matrix."""
        w, g = self.stored, self.groups
        if self.op == "Conv":
            return int(np.prod(w.shape[1:])), w.shape[0] // g
        if self.op == "ConvTranspose":
            return w.shape[0] // g, int(np.prod(w.shape[1:]))
        if self.trans_b:
            return w.shape[1], w.shape[0]
        if w.ndim == 1:  # MatMul by a vector: K features to one output, whose axis the product drops
            return w.shape[0], 1
        return w.shape[-2], w.shape[-1]

    @property
    def out_channels(self) -> int:
        """Output channels of the node, all groups together (Cout for convolutions)."""
        if self.op == "ConvTranspose":
            return self.stored.shape[1] * self.groups
        return self.shape[1] * self.groups

    @property
    def feature_axis(self) -> int:
        """The axis of the input activation that holds the ``K`` features (channels for convolutions)."""
        return feature_axis(self.op, self.node.attrs)

    @property
    def output_axis(self) -> int | None:
        """The axis of the stored weight that indexes all the outputs, one per output channel;
        None when no single axis does (a grouped ConvTranspose holds Cout/G on its axis 1, a batched
        MatMul weight repeats its outputs per batch)."""
        if self.op == "Conv":
            return 0
        if self.op == "ConvTranspose":
            return 1 if self.groups == 1 else None
        if self.op == "Gemm":
            return 0 if self.trans_b else 1
        return 1 if self.stored.ndim == 2 else None

    @property
    def reduction_axis(self) -> int | None:
        """The axis of a dense layer's stored weight that holds ``K`` (None for convolutions, whose
        ``K`` spans the input-channel and kernel axes)."""
        if self.op == "Gemm":
            return 1 if self.trans_b else 0
        return self.stored.ndim - 2 if self.op == "MatMul" and self.stored.ndim >= 2 else None

    def matrices(self, stored: np.ndarray | None = None) -> np.ndarray:
        """The weight (``stored`` in the node's layout, by default its own) as ``[G, K, N]``, a copy."""
        w = self.stored if stored is None else stored
        g, (k, n) = self.groups, self.shape
        if self.op == "Conv":
            return np.ascontiguousarray(w.reshape(g, n, k).transpose(0, 2, 1))
        if self.op == "ConvTranspose":
            return w.reshape(g, k, n).copy()
        if self.op == "MatMul" and w.ndim != 2:
            raise ValueError(f"{self.name}: a {w.ndim}-D MatMul weight is no single matrix")
        return np.ascontiguousarray((w.T if self.trans_b else w)[None])

    def from_matrices(self, mats: np.ndarray) -> np.ndarray:
        """Inverse of ``matrices``: ``[G, K, N]`` in the stored layout and dtype."""
        shape, dtype = self.stored.shape, self.stored.dtype
        if self.op == "Conv":
            return np.ascontiguousarray(mats.transpose(0, 2, 1)).reshape(shape).astype(dtype)
        if self.op == "ConvTranspose":
            return mats.reshape(shape).astype(dtype)
        return np.ascontiguousarray(mats[0].T if self.trans_b else mats[0]).reshape(shape).astype(dtype)

    # -- bias ------------------------------------------------------------------------------------

    @property
    def has_bias(self) -> bool:
        return self.op != "MatMul" and len(self.node.inputs) > 2 and bool(self.node.inputs[2].name)

    @property
    def can_add_bias(self) -> bool:
        """Whether a bias input can be given to the node as it is (MatMul takes none)."""
        return self.op != "MatMul" and not self.has_bias

    def bias(self) -> np.ndarray | None:
        """The stored bias (Gemm's C as given, ``beta`` not applied), None if absent or not constant."""
        return constant_value(self.node.inputs[2]) if self.has_bias else None

    # -- cost ------------------------------------------------------------------------------------

    def macs(self, input_shape: Sequence[int | str | None]) -> int | None:
        """Multiply-accumulates for an input of this shape; None where a dim is unknown."""
        if not all(isinstance(d, (int, np.integer)) for d in input_shape):
            return None
        x = [int(d) for d in input_shape]
        if self.op == "MatMul" and self.stored.ndim != 2:
            return None
        y: list[int] | None = None  # a ConvTranspose's MACs need no output shape
        if self.op == "Conv":
            out = _conv_out(x[2:], list(self.stored.shape[2:]), self.node.attrs)
            if out is None:
                return None
            y = [x[0], self.out_channels, *out]
        elif self.op == "Gemm":
            y = [x[1] if self.trans_a else x[0], self.shape[1]]
        elif self.op == "MatMul":  # a vector weight drops the feature axis
            y = [*x[:-1], *self.stored.shape[1:]]
        return math.prod(mac_dims(self.op, self.node.attrs, x, self.stored.shape, y))

    # -- write-back ------------------------------------------------------------------------------

    def write(self, graph: gs.Graph, values: np.ndarray, suffix: str) -> gs.Tensor:
        """Point the node at a new weight ``values`` (stored layout; cast to the stored dtype), held
        as the old one was (``write_input``); ``self`` then views the new weight."""
        values = np.ascontiguousarray(np.asarray(values).astype(self.stored.dtype, copy=False))
        if values.shape != self.stored.shape:
            raise ValueError(f"{self.name}: new weight {values.shape} for a {self.stored.shape} one")
        new = write_input(graph, self.node, 1, values, suffix, self.source)
        self.stored, self.readers = values, 1
        return new

    def write_bias(self, graph: gs.Graph, values: np.ndarray, suffix: str) -> gs.Tensor:
        """Give the node the bias ``values`` (any shape that broadcasts to the output; cast to the
        weight's dtype): the old bias is replaced as ``write_input`` does, and a node without one
        gets one held like its weight (Paddle's Constant nodes stay Constant nodes)."""
        if not self.has_bias and not self.can_add_bias:
            raise ValueError(f"{self.name}: a {self.op} takes no bias")
        values = np.asarray(values).astype(self.stored.dtype, copy=False)
        if self.has_bias:
            return write_input(graph, self.node, 2, values, suffix)
        new = _new_constant(graph, f"{self.name}_bias_{suffix}", values, self.source)
        if len(self.node.inputs) > 2:  # an optional input left empty ("") takes the bias
            self.node.inputs[2] = new
        else:
            self.node.inputs.append(new)
        return new


def write_input(graph: gs.Graph, node: gs.Node, index: int, values: np.ndarray, suffix: str,
                source: str | None = None) -> gs.Tensor:
    """Point ``node.inputs[index]`` at a new constant ``values``, held as the old one was (``source``,
    by default seen through Identity copies): an initializer, or the output of a new ``Constant``
    node. The old tensor is never edited in place, since another node may read it; it and its
    ``Constant`` node go once nothing reads them."""
    old = node.inputs[index]
    new = _new_constant(graph, f"{old.name}_{suffix}", values, source or source_of(old))
    node.inputs[index] = new
    drop_unread(graph, old)
    return new


def source_of(tensor: gs.Tensor) -> str:
    """INITIALIZER or CONSTANT_NODE: where a constant tensor's values are held, through Identity copies."""
    return INITIALIZER if isinstance(_root(tensor), gs.Constant) else CONSTANT_NODE


def _new_constant(graph: gs.Graph, base: str, values: np.ndarray, source: str) -> gs.Tensor:
    """A tensor named after ``base`` (made unique) holding ``values`` as ``source`` says."""
    values = np.ascontiguousarray(values)
    name = unique_name(graph, base)
    if source != CONSTANT_NODE:
        return gs.Constant(name, values)
    new = gs.Variable(name, dtype=values.dtype, shape=list(values.shape))
    graph.nodes.append(gs.Node("Constant", f"{name}/Constant", {"value": gs.Constant(f"{name}_value", values)},
                               outputs=[new]))
    return new


def feature_axis(op: str, attrs: Mapping[str, Any]) -> int:
    """The axis of a layer's input that holds the ``K`` features: 1 (channels) for convolutions,
    Gemm's rows with ``transA``, else the last."""
    if op in ("Conv", "ConvTranspose"):
        return 1
    return 0 if op == "Gemm" and attrs.get("transA", 0) else -1


def mac_dims(op: str, attrs: Mapping[str, Any], x: Sequence, w: Sequence, y: Sequence | None) -> list:
    """The dims whose product is a layer's multiply-accumulates, from the shapes of its input ``x``,
    weight ``w`` and output ``y`` (ints or symbol names, as they come): what ``ir.stats`` counts
    where only shapes are known, and ``Linear.macs`` at an input's shape.

        Conv           y · Cin/G·Πk     every output value sums K = Cin/G·Πk products
        ConvTranspose  x · Cout/G·Πk    every input value is multiplied by its group's N weights
        Gemm, MatMul   y · K            K from the input's feature axis (any weight, constant or not)
    """
    if op == "Conv":
        return [*y, *w[1:]]
    if op == "ConvTranspose":
        return [*x, *w[1:]]
    return [*y, x[feature_axis(op, attrs)]]


def with_weight(node: gs.Node, stored: np.ndarray) -> Linear:
    """The view of ``node`` holding ``stored`` as its weight: a weight about to replace the one the
    graph holds (quantize reads a smoothed weight's axes before writing it)."""
    return Linear(node, np.asarray(stored), INITIALIZER, 1)


def linear_of(node: gs.Node, graph: gs.Graph | None = None) -> Linear | None:
    """The view of ``node`` if it is a Conv/ConvTranspose/Gemm/MatMul (default domain) whose input 1
    is constant, else None. With ``graph``, a weight that is also a graph output counts as shared."""
    if node.op not in OPS or node.domain not in (None, "", "ai.onnx") or len(node.inputs) < 2:
        return None
    stored = constant_value(node.inputs[1])
    if stored is None:
        return None
    root = _root(node.inputs[1])
    readers = _readers(root) + (1 if graph is not None and root in graph.outputs else 0)
    return Linear(node, stored, source_of(root), max(readers, 1))


def _root(tensor: gs.Tensor) -> gs.Tensor:
    """The tensor behind a chain of Identity copies."""
    while len(tensor.inputs) == 1 and tensor.inputs[0].op == "Identity" and tensor.inputs[0].inputs:
        tensor = tensor.inputs[0].inputs[0]
    return tensor


def _readers(tensor: gs.Tensor) -> int:
    """Nodes reading ``tensor``, counting the readers of its Identity copies in their place."""
    count = 0
    for reader in tensor.outputs:
        if reader.op == "Identity":
            count += sum(_readers(out) for out in reader.outputs)
        else:
            count += 1
    return count


def drop_unread(graph: gs.Graph, tensor: gs.Tensor) -> None:
    """Release the replaced weight, and remove the Constant node that made it once unread."""
    if tensor.outputs or tensor in graph.outputs:
        return
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        producer = tensor.inputs[0]
        producer.outputs.clear()
        graph.nodes.remove(producer)
    release(tensor)


def _conv_out(sizes: list[int], kernel: list[int], attrs: dict) -> list[int] | None:
    """Output spatial sizes of a convolution (ONNX Conv: explicit pads, VALID, SAME_UPPER/LOWER)."""
    n = len(sizes)
    strides = list(attrs.get("strides", [1] * n))
    dil = list(attrs.get("dilations", [1] * n))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if len(kernel) != n:
        return None
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return [-(-s // st) for s, st in zip(sizes, strides)]
    pads = [0] * 2 * n if auto_pad == "VALID" else list(attrs.get("pads", [0] * 2 * n))
    return [(sizes[i] + pads[i] + pads[i + n] - (kernel[i] - 1) * dil[i] - 1) // strides[i] + 1 for i in range(n)]
