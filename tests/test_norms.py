"""Norms: power iteration and spectral norms against materialised operators, per-layer norms, weight correlation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s2o_lib.errors import S2OError
from s2o_lib.models import build_model
from s2o_lib.norms import (
    conv_operator,
    conv_spectral_norm,
    layer_norms,
    matrix_spectral_norm,
    mean_abs_correlation,
    power_iteration,
    reshaped_spectral_norm,
    weight_correlation,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# ============================================================================================ linear norms
@pytest.mark.parametrize("shape", [(10, 10), (7, 30), (40, 5)])
def test_linear_power_iteration_matches_matrix_norm(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = matrix_spectral_norm(W, iters=2000)
    assert torch.isclose(ours, torch.linalg.matrix_norm(W, ord=2), rtol=1e-6)
    assert ours <= torch.linalg.matrix_norm(W, ord=2) * (1 + 1e-12)  # a lower bound


def test_matrix_spectral_norm_batched_and_deterministic():
    W = torch.randn(4, 6, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = matrix_spectral_norm(W, iters=2000, seed=3)
    assert ours.shape == (4,)
    assert torch.allclose(ours, torch.linalg.matrix_norm(W, ord=2), rtol=1e-6)
    assert torch.equal(ours, matrix_spectral_norm(W, iters=2000, seed=3))


def test_linear_layers_in_layer_norms():
    torch.manual_seed(0)
    trained = build_model("small-cnn", num_classes=10, in_channels=1).eval()  # any weights will do
    # Shapes inferred with forward hooks on a sample batch; at initialisation the top singular values lie close
    # together, so power iteration needs more iterations than for trained weights.
    norms = layer_norms(trained, torch.rand(3, 1, 16, 16), iters=1000)
    assert [(layer.name, layer.kind) for layer in norms] == [
        ("body.0", "conv"), ("body.3", "conv"), ("body.6", "conv"), ("body.11", "linear"), ("head", "linear"),
    ]
    assert [layer.input_shape for layer in norms] == [(1, 16, 16), (32, 16, 16), (64, 8, 8), (256,), (128,)]
    modules = dict(trained.named_modules())
    for layer in norms:
        weight = modules[layer.name].weight.detach()
        assert layer.frobenius == pytest.approx(float(weight.norm()), rel=1e-6)
        exact = float(torch.linalg.matrix_norm(weight.double().reshape(weight.shape[0], -1), ord=2))
        assert layer.spectral_reshaped == pytest.approx(exact, rel=1e-3)
        if layer.kind == "linear":
            assert layer.spectral == layer.spectral_reshaped
            assert layer.spectral == pytest.approx(exact, rel=1e-3)  # vs torch.linalg.matrix_norm(ord=2)
    by_shape = layer_norms(trained, (1, 16, 16), iters=1000)  # a shape runs one zero input: same layers and norms
    assert [layer.as_dict() for layer in by_shape] == [layer.as_dict() for layer in norms]


# ============================================================================================ conv norms
def _dense(conv: nn.Conv2d, shape: tuple[int, int, int]) -> torch.Tensor:
    """The convolution's (bias-free) linear map as a dense matrix, via torch.func.jacrev."""
    weight = conv.weight.detach()
    jac = torch.func.jacrev(lambda v: conv._conv_forward(v[None], weight, None).flatten())(
        torch.zeros(shape, dtype=weight.dtype)
    )
    return jac.reshape(jac.shape[0], -1)


CONV_CASES = [
    {"stride": 1, "padding": 1},
    {"stride": 2, "padding": 1},
    {"stride": 2, "padding": 0},
    {"stride": 1, "padding": 2, "dilation": 2},
    {"stride": 1, "padding": 1, "groups": 2},
    {"stride": 1, "padding": "same"},
    {"stride": 1, "padding": 1, "padding_mode": "circular"},
]


@pytest.mark.parametrize("options", CONV_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_conv_adjoint_is_transpose(options):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, **options).double()
    for size in (7, 8):  # odd and even sizes: strided convs then need different output_padding
        op, adjoint = conv_operator(conv, (2, size, size))
        x = torch.randn(3, 2, size, size, dtype=torch.float64)
        u = torch.randn_like(op(x))
        assert adjoint(u).shape == x.shape
        assert torch.allclose((op(x) * u).sum(), (x * adjoint(u)).sum(), rtol=1e-10)
    op, _ = conv_operator(conv, (2, 7, 7))
    x = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    J = _dense(conv, (2, 7, 7))
    assert torch.allclose(op(x).flatten(1), x.flatten(1) @ J.T, atol=1e-10)  # op has no bias


@pytest.mark.parametrize("options", CONV_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_conv_true_norm_matches_materialised_jacobian(options):
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 4, 3, **options).double()
    exact = torch.linalg.matrix_norm(_dense(conv, (2, 8, 8)), ord=2)
    ours = conv_spectral_norm(conv, (2, 8, 8), iters=3000)
    assert float(ours) == pytest.approx(float(exact), rel=1e-3)
    assert float(ours) <= float(exact) * (1 + 1e-9)


def test_one_by_one_conv_true_equals_reshaped():
    torch.manual_seed(2)
    conv = nn.Conv2d(5, 3, 1).double()
    true = conv_spectral_norm(conv, (5, 6, 6), iters=2000)
    reshaped = reshaped_spectral_norm(conv.weight, iters=2000)
    exact = torch.linalg.matrix_norm(conv.weight.detach().reshape(3, 5), ord=2)
    assert torch.isclose(true, exact, rtol=1e-6) and torch.isclose(reshaped, exact, rtol=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_reshaped_and_true_differ_but_are_related(stride):
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, stride=stride, padding=1).double()
    true = float(conv_spectral_norm(conv, (3, 8, 8), iters=3000))
    reshaped = float(reshaped_spectral_norm(conv.weight, iters=2000))
    # Each input pixel enters at most kh·kw patches: ‖conv‖₂ ≤ √(kh·kw)·‖W_reshaped‖₂.
    assert true <= 3 * reshaped * (1 + 1e-9)
    assert abs(true / reshaped - 1) > 0.01  # in general they are different numbers


def test_power_iteration_runs_a_fixed_number_of_iterations():
    W = torch.randn(6, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    calls = []

    def op(v):
        calls.append(1)
        return v @ W.T

    v0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    est = power_iteration(op, lambda u: u @ W, v0, iters=17)
    assert len(calls) == 17 and est.shape == (2,)  # no early stop (no host-synchronising convergence test)
    assert torch.all(est <= torch.linalg.matrix_norm(W, ord=2) * (1 + 1e-12))
    assert torch.equal(est, power_iteration(lambda v: v @ W.T, lambda u: u @ W, v0, iters=17))
    with pytest.raises(S2OError):
        power_iteration(op, lambda u: u @ W, v0, iters=0)


def test_conv_norm_is_deterministic():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert torch.equal(conv_spectral_norm(conv, (3, 8, 8), seed=5), conv_spectral_norm(conv, (3, 8, 8), seed=5))


# ============================================================================================ weight correlation
def test_weight_correlation_is_the_cosine_between_neurons():
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    c = weight_correlation(weight)
    s = 2**-0.5
    assert torch.allclose(c, torch.tensor([[1.0, s, -1.0], [s, 1.0, -s], [-1.0, -s, 1.0]]), atol=1e-6)
    # the mean of |c| over the off-diagonal entries: each of the three pairs twice
    assert mean_abs_correlation(weight) == pytest.approx((s + 1.0 + s) / 3, rel=1e-6)
    conv = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    assert weight_correlation(conv).shape == (8, 8)  # filters are flattened


# ============================================================================================ bad input
def test_bad_layers_and_shapes_raise():
    conv1d = nn.Sequential(nn.Flatten(1, 2), nn.Conv1d(8, 4, 3), nn.Flatten(), nn.Linear(24, 10))
    with pytest.raises(S2OError, match="Conv1d"):
        layer_norms(conv1d, (1, 8, 8))
    with pytest.raises(S2OError):
        conv_operator(nn.Conv2d(3, 4, 3), (2, 8, 8))
    with pytest.raises(S2OError):
        matrix_spectral_norm(torch.randn(5))
    with pytest.raises(S2OError, match="iters"):
        power_iteration(lambda v: v, lambda u: u, torch.ones(1, 2), iters=0)
