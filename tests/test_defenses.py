"""Defenses: method names, loss composition, AWP restoring weights, every method training on digits."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from s2o_lib import defenses
from s2o_lib.attacks import pgd
from s2o_lib.awp import AWP, AWP_DEFAULTS, AWPSettings
from s2o_lib.config import seed_everything
from s2o_lib.data import tensors
from s2o_lib.defenses import (
    DefenseConfig,
    adversarial_examples,
    avmixup_labels,
    forward_order,
    method_loss,
    soft_cross_entropy,
    training_step,
)
from s2o_lib.errors import S2OError
from s2o_lib.methods import METHODS, Method, parse_method
from s2o_lib.models import build_model
from s2o_lib.s2o import kfac_correlation_penalty, label_smoothing_regulariser, s2o_regulariser

from .conftest import SMOKE, train_small


def test_parse_method_composes_names():
    assert parse_method("trades+awp+s2o") == Method("trades", awp=True, s2o="official")
    assert parse_method("at+s2o+awp") == Method("at", awp=True, s2o="official")
    assert parse_method("mart+s2o-kfac").s2o == "kfac"
    assert parse_method("trades+ls+awp") == Method("trades", awp=True, s2o="ls")
    assert parse_method(" AT ").name == "at"
    for name in METHODS:
        assert parse_method(name).name == name
    for required in ("standard", "at", "trades", "mart", "at+awp", "trades+awp", "at+s2o", "trades+s2o",
                     "mart+s2o", "trades+awp+s2o", "at+awp+s2o", "avmixup", "avmixup+s2o", "avmixup+awp",
                     "avmixup+awp+s2o", "avmixup+s2o-kfac", "at+ls", "trades+ls", "mart+ls"):
        assert required in METHODS


@pytest.mark.parametrize("name", ["pgd", "at+s2o+s2o-kfac", "at+s2o+ls", "standard+ls", "standard+awp", "at+awp+awp", "", "s2o", "trades+foo"])
def test_unknown_methods_list_the_valid_ones(name):
    with pytest.raises(S2OError, match="valid methods are: standard, at, at\\+s2o"):
        parse_method(name)


def _logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g), torch.randint(0, 10, (16,), generator=g)


def test_at_s2o_loss_is_09_ce_plus_01_r():
    clean, adv, y = _logits()
    loss = method_loss(parse_method("at+s2o"), DefenseConfig(), y, logits_clean=clean, logits_adv=adv)
    expected = 0.9 * F.cross_entropy(adv, y) + 0.1 * s2o_regulariser(clean, adv, y)
    assert torch.allclose(loss, expected)


def test_trades_s2o_loss_matches_released_weights():
    clean, adv, y = _logits()
    loss = method_loss(parse_method("trades+s2o"), DefenseConfig(beta=6.0), y, logits_clean=clean, logits_adv=adv)
    kl = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="sum") / 16
    expected = 0.7 * F.cross_entropy(clean, y) + 0.3 * s2o_regulariser(clean, adv, y) + 6.0 * kl
    assert torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize(("base", "w"), [("at", 0.1), ("trades", 0.3), ("mart", 0.3)])
def test_label_smoothing_control_swaps_only_the_targets(base, w):
    clean, adv, y = _logits()
    config = DefenseConfig(beta=6.0)
    with_s2o = method_loss(parse_method(f"{base}+s2o"), config, y, logits_clean=clean, logits_adv=adv)
    control = method_loss(parse_method(f"{base}+ls"), config, y, logits_clean=clean, logits_adv=adv)
    swap = w * (label_smoothing_regulariser(clean, adv, y) - s2o_regulariser(clean, adv, y))
    assert torch.allclose(control, with_s2o + swap, atol=1e-6)
    assert config.for_method(f"{base}+ls").s2o_weight == w


def test_label_mass_of_the_mixed_targets():
    config = DefenseConfig()
    assert config.label_mass("at+s2o") == pytest.approx(0.92) and config.label_mass("at+ls") == pytest.approx(0.92)
    assert config.label_mass("trades+s2o") == pytest.approx(0.76) and config.label_mass("mart+ls") == pytest.approx(0.76)
    assert config.label_mass("at") == 1.0 and config.label_mass("trades+s2o-kfac") == 1.0
    assert DefenseConfig(off_diagonal_mass=0.98).label_mass("at+s2o") == pytest.approx(0.902)


def test_mart_loss_matches_authors_formula():
    clean, adv, y = _logits()
    loss = method_loss(parse_method("mart"), DefenseConfig(beta=6.0), y, logits_clean=clean, logits_adv=adv)
    # Transcribed from MART's released train loop.
    adv_probs = F.softmax(adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(clean, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1)).squeeze()
    kl = torch.nn.KLDivLoss(reduction="none")(torch.log(adv_probs + 1e-12), nat_probs)
    loss_robust = (1.0 / 16) * torch.sum(torch.sum(kl, dim=1) * (1.0000001 - true_probs))
    assert torch.allclose(loss, loss_adv + 6.0 * loss_robust, atol=1e-6)


def test_awp_restores_weights_exactly(digits):
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    x, y = tensors(digits[0], n=32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    awp = AWP(model, gamma=5e-3)
    diff = awp.perturbation(lambda m: F.cross_entropy(m(x), y))
    assert diff and all(d.abs().sum() > 0 for d in diff.values())
    # Each perturbation is γ times the weight's norm, as in AWP.
    for name, p in model.named_parameters():
        if name in diff:
            assert torch.allclose(diff[name].norm(), 5e-3 * p.norm(), rtol=1e-4)
    with awp.perturbed(diff):
        changed = any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert changed
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # bitwise, BatchNorm buffers included


def test_awp_step_uses_gradient_at_perturbed_weights(digits):
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    x, y = tensors(digits[0], n=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step changes nothing
    before = {k: v.clone() for k, v in model.named_parameters()}
    config = DefenseConfig(eps=SMOKE.eps, alpha=SMOKE.alpha, steps=2)
    training_step(model, x, y, method="trades+awp+s2o", config=config, optimizer=opt, awp=AWP(model))
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is not None


# ------------------------------------------------------------------------------------ the training attack's start
class FirstInput(nn.Module):
    """Wraps a model and keeps the input of its first forward: the attack's start point."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.first: torch.Tensor | None = None

    def forward(self, x):
        if self.first is None:
            self.first = x.detach().clone()
        return self.model(x)


@pytest.mark.parametrize(("method", "start"), [("mart", "gaussian"), ("at", "uniform"), ("avmixup", "uniform")])
def test_training_attack_starts_where_the_scripts_start(digits, method, start):
    seed_everything(0)
    recorder = FirstInput(build_model("small-cnn", num_classes=10, in_channels=1))
    x, y = tensors(digits[0], n=64)
    eps = 0.15
    adversarial_examples(recorder, x, y, method=parse_method(method), config=DefenseConfig(eps=eps, alpha=0.05, steps=1))
    interior = (x > 0.05) & (x < 0.95)  # away from the [0, 1] clip
    delta = (recorder.first - x)[interior]
    if start == "gaussian":  # MART: x + 0.001·N(0, I) (mart.py line 20, mart_soso.py line 22)
        assert 0.0009 < delta.std() < 0.0011 and delta.abs().max() < 0.01
    else:  # uniform in the ε-ball: std ε/√3, reaching close to ε
        assert abs(delta.std() - eps / 3**0.5) < 0.05 * eps and delta.abs().max() > 0.95 * eps


# ---------------------------------------------------------------------------------------------- AWP settings
def test_awp_defaults_follow_each_script():
    config = DefenseConfig()
    assert config.awp_settings("at") == AWPSettings(gamma=1e-2, warmup=0, lr=0.01)  # AT_AWP/train_cifar10.py
    assert config.awp_settings("trades") == AWPSettings(gamma=5e-3, warmup=10, lr=0.1)  # train_trades_cifar.py
    assert config.awp_settings("mart") == AWP_DEFAULTS["trades"]
    assert config.awp_settings("avmixup") == AWP_DEFAULTS["at"]
    assert DefenseConfig(awp_gamma=0.02).awp_settings("at") == AWPSettings(0.02, 0, 0.01)
    resolved = config.for_method("trades+awp+s2o")
    assert (resolved.awp_gamma, resolved.awp_warmup, resolved.awp_lr, resolved.s2o_weight) == (5e-3, 10, 0.1, 0.3)
    assert config.for_method("avmixup+s2o").s2o_weight == 0.1
    assert config.for_method("at") == config  # nothing to resolve without AWP or S²O
    with pytest.raises(S2OError, match="adversarial base"):
        config.awp_settings("standard")
    with pytest.raises(S2OError, match="awp_warmup"):
        DefenseConfig(awp_warmup=-1)


def _first_awp_epoch(config: DefenseConfig) -> int:
    return next(epoch for epoch in range(1, 50) if config.awp_active(epoch))


def test_awp_starts_at_the_epoch_the_scripts_start_it():
    # TRADES-AWP: `if epoch >= args.awp_warmup` with epochs from 1 and warm-up 10: epoch 10 is perturbed.
    assert _first_awp_epoch(DefenseConfig().for_method("trades+awp")) == 10
    assert _first_awp_epoch(DefenseConfig().for_method("trades+awp+s2o")) == 10
    # AT-AWP: epochs from 0, warm-up 0: the first epoch is perturbed.
    assert _first_awp_epoch(DefenseConfig().for_method("at+awp")) == 1
    assert _first_awp_epoch(DefenseConfig(awp_warmup=3).for_method("at+awp")) == 3
    with pytest.raises(S2OError, match="for_method"):
        DefenseConfig().awp_active(1)


# ------------------------------------------------------------------------------ BatchNorm: the train-mode order
def _train_mode_inputs(method: str, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """One training step; the images that reach the first convolution in training mode, as 'x' or 'adv'."""
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    config = DefenseConfig(eps=0.15, alpha=0.05, steps=2).for_method(method)
    awp = AWP(model, gamma=config.awp_gamma, lr=config.awp_lr) if parse_method(method).awp else None
    seen: list[torch.Tensor] = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone())
                                   if module.training else None)
    training_step(model, x, y, method=method, config=config, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                  awp=awp)
    adv = [t for t in seen if not torch.equal(t, x)]
    assert all(torch.equal(t, adv[0]) for t in adv), "one adversarial batch per step"
    return ["x" if torch.equal(t, x) else "adv" for t in seen]


@pytest.mark.parametrize(("method", "expected"), [
    ("trades", ["x", "adv", "x"]),             # trades.py lines 79-82
    ("trades+awp", ["adv", "x", "x"]),         # train_trades_cifar.py lines 187-192
    ("trades+s2o", ["x", "adv"]),              # trades_s2o.py forwards x, x', x, x', x', x: same share
    ("trades+awp+s2o", ["x", "adv"]),          # CIFAR10_AWP_S2O/train_S2O.py lines 191-192
    ("mart", ["x", "adv"]),                    # mart.py lines 38-40
    ("at", ["adv"]),
    ("at+s2o", ["x", "adv"]),                  # CIFAR10_AT_S2O/train_S2O.py lines 119-120
    ("at+s2o-kfac", ["adv"]),                  # the KFAC term uses AT's own input, no extra clean forward
    ("trades+s2o-kfac", ["x", "adv", "x"]),
    ("avmixup", ["adv"]),                      # AVMixup's train.py line 194: the mixture only
    ("avmixup+s2o", ["x", "adv"]),
    ("at+ls", ["x", "adv"]),                   # the control forwards exactly as +s2o does
    ("trades+ls", ["x", "adv"]),
])
def test_batchnorm_sees_the_reference_forward_order(digits, method, expected):
    x, y = tensors(digits[0], n=32)
    recorded = _train_mode_inputs(method, x, y)
    assert recorded == expected
    assert [{"clean": "x", "clean-bn": "x", "adv": "adv"}[name] for name in forward_order(method)] == expected


# ----------------------------------------------------------------------------------------- +s2o-kfac inputs
def test_kfac_penalty_uses_the_inputs_of_the_base_loss(digits, monkeypatch):
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    x, y = tensors(digits[0], n=64)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    monkeypatch.setattr(defenses, "adversarial_examples", lambda *args, **kwargs: x_adv)
    reference = copy.deepcopy(model).train()
    config = DefenseConfig()
    result = training_step(model, x, y, method="at+s2o-kfac", config=config,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    features = reference.features(x_adv)
    logits = reference.head(features)
    expected = F.cross_entropy(logits, y) + config.kfac_weight * kfac_correlation_penalty(
        features, logits, damping=config.kfac_damping)
    assert torch.allclose(result.loss, expected, atol=1e-6)
    assert result.logits_clean is None


# --------------------------------------------------------------------------------------------------- AVMixup
def test_avmixup_labels_smooth_both_ends():
    y = torch.tensor([0, 3])
    soft = avmixup_labels(y, torch.tensor([1.0, 0.0]), num_classes=10, lambda1=1.0, lambda2=0.1)
    assert torch.allclose(soft[0], F.one_hot(y[0], 10).float())  # α = 1: the clean end, λ₁ = 1 is one-hot
    assert torch.allclose(soft[1], torch.full((10,), 0.1))  # α = 0: the vertex, λ₂ = 0.1 is uniform for C = 10
    half = avmixup_labels(y, torch.tensor([0.5, 0.5]), num_classes=10, lambda1=0.8, lambda2=0.5)
    assert torch.allclose(half.sum(1), torch.ones(2))
    assert torch.allclose(half[0, 0], torch.tensor(0.5 * 0.8 + 0.5 * 0.5))


def test_avmixup_step_matches_a_hand_written_step(digits):
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    mine = copy.deepcopy(model)
    x, y = tensors(digits[0], n=32)
    eps, alpha, steps = 0.15, 0.05, 3
    config = DefenseConfig(eps=eps, alpha=alpha, steps=steps)
    torch.manual_seed(5)
    result = training_step(model, x, y, method="avmixup", config=config,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.0))

    # Saehyung-Lee/cifar10_challenge, pgd_attack.py perturb_avmixup, written out (the attack in eval mode).
    torch.manual_seed(5)
    mine.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(mine(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    vertex = (x + 2.0 * (x_adv - x)).clamp(0, 1)
    one_hot = F.one_hot(y, 10).float()
    y_nat = one_hot * 1.0 + (one_hot - 1) * ((1.0 - 1) / 9)
    y_vertex = one_hot * 0.1 + (one_hot - 1) * ((0.1 - 1) / 9)
    weight = torch.rand(32)
    x_mix = weight.view(-1, 1, 1, 1) * x + (1 - weight.view(-1, 1, 1, 1)) * vertex
    y_mix = weight[:, None] * y_nat + (1 - weight[:, None]) * y_vertex
    mine.train()
    loss = -(y_mix * F.log_softmax(mine(x_mix), dim=1)).sum(1).mean()
    loss.backward()

    assert torch.allclose(result.loss, loss.detach(), atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), mine.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_avmixup_s2o_loss_is_09_soft_ce_plus_01_r():
    clean, adv, y = _logits()
    soft = avmixup_labels(y, torch.rand(16, generator=torch.Generator().manual_seed(1)), num_classes=10,
                          lambda1=1.0, lambda2=0.1)
    loss = method_loss(parse_method("avmixup+s2o"), DefenseConfig(), y, logits_clean=clean, logits_adv=adv,
                       soft_labels=soft)
    expected = 0.9 * soft_cross_entropy(adv, soft) + 0.1 * s2o_regulariser(clean, adv, y)
    assert torch.allclose(loss, expected)
    with pytest.raises(S2OError, match="soft labels"):
        method_loss(parse_method("avmixup"), DefenseConfig(), y, logits_clean=None, logits_adv=adv)


ADVERSARIAL_METHODS = [m for m in METHODS if m != "standard"]
# Training long enough to beat a standard model takes ~4 s a method; the 24 combinations are covered by the cheap
# step test below, and learning is checked on every base, every modifier and the paper's compositions.
LEARNING_METHODS = ["at", "trades", "mart", "avmixup", "at+s2o", "mart+s2o", "trades+s2o-kfac", "at+awp",
                    "trades+awp+s2o", "avmixup+awp+s2o-kfac"]


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
def test_every_method_takes_a_finite_step_that_moves_the_weights(method, small_digits):
    x, y = small_digits.tensors[0][:32], small_digits.tensors[1][:32]
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    config = DefenseConfig(eps=SMOKE.eps, alpha=SMOKE.alpha, steps=2, awp_warmup=0).for_method(method)
    awp = AWP(model, gamma=config.awp_gamma, lr=config.awp_lr) if parse_method(method).awp else None
    before = copy.deepcopy(model.state_dict())
    result = training_step(model, x, y, method=method, config=config,
                           optimizer=torch.optim.SGD(model.parameters(), lr=0.05), awp=awp)
    assert torch.isfinite(result.loss)
    after = model.state_dict()
    assert all(torch.isfinite(after[k]).all() for k in after if after[k].is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


@pytest.fixture(scope="module")
def small_digits(digits):
    x, y = tensors(digits[0], n=768)
    return torch.utils.data.TensorDataset(x, y)


@pytest.fixture(scope="module")
def standard_small(small_digits):
    return train_small("standard", small_digits, epochs=3)


@pytest.mark.parametrize("method", LEARNING_METHODS)
def test_every_base_and_modifier_trains_and_beats_standard_under_pgd(method, small_digits, standard_small, digits_test_tensors):
    model = train_small(method, small_digits, epochs=3, attack_steps=3, awp_warmup=1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    x, y = digits_test_tensors
    torch.manual_seed(0)

    def robust(m):
        x_adv = pgd(m, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=10)
        with torch.no_grad():
            return (m(x_adv).argmax(1) == y).float().mean().item()

    assert robust(model) > robust(standard_small) + 0.05


@pytest.mark.parametrize("beta", [0.5, 6.0])
def test_trades_loss_is_method_losss_trades_case(beta):
    """Notebook 04 checks its written-out loss against `trades_loss`: the same number `fit` trains on."""
    from s2o_lib.defenses import trades_loss

    torch.manual_seed(0)
    logits_clean, logits_adv, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    full = method_loss(parse_method("trades"), DefenseConfig(beta=beta), y, logits_clean=logits_clean,
                       logits_adv=logits_adv)
    assert torch.equal(trades_loss(logits_clean, logits_adv, y, beta=beta), full)
    assert not torch.equal(trades_loss(logits_clean, logits_adv, y, beta=beta + 1), full)
