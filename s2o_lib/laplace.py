"""Kronecker-factored Laplace posterior of the last linear layer, and its correlation matrix.

For a last layer ``z = W a`` (W is C × D) trained with softmax cross-entropy, the Hessian of the loss with
respect to ``vec(W)`` is, per sample, ``(diag(p) − p pᵀ) ⊗ (a aᵀ)``. K-FAC (Martens & Grosse 2015;
Ritter et al. 2018) approximates its batch mean by a Kronecker product of means:

    H ≈ G ⊗ A,   G = E[diag(p) − p pᵀ]  (C × C),   A = E[a aᵀ]  (D × D).

The Laplace approximation takes the posterior covariance as the inverse of the (damped) Hessian,
``Σ = G⁻¹ ⊗ A⁻¹``, and its correlation matrix is again a Kronecker product,

    R = corr(Σ) = R_G ⊗ R_A,   R_X = diag(X⁻¹)^(-1/2) · X⁻¹ · diag(X⁻¹)^(-1/2),

because the diagonal of a Kronecker product is the Kronecker product of the diagonals. Every summary the
PAC-Bayesian bound needs follows from the factors without forming the (CD × CD) matrix:

    ‖R‖_F = ‖R_G‖_F · ‖R_A‖_F,   ‖R‖_2 = ‖R_G‖_2 · ‖R_A‖_2,   log det R = D·log det R_G + C·log det R_A.

**The class factor lives on 1^⊥.** Softmax is unchanged when a constant is added to every logit, so
``G·1 = 0``: the loss is flat along ``vec(1 vᵀ)`` and the Laplace posterior says nothing about that direction.
Damping the whole of G (``G + λ·s·I``) would give that direction the variance ``1/(λs)``, which for small λ
dwarfs every other and makes all class correlations ≈ 1 — set by the damping, not the model (with 10
classes, mean off-diagonal of R_G 0.53 at λ = 0.1, 0.92 at 0.01, 0.99 at 0.001, whatever the batch). Here G is instead projected onto the
(C−1)-dimensional subspace orthogonal to **1** with an orthonormal (Helmert) basis Q, damped and inverted
there, ``Σ_⊥ = (QᵀGQ + λ·mean(diag QᵀGQ)·I)⁻¹``, and the direction **1** is given the mean variance of the
others, ``tr(Σ_⊥)/(C−1)``, so that it adds no correlation of its own:

    Σ_G = Q Σ_⊥ Qᵀ + (tr(Σ_⊥)/(C−1)) · 11ᵀ/C,   R_G = corr(Σ_G).

R_G = I exactly when Σ_⊥ is isotropic (always for C = 2), and as λ → 0 it converges to the correlation of
the pseudo-inverse of G (completed along **1**), so it reflects the model. `kfac_factors` returns the damped
precision ``Σ_G⁻¹`` as the class factor. The completion along **1** and the relative damping λ of both factors
are this library's choices: this is the library's KFAC-Laplace reading of the S²O paper's objective (damping
and weight are ours), not the authors' code. The input factor A is damped as ``A + λ·mean(diag A)·I``.

No model here: every function computes on the device of its input tensors and returns tensors there.

Example:
    >>> import torch
    >>> from s2o_lib.laplace import kfac_factors, kronecker_correlation, kronecker_summaries
    >>> A, G = kfac_factors(torch.randn(64, 8), torch.softmax(torch.randn(64, 3), 1))
    >>> R_A, R_G = kronecker_correlation(A, G)
    >>> s = kronecker_summaries(R_A, R_G)
    >>> round(float(s.fro), 3) >= round(float((3 * 8) ** 0.5), 3)  # ‖R‖_F ≥ √n for a correlation
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import S2OError

__all__ = [
    "KroneckerSummaries", "LastLayerLaplace", "class_factor", "correlation_from_covariance", "damp",
    "kfac_factors", "kronecker_correlation", "kronecker_summaries", "last_layer_laplace", "ones_complement_basis",
]



def damp(matrix: Tensor, damping: float) -> Tensor:
    """Add ``damping · mean(diag)`` to the diagonal (scale-free Tikhonov damping)."""
    if damping <= 0:
        raise S2OError(f"damping must be > 0 (the class factor G is singular), got {damping}")
    n = matrix.shape[-1]
    scale = matrix.diagonal().mean().clamp_min(1e-12)
    return matrix + damping * scale * torch.eye(n, dtype=matrix.dtype, device=matrix.device)


def ones_complement_basis(num_classes: int, *, dtype: torch.dtype = torch.float32,
                          device: torch.device | str | None = None) -> Tensor:
    """An orthonormal basis Q (C × (C−1)) of the subspace orthogonal to the all-ones vector (Helmert's).

    Column k (k = 1 … C−1) is ``(1, …, 1, −k, 0, …, 0)/√(k(k+1))`` with k ones; ``QᵀQ = I`` and
    ``QQᵀ = I − 11ᵀ/C``.

    Args:
        num_classes: C ≥ 2.
        dtype: dtype of Q.
        device: device of Q.
    """
    if num_classes < 2:
        raise S2OError(f"the class factor needs C >= 2 classes, got {num_classes}")
    q = torch.zeros(num_classes, num_classes - 1, dtype=dtype, device=device)
    for k in range(1, num_classes):
        q[:k, k - 1] = 1.0
        q[k, k - 1] = -float(k)
        q[:, k - 1] /= (k * (k + 1)) ** 0.5
    return q


def class_factor(probs: Tensor, *, damping: float = 0.1) -> Tensor:
    """The damped class-side K-FAC factor, formed on the subspace orthogonal to **1** (see the module docstring).

    Differentiable in ``probs``.

    Args:
        probs: softmax outputs ``p``, shape (B, C).
        damping: relative damping λ of ``QᵀGQ`` (see `damp`).

    Returns:
        (C × C) symmetric positive-definite precision ``Σ_G⁻¹ = Q G_λ Qᵀ + (C−1)/tr(G_λ⁻¹)·11ᵀ/C``, with
        ``G_λ`` the damped ``QᵀGQ`` and ``G = E[diag(p) − p pᵀ]``.
    """
    b, c = probs.shape
    G = torch.diag(probs.mean(0)) - probs.T @ probs / b
    Q = ones_complement_basis(c, dtype=probs.dtype, device=probs.device)
    G_sub = damp(Q.T @ G @ Q, damping)
    ones_precision = (c - 1) / torch.linalg.inv(G_sub).diagonal().sum()
    return Q @ G_sub @ Q.T + ones_precision * torch.full((c, c), 1.0 / c, dtype=probs.dtype, device=probs.device)


def kfac_factors(features: Tensor, probs: Tensor, *, damping: float = 0.1) -> tuple[Tensor, Tensor]:
    """Damped K-FAC factors of the last layer's cross-entropy Hessian.

    Differentiable in ``features`` and ``probs`` (the ``+s2o-kfac`` penalty back-propagates through them).

    Args:
        features: inputs ``a`` of the last linear layer, shape (B, D).
        probs: softmax outputs ``p``, shape (B, C).
        damping: relative damping λ of each factor (see `damp`; G is damped on 1^⊥, see `class_factor`).

    Returns:
        ``(A, G)``: A = E[a aᵀ] + λ·mean(diag)·I (D × D) and the class factor of `class_factor` (C × C).
    """
    if features.ndim != 2 or probs.ndim != 2 or features.shape[0] != probs.shape[0]:
        raise S2OError(
            f"features must be (B, D) and probs (B, C) with the same B; got {tuple(features.shape)} "
            f"and {tuple(probs.shape)}"
        )
    b = features.shape[0]
    A = features.T @ features / b
    return damp(A, damping), class_factor(probs, damping=damping)


def correlation_from_covariance(cov: Tensor) -> Tensor:
    """``diag(Σ)^(-1/2) Σ diag(Σ)^(-1/2)``: unit diagonal, entries in [−1, 1]."""
    inv_std = cov.diagonal().clamp_min(1e-30).rsqrt()
    return cov * inv_std[:, None] * inv_std[None, :]


def kronecker_correlation(A: Tensor, G: Tensor) -> tuple[Tensor, Tensor]:
    """Correlation factors ``(R_A, R_G)`` of the Laplace covariance ``Σ = G⁻¹ ⊗ A⁻¹``.

    Args:
        A: damped input factor (D × D), symmetric positive definite.
        G: damped output factor (C × C), symmetric positive definite.
    """
    R_A = correlation_from_covariance(torch.linalg.inv(A))
    R_G = correlation_from_covariance(torch.linalg.inv(G))
    return R_A, R_G


@dataclass(frozen=True)
class KroneckerSummaries:
    """Summaries of ``R = R_G ⊗ R_A`` computed from the factors.

    Attributes:
        fro: ‖R‖_F.
        spectral: ‖R‖_2 (the largest eigenvalue; R is symmetric positive definite).
        logdet: log det R (≤ 0 for a correlation matrix, 0 only for R = I).
        dim: the dimension C·D of R.
    """

    fro: Tensor
    spectral: Tensor
    logdet: Tensor
    dim: int


def kronecker_summaries(R_A: Tensor, R_G: Tensor) -> KroneckerSummaries:
    """‖R‖_F, ‖R‖_2 and log det R for ``R = R_G ⊗ R_A`` without materialising R.

    Args:
        R_A: input-side correlation factor (D × D).
        R_G: class-side correlation factor (C × C).
    """
    d, c = R_A.shape[0], R_G.shape[0]
    fro = torch.linalg.matrix_norm(R_G) * torch.linalg.matrix_norm(R_A)
    spectral = torch.linalg.eigvalsh(R_G)[-1] * torch.linalg.eigvalsh(R_A)[-1]
    logdet = d * torch.linalg.slogdet(R_G)[1] + c * torch.linalg.slogdet(R_A)[1]
    return KroneckerSummaries(fro=fro, spectral=spectral, logdet=logdet, dim=c * d)


@dataclass(frozen=True)
class LastLayerLaplace:
    """The Kronecker-factored Laplace correlation ``R = R_G ⊗ R_A`` of the last layer, its norms and log-determinant.

    Attributes:
        R_A: input-side correlation factor (D × D), float64.
        R_G: class-side correlation factor (C × C), float64.
        fro: ‖R‖_F.
        spectral: ‖R‖₂ (≥ 1 for a correlation matrix).
        logdet: log det R (≤ 0, 0 only for R = I).
        dim: C·D.
    """

    R_A: Tensor
    R_G: Tensor
    fro: float
    spectral: float
    logdet: float
    dim: int


def last_layer_laplace(features: Tensor, probs: Tensor, *, damping: float = 0.1) -> LastLayerLaplace:
    """The last layer's Laplace correlation from its inputs and the softmax outputs (R is never formed).

    Uses `kfac_factors`, `kronecker_correlation` and `kronecker_summaries`, in float64.

    Args:
        features: inputs of the last linear layer, shape (m, D).
        probs: softmax probabilities, shape (m, C).
        damping: relative damping of both K-FAC factors (> 0).

    Returns:
        A `LastLayerLaplace`.

    Example:
        >>> lap = last_layer_laplace(torch.randn(64, 8), torch.softmax(torch.randn(64, 3), 1))
        >>> lap.spectral >= 1.0 and lap.logdet <= 0.0
        True
    """
    A, G = kfac_factors(features.detach().double(), probs.detach().double(), damping=damping)
    R_A, R_G = kronecker_correlation(A, G)
    summary = kronecker_summaries(R_A, R_G)
    return LastLayerLaplace(
        R_A=R_A, R_G=R_G, fro=float(summary.fro), spectral=float(summary.spectral),
        logdet=float(summary.logdet), dim=int(summary.dim),
    )
