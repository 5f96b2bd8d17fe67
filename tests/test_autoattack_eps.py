"""AutoAttack's own radius (issue 12, item 3): the paper evaluates PGD-20/CW-20 at ε = 0.031 and AutoAttack at
8/255, the released AutoAttack script's radius. The radius handed to pyautoattack's constructor is recorded."""

from __future__ import annotations

import json

import pytest
import torch

from s2o_lib.checkpoint import save_checkpoint
from s2o_lib.compare import compare_models
from s2o_lib.config import PROFILES
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import describe_protocol, robust_accuracy
from s2o_lib.models import build_model, model_spec
from s2o_lib.presets import BASELINES, PRESETS
from s2o_lib.suite.cli import main
from s2o_lib.suite.report import _radii

PAPER_PGD_EPS, PAPER_AA_EPS = 0.031, 8 / 255


@pytest.fixture
def aa_radii(monkeypatch):
    """The ε of every pyautoattack.AutoAttack built; the attack itself returns the clean images (no search)."""
    import pyautoattack

    seen: list[float] = []

    class Recording(pyautoattack.AutoAttack):
        def __init__(self, *args, eps, **kwargs):
            seen.append(float(eps))
            super().__init__(*args, eps=eps, **kwargs)

        def run_standard_evaluation(self, x, y, batch_size=250):
            return (x.clone(),)

    monkeypatch.setattr(pyautoattack, "AutoAttack", Recording)
    return seen


@pytest.fixture(scope="module")
def model_xy():
    """A small CNN and 16 inputs labelled with its own predictions (all clean-correct, so AutoAttack runs)."""
    torch.manual_seed(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1).eval()
    x = torch.rand(16, 1, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, (x, y)


def test_autoattack_gets_aa_eps_and_pgd_keeps_eps(aa_radii, model_xy):
    model, xy = model_xy
    result = robust_accuracy(model, xy, attacks=("clean", "pgd2", "autoattack"), eps=PAPER_PGD_EPS,
                             aa_eps=PAPER_AA_EPS, autoattack_version="fast")
    assert aa_radii == [PAPER_AA_EPS]
    assert result.protocol["eps"] == PAPER_PGD_EPS and result.protocol["aa_eps"] == PAPER_AA_EPS
    assert result.protocol["attacks"]["autoattack"].endswith(f"eps={PAPER_AA_EPS:g}")
    assert result.protocol["attacks"]["pgd2"].count(f"eps={PAPER_PGD_EPS:g}") == 1


def test_aa_eps_none_means_eps(aa_radii, model_xy):
    model, xy = model_xy
    result = robust_accuracy(model, xy, attacks=("autoattack",), eps=0.15, autoattack_version="fast")
    assert aa_radii == [0.15] and result.protocol["aa_eps"] == 0.15


def test_zero_pgd_radius_still_runs_autoattack_at_its_own(aa_radii, model_xy):
    model, xy = model_xy
    robust_accuracy(model, xy, attacks=("pgd2", "autoattack"), eps=0.0, aa_eps=0.05, autoattack_version="fast")
    assert aa_radii == [0.05]


def test_bad_aa_eps_is_one_line(model_xy):
    model, xy = model_xy
    with pytest.raises(S2OError, match="aa_eps"):
        robust_accuracy(model, xy, attacks=("autoattack",), eps=0.1, aa_eps=-1.0)


def test_profiles_and_presets_carry_both_radii():
    paper = PROFILES["paper"]
    assert (paper.eval_eps, paper.autoattack_eps) == (PAPER_PGD_EPS, PAPER_AA_EPS)
    for name in ("smoke", "class"):  # one radius for every attack there
        assert PROFILES[name].autoattack_eps == PROFILES[name].eval_eps
    for preset in (*PRESETS.values(), *BASELINES.values()):
        assert (preset.eval["eps"], preset.eval["aa_eps"]) == (PAPER_PGD_EPS, PAPER_AA_EPS), preset.name
    words = describe_protocol(("pgd20", "autoattack"), eps=PAPER_PGD_EPS, alpha=0.003, aa_eps=PAPER_AA_EPS)
    assert "eps=0.031," in words["pgd20"] and words["autoattack"].endswith("eps=0.0313725")
    assert "AutoAttack ε = 0.03137" in _radii({"eval_eps": PAPER_PGD_EPS, "aa_eps": PAPER_AA_EPS})[0]


def test_comparison_table_states_both_radii(aa_radii, model_xy):
    model, xy = model_xy
    table = compare_models({"at": model}, xy, eps=PAPER_PGD_EPS, aa_eps=PAPER_AA_EPS, attacks=("clean", "autoattack"),
                           autoattack_version="fast")
    assert aa_radii == [PAPER_AA_EPS]
    assert "L∞ ε = 0.031 (FGSM/PGD/CW), AutoAttack ε = 0.03137" in table.to_markdown()


def test_cli_evaluate_paper_profile_uses_8_over_255(aa_radii, model_xy, tmp_path, capsys):
    model, _ = model_xy
    checkpoint = save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(),
                                                     "meta": {"model": model_spec(model), "dataset": "digits"}})
    out = tmp_path / "eval.json"
    code = main(["evaluate", str(checkpoint), "--attacks", "clean,autoattack", "--n", "200", "--profile", "paper",
                 "--autoattack-version", "fast", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert aa_radii == [PAPER_AA_EPS]
    assert (report["eps"], report["aa_eps"]) == (PAPER_PGD_EPS, PAPER_AA_EPS)
    assert report["accuracy"]["clean"] > 0, "no clean-correct image: AutoAttack never ran"
    assert "0.0313725 (AutoAttack)" in capsys.readouterr().out
    main(["evaluate", str(checkpoint), "--attacks", "autoattack", "--n", "200", "--profile", "paper", "--eps", "0.05",
          "--autoattack-version", "fast"])  # --eps alone: one radius for every attack
    assert aa_radii[-1] == 0.05


@pytest.mark.parametrize("budget", ["full", "dry-run"])
def test_a_dry_run_runs_every_autoattack_attack_at_a_tiny_budget(monkeypatch, budget):
    """``autoattack_budget="dry-run"`` (a dry-run profile's, `run-notebooks --dry-run`): the standard version's four
    attacks at DRY_RUN_AUTOATTACK; the environment is not read (S2O_DRY_RUN set changes nothing)."""
    import pyautoattack

    from s2o_lib.evaluate import DRY_RUN_AUTOATTACK

    budgets = []

    class Recording(pyautoattack.AutoAttack):
        def run_standard_evaluation(self, x, y, batch_size=250):
            budgets.append((self.attacks_to_run, self.apgd.n_iter, self.apgd_targeted.n_iter, self.fab.n_iter,
                            self.square.n_queries))
            return (x.clone(),)

    monkeypatch.setattr(pyautoattack, "AutoAttack", Recording)
    monkeypatch.setenv("S2O_DRY_RUN", "1" if budget == "full" else "")  # the parameter decides, not the variable
    model = build_model("small-cnn", num_classes=10, in_channels=1).eval()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        y = model(x).argmax(1)                          # every image clean-correct: AutoAttack runs on all
    result = robust_accuracy(model, (x, y), attacks=("autoattack",), eps=0.1, autoattack_version="standard",
                             autoattack_budget=budget)
    iterations, queries = (DRY_RUN_AUTOATTACK["iterations"], DRY_RUN_AUTOATTACK["square_queries"]) \
        if budget == "dry-run" else (100, 5000)
    assert result.protocol.get("autoattack_budget", "full") == budget
    assert budgets == [(["apgd-ce", "apgd-t", "fab-t", "square"], iterations, iterations, iterations, queries)]


def test_a_dry_run_profile_passes_the_tiny_budget(monkeypatch):
    from s2o_lib.config import get_profile

    monkeypatch.setenv("S2O_DRY_RUN", "1")
    assert get_profile("class").autoattack_budget == "dry-run"
    monkeypatch.delenv("S2O_DRY_RUN")
    assert get_profile("class").autoattack_budget == "full"
    with pytest.raises(S2OError, match="AutoAttack budget"):
        robust_accuracy(build_model("small-cnn", num_classes=10, in_channels=1), (torch.rand(2, 1, 16, 16),
                        torch.tensor([0, 1])), attacks=("clean",), eps=0.1, autoattack_budget="tiny")
