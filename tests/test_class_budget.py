"""The pass arithmetic of benchmarks/class_budget.py (no timing: the script's numbers rest on these counts)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest

from s2o_lib.errors import S2OError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "class_budget.py"
_spec = importlib.util.spec_from_file_location("class_budget", _PATH)
cb = importlib.util.module_from_spec(_spec)
sys.modules["class_budget"] = cb
_spec.loader.exec_module(cb)

UNIT = cb.Unit(fwd=1.0, bwd_in=1.0, bwd_full=2.0)  # B_in = F, B_full = 2F: flops() counts forward-equivalents


@pytest.mark.parametrize("k", [1, 5, 10])
def test_training_step_pass_counts_follow_the_code(k):
    # AT: k (F + B_in) + F for pgd, then F + B_full on x_adv: 2k + 4 forward-equivalents.
    assert cb.step_passes("at", k) == cb.Passes(fwd=k + 2, bwd_in=k, bwd_full=1)
    assert cb.step_passes("at", k).flops(UNIT) == 2 * k + 4
    # TRADES: clean logits + k (F + B_in), then clean and adversarial training passes.
    assert cb.step_passes("trades", k) == cb.Passes(fwd=k + 3, bwd_in=k, bwd_full=2)
    for method in ("trades", "mart", "at+s2o", "trades+s2o", "mart+s2o"):
        assert cb.step_passes(method, k).flops(UNIT) == 2 * k + 7, method
    assert cb.step_passes("standard", k).flops(UNIT) == 3


def test_awp_adds_the_proxy_pass_of_the_plain_base_only_after_warm_up():
    assert cb.step_passes("at+awp", 5).flops(UNIT) == cb.step_passes("at", 5).flops(UNIT) + 3
    assert cb.step_passes("trades+awp", 5).flops(UNIT) == cb.step_passes("trades", 5).flops(UNIT) + 6
    assert cb.step_passes("at+awp+s2o", 5).flops(UNIT) == cb.step_passes("at+s2o", 5).flops(UNIT) + 3
    assert cb.step_passes("at+awp", 5, awp_active=False) == cb.step_passes("at", 5)
    # AWP perturbs in the epochs >= awp_warmup, counted from 1 (DefenseConfig.awp_active): 2, 3 and 4 of 4 here.
    run = cb.Train("at+awp", "at+awp", images=10, epochs=4, attack_steps=5, awp_warmup=2, eval_n=None, eval_steps=10)
    expected = 10 * (1 * cb.step_passes("at", 5).flops(UNIT) + 3 * cb.step_passes("at+awp", 5).flops(UNIT))
    assert run.passes_total(cb.ASSUMED["robust"]).flops(UNIT) == expected
    for warmup in (0, 1):  # both start at the first epoch
        every = cb.Train("at+awp", "at+awp", 10, 4, 5, warmup, None, 10).passes_total(cb.ASSUMED["robust"])
        assert every.flops(UNIT) == 40 * cb.step_passes("at+awp", 5).flops(UNIT)


def test_avmixup_is_counted_like_at():
    assert cb.step_passes("avmixup", 5) == cb.step_passes("at", 5)
    assert cb.step_passes("avmixup+s2o", 5) == cb.step_passes("at+s2o", 5)


def test_training_scales_with_epochs_and_images_and_adds_the_per_epoch_evaluation():
    def run(epochs, images, eval_n):
        train = cb.Train("at", "at", images, epochs, 5, 0, eval_n, 10)
        return train.passes_total(cb.ASSUMED["robust"]).flops(UNIT)

    assert run(6, 100, None) == 2 * run(3, 100, None) == 4 * run(3, 50, None)
    # fit's evaluation: clean F, PGD-10 (10 pairs + its prediction), the adversarial check: 23 per image and epoch.
    assert run(3, 100, 7) - run(3, 100, None) == 3 * 7 * 23


def test_autoattack_costs_only_apgd_ce_when_nothing_stays_robust():
    none_robust = cb.Accuracy(clean=0.8, autoattack=0.0)
    standard = cb.autoattack_passes("standard", none_robust)
    assert standard == cb.autoattack_passes("fast", none_robust)
    assert standard.flops(UNIT) == pytest.approx(0.8 * (101 * 2 + 4))
    # Square's 5000 queries dominate once images stay robust; the cost grows linearly with the robust fraction.
    a, b = (cb.autoattack_passes("standard", cb.Accuracy(0.8, r)).flops(UNIT) for r in (0.2, 0.4))
    assert b - a == pytest.approx(a - standard.flops(UNIT))
    assert b - a > 0.2 * 5000


def test_robust_accuracy_attacks_only_the_clean_correct_part():
    nothing_correct = cb.Accuracy(clean=0.0, autoattack=0.0)
    assert cb.robust_accuracy_passes(("clean", "pgd20", "cw20", "fgsm"), nothing_correct) == cb.FWD
    half = cb.Accuracy(clean=0.5, autoattack=0.0)
    # PGD-20: 20 (F + B_in) + its prediction + the checking forward, on half of the images.
    assert cb.robust_accuracy_passes(("pgd20",), half).flops(UNIT) == 1 + 0.5 * 42


def _costs(profile, methods_09=cb.COMPARISON_METHODS):
    return cb.notebook_costs(profile, UNIT, cb.ASSUMED, tuple(methods_09))


def test_a_cached_model_is_paid_by_the_first_notebook_that_asks_for_it():
    costs = {c.name: c for c in _costs(cb.get_profile("class"))}
    assert costs["01"].trained_first == ["standard"]
    assert costs["02"].trained_first == ["at"]
    assert costs["03"].trained_first == [] and costs["03"].train_first == 0
    assert costs["03"].train_alone > 0  # alone, 03 trains standard and AT itself
    assert set(costs["04"].trained_first) == {"trades", "trades-beta0.5", "trades-beta2"}
    assert costs["06"].trained_first == []
    assert "trades" not in costs["06b"].trained_first and "at+s2o" in costs["06b"].trained_first
    assert all(c.train_first <= c.train_alone for c in costs.values())
    first = [key for c in costs.values() for key in c.trained_first]
    assert len(first) == len(set(first))


def test_notebook_09_trains_only_its_method_list():
    few = {c.name: c for c in _costs(cb.get_profile("class"), ["standard", "at", "mart"])}
    every = {c.name: c for c in _costs(cb.get_profile("class"))}
    assert few["09"].trained_first == ["mart"]
    assert few["09"].runs < every["09"].runs


def test_the_profile_drives_the_costs():
    base = cb.get_profile("class")
    short = {c.name: c for c in _costs(dataclasses.replace(base, epochs=base.epochs // 3))}
    full = {c.name: c for c in _costs(base)}
    # 02 trains AT in the profile's epochs; its per-epoch evaluation scales with them too.
    assert short["02"].train_first == pytest.approx(full["02"].train_first * (base.epochs // 3) / base.epochs)
    assert short["02"].runs == full["02"].runs


def test_command_line_overrides_and_candidates():
    profile, methods = cb.effective_profile(cb.parse_args(["--epochs", "3", "--train-subset", "0", "--eval-n", "50"]))
    assert (profile.epochs, profile.train_subset, profile.eval_n) == (3, None, 50)
    assert methods == cb.get_profile("class").compare_methods  # what notebook 09 trains in class
    assert cb.effective_profile(cb.parse_args(["--candidate", "previous"]))[1] == tuple(cb.COMPARISON_METHODS)
    assert cb.effective_profile(cb.parse_args(["--methods-09", "standard, at"]))[1] == ("standard", "at")
    profile, _ = cb.effective_profile(cb.parse_args(["--candidate", "recommended", "--epochs", "4"]))
    assert profile.arch == cb.CANDIDATES["recommended"]["arch"] and profile.epochs == 4
    with pytest.raises(S2OError, match="unknown candidate"):
        cb.effective_profile(cb.parse_args(["--candidate", "nope"]))


def test_flop_units_of_a_small_model():
    unit = cb.count_unit(cb.build_model("small-cnn", num_classes=10, in_channels=1), shape=(1, 16, 16))
    assert unit.fwd > 0
    assert unit.bwd_in == pytest.approx(unit.fwd)          # every layer's input gradient, the image's included
    assert unit.fwd < unit.bwd_full < 2 * unit.fwd         # weights + inputs, but no gradient for the image


def test_a_training_run_takes_the_longer_of_gpu_and_data_loading_time():
    profile = dataclasses.replace(cb.get_profile("class"), train_subset=1000, epochs=2)
    costs = {c.name: c for c in cb.notebook_costs(profile, UNIT, cb.ASSUMED, tuple(cb.COMPARISON_METHODS),
                                                  data_us=50.0)}
    (flops, proxy, data), = costs["02"].runs_first                   # AT, first trained in 02 (no AWP proxy)
    assert proxy == 0
    assert data == pytest.approx(1000 * 2 * 50e-6)
    assert costs["03"].runs_first == [] and len(costs["03"].runs_alone) == 2
    slow_gpu, fast_gpu = flops / data / 10, flops / data * 10      # FLOP/s that make the GPU 10x slower/faster
    runs = costs["02"].runs
    assert costs["02"].minutes(slow_gpu * 1e-12) == pytest.approx((flops + runs) / slow_gpu / 60)
    assert costs["02"].minutes(fast_gpu * 1e-12) == pytest.approx(data / 60 + runs / fast_gpu / 60)
    assert costs["02"].minutes(fast_gpu * 1e-12, bundle=True) == pytest.approx(runs / fast_gpu / 60)


def test_fp16_prices_fits_work_at_fp16_and_awps_proxy_and_the_evaluation_at_fp32():
    profile = dataclasses.replace(cb.get_profile("class"), train_subset=1000, epochs=4, awp_warmup=2)
    costs = {c.name: c for c in cb.notebook_costs(profile, UNIT, cb.ASSUMED, tuple(cb.COMPARISON_METHODS))}
    (flops, proxy, _), = costs["05"].runs_first                      # at+awp, AWP in epochs 2-4
    assert proxy == pytest.approx(1000 * 3 * cb.proxy_passes("at+awp").flops(UNIT)) and 0 < proxy < flops
    fp32, fp16 = 2.0, 5.0
    expected = ((flops - proxy) / fp16 + proxy / fp32 + costs["05"].runs / fp32) / 1e12 / 60
    assert costs["05"].minutes(fp32, train_tflops=fp16) == pytest.approx(expected)
    assert costs["05"].minutes(fp32, train_tflops=fp16) < costs["05"].minutes(fp32)
    assert costs["05"].minutes(fp32, train_tflops=fp16, bundle=True) == costs["05"].minutes(fp32, bundle=True)


def test_fp16_figures_are_the_mixed_run_and_its_pessimistic_discount():
    tf = cb.throughputs(None)
    assert tf["fp16"] == tf["mixed"] and tf["fp16"] > 1.5 * tf["fp32"]
    assert tf["fp16-low"] == pytest.approx(tf["fp16"] * tf["fp32-low"] / tf["fp32"])
    measured = cb.throughputs(3.0, 7.0)
    assert (measured["fp32"], measured["fp32-low"], measured["fp16"], measured["fp16-low"]) == (3.0, 3.0, 7.0, 7.0)


def test_the_class_lab_from_an_empty_cache_fits_45_t4_minutes_at_the_pessimistic_fp16_figure(capsys):
    """Issue 22's goal, from the FLOP count (no GPU): the whole suite, no bundle, Drive cache filling as it goes."""
    cb.main([])
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert verdict.endswith(f"fits ≤ {cb.BUDGET_SUITE_FP16_MIN:g}"), verdict
