"""Tests for `s2o_lib.evaluate` (per-sample worst-case robust accuracy, AutoAttack) and `s2o_lib.sanity` (the
sanity checks and the gradient-masked model that fails them), which share the models trained here.

The models are trained with `s2o_lib.train.fit` once per module: a standard small CNN (also the surrogate of
the transfer check) and an adversarially trained one, on the library's digits at 16×16.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from s2o_lib.data import load_dataset, tensors
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import (
    ATTACKS,
    AUTOATTACK_PROTOCOLS,
    EvalResult,
    describe_protocol,
    parse_attack,
    robust_accuracy,
)
from s2o_lib.models import build_model
from s2o_lib.sanity import Check, SanityReport, _at_most, mask_gradients, sanity_checks
from s2o_lib.settings import fit_options
from s2o_lib.train import fit

from .conftest import reference_pgd

EPS, ALPHA = 0.15, 0.02  # the smoke profile's evaluation radius and step


# ------------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split():
    """(x_train, y_train, x_test, y_test): the library's fixed digits split (16×16, in [0, 1])."""
    return (*tensors(load_dataset("digits", "train")), *tensors(load_dataset("digits", "test")))


def _fit(split, method: str, *, seed: int, epochs: int, milestones: tuple[int, ...], **kwargs) -> torch.nn.Module:
    """A small CNN trained with `s2o_lib.train.fit` (SGD lr 0.05, batch 64) on the training part of the split."""
    x_train, y_train, _, _ = split
    torch.manual_seed(seed)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    fit(model, loader, method=method, epochs=epochs, progress=False,
        **fit_options(lr=0.05, milestones=milestones, **kwargs))
    return model.eval()


@pytest.fixture(scope="module")
def at_model(split):
    """PGD-5 adversarial training at eps 0.15 (step 0.05), 5 epochs."""
    return _fit(split, "at", seed=0, epochs=5, milestones=(4,), eps=EPS, alpha=0.05, attack_steps=5)


@pytest.fixture(scope="module")
def std_model(split):
    """Standard training, 4 epochs."""
    return _fit(split, "standard", seed=0, epochs=4, milestones=(3,))


@pytest.fixture(scope="module")
def surrogate(std_model):
    # The transfer check needs a model trained independently of the one under test: the standard one is.
    return std_model


@pytest.fixture(scope="module")
def test_xy(split):
    return split[2], split[3]


@pytest.fixture(scope="module")
def at_result(at_model, test_xy):
    return robust_accuracy(at_model, test_xy, attacks=("clean", "fgsm", "pgd20", "cw20"), eps=EPS, alpha=ALPHA,
                           n=200, return_per_sample=True)


# ------------------------------------------------------------------------------------------- robust_accuracy
def test_models_are_usable(at_result):
    # The fixtures must give a model worth evaluating, else the comparisons below say nothing.
    assert at_result["clean"] > 0.8
    assert 0.1 < at_result["pgd20"] < at_result["clean"] - 0.1


def test_robust_accuracy_ordering_and_worst_case(at_result):
    assert isinstance(at_result, EvalResult)
    assert list(at_result) == ["clean", "fgsm", "pgd20", "cw20", "worst_case"]
    assert all(0.0 <= v <= 1.0 for v in at_result.values())
    for name in ("fgsm", "pgd20", "cw20"):
        assert at_result[name] <= at_result["clean"]
        assert at_result["worst_case"] <= at_result[name]
    assert at_result["pgd20"] <= at_result["fgsm"] + 0.02
    per = at_result.per_sample
    assert per["clean"].dtype == torch.bool and per["clean"].shape == (200,)
    for name in ("fgsm", "pgd20", "cw20"):
        assert not (per[name] & ~per["clean"]).any(), "robust must imply clean-correct, per sample"
    expected_worst = per["clean"] & per["fgsm"] & per["pgd20"] & per["cw20"]
    assert torch.equal(per["worst_case"], expected_worst)
    assert at_result["worst_case"] == pytest.approx(expected_worst.float().mean().item())


def test_standard_model_is_not_robust(std_model, test_xy):
    result = robust_accuracy(std_model, test_xy, attacks=("clean", "pgd20"), eps=EPS, alpha=ALPHA, n=100)
    assert result["clean"] > 0.9
    assert result["pgd20"] < 0.1


def test_pgd_no_weaker_than_a_reference_pgd(at_model, at_result, test_xy):
    x, y = test_xy[0][:200], test_xy[1][:200]
    ours = at_result["pgd20"]  # the library's PGD-20 on the same 200 samples, eps and step
    torch.manual_seed(0)
    x_adv = reference_pgd(at_model, x, y, eps=EPS, alpha=ALPHA, steps=20)
    with torch.no_grad():
        clean = at_model(x).argmax(1) == y
        theirs = (clean & (at_model(x_adv).argmax(1) == y)).float().mean().item()
    assert ours <= theirs + 0.03, f"library PGD-20 {ours:.3f} weaker than the reference PGD-20 {theirs:.3f}"


def test_autoattack_fast_runs_pyautoattack(at_model, test_xy, monkeypatch):
    import pyautoattack

    calls = []
    original = pyautoattack.AutoAttack.run_standard_evaluation

    def spy(self, x, y, **kwargs):
        calls.append((list(self.attacks_to_run), self.apgd_targeted.n_target_classes, self.apgd.n_restarts))
        return original(self, x, y, **kwargs)

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", spy)
    rng_before = torch.random.get_rng_state()
    at_model.train()
    grads_before = [p.grad for p in at_model.parameters()]
    try:
        result = robust_accuracy(at_model, test_xy, attacks=("clean", "pgd20", "autoattack"), eps=EPS, alpha=ALPHA,
                                 n=64, autoattack_version="fast", return_per_sample=True)
        assert at_model.training, "the model's mode must be restored"
    finally:
        at_model.eval()
    assert calls == [(["apgd-ce", "apgd-t"], 3, 1)]
    assert torch.equal(torch.random.get_rng_state(), rng_before), "pyautoattack's reseeding must not leak"
    assert [p.grad for p in at_model.parameters()] == grads_before
    assert result["autoattack"] <= result["clean"]
    assert result["autoattack"] <= result["pgd20"] + 0.05
    assert result["worst_case"] <= result["autoattack"]
    assert not (result.per_sample["autoattack"] & ~result.per_sample["clean"]).any()
    assert result.protocol["autoattack_version"] == "fast"
    assert result.protocol["attacks"]["autoattack"].startswith(AUTOATTACK_PROTOCOLS["fast"])
    assert "no FAB-T, no Square" in result.protocol["attacks"]["autoattack"]


def test_data_forms_agree(at_model, test_xy):
    x, y = test_xy[0][:50], test_xy[1][:50]
    attacks = ("clean", "fgsm")  # deterministic
    from_tuple = robust_accuracy(at_model, test_xy, attacks=attacks, eps=EPS, n=50)
    from_dataset = robust_accuracy(at_model, TensorDataset(x, y), attacks=attacks, eps=EPS)
    from_loader = robust_accuracy(at_model, DataLoader(TensorDataset(*test_xy), batch_size=16), attacks=attacks,
                                  eps=EPS, n=50, batch_size=7)
    assert dict(from_tuple) == dict(from_dataset) == dict(from_loader)
    assert from_tuple.protocol["n"] == 50
    assert robust_accuracy(at_model, (x, y), attacks=("clean",), eps=EPS, n=10**6).protocol["n"] == 50


def test_seeded_and_generic_names(at_model, test_xy):
    kwargs = dict(attacks=("PGD5", "cw7", "pgd5"), eps=EPS, alpha=ALPHA, n=60, seed=3, return_per_sample=True)
    a = robust_accuracy(at_model, test_xy, **kwargs)
    b = robust_accuracy(at_model, test_xy, **kwargs)
    assert list(a) == ["pgd5", "cw7", "worst_case"]
    assert torch.equal(a.per_sample["pgd5"], b.per_sample["pgd5"])
    assert torch.equal(a.per_sample["cw7"], b.per_sample["cw7"])
    assert "CW∞-7" in a.protocol["attacks"]["cw7"] and "margin 50" in a.protocol["attacks"]["cw7"]
    zero = robust_accuracy(at_model, test_xy, attacks=("clean", "pgd5"), eps=0.0, n=60)
    assert zero["pgd5"] == zero["clean"]


def test_describe_protocol():
    words = describe_protocol(ATTACKS, eps=0.031, alpha=0.003, autoattack_version="standard")
    assert set(words) == {*ATTACKS, "worst_case"}
    assert "step 0.003" in words["pgd20"]
    assert "FAB-T" in words["autoattack"] and "Square" in words["autoattack"]
    assert parse_attack("cw100").steps == 100


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps=-0.1), "eps must be a finite number >= 0"),
        (dict(eps=0.1, attacks=("clean", "pgd")), "valid attack names: clean, fgsm, pgd20, cw20, autoattack"),
        (dict(eps=0.1, attacks=("deepfool",)), "pgdN / cwN"),
        (dict(eps=0.1, attacks=("pgd0",)), "unknown attack 'pgd0'"),
        (dict(eps=0.1, attacks=("worst_case",)), "unknown attack"),
        (dict(eps=0.1, attacks=()), "attacks is empty"),
        (dict(eps=0.1, alpha=-1.0), "alpha"),
        (dict(eps=0.1, n=0), "n must be an integer >= 1"),
        (dict(eps=0.1, autoattack_version="quick"), "standard, fast|fast, standard"),
    ],
)
def test_bad_arguments_raise(at_model, test_xy, kwargs, match):
    with pytest.raises(S2OError, match=match):
        robust_accuracy(at_model, test_xy, **kwargs)


def test_images_outside_unit_interval_raise(at_model, test_xy):
    x, y = test_xy[0][:8], test_xy[1][:8]
    with pytest.raises(S2OError, match=r"\[0, 1\]"):
        robust_accuracy(at_model, (x * 255, y), attacks=("clean",), eps=0.1)
    with pytest.raises(S2OError, match=r"\[0, 1\]"):
        sanity_checks(at_model, (x - 0.5, y), eps=0.1)
    with pytest.raises(S2OError, match="Dataset"):
        robust_accuracy(at_model, x, attacks=("clean",), eps=0.1)
    with pytest.raises(S2OError, match="eps"):
        sanity_checks(at_model, (x, y), eps=-1.0)


# ------------------------------------------------------------------------------------------- gradient masking
def test_masked_model_keeps_predictions_breaks_gradients(at_model, test_xy):
    x, y = test_xy[0][:100], test_xy[1][:100]
    for method in ("saturate", "quantize"):
        masked = mask_gradients(at_model, method=method)
        with torch.no_grad():
            agree = (masked(x).argmax(1) == at_model(x).argmax(1)).float().mean().item()
        assert agree >= 0.98
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(masked(xg), y, reduction="sum"), xg)
        zero = (grad.flatten(1).abs().sum(1) == 0).float().mean().item()
        assert zero > 0.8, f"{method}: only {zero:.2f} of gradients are zero"
    # The masking fools the attack, not the model: PGD on the masked model "looks" robust.
    looks = robust_accuracy(mask_gradients(at_model), (x, y), attacks=("pgd20",), eps=EPS, alpha=ALPHA)["pgd20"]
    real = robust_accuracy(at_model, (x, y), attacks=("pgd20",), eps=EPS, alpha=ALPHA)["pgd20"]
    assert looks > real + 0.3
    with pytest.raises(S2OError, match="saturate"):
        mask_gradients(at_model, method="blur")


# ------------------------------------------------------------------------------------------- sanity checks
SANITY = dict(eps=EPS, alpha=ALPHA, n=100, steps=(10, 30), restarts=3)
CHECKS = ["eps_monotone", "large_eps", "more_steps", "more_restarts", "whitebox_beats_transfer", "attack_ordering",
          "ce_cw_agreement", "zero_gradients"]


def test_sanity_checks_pass_on_adversarially_trained_model(at_model, surrogate, test_xy):
    report = sanity_checks(at_model, test_xy, surrogate=surrogate, **SANITY)
    assert isinstance(report, SanityReport)
    assert [c.name for c in report.checks] == CHECKS
    assert all(isinstance(c, Check) and c.passed is True for c in report.checks), str(report)
    assert report.passed
    assert report["attack_ordering"].values["autoattack_version"] == "fast"
    assert report["large_eps"].values["accuracy"] <= 0.1
    text, table = str(report), report.to_markdown()
    assert "PASSED" in text and all(name in text for name in CHECKS)
    assert table.count("\n| ") == len(CHECKS) + 1


@pytest.mark.filterwarnings("ignore:AutoAttack. there are")  # pyautoattack's own zero-gradient warning
def test_sanity_checks_fire_on_gradient_masked_model(at_model, surrogate, test_xy):
    # AutoAttack is left out here (it is exercised on the AT model): none of the checks that must fire needs it.
    report = sanity_checks(mask_gradients(at_model), test_xy, surrogate=surrogate, autoattack_version=None, **SANITY)
    assert not report.passed, str(report)
    assert report["zero_gradients"].passed is False
    assert report["whitebox_beats_transfer"].passed is False
    assert report["large_eps"].passed is False
    assert report["ce_cw_agreement"].passed is False, "saturated logits stall PGD-CE, not the margin loss"
    gap = report["ce_cw_agreement"].values
    assert gap["difference"] == pytest.approx(gap["pgd20"] - gap["cw20"]) and gap["difference"] > 0.10
    assert "FAILED" in str(report) and "FAIL" in report.to_markdown()
    assert set(report.failed) >= {"zero_gradients", "whitebox_beats_transfer", "large_eps", "ce_cw_agreement"}


def test_ce_cw_check_uses_the_tolerance_of_notebook_02(at_model, test_xy):
    """The same model passes or fails only by the tolerance: the check compares |PGD-20 − CW-20| with it."""
    kwargs = dict(eps=EPS, alpha=ALPHA, n=40, steps=(5, 10), restarts=2, eps_grid=(EPS,), autoattack_version=None)
    report = sanity_checks(at_model, test_xy, **kwargs)
    gap = abs(report["ce_cw_agreement"].values["difference"])
    assert report["ce_cw_agreement"].passed == (gap <= 0.10 + 1e-6)
    strict = sanity_checks(at_model, test_xy, max_ce_cw_gap=gap / 2, **kwargs) if gap > 0 else None
    assert strict is None or strict["ce_cw_agreement"].passed is False


@pytest.mark.parametrize(("hits", "limit", "expected"), [(3, 0.10, True), (4, 0.10, False), (1, 0.0, False),
                                                        (9, 0.30, True), (10, 0.30, False)])
def test_every_check_counts_a_fraction_at_its_limit_as_within_it(hits, limit, expected):
    """Fractions of 30 images as the checks compute them (a float32 mean): exactly at the limit passes, one image
    more fails."""
    fraction = (torch.arange(30) < hits).float().mean().item()
    if expected:
        assert fraction > limit, "the plain comparison would fail this image count: the case the helper exists for"
    assert _at_most(fraction, limit) is expected


def test_sanity_transfer_check_skipped_without_surrogate(at_model, test_xy):
    report = sanity_checks(at_model, test_xy, eps=EPS, alpha=ALPHA, n=40, steps=(5, 10), restarts=2,
                           eps_grid=(EPS / 2, EPS), autoattack_version=None)
    skipped = report["whitebox_beats_transfer"]
    assert skipped.passed is None and skipped.status == "skipped"
    assert report.passed  # skipped checks do not fail the report
    assert "autoattack" not in report["attack_ordering"].values["accuracy"]
    with pytest.raises(KeyError, match="zero_gradients"):
        report["nonexistent"]


def test_sanity_runs_each_seeded_pgd_once(monkeypatch, at_model, test_xy):
    """The ε-grid's PGD-20 at ε is also the steps check's PGD-20: it runs once and answers both."""
    from s2o_lib import sanity

    calls = []
    real = sanity.robust_accuracy
    monkeypatch.setattr(sanity, "robust_accuracy", lambda *a, **k: calls.append(k.get("attacks")) or real(*a, **k))
    x, y = test_xy
    setup = sanity._Setup(model=at_model, x=x[:40], y=y[:40], eps=0.15, step=0.0375, seed=0,
                          device=torch.device("cpu"), batch_size=256, tol=0.03)
    first = setup.pgd_correct(eps=0.15, alpha=0.0375, steps=20)
    first[:] = False                                   # a caller changing its copy changes nothing stored
    again = setup.pgd_correct(eps=0.15, alpha=0.0375, steps=20)
    assert calls == [("pgd20",)]
    fresh = real(at_model, (x[:40], y[:40]), attacks=("pgd20",), eps=0.15, alpha=0.0375, seed=0,
                 return_per_sample=True).per_sample["pgd20"]
    assert torch.equal(again, fresh)
    setup.pgd_correct(eps=0.15, alpha=0.0375, steps=10)
    assert calls == [("pgd20",), ("pgd10",)]
