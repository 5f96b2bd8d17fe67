"""Bounds: Laplace factor identities, the bound's terms, the σ search (the norms: test_norms.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from s2o_lib.attacks import margins, pgd
from s2o_lib.bounds import (
    BoundReport,
    estimate_bound,
    reports_to_rows,
)
from s2o_lib.data import load_dataset, tensors
from s2o_lib.errors import S2OError
from s2o_lib.laplace import (
    correlation_from_covariance,
    kfac_factors,
    kronecker_correlation,
    kronecker_summaries,
    last_layer_laplace,
)
from s2o_lib.models import ARCHITECTURES, build_model
from s2o_lib.noise import NoisyHeadAccuracy, noisy_accuracy, sigma_search
from s2o_lib.norms import compound_symmetry, compound_symmetry_logdet, jin_posterior_terms, mean_abs_correlation

EPS = 0.05


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits16():
    """The library's digits (16×16, in [0, 1]): the training split, then the test split."""
    x_train, y_train = tensors(load_dataset("digits", "train"))
    x_test, y_test = tensors(load_dataset("digits", "test"))
    return torch.cat([x_train, x_test]), torch.cat([y_train, y_test])


@pytest.fixture(scope="module")
def trained(digits16):
    """A small CNN trained for 2 clean epochs on 1000 digits (≈ 85 % test accuracy), in eval mode."""
    x, y = digits16
    torch.manual_seed(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(2):
        perm = torch.randperm(1000)
        for i in range(0, 1000, 50):
            idx = perm[i : i + 50]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def report(trained, digits16):
    x, y = digits16
    return estimate_bound(trained, (x[:1000], y[:1000]), eps=EPS, steps=5, n=256)


@pytest.fixture(scope="module")
def adversarial(trained, digits16):
    """300 fixed CW-PGD adversarial training points (ε = 0.02: ≈ 70 % stay correct) for the σ tests."""
    x, y = digits16[0][:300], digits16[1][:300]
    gen = torch.Generator().manual_seed(0)
    return pgd(trained, x, y, eps=0.02, alpha=0.008, steps=5, loss="cw", generator=gen), y


# ============================================================================================ Laplace
def test_kronecker_factor_identities_against_materialised_matrices():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(200, 6, generator=g, dtype=torch.float64) + 0.5
    probs = torch.softmax(2 * torch.randn(200, 4, generator=g, dtype=torch.float64), 1)
    A, G = kfac_factors(features, probs, damping=0.1)
    R_A, R_G = kronecker_correlation(A, G)
    R = torch.kron(R_G, R_A)
    # corr((G ⊗ A)⁻¹) = R_G ⊗ R_A
    assert torch.allclose(correlation_from_covariance(torch.linalg.inv(torch.kron(G, A))), R, atol=1e-10)
    summary = kronecker_summaries(R_A, R_G)
    assert float(summary.fro) == pytest.approx(float(torch.linalg.matrix_norm(R)), rel=1e-10)
    assert float(summary.spectral) == pytest.approx(float(torch.linalg.matrix_norm(R, ord=2)), rel=1e-10)
    assert float(summary.logdet) == pytest.approx(float(torch.linalg.slogdet(R)[1]), rel=1e-10)
    lap = last_layer_laplace(features, probs, damping=0.1)
    assert lap.fro == pytest.approx(float(summary.fro), rel=1e-12)
    assert lap.spectral == pytest.approx(float(summary.spectral), rel=1e-12)
    assert lap.logdet == pytest.approx(float(summary.logdet), rel=1e-12)
    assert lap.dim == 24 and lap.spectral >= 1.0 and lap.logdet <= 0.0


def test_correlated_noise_has_covariance_R():
    """The correlated draw L_G E L_Aᵀ equals (L_G ⊗ L_A)·vec(E) (row-major vec), so its covariance is R_G ⊗ R_A."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.rand(5, 1, 2, 2), torch.randint(0, 3, (5,))
    lap = last_layer_laplace(torch.randn(50, 4), torch.softmax(torch.randn(50, 3), 1))
    noise = NoisyHeadAccuracy(model, x, y, batch_size=8)
    drawn = noise.directions("correlated", (lap.R_A, lap.R_G), 1, 7, project_shift=False)[0]
    E = torch.randn(3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    L_A, L_G = torch.linalg.cholesky(lap.R_A), torch.linalg.cholesky(lap.R_G)
    assert torch.allclose(drawn.flatten(), torch.kron(L_G, L_A) @ E.flatten(), atol=1e-12)
    assert torch.equal(noise.directions("isotropic", None, 1, 7, project_shift=False)[0], E)
    # Projected: P = I − 11ᵀ/3 on the class side, rescaled by sqrt(C / tr(P R_G)) (R_G = I: sqrt(3/2)).
    P = torch.eye(3, dtype=torch.float64) - 1 / 3
    projected = noise.directions("correlated", (lap.R_A, lap.R_G), 1, 7)[0]
    scale = math.sqrt(3 / float(torch.trace(P @ lap.R_G)))
    assert torch.allclose(projected, scale * P @ drawn, atol=1e-12)
    assert torch.allclose(noise.directions("isotropic", None, 1, 7)[0], math.sqrt(1.5) * P @ E, atol=1e-12)
    assert projected.sum(0).abs().max() < 1e-12  # no softmax-shift component left


def test_projected_noise_keeps_unit_variance_per_weight():
    """E‖noise‖_F² = C·D for every kind, projected or not: σ keeps its meaning (relative to the weights' RMS)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 5))
    x, y = torch.rand(5, 1, 2, 2), torch.randint(0, 5, (5,))
    noise = NoisyHeadAccuracy(model, x, y, batch_size=8)
    R_A = torch.eye(4, dtype=torch.float64)
    for correlation in (None, (R_A, compound_symmetry(0.6, 5))):
        kind = "isotropic" if correlation is None else "correlated"
        for project in (False, True):
            energy = noise.directions(kind, correlation, 4000, 0, project_shift=project).pow(2).sum((1, 2)).mean()
            assert float(energy) == pytest.approx(20.0, rel=0.03), (kind, project)


def test_shift_projection_stops_shift_noise_from_inflating_sigma(trained, adversarial):
    """Class correlation 0.99 puts almost all the noise on the shift 1 vᵀ, which the argmax ignores: unprojected,
    such noise is tolerated at ≈ 1/√(1 − 0.99) = 10× the isotropic σ; projected, it is isotropic noise on 1^⊥."""
    x_adv, y = adversarial
    head = trained.head
    shift_heavy = (torch.eye(head.in_features, dtype=torch.float64), compound_symmetry(0.99, head.out_features))
    search = dict(max_drop=0.1, draws=4, iters=10)
    iso = sigma_search(trained, x_adv, y, noise="isotropic", **search)
    raw = sigma_search(trained, x_adv, y, noise="correlated", correlation=shift_heavy, project_shift=False, **search)
    projected = sigma_search(trained, x_adv, y, noise="correlated", correlation=shift_heavy, **search)
    assert raw > 5 * iso
    assert 0.7 * iso < projected < 1.4 * iso


# ============================================================================================ Jin et al. 2020
@pytest.mark.parametrize(("rho", "n_out", "n_in"), [(0.3, 4, 1), (0.05, 10, 3), (-0.2, 5, 2), (0.9, 6, 4)])
def test_compound_symmetry_logdet_against_materialised_matrix(rho, n_out, n_in):
    S = torch.kron(torch.eye(n_in, dtype=torch.float64), compound_symmetry(rho, n_out))
    assert compound_symmetry_logdet(rho, n_out=n_out, n_in=n_in) == pytest.approx(float(torch.logdet(S)), rel=1e-10)
    if rho >= 0:  # the spectral norm jin_posterior_terms uses
        assert float(torch.linalg.matrix_norm(S, ord=2)) == pytest.approx(1 + (n_out - 1) * rho, rel=1e-10)


@pytest.mark.parametrize("rho", [1.0, -0.5, float("nan")])
def test_compound_symmetry_logdet_refuses_indefinite(rho):
    with pytest.raises(S2OError, match="rho must lie in"):
        compound_symmetry_logdet(rho, n_out=4, n_in=2)


def test_jin_posterior_terms_follow_the_layers(report, trained):
    r = report
    modules = dict(trained.named_modules())
    for layer in r.layers:  # ρ: the mean |cos| between the rows (flattened filters) of each weight
        assert layer.rho == pytest.approx(mean_abs_correlation(modules[layer.name].weight), rel=1e-12)
        assert 0 < layer.rho < 1
    expected_logdet, expected_spectral = 0.0, 1.0
    for layer in r.layers:
        n_out, n_in = layer.weight_shape[0], math.prod(layer.weight_shape[1:])
        expected_logdet += n_in * float(torch.logdet(compound_symmetry(layer.rho, n_out)))
        expected_spectral = max(expected_spectral, float(torch.linalg.matrix_norm(compound_symmetry(layer.rho, n_out),
                                                                                   ord=2)))
    assert (r.jin_S_spectral, r.jin_neg_logdet) == pytest.approx((expected_spectral, -expected_logdet), rel=1e-8)
    assert jin_posterior_terms(r.layers) == (r.jin_S_spectral, r.jin_neg_logdet)
    assert r.jin_neg_logdet > 0 and r.jin_S_spectral > 1
    spec = [layer.spectral for layer in r.layers]
    pre = ((r.input_norm + r.eps_l2) ** 2 * r.depth**2 * r.width * math.log(r.depth * r.width)
           * math.prod(s**2 for s in spec) * sum(layer.frobenius**2 / s**2 for layer, s in zip(r.layers, spec, strict=True)))
    q_jin = pre * r.jin_S_spectral + r.jin_neg_logdet + math.log(r.depth * r.m / r.delta)
    assert r.q_jin == pytest.approx(q_jin, rel=1e-9)
    assert r.log10_bound_jin == pytest.approx(0.5 * math.log10(q_jin / (r.gamma**2 * r.m)), rel=1e-9)
    assert r.q_jin >= r.q_independent


# ============================================================================================ the bound
def test_report_terms_follow_the_formula(report):
    r = report
    assert (r.m, r.depth, r.width, r.input_dim) == (256, 5, 256, 256)
    assert r.eps_l2 == pytest.approx(EPS * 16)
    # Recompute both bounds in plain arithmetic (small enough not to overflow here).
    spec = [layer.spectral for layer in r.layers]
    fro = [layer.frobenius for layer in r.layers]
    prod = math.prod(s**2 for s in spec)
    ratio = sum(f**2 / s**2 for f, s in zip(fro, spec, strict=True))
    pre = (r.input_norm + r.eps_l2) ** 2 * r.depth**2 * r.width * math.log(r.depth * r.width) * prod * ratio
    conf = math.log(r.depth * r.m / r.delta)
    q_ind = pre + conf
    q_cor = pre * r.R_spectral - r.R_logdet + conf
    assert r.log10_spectral_product == pytest.approx(math.log10(prod), rel=1e-9)
    assert r.sum_fro_over_spec == pytest.approx(ratio, rel=1e-9)
    assert r.q_independent == pytest.approx(q_ind, rel=1e-9)
    assert r.q_correlated == pytest.approx(q_cor, rel=1e-9)
    bound_ind = r.robust_margin_loss + math.sqrt(q_ind / (r.gamma**2 * r.m))
    bound_cor = r.robust_margin_loss + math.sqrt(q_cor / (r.gamma**2 * r.m))
    assert r.bound_independent == pytest.approx(bound_ind, rel=1e-9)
    assert r.bound_correlated == pytest.approx(bound_cor, rel=1e-9)
    assert r.log10_bound_independent == pytest.approx(0.5 * math.log10(q_ind / (r.gamma**2 * r.m)), rel=1e-9)
    assert r.log10_bound_correlated == pytest.approx(0.5 * math.log10(q_cor / (r.gamma**2 * r.m)), rel=1e-9)
    assert r.log10_q_independent == pytest.approx(math.log10(q_ind), rel=1e-9)


def test_guaranteed_orderings(report):
    r = report
    assert r.R_spectral >= 1.0 - 1e-9  # a correlation matrix's largest eigenvalue is ≥ its mean, 1
    assert r.R_logdet <= 1e-9  # and its determinant ≤ 1 (Hadamard)
    assert r.R_fro >= math.sqrt(r.R_dim) * (1 - 1e-9)
    assert r.q_correlated >= r.q_independent
    assert r.log10_q_correlated >= r.log10_q_independent
    assert r.log10_bound_correlated >= r.log10_bound_independent
    assert r.bound_correlated >= r.bound_independent
    assert r.gamma > 0 and not r.gamma_fallback
    # L̂_γ counts every point with adversarial margin ≤ 0 and ~10 % of the positive ones.
    assert 1 - r.robust_train_acc <= r.robust_margin_loss + 1e-12
    assert r.robust_margin_loss <= 1 - r.robust_train_acc + 0.1 * r.robust_train_acc + 2 / r.m
    assert 0.5 < r.clean_train_acc <= 1 and r.robust_train_acc < r.clean_train_acc
    assert math.isfinite(r.sigma_isotropic) and math.isfinite(r.sigma_correlated)
    assert r.sigma_isotropic > 0 and r.sigma_correlated > 0


def test_full_data_uses_every_point_and_input_norm(trained, digits16):
    x, y = digits16[0][:40], digits16[1][:40]
    r = estimate_bound(trained, (x, y), eps=0.0, n=100, sigma_search=False, power_iters=20)
    assert r.m == 40 and r.eps_l2 == 0.0
    assert r.input_norm == pytest.approx(float(x.flatten(1).norm(dim=1).max()), rel=1e-6)
    clean = (trained(x).argmax(1) == y).double().mean()
    assert r.clean_train_acc == pytest.approx(float(clean)) and r.robust_train_acc == r.clean_train_acc
    assert math.isnan(r.sigma_isotropic) and math.isnan(r.sigma_correlated)


@pytest.mark.parametrize("quantile", [0.1, 0.5])
def test_gamma_and_margin_loss_from_cw_pgd_margins(trained, digits16, quantile):
    """With m = all points in one batch, the adversarial points are reproducible: recompute γ and L̂_γ."""
    x, y = digits16[0][:60], digits16[1][:60]
    r = estimate_bound(trained, (x, y), eps=EPS, steps=3, n=60, seed=4, margin_quantile=quantile,
                       sigma_search=False, power_iters=20)
    x_adv = pgd(trained, x, y, eps=EPS, alpha=2.5 * EPS / 3, steps=3, loss="cw",
                generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        margin = margins(trained(x_adv).double(), y)
    gamma = float(torch.quantile(margin[margin > 0], quantile))
    assert r.gamma == pytest.approx(gamma, rel=1e-6) and r.alpha == pytest.approx(2.5 * EPS / 3)
    assert r.robust_margin_loss == pytest.approx(float((margin <= gamma).double().mean()))
    assert r.robust_train_acc == pytest.approx(float((margin > 0).double().mean()))


def test_gamma_falls_back_when_every_margin_is_negative(trained, digits16):
    x = digits16[0][:30]
    y_wrong = (trained(x).argmax(1) + 1) % 10
    r = estimate_bound(trained, (x, y_wrong), eps=0.0, n=30, sigma_search=False, power_iters=20)
    assert r.gamma_fallback and r.gamma > 0
    assert r.robust_margin_loss == 1.0 and r.bound_independent >= 1.0
    assert math.isfinite(r.log10_bound_independent)


def test_deterministic_and_dataset_equals_tuple(trained, digits16):
    x, y = digits16[0][:200], digits16[1][:200]
    kwargs = {"eps": EPS, "steps": 2, "n": 64, "seed": 3, "power_iters": 30, "sigma_iters": 6, "sigma_draws": 2}
    a = estimate_bound(trained, (x, y), **kwargs).as_dict()
    b = estimate_bound(trained, TensorDataset(x, y), **kwargs).as_dict()
    assert a == b


def test_weights_mode_and_grads_restored(trained, digits16):
    x, y = digits16[0][:100], digits16[1][:100]
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    trained.train()
    try:
        estimate_bound(trained, (x, y), eps=EPS, steps=2, n=64, power_iters=20, sigma_iters=4, sigma_draws=2)
        assert trained.training
    finally:
        trained.eval()
    after = trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert all(p.grad is None for p in trained.parameters())


class _Doubled(nn.Module):
    """Logits scaled after the head: the σ search must take its slow path (writing and restoring weights)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.inner(x)


def test_slow_path_restores_weights_bitwise_and_agrees(trained, adversarial):
    x_adv, y = adversarial
    wrapped = _Doubled(trained).eval()
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    for sigma in (0.5, 5.0):
        slow = noisy_accuracy(wrapped, x_adv, y, sigma=sigma, draws=2, seed=1)
        fast = noisy_accuracy(trained, x_adv, y, sigma=sigma, draws=2, seed=1)
        assert slow == pytest.approx(fast, abs=1 / len(y))  # argmax is scale-free; allow one float tie
    assert all(torch.equal(before[k], v) for k, v in wrapped.state_dict().items())
    assert all(p.grad is None for p in wrapped.parameters())


# ============================================================================================ σ search
@pytest.mark.parametrize("noise", ["isotropic", "correlated"])
def test_sigma_search_monotone_in_allowed_drop(trained, adversarial, noise, digits16):
    x_adv, y = adversarial
    lap = None
    if noise == "correlated":
        with torch.no_grad():
            feats = trained.features(digits16[0][:300])
            lap = last_layer_laplace(feats, torch.softmax(trained.head(feats), 1))
    corr = None if lap is None else (lap.R_A, lap.R_G)
    sigmas = [sigma_search(trained, x_adv, y, noise=noise, correlation=corr, max_drop=d, draws=3, iters=8)
              for d in (0.02, 0.1, 0.3)]
    assert sigmas[0] <= sigmas[1] <= sigmas[2]
    assert sigmas[0] < sigmas[2]


def test_noisy_accuracy_decreases_with_sigma(trained, adversarial):
    x_adv, y = adversarial
    base = float((trained(x_adv).argmax(1) == y).double().mean())
    sigmas = (1e-3, 0.3, 1.0, 3.0, 10.0, 30.0, 300.0)
    accs = [noisy_accuracy(trained, x_adv, y, sigma=s, draws=6, seed=0) for s in sigmas]
    assert accs[0] == pytest.approx(base, abs=0.01)
    assert all(later <= earlier + 0.03 for earlier, later in itertools.pairwise(accs))
    assert accs[-1] < accs[0] - 0.3  # huge noise: near chance (0.1)


def test_sigma_is_relative_to_the_weights_rms(trained, adversarial, report):
    """Scaling the head by 10 leaves the argmax unchanged, and relative noise scales with it."""
    import copy

    x_adv, y = adversarial
    scaled = copy.deepcopy(trained)
    with torch.no_grad():
        scaled.head.weight.mul_(10)
        scaled.head.bias.mul_(10)
    for sigma in (0.5, 3.0):
        a = noisy_accuracy(trained, x_adv, y, sigma=sigma, draws=2)
        b = noisy_accuracy(scaled, x_adv, y, sigma=sigma, draws=2)
        assert a == pytest.approx(b, abs=1 / len(y))
    weight = trained.head.weight.detach().double()
    assert report.head_weight_rms == pytest.approx(float(weight.norm() / weight.numel() ** 0.5), rel=1e-9)


# ============================================================================================ every architecture
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_finite_terms_for_every_architecture(arch):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_channels=3)
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))  # random init, a tiny batch of tiny inputs
    r = estimate_bound(model, (x, y), eps=8 / 255, steps=1, n=4, sigma_search=False, power_iters=3)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert r.depth == convs + sum(isinstance(m, nn.Linear) for m in model.modules())
    for name in ("log10_spectral_product", "sum_fro_over_spec", "R_fro", "R_spectral", "R_logdet", "gamma",
                 "log10_q_independent", "log10_q_correlated", "log10_bound_independent",
                 "log10_bound_correlated", "input_norm", "eps_l2"):
        assert math.isfinite(getattr(r, name)), name
    assert r.q_correlated >= r.q_independent and r.R_spectral >= 1 - 1e-9


# ============================================================================================ tables
def test_reports_as_rows(report):
    other = BoundReport(**{**report.scalars(), "gamma": 2 * report.gamma, "layers": report.layers})
    wide = reports_to_rows({"first": report, "second": other})
    assert [row["model"] for row in wide] == ["first", "second"] and wide[1]["gamma"] == 2 * report.gamma
    long = reports_to_rows({"first": report}, form="long")
    assert {"model": "first", "term": "gamma", "value": report.gamma} in long
    layers = reports_to_rows({"first": report, "second": other}, form="layers")
    assert len(layers) == 2 * report.depth and layers[0]["name"] == "body.0"
    assert report.as_dict()["layers"][0]["kind"] == "conv"
    with pytest.raises(S2OError, match="rows form"):
        reports_to_rows({"first": report}, form="table")  # type: ignore[arg-type]
    with pytest.raises(S2OError, match="non-empty mapping"):
        reports_to_rows({})


# ============================================================================================ bad input
@pytest.mark.parametrize(
    "changes",
    [{"eps": -0.1}, {"n": 0}, {"margin_quantile": 0.0}, {"margin_quantile": 1.0}, {"margin_quantile": -0.5},
     {"delta": 0.0}, {"delta": 1.5}, {"steps": 0}, {"damping": 0.0}, {"conv_spectral": "exact"},
     {"power_iters": 0}],
)
def test_bad_options_raise(changes):
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    kwargs = {"eps": 0.1, "steps": 1, "n": 4, "sigma_search": False}
    kwargs.update(changes)
    with pytest.raises(S2OError):
        estimate_bound(model, (torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))), **kwargs)


def test_bad_models_and_data_raise():
    x, y = torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    no_linear = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())
    with pytest.raises(S2OError, match="nn.Linear"):
        estimate_bound(no_linear, (x, y), eps=0.1, n=4)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(S2OError, match=r"\[0, 1\]"):
        estimate_bound(mlp, (x * 3, y), eps=0.1, n=4)
    with pytest.raises(S2OError, match="DataLoader"):
        estimate_bound(mlp, DataLoader(TensorDataset(x, y)), eps=0.1, n=4)
    with pytest.raises(S2OError):
        estimate_bound(mlp, (x, y[:3]), eps=0.1, n=4)
    with pytest.raises(S2OError):
        sigma_search(mlp, x, y, noise="correlated")
    with pytest.raises(S2OError):
        sigma_search(mlp, x, y, max_drop=2.0)
