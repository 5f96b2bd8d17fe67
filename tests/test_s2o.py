"""S²O: the released soft targets against a loop-by-loop transcription, and the KFAC penalty."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2o_lib.errors import S2OError
from s2o_lib.laplace import correlation_from_covariance
from s2o_lib.s2o import (
    default_off_diagonal_mass,
    kfac_correlation_penalty,
    label_smoothing_regulariser,
    s2o_regulariser,
    soft_target_matrix,
    soft_targets,
    uniform_targets,
)


def transcribed_soft_targets(logits: torch.Tensor, targets: torch.Tensor, m: float) -> torch.Tensor:
    """The definition, written as plainly as possible (loops, no vectorisation)."""
    _, c = logits.shape
    M = torch.zeros(c, c, dtype=torch.float64)
    for z in logits.double():
        for i in range(c):
            for j in range(c):
                M[i, j] += z[i] * z[j]
    A = torch.zeros(c, c, dtype=torch.float64)
    for i in range(c):
        row_max = max(abs(M[i, k]) for k in range(c))
        for j in range(c):
            A[i, j] = row_max - abs(M[i, j])
        A[i, i] = 0.0
        total = sum(A[i, j] for j in range(c))
        for j in range(c):
            if i != j:
                A[i, j] = m * A[i, j] / total if total > 0 else m / (c - 1)
        A[i, i] = 1.0 - m
    return torch.stack([A[t] for t in targets]).float()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("m", [0.8, 0.98])
def test_soft_targets_equal_transcription(seed, m):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(32, 10, generator=g) * 3
    targets = torch.randint(0, 10, (32,), generator=g)
    assert torch.allclose(soft_targets(logits, targets, m), transcribed_soft_targets(logits, targets, m), atol=1e-5)


def test_rows_sum_to_one_with_diagonal_one_minus_m():
    A = soft_target_matrix(torch.randn(64, 10), off_diagonal_mass=0.8)
    assert torch.allclose(A.sum(1), torch.ones(10), atol=1e-6)
    assert torch.allclose(A.diagonal(), torch.full((10,), 0.2), atol=1e-7)
    assert (A >= 0).all()


def test_degenerate_row_is_uniform_not_nan():
    # Class 2's logit is always zero, so row 2 of |M| is all zero: no off-diagonal mass to spread.
    logits = torch.randn(16, 4)
    logits[:, 2] = 0.0
    A = soft_target_matrix(logits, off_diagonal_mass=0.8)
    assert torch.isfinite(A).all()
    expected = torch.tensor([0.8 / 3, 0.8 / 3, 0.2, 0.8 / 3])
    assert torch.allclose(A[2], expected, atol=1e-6)
    assert torch.allclose(transcribed_soft_targets(logits, torch.tensor([2]), 0.8)[0], expected, atol=1e-6)


def test_regulariser_equals_transcribed_kl():
    g = torch.Generator().manual_seed(3)
    clean, adv = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)

    def kl(q, logits):  # KL(q ‖ softmax), summed over classes, averaged over the batch; 0·log 0 = 0
        p = F.softmax(logits, 1)
        terms = torch.where(q > 0, q * (q.clamp_min(1e-30).log() - p.log()), torch.zeros_like(q))
        return terms.sum(1).mean()

    expected = 0.5 * (kl(transcribed_soft_targets(clean, y, 0.8), clean) + kl(transcribed_soft_targets(adv, y, 0.8), adv))
    assert torch.allclose(s2o_regulariser(clean, adv, y), expected, atol=1e-5)


def test_targets_carry_no_gradient_but_regulariser_does():
    clean = torch.randn(8, 10, requires_grad=True)
    adv = torch.randn(8, 10, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    assert not soft_targets(clean, y).requires_grad
    s2o_regulariser(clean, adv, y).backward()
    assert clean.grad is not None and clean.grad.abs().sum() > 0


def test_bad_mass_and_shapes():
    with pytest.raises(S2OError, match="off_diagonal_mass"):
        soft_target_matrix(torch.randn(4, 10), off_diagonal_mass=1.0)
    with pytest.raises(S2OError, match="targets must have shape"):
        soft_targets(torch.randn(4, 10), torch.tensor([1, 2]))
    assert default_off_diagonal_mass(10) == 0.8 and default_off_diagonal_mass(100) == 0.98


def _basis_of_ones_complement(c: int) -> torch.Tensor:
    """An orthonormal basis of 1^⊥ found by QR of the centring matrix (not the library's Helmert basis)."""
    q, _ = torch.linalg.qr(torch.eye(c) - torch.full((c, c), 1.0 / c))
    return q[:, : c - 1]


def test_kfac_penalty_matches_materialised_correlation():
    g = torch.Generator().manual_seed(0)
    feats, logits = torch.randn(64, 6, generator=g), torch.randn(64, 4, generator=g)
    p = F.softmax(logits, 1)
    A = feats.T @ feats / 64
    G = torch.diag(p.mean(0)) - p.T @ p / 64
    damp = lambda X: X + 0.1 * X.diagonal().mean() * torch.eye(len(X))
    # The class covariance: damped and inverted on 1^⊥, the direction 1 given the mean variance of the others.
    Q = _basis_of_ones_complement(4)
    cov_sub = torch.linalg.inv(damp(Q.T @ G @ Q))
    cov_G = Q @ cov_sub @ Q.T + cov_sub.trace() / 3 * torch.full((4, 4), 1.0 / 4)
    R = correlation_from_covariance(torch.kron(cov_G.contiguous(), torch.linalg.inv(damp(A)).contiguous()))
    expected = torch.linalg.matrix_norm(R) / (4 * 6) ** 0.5
    assert torch.allclose(kfac_correlation_penalty(feats, logits), expected, rtol=1e-4)


def test_kfac_penalty_is_at_least_one_and_differentiable():
    feats = torch.eye(8).repeat(4, 1) * 8**0.5  # E[a aᵀ] = I
    logits = torch.zeros(32, 2, requires_grad=True)  # G = diag(p) - ppᵀ is rank one but damped
    value = kfac_correlation_penalty(feats.requires_grad_(), logits)
    assert value >= 1.0 - 1e-5
    value.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


# ----------------------------------------------------------------------------------------- the +ls control
def test_uniform_targets_put_the_same_label_mass_as_the_soft_targets():
    g = torch.Generator().manual_seed(4)
    logits, y = torch.randn(32, 10, generator=g), torch.randint(0, 10, (32,), generator=g)
    u = uniform_targets(y, 10, 0.8)
    q = soft_targets(logits, y, 0.8)
    assert torch.allclose(u.sum(1), torch.ones(32)) and torch.allclose(q.sum(1), torch.ones(32), atol=1e-6)
    label = torch.arange(32), y
    assert torch.allclose(u[label], q[label], atol=1e-6), "the same 1 - m on the label"
    off = u.masked_select(~F.one_hot(y, 10).bool())
    assert torch.allclose(off, torch.full_like(off, 0.8 / 9)), "the off-label mass is spread uniformly"
    assert not torch.allclose(u, q, atol=1e-3), "S²O's spread is not uniform"


def test_label_smoothing_regulariser_is_the_released_term_with_uniform_targets():
    g = torch.Generator().manual_seed(5)
    clean, adv = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    u = torch.full((8, 10), 0.8 / 9)
    u[torch.arange(8), y] = 0.2

    def kl(q, logits):
        return (q * (q.log() - F.log_softmax(logits, 1))).sum(1).mean()

    assert torch.allclose(label_smoothing_regulariser(clean, adv, y), 0.5 * (kl(u, clean) + kl(u, adv)), atol=1e-6)
    assert not torch.allclose(label_smoothing_regulariser(clean, adv, y), s2o_regulariser(clean, adv, y), atol=1e-3)


def test_uniform_targets_refuse_bad_mass():
    with pytest.raises(S2OError, match="off_diagonal_mass"):
        uniform_targets(torch.tensor([0, 1]), 10, 1.0)
