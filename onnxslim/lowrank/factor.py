"""The low-rank factorization of one weight, plain or whitened, and its error at every rank.

A layer computes ``Y = X·W + c`` with ``W`` a K×N weight (the effective weight: Gemm's
transB and alpha already applied). Both variants write ``W`` as a sum of rank-one terms

    W = Σ_i σ_i · ℓ_i · v_iᵀ          (σ descending, v_i orthonormal)

and the rank-r split keeps the first r terms: ``A = ℓ_{:r}·√σ_{:r}`` (K×r) and
``B = √σ_{:r}·v_{:r}ᵀ`` (r×N), so ``X·W ≈ (X·A)·B``.

* plain SVD: ``W = U Σ Vᵀ``, ``ℓ_i = u_i``; truncation minimizes ‖W − AB‖_F, and the error of
  the weight is exactly ``sqrt(Σ_{i>r} σ_i²)``.
* data-aware (whitened): with ``M = Σ x xᵀ`` the second moment of the layer's input rows,
  ``M + δI = Q diag(d) Qᵀ`` and ``S = diag(√d) Qᵀ`` (so ``SᵀS = M + δI``), take the SVD
  ``S W = U Σ Vᵀ`` and undo the whitening on the left: ``ℓ_i = S⁻¹ u_i``. Truncation now
  minimizes ‖S(W − AB)‖_F, i.e. the output error on the calibration rows (exactly when δ = 0);
  the damping δ keeps S invertible where the data spans few directions.

For either variant the output error over the calibration rows has a closed form, since the
v_i are orthonormal:

    ‖X(W − A B)‖_F² = Σ_{i>r} σ_i² · ℓ_iᵀ M ℓ_i

so the relative output error ‖Y − Ŷ‖_F / ‖Y‖_F at every rank costs one K×K×m product.
Everything is computed in float64.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Moments:
    """Streaming statistics of a layer's input rows: Σ x xᵀ (K×K), Σ x (K) and the row count."""

    second: np.ndarray
    first: np.ndarray
    rows: int


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """``W = Σ σ_i ℓ_i v_iᵀ``: ``left`` is K×m (columns ℓ_i), ``right`` is m×N (rows v_iᵀ)."""

    sigma: np.ndarray
    left: np.ndarray
    right: np.ndarray
    whitened: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.left.shape[0], self.right.shape[1]

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """(A, B), K×rank and rank×N, in float64, the singular values split evenly."""
        root = np.sqrt(self.sigma[:rank])
        return self.left[:, :rank] * root, root[:, None] * self.right[:rank]

    def energy(self) -> np.ndarray:
        """Retained share of Σσ² at ranks 1..m (the whitened spectrum's: output energy)."""
        squares = self.sigma**2
        total = squares.sum()
        return np.cumsum(squares) / total if total > 0 else np.ones_like(squares)

    def weight_error(self, rank: int) -> float:
        """‖W − A B‖_F predicted by the plain spectrum: sqrt(Σ_{i>r} σ_i²)."""
        return float(np.sqrt(np.sum(self.sigma[rank:] ** 2)))


def plain(weight: np.ndarray) -> Spectrum:
    """The SVD of ``weight`` (K×N)."""
    u, s, vt = np.linalg.svd(np.asarray(weight, dtype=np.float64), full_matrices=False)
    return Spectrum(s, u, vt, whitened=False)


def eigen(moments: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (clipped at 0) and eigenvectors of M; layers reading one tensor share them."""
    eigenvalues, q = np.linalg.eigh(moments.second)
    return np.clip(eigenvalues, 0.0, None), q


def whitened(weight: np.ndarray, moments: Moments, damping: float,
             basis: tuple[np.ndarray, np.ndarray] | None = None) -> Spectrum:
    """The SVD of ``weight`` seen through its input's second moment, damped by ``damping``.

    δ = damping × mean eigenvalue of M (a relative damping, so it does not depend on the
    activations' scale); an all-zero M falls back to the plain SVD. ``basis`` is
    ``eigen(moments)`` when the caller already has it.
    """
    w = np.asarray(weight, dtype=np.float64)
    eigenvalues, q = basis if basis is not None else eigen(moments)
    mean = float(eigenvalues.mean()) if eigenvalues.size else 0.0
    if mean <= 0.0:
        return plain(w)
    d = np.sqrt(eigenvalues + damping * mean)
    u, s, vt = np.linalg.svd(d[:, None] * (q.T @ w), full_matrices=False)
    left = q @ (u / d[:, None])
    return Spectrum(s, left, vt, whitened=True)


def output_errors(spectrum: Spectrum, moments: Moments, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Relative output error ‖Y − Ŷ‖_F / ‖Y‖_F on the calibration rows at ranks 0..m.

    ``Y = X·W + bias``; the bias is kept by the split, so it adds to ‖Y‖ only.
    """
    w = np.asarray(weight, dtype=np.float64)
    weights = np.einsum("km,km->m", moments.second @ spectrum.left, spectrum.left)
    tail = spectrum.sigma**2 * np.clip(weights, 0.0, None)
    errors = np.concatenate([np.cumsum(tail[::-1])[::-1], [0.0]])
    norm = float(np.einsum("kn,kn->", moments.second @ w, w))
    if bias is not None:
        c = np.broadcast_to(np.asarray(bias, dtype=np.float64).reshape(-1), (w.shape[1],))
        norm += 2.0 * float(moments.first @ w @ c) + moments.rows * float(c @ c)
    if norm <= 0.0:
        return np.where(errors > 0, np.inf, 0.0)
    return np.sqrt(np.clip(errors, 0.0, None) / norm)
