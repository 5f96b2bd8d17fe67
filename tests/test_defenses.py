"""Defenses: method names, loss composition, AWP restoring weights, every method training on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s2o_lib.attacks import pgd
from s2o_lib.config import seed_everything
from s2o_lib.data import tensors
from s2o_lib.defenses import AWP, METHODS, DefenseConfig, Method, method_loss, parse_method, training_step
from s2o_lib.errors import S2OError
from s2o_lib.models import build_model
from s2o_lib.s2o import s2o_regulariser

from .conftest import SMOKE, train_small


def test_parse_method_composes_names():
    assert parse_method("trades+awp+s2o") == Method("trades", awp=True, s2o="official")
    assert parse_method("at+s2o+awp") == Method("at", awp=True, s2o="official")
    assert parse_method("mart+s2o-kfac").s2o == "kfac"
    assert parse_method(" AT ").name == "at"
    for name in METHODS:
        assert parse_method(name).name == name
    for required in ("standard", "at", "trades", "mart", "at+awp", "trades+awp", "at+s2o", "trades+s2o",
                     "mart+s2o", "trades+awp+s2o", "at+awp+s2o"):
        assert required in METHODS


@pytest.mark.parametrize("name", ["pgd", "at+s2o+s2o-kfac", "standard+awp", "at+awp+awp", "", "s2o", "trades+foo"])
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


ADVERSARIAL_METHODS = [m for m in METHODS if m != "standard"]


@pytest.fixture(scope="module")
def small_digits(digits):
    x, y = tensors(digits[0], n=768)
    return torch.utils.data.TensorDataset(x, y)


@pytest.fixture(scope="module")
def standard_small(small_digits):
    return train_small("standard", small_digits, epochs=3)


@pytest.mark.parametrize("method", ADVERSARIAL_METHODS)
def test_every_method_trains_and_beats_standard_under_pgd(method, small_digits, standard_small, digits_test_tensors):
    model = train_small(method, small_digits, epochs=3, attack_steps=3, awp_warmup=1)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    x, y = digits_test_tensors
    torch.manual_seed(0)

    def robust(m):
        x_adv = pgd(m, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=10)
        with torch.no_grad():
            return (m(x_adv).argmax(1) == y).float().mean().item()

    assert robust(model) > robust(standard_small) + 0.05
