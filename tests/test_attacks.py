"""Attacks: the ε-ball, [0, 1], strength against a textbook PGD written in the tests, and clear errors."""

from __future__ import annotations

import pytest
import torch

from s2o_lib.attacks import CW_MARGIN, cw_margin_loss, fgsm, margins, pgd, trades_kl_attack
from s2o_lib.errors import S2OError

from .conftest import SMOKE, reference_pgd


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_stays_in_ball_and_box(at_model, digits_test_tensors, norm, loss):
    x, y = digits_test_tensors[0][:128], digits_test_tensors[1][:128]
    eps = SMOKE.eps if norm == "linf" else 1.0
    x_adv = pgd(at_model, x, y, eps=eps, alpha=eps / 4, steps=10, norm=norm, loss=loss, restarts=2)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (size > 0).any(), "the attack did not move at all"


def test_pgd_lowers_accuracy_below_clean(at_model, digits_test_tensors):
    x, y = digits_test_tensors
    x_adv = pgd(at_model, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=20)
    assert _accuracy(at_model, x_adv, y) < _accuracy(at_model, x, y) - 0.05


def test_pgd_at_least_as_strong_as_a_reference_pgd(at_model, digits_test_tensors):
    x, y = digits_test_tensors
    torch.manual_seed(0)
    ours = _accuracy(at_model, pgd(at_model, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=20), y)
    theirs = _accuracy(at_model, reference_pgd(at_model, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=20), y)
    assert ours <= theirs + 0.02, (ours, theirs)


def test_more_steps_never_help_the_model_much(at_model, digits_test_tensors):
    x, y = digits_test_tensors
    torch.manual_seed(0)
    accs = [_accuracy(at_model, pgd(at_model, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=s), y) for s in (5, 20, 50)]
    assert accs[1] <= accs[0] + 0.02 and accs[2] <= accs[1] + 0.02, accs


def test_restarts_are_per_sample_worst_case(at_model, digits_test_tensors):
    x, y = digits_test_tensors
    torch.manual_seed(0)
    one = _accuracy(at_model, pgd(at_model, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=10), y)
    torch.manual_seed(0)
    three = _accuracy(at_model, pgd(at_model, x, y, eps=SMOKE.eps, alpha=SMOKE.eval_alpha, steps=10, restarts=3), y)
    assert three <= one + 1e-9


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_targeted_pgd_reaches_targets_on_standard_model(standard_model, digits_test_tensors, loss):
    x, y = digits_test_tensors[0][:100], digits_test_tensors[1][:100]
    target = (y + 1) % 10
    x_adv = pgd(standard_model, x, target, eps=0.3, alpha=0.02, steps=40, targeted=True, loss=loss)
    with torch.no_grad():
        hit = (standard_model(x_adv).argmax(1) == target).float().mean().item()
    assert hit > 0.8


def test_fgsm_is_one_signed_step(standard_model, digits_test_tensors):
    x, y = digits_test_tensors[0][:64], digits_test_tensors[1][:64]
    x_adv = fgsm(standard_model, x, y, eps=0.1)
    moved = (x_adv - x).abs()
    # Each pixel moves by exactly ε unless the [0, 1] box cut it short.
    interior = (x > 0.1) & (x < 0.9)
    assert (moved <= 0.1 + 1e-6).all()
    assert ((moved[interior] - 0.1).abs() < 1e-6).float().mean() > 0.95


def test_trades_attack_increases_kl(at_model, digits_test_tensors):
    x = digits_test_tensors[0][:128]
    x_adv = trades_kl_attack(at_model, x, eps=SMOKE.eps, alpha=SMOKE.alpha, steps=10)
    assert (x_adv - x).abs().max() <= SMOKE.eps + 1e-6
    with torch.no_grad():
        p = torch.softmax(at_model(x), 1)
        kl = torch.nn.functional.kl_div(torch.log_softmax(at_model(x_adv), 1), p, reduction="batchmean")
    assert kl > 0.01


def test_cw_margin_loss_matches_definition():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 2])
    # sample 0: 3 - 1 + 50 = 52 -> -52; sample 1: 1 - 5 + 50 = 46 -> -46
    assert torch.allclose(cw_margin_loss(logits, y), torch.tensor([-52.0, -46.0]))
    assert torch.allclose(cw_margin_loss(logits, y, margin=0.0), torch.tensor([-2.0, 0.0]))
    assert CW_MARGIN == 50.0 and torch.equal(cw_margin_loss(logits, y), -(margins(logits, y) + CW_MARGIN).clamp(min=0))


def test_margins():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert torch.equal(margins(logits, torch.tensor([0, 2])), torch.tensor([1.0, -4.0]))


def test_attacks_leave_model_mode_and_grads_untouched(standard_model, digits_test_tensors):
    x, y = digits_test_tensors[0][:16], digits_test_tensors[1][:16]
    standard_model.zero_grad(set_to_none=True)
    standard_model.train()
    try:
        pgd(standard_model, x, y, eps=0.1, alpha=0.02, steps=3)
        trades_kl_attack(standard_model, x, eps=0.1, alpha=0.02, steps=2)
        assert standard_model.training
        assert all(p.grad is None for p in standard_model.parameters())
    finally:
        standard_model.eval()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(eps=-0.1, alpha=0.01, steps=5), "eps must be"),
        (dict(eps=float("nan"), alpha=0.01, steps=5), "eps must be"),
        (dict(eps=0.1, alpha=0.01, steps=0), "steps must be"),
        (dict(eps=0.1, alpha=-1.0, steps=5), "alpha"),
        (dict(eps=0.1, alpha=0.01, steps=5, norm="l3"), "unknown norm"),
        (dict(eps=0.1, alpha=0.01, steps=5, loss="hinge"), "unknown attack loss"),
        (dict(eps=0.1, alpha=0.01, steps=5, restarts=0), "restarts"),
    ],
)
def test_bad_arguments_raise_clear_errors(standard_model, kwargs, message):
    x, y = torch.rand(2, 1, 16, 16), torch.tensor([0, 1])
    with pytest.raises(S2OError, match=message):
        pgd(standard_model, x, y, **kwargs)


def test_images_outside_unit_box_are_refused(standard_model):
    x = torch.rand(2, 1, 16, 16) * 2 - 0.5
    with pytest.raises(S2OError, match=r"\[0, 1\].*normalisation inside the model"):
        pgd(standard_model, x, torch.tensor([0, 1]), eps=0.1, alpha=0.01, steps=1)


def test_label_shape_is_checked(standard_model):
    with pytest.raises(S2OError, match="labels must have shape"):
        fgsm(standard_model, torch.rand(3, 1, 16, 16), torch.tensor([0, 1]), eps=0.1)
