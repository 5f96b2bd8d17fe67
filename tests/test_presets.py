"""Presets: each names its script; AWP and AVMixup settings are the authors'; baselines stay out of PRESETS."""

from __future__ import annotations

import pytest

from s2o_lib.awp import AWP_DEFAULTS
from s2o_lib.defenses import DefenseConfig
from s2o_lib.errors import S2OError
from s2o_lib.methods import parse_method
from s2o_lib.presets import AVMIXUP_SETTINGS, BASELINES, PRESETS, get_preset


def test_every_preset_names_its_script_and_a_valid_method():
    for preset in {**PRESETS, **BASELINES}.values():
        assert preset.source, preset.name
        parse_method(preset.method)
        assert get_preset(preset.name) is preset
    # PRESETS are the authors' S²O runs (with published figures); the baselines have none.
    assert all(parse_method(p.method).s2o == "official" and p.published for p in PRESETS.values())
    assert all(parse_method(p.method).s2o is None and not p.published for p in BASELINES.values())
    with pytest.raises(S2OError, match="avmixup-wrn"):
        get_preset("avmixup")


def test_awp_presets_use_their_scripts_settings():
    for name in ("paper-trades-awp-wrn", "trades-awp-wrn", "at-awp-prn18"):
        preset = get_preset(name)
        base = parse_method(preset.method).base
        assert (preset.fit["awp_gamma"], preset.fit["awp_warmup"]) == AWP_DEFAULTS[base][:2]
    assert get_preset("at-awp-prn18").fit["awp_gamma"] == 1e-2 and get_preset("at-awp-prn18").fit["awp_warmup"] == 0
    assert get_preset("trades-awp-wrn").fit["awp_gamma"] == 5e-3 and get_preset("trades-awp-wrn").fit["awp_warmup"] == 10


def test_baseline_schedules_are_the_s2o_scripts_and_avmixup_its_own():
    for name in ("trades-wrn", "mart-wrn"):  # the S²O scripts' schedule, not TRADES' 76 epochs / wd 2e-4
        fit = get_preset(name).fit
        assert (fit["epochs"], fit["weight_decay"], tuple(fit["milestones"])) == (200, 5e-4, (100, 150))
    fit = get_preset("avmixup-wrn").fit  # config.json: 80 000 steps of 128, lr ×0.1 at 40k and 60k, wd 2e-4
    steps_per_epoch = 50_000 / 128
    assert fit["weight_decay"] == 2e-4
    assert abs(fit["epochs"] - 80_000 / steps_per_epoch) < 1
    for milestone, step in zip(fit["milestones"], (40_000, 60_000), strict=True):
        assert abs(milestone - step / steps_per_epoch) < 1
    # AVMixup's γ, λ₁, λ₂ (config.json) are the library's defaults.
    assert AVMIXUP_SETTINGS == {"gamma": 2.0, "lambda1": 1.0, "lambda2": 0.1}
    config = DefenseConfig()
    assert (config.avmixup_gamma, config.avmixup_lambda1, config.avmixup_lambda2) == (2.0, 1.0, 0.1)


def test_at_prn18_is_the_paper_preset_without_s2o():
    baseline, paper = get_preset("at-prn18"), get_preset("paper-at-prn18")
    assert (baseline.arch, baseline.method) == (paper.arch, "at") and parse_method(paper.method).base == "at"
    assert baseline.fit == paper.fit and baseline.eval == paper.eval, "trained and evaluated the same way"
