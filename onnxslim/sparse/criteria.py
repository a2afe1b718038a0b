"""Importance of each weight, and the input statistics the data-aware criteria need.

With ``M[g]`` a layer's ``[N, K]`` matrix (see ``layers``) and ``X`` the rows of its input features
over the calibration samples (im2col patches for a convolution):

    magnitude   s = w²
    activation  s = (|w| · ‖x_j‖)²             ‖x_j‖² = H_jj,  H = XᵀX
    reconstruct s = w² / [H⁻¹]_jj               the optimal-brain-surgeon cost of zeroing w
                                                (H damped by ``damp`` × mean diag)

Scores are squared so they are all in units of output error energy. ``HessianAccumulator``
adds ``XᵀX`` batch by batch in float64, so memory never grows with the number of samples; rows
of large convolution inputs are subsampled (``max_rows`` per sample, seeded), so the work is linear
in samples × layers whatever the batching (one-sample batches of a fixed-batch model included). A
grouped or depthwise convolution's ``H`` is per group, ``[G, Cin/G·Πk, Cin/G·Πk]``, and the patches
are gathered only at the sampled output positions, with padding as a mask: nothing the size of the
padded input is built per layer and batch.
"""

from __future__ import annotations

import numpy as np

from onnxslim.ir.linear import Linear


class RowSampler:
    """Rows of one layer's input (per group), at most ``max_rows`` per calibration sample, drawn from
    ``rng`` batch by batch: two samplers of one layer on equal ``rng`` draw the same rows."""

    def __init__(self, layer: Linear, max_rows: int, rng: np.random.Generator) -> None:
        """``max_rows``: input rows kept per calibration sample (at most)."""
        self.layer = layer
        self.max_rows = max_rows
        self.rng = rng

    def picker(self, samples: int):
        """One batch's choice of rows (drawn once per row count, so ``x`` and ``x_ref`` share it)."""
        chosen: dict[int, np.ndarray | slice] = {}
        most = self.max_rows * max(samples, 1)

        def pick(n: int) -> np.ndarray | slice:
            if n not in chosen:
                chosen[n] = self._pick(n, most)
            return chosen[n]
        return pick

    def rows(self, x: np.ndarray, pick) -> np.ndarray:
        """``[G, n, cols]`` float32 rows of ``x`` at ``pick``."""
        return np.ascontiguousarray(self._rows(np.asarray(x, dtype=np.float32), pick))

    def sample(self, x: np.ndarray, samples: int = 1) -> np.ndarray:
        """The rows of one batch of ``samples`` samples, drawn as ``HessianAccumulator.add`` draws them."""
        return self.rows(x, self.picker(samples))

    def _pick(self, n: int, most: int) -> np.ndarray | slice:
        if n <= most:
            return slice(None)
        return np.sort(self.rng.choice(n, most, replace=False))

    def _rows(self, x: np.ndarray, pick) -> np.ndarray:
        layer = self.layer
        g = layer.groups
        if layer.op in ("MatMul", "Gemm"):
            x = np.moveaxis(x, layer.feature_axis, -1)
            x = x.reshape(-1, x.shape[-1])
            return x[pick(x.shape[0])][None]
        if layer.op == "ConvTranspose":
            x = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])  # [pixels, Cin]
            x = x[pick(x.shape[0])]
            return x.reshape(x.shape[0], g, -1).transpose(1, 0, 2)
        patches = im2col(x, layer, pick)  # [rows, Cin, Πk]
        n, cin, k = patches.shape
        return patches.reshape(n, g, cin // g * k).transpose(1, 0, 2)


class HessianAccumulator(RowSampler):
    """``H[g] = Σ XᵀX`` for one layer's input (per group), accumulated batch by batch.

    Given the same rows of the original model too (``add(x, x_ref)``, or those rows sampled ahead
    by a ``RowSampler`` on an equal ``rng``), also ``C[g] = Σ XᵀX_ref``, the cross term
    reconstruction needs to aim at the original outputs.
    """

    def __init__(self, layer: Linear, max_rows: int, rng: np.random.Generator) -> None:
        """``max_rows``: input rows kept per calibration sample (at most)."""
        super().__init__(layer, max_rows, rng)
        cols = layer.shape[0]
        self.h = np.zeros((layer.groups, cols, cols))
        self.cross: np.ndarray | None = None
        self.rows_seen = 0

    def add(self, x: np.ndarray, x_ref: np.ndarray | None = None, samples: int = 1,
            ref_rows: np.ndarray | None = None) -> None:
        """Add one batch of ``samples`` samples (``x_ref``: the same rows in the original model;
        ``ref_rows``: the rows this call would take from it, sampled ahead)."""
        pick = self.picker(samples)
        rows = self.rows(x, pick)  # [G, n, cols]
        self.h += np.matmul(rows.transpose(0, 2, 1), rows).astype(np.float64)
        self.rows_seen += rows.shape[1]
        ref = self.rows(x_ref, pick) if x_ref is not None else ref_rows
        if ref is not None:
            cross = np.matmul(rows.transpose(0, 2, 1), ref).astype(np.float64)
            self.cross = cross if self.cross is None else self.cross + cross

    def result(self) -> np.ndarray:
        return self.h / max(self.rows_seen, 1)

    def cross_result(self) -> np.ndarray | None:
        return None if self.cross is None else self.cross / max(self.rows_seen, 1)


def im2col(x: np.ndarray, layer: Linear, pick=None) -> np.ndarray:
    """Patches ``[rows, Cin, Πk]`` of a 1-D or 2-D convolution's input.

    ``pick(n)`` chooses which of the ``n = N·out pixels`` patches to materialize (all by default).
    """
    attrs = layer.node.attrs
    w = layer.stored
    spatial = w.ndim - 2
    kernel = list(w.shape[2:])
    strides = list(attrs.get("strides", [1] * spatial))
    dil = list(attrs.get("dilations", [1] * spatial))
    pads = _pads(x.shape[2:], kernel, strides, dil, attrs)
    sizes = x.shape[2:]
    out_shape = (x.shape[0],) + tuple(
        (sizes[i] + pads[i] + pads[i + spatial] - (kernel[i] - 1) * dil[i] - 1) // strides[i] + 1 for i in range(spatial))
    total = int(np.prod(out_shape))
    chosen = np.arange(total)[pick(total) if pick else slice(None)]
    where = np.unravel_index(chosen, out_shape)
    rows, channels = len(chosen), x.shape[1]
    # every window of the zero-padded input as a view [N, C, positions..., kernel...] (dilation
    # steps through it), then one gather of the chosen (sample, position) pairs: [rows, C, k...]
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    span = [(kernel[i] - 1) * dil[i] + 1 for i in range(spatial)]
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=tuple(range(2, 2 + spatial)))
    windows = windows[(Ellipsis, *(slice(None, None, d) for d in dil))]
    patches = windows[(where[0], slice(None), *(where[1 + i] * strides[i] for i in range(spatial)))]
    return patches.reshape(rows, channels, int(np.prod(kernel)))


def _pads(size, kernel, strides, dil, attrs) -> list[int]:
    spatial = len(kernel)
    auto = attrs.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", "") or auto is None:
        return list(attrs.get("pads", [0] * 2 * spatial))
    if auto == "VALID":
        return [0] * 2 * spatial
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dil):
        out = -(-n // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


def supports_data(layer: Linear) -> str | None:
    """Why data-aware criteria cannot see this layer's inputs, or None when they can."""
    if layer.op == "Conv" and layer.stored.ndim not in (3, 4):
        return f"{layer.stored.ndim - 2}-D convolution inputs are not gathered (1-D and 2-D only)"
    if layer.op == "ConvTranspose" and layer.stored.ndim < 3:
        return "ConvTranspose weight of unexpected rank"
    return None


def damped(h: np.ndarray, damp: float) -> np.ndarray:
    """``H`` with dead inputs set to 1 on the diagonal and ``damp`` × mean diag added."""
    h = h.copy()
    for g in range(h.shape[0]):
        diag = np.diagonal(h[g]).copy()
        dead = diag <= 0
        h[g][dead, dead] = 1.0
        mean = float(np.mean(diag[~dead])) if np.any(~dead) else 1.0
        h[g][np.diag_indices_from(h[g])] += damp * mean
    return h


def dead_inputs(h: np.ndarray) -> np.ndarray:
    """``[G, cols]`` True where an input feature was zero on every calibration row."""
    return np.stack([np.diagonal(h[g]) <= 0 for g in range(h.shape[0])])


def scores(criterion: str, mats: np.ndarray, h: np.ndarray | None, damp: float,
           factors: list[np.ndarray] | None = None) -> np.ndarray:
    """Per-weight importance ``[G, rows, cols]`` (larger = keep).

    ``factors``: per group, ``U`` upper with ``UᵀU = H⁻¹`` (reconstruct), so that
    ``[H⁻¹]_jj = Σ_k U_kj²`` costs no second factorization.
    """
    w2 = np.square(mats.astype(np.float64))
    if criterion == "magnitude":
        return w2
    assert h is not None, "data-aware criteria need H"
    dead = dead_inputs(h)[:, None, :]
    if criterion == "activation":
        return np.where(dead, 0.0, w2 * np.stack([np.diagonal(h[g]) for g in range(h.shape[0])])[:, None, :])
    if factors is None:
        hd = damped(h, damp)
        inv_diag = np.stack([np.diagonal(np.linalg.inv(hd[g])) for g in range(hd.shape[0])])
    else:
        inv_diag = np.stack([np.square(u).sum(axis=0) for u in factors])
    return np.where(dead, 0.0, w2 / inv_diag[:, None, :])

