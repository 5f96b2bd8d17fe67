"""The class factor of the KFAC-Laplace posterior: formed on 1^⊥, so the model sets R_G, not the damping."""

from __future__ import annotations

import pytest
import torch

from s2o_lib.errors import S2OError
from s2o_lib.laplace import (
    class_factor,
    correlation_from_covariance,
    damp,
    kfac_factors,
    kronecker_correlation,
    ones_complement_basis,
)

C = 10


def _probs(pair: tuple[int, int], seed: int) -> torch.Tensor:
    """A batch whose classifier confuses the two classes of ``pair`` (both get +3 on every logit)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(256, C, generator=g, dtype=torch.float64)
    logits[:, list(pair)] += 3.0
    return torch.softmax(logits, 1)


def _features() -> torch.Tensor:
    return torch.randn(256, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _R_G(probs: torch.Tensor, damping: float) -> torch.Tensor:
    A, G = kfac_factors(_features(), probs, damping=damping)
    return kronecker_correlation(A, G)[1]


def _R_G_damped_everywhere(probs: torch.Tensor, damping: float) -> torch.Tensor:
    """The previous construction: G + λ·mean(diag G)·I on all of R^C, then inverted."""
    G = torch.diag(probs.mean(0)) - probs.T @ probs / probs.shape[0]
    return correlation_from_covariance(torch.linalg.inv(damp(G, damping)))


def _off_diagonal(R: torch.Tensor) -> torch.Tensor:
    return R[~torch.eye(R.shape[0], dtype=torch.bool)]


def test_class_correlations_are_set_by_the_model_not_the_damping():
    confused_01, confused_23 = _probs((0, 1), seed=0), _probs((2, 3), seed=1)
    for probs in (confused_01, confused_23):
        change = (_off_diagonal(_R_G(probs, 1e-2)) - _off_diagonal(_R_G(probs, 1e-3))).abs().max()
        assert change < 0.01, f"R_G moved by {change:.3f} between damping 1e-2 and 1e-3"
        # The previous construction fails exactly here: its correlations are the damping's (≈ 0.92 → 0.99).
        old = (_off_diagonal(_R_G_damped_everywhere(probs, 1e-2))
               - _off_diagonal(_R_G_damped_everywhere(probs, 1e-3))).abs().max()
        assert old > 0.05, old
    # Two different models (confusing different classes) give different class correlations ...
    R_01, R_23 = _R_G(confused_01, 1e-2), _R_G(confused_23, 1e-2)
    assert (_off_diagonal(R_01) - _off_diagonal(R_23)).abs().max() > 0.3
    # ... and the confused pair is the correlated one.
    assert R_01[0, 1] > 0.3 and R_23[2, 3] > 0.3 and abs(R_01[2, 3]) < 0.1 and abs(R_23[0, 1]) < 0.1


def test_two_classes_and_an_exchangeable_model_give_identity():
    # With C = 2 only one class direction is identifiable: no class correlation can be estimated.
    p2 = torch.softmax(torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 1)
    A, G = kfac_factors(torch.randn(64, 3, dtype=torch.float64), p2, damping=1e-3)
    assert torch.allclose(kronecker_correlation(A, G)[1], torch.eye(2, dtype=torch.float64), atol=1e-10)
    # A constant uniform prediction makes G ∝ I − 11ᵀ/C: isotropic on 1^⊥, so R_G = I.
    uniform = torch.full((16, C), 1.0 / C, dtype=torch.float64)
    R_G = correlation_from_covariance(torch.linalg.inv(class_factor(uniform, damping=1e-3)))
    assert torch.allclose(R_G, torch.eye(C, dtype=torch.float64), atol=1e-10)


def test_class_factor_is_the_completed_subspace_inverse():
    probs = _probs((4, 7), seed=3)
    G = torch.diag(probs.mean(0)) - probs.T @ probs / probs.shape[0]
    Q = ones_complement_basis(C, dtype=torch.float64)
    assert torch.allclose(Q.T @ Q, torch.eye(C - 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(Q.T @ torch.ones(C, dtype=torch.float64), torch.zeros(C - 1, dtype=torch.float64), atol=1e-12)
    cov_sub = torch.linalg.inv(damp(Q.T @ G @ Q, 0.1))
    cov = Q @ cov_sub @ Q.T + cov_sub.trace() / (C - 1) * torch.full((C, C), 1.0 / C, dtype=torch.float64)
    assert torch.allclose(torch.linalg.inv(class_factor(probs, damping=0.1)), cov, atol=1e-8)
    # The factor is symmetric positive definite, so the bound's log-determinant and Cholesky factors exist.
    assert torch.linalg.eigvalsh(class_factor(probs, damping=0.1)).min() > 0


def test_class_factor_is_differentiable_and_checks_its_input():
    probs = _probs((0, 1), seed=0).requires_grad_(True)
    correlation_from_covariance(torch.linalg.inv(class_factor(probs))).sum().backward()
    assert probs.grad is not None and torch.isfinite(probs.grad).all()
    with pytest.raises(S2OError, match="C >= 2"):
        ones_complement_basis(1)
