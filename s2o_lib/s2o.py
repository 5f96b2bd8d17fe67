"""S²O: second-order statistics optimisation of weights (Jin et al., CVPR 2022; TPAMI 2025).

Two variants live here.

**The released regulariser** ("official", what the authors' code trains with). Per batch, from logits
Z (B × C) taken without gradient:

1. ``M = Zᵀ Z``: the batch sum of the outer products of the logit vectors (one matrix product).
2. ``A_ij = max_k |M_ik| − |M_ij|``; the diagonal is set to 0; each row is scaled so its off-diagonal
   entries sum to ``m``; the diagonal is set to ``1 − m``. (A row whose off-diagonal entries are all zero
   becomes uniform off the diagonal.) Classes whose logits co-vary least with class *i* get the most mass.
3. Soft targets ``q_b = A[y_b]``; the same construction from the adversarial logits gives ``q_adv``.
4. ``R = ½ [KL(q ‖ softmax f(x)) + KL(q_adv ‖ softmax f(x_adv))]``, averaged over the batch.

Fitting these soft targets spreads each class's probability towards weakly correlated classes, a cheap
proxy for decorrelating the last layer. The released code recomputes ``f(x)`` and ``f(x_adv)`` and builds
M with a per-sample Python loop; here the logits of the passes already made are reused and M is one
matrix product. The values are the same.

**The label-smoothing control** (``+ls``; ours, not the authors'). The soft targets put 1 − m = 0.2 on the label,
and mixed as 0.9·CE + 0.1·R (AT) or 0.7·base + 0.3·R (TRADES, MART) they train the model towards
0.9 + 0.1·0.2 = 0.92 (AT) or 0.7 + 0.3·0.2 = 0.76 on the label: a structured label smoothing, and label smoothing
alone can raise PGD accuracy without real robustness (Shafahi et al. 2019). `label_smoothing_regulariser` is R
with the targets replaced by `uniform_targets`: the same 1 − m on the label, the off-label mass m spread
uniformly instead of by |M|. Everything else (weights, inputs, forwards) is S²O's, so S²O − LS measures what
the *shape* of the soft targets adds, and LS − base what the label mass does.

**The library's KFAC-Laplace reading of the paper's objective** (``+s2o-kfac``; damping and weight are
ours, and none of the public code has it). The paper's PAC-Bayesian bound treats the weights as a Gaussian
posterior with a non-diagonal covariance and is tighter when the correlation matrix R of that posterior has a
small Frobenius norm; summaries of the TPAMI version describe a Laplace approximation of the last layer. This
library reads that as: for the last layer W (C × D), a Laplace approximation with a Kronecker-factored
Hessian ``G ⊗ A`` (see `s2o_lib.laplace`, where the class factor is formed on the subspace orthogonal to the
all-ones vector) gives ``R = R_G ⊗ R_A`` and ``‖R‖_F = ‖R_G‖_F ‖R_A‖_F``. `kfac_correlation_penalty` returns
``(‖R_G‖_F / √C) · (‖R_A‖_F / √D)`` (1 for an uncorrelated posterior), differentiable through the
last-layer inputs and probabilities of the inputs the base loss uses (x′ for AT, x and x′ for TRADES and
MART: see `s2o_lib.defenses.method_loss`); the training loss adds λ times it. λ (``kfac_weight``) and the
damping (``kfac_damping``) are our choices, not the authors'.

No model here: every function computes on the device of the logits and returns tensors there (labels are
moved to it).

Example:
    >>> import torch
    >>> from s2o_lib.s2o import soft_targets
    >>> q = soft_targets(torch.randn(32, 10), torch.randint(0, 10, (32,)))
    >>> torch.allclose(q.sum(1), torch.ones(32))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import S2OError
from .laplace import kfac_factors, kronecker_correlation
from .processes import batch_sum

__all__ = [
    "default_off_diagonal_mass", "kfac_correlation_penalty", "label_smoothing_regulariser", "s2o_regulariser",
    "soft_target_kl", "soft_target_matrix", "soft_targets", "uniform_targets",
]



def default_off_diagonal_mass(num_classes: int) -> float:
    """The authors' choice of m: 0.8 for 10 classes, 0.98 for 100 classes (CIFAR-100)."""
    return 0.98 if num_classes >= 100 else 0.8


def soft_target_matrix(logits: Tensor, *, off_diagonal_mass: float = 0.8) -> Tensor:
    """The C × C matrix A whose rows are the soft targets of each class.

    Args:
        logits: (B, C) logits; used without gradient.
        off_diagonal_mass: m, the probability mass spread over the wrong classes (0 ≤ m < 1).

    Returns:
        (C, C) tensor with rows summing to 1 and diagonal ``1 − m``.
    """
    if not 0.0 <= off_diagonal_mass < 1.0:
        raise S2OError(f"off_diagonal_mass must be in [0, 1), got {off_diagonal_mass}")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise S2OError(f"logits must have shape (B, C) with C >= 2, got {tuple(logits.shape)}")
    with torch.no_grad():
        z = logits.detach().float()
        magnitude = batch_sum(z.T @ z).abs()  # summed over processes under torchrun (s2o_lib.processes)
        a = magnitude.amax(dim=1, keepdim=True) - magnitude
        a.fill_diagonal_(0.0)
        c = a.shape[0]
        off_diagonal = 1.0 - torch.eye(c, device=a.device, dtype=a.dtype)
        row_sum = a.sum(dim=1, keepdim=True)
        # Same operation order as the released code (m·A / rowsum), so the values match bit for bit.
        spread = torch.where(row_sum > 0, off_diagonal_mass * a / row_sum.clamp_min(1e-30), off_diagonal / (c - 1) * off_diagonal_mass)
        return spread + torch.eye(c, device=a.device, dtype=a.dtype) * (1.0 - off_diagonal_mass)


def soft_targets(logits: Tensor, targets: Tensor, off_diagonal_mass: float = 0.8) -> Tensor:
    """S²O's soft targets ``q_b = A[y_b]`` for a batch.

    Args:
        logits: (B, C) logits of the batch (no gradient flows into them).
        targets: (B,) integer labels.
        off_diagonal_mass: m (0.8 for 10 classes, 0.98 for CIFAR-100 in the paper's code).

    Returns:
        (B, C) probability vectors, each with ``1 − m`` on its label, on the logits' device.
    """
    if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
        raise S2OError(f"targets must have shape ({logits.shape[0]},), got {tuple(targets.shape)}")
    return soft_target_matrix(logits, off_diagonal_mass=off_diagonal_mass)[targets.to(logits.device)]


def soft_target_kl(logits: Tensor, soft: Tensor) -> Tensor:
    """Batch-mean ``KL(q ‖ softmax(logits))``, differentiable in ``logits``."""
    return F.kl_div(F.log_softmax(logits, dim=1), soft, reduction="batchmean")


def s2o_regulariser(
    logits_clean: Tensor,
    logits_adv: Tensor,
    targets: Tensor,
    *,
    off_diagonal_mass: float = 0.8,
) -> Tensor:
    """The released S²O regulariser ``R = ½ [KL(q ‖ f(x)) + KL(q_adv ‖ f(x_adv))]``.

    Args:
        logits_clean: (B, C) training-mode logits on clean inputs (gradient flows through them).
        logits_adv: (B, C) training-mode logits on adversarial inputs (gradient flows through them).
        targets: (B,) labels.
        off_diagonal_mass: m.

    Returns:
        A scalar tensor.
    """
    q = soft_targets(logits_clean, targets, off_diagonal_mass)
    q_adv = soft_targets(logits_adv, targets, off_diagonal_mass)
    return 0.5 * (soft_target_kl(logits_clean, q) + soft_target_kl(logits_adv, q_adv))


def uniform_targets(targets: Tensor, num_classes: int, off_diagonal_mass: float = 0.8) -> Tensor:
    """Label-smoothed targets: ``1 − m`` on the label and ``m/(C − 1)`` on every other class.

    The same label mass as `soft_targets`, with its off-label mass spread uniformly (the ``+ls`` control).

    Args:
        targets: (B,) integer labels.
        num_classes: C (≥ 2).
        off_diagonal_mass: m (0 ≤ m < 1).

    Returns:
        (B, C) float32 probability vectors on the labels' device.
    """
    if not 0.0 <= off_diagonal_mass < 1.0:
        raise S2OError(f"off_diagonal_mass must be in [0, 1), got {off_diagonal_mass}")
    if num_classes < 2 or targets.ndim != 1:
        raise S2OError(f"need (B,) labels and num_classes >= 2, got {tuple(targets.shape)} and {num_classes}")
    one_hot = F.one_hot(targets, num_classes).float()
    return one_hot * (1.0 - off_diagonal_mass) + (1.0 - one_hot) * (off_diagonal_mass / (num_classes - 1))


def label_smoothing_regulariser(
    logits_clean: Tensor,
    logits_adv: Tensor,
    targets: Tensor,
    *,
    off_diagonal_mass: float = 0.8,
) -> Tensor:
    """The control ``R_LS = ½ [KL(u ‖ f(x)) + KL(u ‖ f(x_adv))]`` with u the `uniform_targets` of the labels.

    `s2o_regulariser` with the soft targets replaced by label smoothing at the same label mass ``1 − m``.

    Args:
        logits_clean: (B, C) training-mode logits on clean inputs (gradient flows through them).
        logits_adv: (B, C) training-mode logits on adversarial inputs (gradient flows through them).
        targets: (B,) labels.
        off_diagonal_mass: m.

    Returns:
        A scalar tensor.
    """
    u = uniform_targets(targets.to(logits_clean.device), logits_clean.shape[1], off_diagonal_mass)
    return 0.5 * (soft_target_kl(logits_clean, u) + soft_target_kl(logits_adv, u))


def kfac_correlation_penalty(features: Tensor, logits: Tensor, *, damping: float = 0.1) -> Tensor:
    """Normalised ‖R‖_F of the last layer's Laplace posterior correlation (the library's KFAC-Laplace reading).

    This is the library's KFAC-Laplace reading of the paper's objective; damping and weight are ours, and it
    is not what the released code trains.

    The loss' Hessian in the last layer's weights is approximated by ``G ⊗ A`` with
    ``G = E[diag(p) − p pᵀ]`` (formed and damped on the subspace orthogonal to **1**, where softmax is
    identifiable; see `s2o_lib.laplace.class_factor`) and ``A = E[a aᵀ]`` (damped); the Laplace posterior
    covariance is its inverse, whose correlation matrix is ``R_G ⊗ R_A``. Since
    ``‖R_G ⊗ R_A‖_F = ‖R_G‖_F ‖R_A‖_F`` and ``‖R‖_F ≥ √dim`` with equality only for R = I, the penalty
    ``(‖R_G‖_F/√C)(‖R_A‖_F/√D)`` is ≥ 1 and equals 1 exactly when the posterior is uncorrelated.

    Args:
        features: (B, D) inputs of the last linear layer (gradient flows through them).
        logits: (B, C) logits of the same inputs (gradient flows through their softmax).
        damping: relative damping of both factors (ours; 0.1 by default).

    Returns:
        A scalar tensor ≥ 1.
    """
    A, G = kfac_factors(features, F.softmax(logits, dim=1), damping=damping)
    R_A, R_G = kronecker_correlation(A, G)
    c, d = R_G.shape[0], R_A.shape[0]
    return torch.linalg.matrix_norm(R_G) / c**0.5 * torch.linalg.matrix_norm(R_A) / d**0.5
