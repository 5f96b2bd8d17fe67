"""Tests for `benchmarks/regime.py`: the pre-registered analysis of the small-data regime, on constructed records (whose
answers are known by hand) and on the committed results (shape and sanity only: never which method wins)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from benchmarks.regime import (
    PLANS,
    RESULTS_DIR,
    WORST,
    WORST_ALL,
    analyse_regime,
    interval_cell,
    load_results,
    method_label,
    regime_key,
)
from s2o_lib.errors import S2OError
from s2o_lib.stats import NO_DIFFERENCE, holm

N = 20  # images per constructed evaluation
REGIME = {"subset": 100, "epochs": 80, "subset_kind": "stratified", "data_seed": 0, "schedule": "piecewise",
          "milestone_fracs": [0.5, 0.75], "lr": 0.05, "batch_size": 16, "awp_gamma": 0.01, "awp_warmup": 0}


def bits(correct: int, *, offset: int = 0) -> str:
    """N outcomes with ``correct`` ones starting at ``offset`` (wrapping)."""
    out = ["0"] * N
    for i in range(correct):
        out[(offset + i) % N] = "1"
    return "".join(out)


def record(method: str, seed: int, pgd: int, *, cw: int | None = None, offset: int = 0, **regime) -> dict:
    """A JSON line as regime_search writes it, with ``pgd`` (and ``cw``) images of N correct."""
    cw = pgd if cw is None else cw
    test_bits = {"clean": bits(N), "pgd20": bits(pgd, offset=offset), "cw20": bits(cw, offset=offset + 1)}
    test = {k: v.count("1") / N for k, v in test_bits.items()}
    final = {"test": test, "test_bits": test_bits, "train": {"clean": 1.0, "pgd20": 0.8}}
    return {"method": method, "seed": seed, "regime": {**REGIME, **regime}, "milestones": [40, 60],
            "curve": [{"epoch": 40, "train_pgd10": 0.5, "test_pgd10": 0.3}, {"epoch": 80, "train_pgd10": 0.7,
                                                                            "test_pgd10": 0.2}],
            "final": {"last": final, "best": {**final, "epoch": 40}}}


def family(shift: dict[str, list[int]]) -> list[dict]:
    """at, trades (10 of N right in every seed) and their treatments, 10 + shift[treatment][seed] right."""
    records = []
    for seed, _ in enumerate(shift["at+s2o"]):
        records += [record("at", seed, 10), record("trades", seed, 10)]
        for treatment in ("at+s2o", "trades+s2o", "at+awp"):
            records.append(record(treatment, seed, 10 + shift[treatment][seed]))
    return records


SHIFTS = {"at+s2o": [1, 2, 0, 3], "trades+s2o": [0, -1, 1, 0], "at+awp": [-4, -5, -3, -6]}


def test_primary_comparisons_are_the_t_test_on_per_seed_differences_with_holm_over_three():
    analysis = analyse_regime(family(SHIFTS))
    primary = analysis.primary()
    assert [(c.base, c.treatment) for c in primary] == [("at", "at+s2o"), ("trades", "trades+s2o"),
                                                       ("at", "at+awp[g0.01,w0]")]
    raw = []
    for c, treatment in zip(primary, ("at+s2o", "trades+s2o", "at+awp"), strict=True):
        diffs = [d / N for d in SHIFTS[treatment]]
        assert c.difference == pytest.approx(100 * np.mean(diffs))
        assert c.p_value == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue)
        half = sps.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / math.sqrt(len(diffs))
        assert c.interval == pytest.approx((100 * (np.mean(diffs) - half), 100 * (np.mean(diffs) + half)))
        assert c.wilcoxon_p == pytest.approx(sps.wilcoxon(diffs).pvalue)
        assert c.endpoint == "pgd20" and c.checkpoint == "last" and c.seeds == (0, 1, 2, 3)
        raw.append(c.p_value)
    assert [c.holm_p for c in primary] == pytest.approx(holm(raw))
    # AWP loses 3-6 images in every seed: lower after Holm; the zero-mean TRADES shift is not detected.
    assert primary[2].significant() and primary[2].verdict().startswith("lower")
    assert not primary[1].significant() and primary[1].verdict().startswith("no detectable difference")
    # Secondary comparisons carry no Holm p-value and never enter the family.
    assert all(c.holm_p is None for c in analysis.comparisons if not c.primary)


def test_worst_case_endpoint_is_the_per_image_and_of_pgd_and_cw():
    # PGD right on images 0-9, CW right on 1-10 (offset 1): the worst case is right on 1-9, 9 images.
    records = [record(m, s, 10) for s in (0, 1) for m in ("at", "at+s2o")]
    records[1] = record("at+s2o", 0, 10, cw=10, offset=5)   # PGD 5-14, CW 6-15: worst case 6-14, 9 images
    analysis = analyse_regime(records)
    worst = analysis.comparison("at", "at+s2o", endpoint=WORST)
    assert worst.stats.per_seed[0].accuracy_a == pytest.approx(9 / N)
    assert worst.stats.per_seed[0].accuracy_b == pytest.approx(9 / N)
    # Same counts, other images: McNemar sees the discordant images, the difference is zero.
    assert worst.stats.per_seed[0].b == 5 and worst.stats.per_seed[0].c == 5


def test_labels_and_regime_key_follow_the_benchmark():
    r = record("at+awp", 0, 10, awp_gamma=0.005, awp_warmup=10)
    assert method_label(r) == "at+awp[g0.005,w10]"
    assert method_label(record("at+s2o", 0, 10)) == "at+s2o"
    assert regime_key(r) == "n100s0-e80-pw40-60-lr0.05-b16"


def test_one_regime_at_a_time_and_clear_errors(tmp_path):
    mixed = [record("at", 0, 10), record("at", 1, 10, subset=200)]
    with pytest.raises(S2OError, match="2 regimes"):
        analyse_regime(mixed)
    with pytest.raises(S2OError, match="no regime results"):
        load_results("nope", directory=tmp_path)
    analysis = analyse_regime(family(SHIFTS))
    with pytest.raises(S2OError, match="no comparison"):
        analysis.comparison("mart", "mart+s2o")
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(x) for x in family(SHIFTS)) + "\n")
    assert len(load_results("r", directory=tmp_path)) == len(family(SHIFTS))


def test_frames_and_curves_have_one_row_per_item():
    analysis = analyse_regime(family(SHIFTS))
    methods = analysis.method_frame()
    assert list(methods.index) == ["at", "at+s2o", "at+awp[g0.01,w0]", "trades", "trades+s2o"]
    assert methods.loc["at", "pgd20"] == pytest.approx(50.0) and methods.loc["at", "seeds"] == 4
    frame = analysis.frame(primary_only=True)
    assert len(frame) == 3 and frame["primary"].all()
    assert analysis.curves("at").loc[80, "test_pgd10"] == pytest.approx(20.0)


@pytest.mark.skipif(not (RESULTS_DIR / "confirm.jsonl").is_file(), reason="committed regime results absent")
def test_the_committed_confirmatory_round_analyses_cleanly():
    analysis = analyse_regime(load_results("confirm"))
    assert len(analysis.primary()) == 3
    for c in analysis.comparisons:
        low, high = c.interval
        assert low <= c.difference <= high
        for p in (c.p_value, c.wilcoxon_p, c.holm_p):
            assert p is None or 0 <= p <= 1
        assert c.holm_p is None or c.holm_p >= c.p_value


def test_markdown_lists_every_comparison_once_with_the_verdict_of_the_primary_ones():
    analysis = analyse_regime(family(SHIFTS))
    text = analysis.to_markdown()
    rows = [line for line in text.splitlines() if line.startswith(("| at", "| trades"))]
    methods, comparisons = rows[:5], rows[5:]
    assert len(methods) == 5 and len(comparisons) == len(analysis.comparisons)
    assert comparisons[2].startswith("| at+awp[g0.01,w0] − at | pgd20 | last |") and comparisons[2].endswith(
        "| lower |")
    assert comparisons[1].endswith("| no detectable difference at this scale |")


def test_source_line_names_the_script_the_seeds_and_the_regime():
    line = analyse_regime(family(SHIFTS)).source_line()
    assert line.startswith("from benchmarks/regime_search.py, 4 seeds (0–3), run offline")
    assert "100 training digits, 80 epochs" in line and f"the {N} test digits" in line


# ----------------------------------------------------------------------------------------- the control round
def control_record(method: str, seed: int, pgd: int, *, aa: int, stats: dict | None = None) -> dict:
    """A control-round line: PGD and CW right on images 0..pgd-1, AutoAttack on 0..aa-1, with statistics."""
    r = record(method, seed, pgd)
    r["round"] = "control"
    for which in ("last", "best"):
        r["final"][which]["test_bits"] = {**r["final"][which]["test_bits"], "cw20": bits(pgd),
                                          "autoattack": bits(aa)}
    r["final"]["last"]["stats"] = stats
    return r


def _stats(**changes) -> dict:
    base = {"logit_corr": 0.3, "head_rho": 0.2, "R_fro": 40.0, "R_dim": 1600.0, "R_logdet": -300.0,
            "jin_neg_logdet": 3000.0, "sigma_isotropic": 2.0, "sigma_correlated": 3.0, "sigma_jin": 2.0,
            "log10_bound_independent": 6.0, "log10_bound_correlated": 6.5, "log10_bound_jin": 6.6,
            "head_shape": [10, 128]}
    return {**base, **changes}


def control_family() -> list[dict]:
    """Three seeds of at, at+ls, at+s2o: AutoAttack-limited worst case 8, 10 + seed, 10 images of N."""
    records = []
    for seed in range(3):
        records.append(control_record("at", seed, 12, aa=8, stats=_stats(head_rho=0.20)))
        records.append(control_record("at+ls", seed, 14, aa=10 + seed, stats=_stats(head_rho=0.20 + 0.01 * seed)))
        records.append(control_record("at+s2o", seed, 15, aa=10, stats=_stats(head_rho=0.15, sigma_correlated=4.0)))
    return records


def test_the_control_round_follows_its_own_plan():
    analysis = analyse_regime(control_family())
    assert analysis.plan is PLANS["control"]
    assert [(c.base, c.treatment) for c in analysis.primary()] == [("at", "at+s2o"), ("at+ls", "at+s2o")]
    assert all(c.endpoint == WORST_ALL for c in analysis.primary())
    # The worst case is the AND of PGD-20, CW-20 and AutoAttack: here AutoAttack's images.
    s2o_vs_base = analysis.comparison("at", "at+s2o")
    assert s2o_vs_base.difference == pytest.approx(100 * 2 / N)
    s2o_vs_ls = analysis.comparison("at+ls", "at+s2o")
    assert s2o_vs_ls.stats.differences == pytest.approx((0.0, -1 / N, -2 / N))
    # PGD-20 alone shows a gain the worst case does not: a secondary endpoint of the same pair.
    assert analysis.comparison("at+ls", "at+s2o", endpoint="pgd20").difference == pytest.approx(100 / N)
    secondary = [c for c in analysis.comparisons if not c.primary and c.endpoint == WORST_ALL and c.checkpoint == "last"]
    assert [(c.base, c.treatment) for c in secondary] == [("at", "at+ls")]
    assert analysis.method_frame().loc["at+ls", "worst case"] == pytest.approx(100 * 11 / N)


def test_statistics_are_paired_per_seed_differences_with_t_intervals():
    analysis = analyse_regime(control_family())
    frame = analysis.statistics("at", "at+ls")
    diffs = [0.0, 0.01, 0.02]
    row = frame.loc["head_rho"]
    assert row["difference"] == pytest.approx(np.mean(diffs)) and row["seeds"] == 3
    half = sps.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
    assert (row["low"], row["high"]) == pytest.approx((np.mean(diffs) - half, np.mean(diffs) + half))
    assert row["p"] == pytest.approx(sps.ttest_1samp(diffs, 0).pvalue)
    s2o = analysis.statistics("at", "at+s2o")
    assert s2o.loc["sigma_correlated", "difference"] == pytest.approx(1.0)
    # The last-layer KL: ½[k/σ² − ln det R], k = 10·128; σ 3 → 4 lowers it by ½·1280·(1/9 − 1/16).
    assert s2o.loc["kl_correlated", "difference"] == pytest.approx(-0.5 * 1280 * (1 / 9 - 1 / 16))
    # Equal statistics in every seed: no difference, and the t-test's convention for it (p = 1).
    assert frame.loc["sigma_correlated", "difference"] == 0 and frame.loc["sigma_correlated", "p"] == 1
    with pytest.raises(S2OError, match="--stats"):
        analyse_regime(family(SHIFTS)).statistics("at", "at+s2o")


def test_rank_correlations_span_every_model_with_statistics():
    records = control_family()
    for i, r in enumerate(records):  # make the bound rank the gap exactly
        last = r["final"]["last"]
        last["train"] = {**last["train"], "pgd20": last["test"]["pgd20"] + 0.01 * i}  # gap 0, 1, 2, ... points
        r["final"]["last"]["stats"]["log10_bound_independent"] = float(i)
    rho = analyse_regime(records).rank_correlations()
    assert rho["log10_bound_independent"] == pytest.approx(1.0)
    assert "gap" not in rho.index


def test_the_control_report_carries_the_worst_case_and_the_paired_statistics():
    text = analyse_regime(control_family()).to_markdown()
    assert "| worst case |" in text.splitlines()[2]
    assert "Last-layer statistics, at+s2o − at" in text and "Last-layer statistics, at+ls − at" in text
    rows = [line for line in text.splitlines() if line.startswith("| head ρ")]
    assert len(rows) == 2 and "| −0.05 |" not in rows[0]
    assert "| -0.05 |" in rows[0] and "| +0.01 |" in rows[1]  # s2o − at: 0.15 − 0.20; ls − at: mean of 0, .01, .02
    assert "Spearman ρ with the robust gap, across all 9 models" in text


def test_endpoint_frame_names_a_pgd_gain_the_other_attacks_do_not_confirm():
    frame = analyse_regime(control_family()).endpoint_frame()
    assert list(frame.index) == ["at+s2o − at", "at+s2o − at+ls", "at+ls − at"]
    # at+s2o − at+ls: PGD-20 +1 image of N, AutoAttack 0, −1, −2 images: the warning pattern.
    assert frame.loc["at+s2o − at+ls", "PGD-20"] == interval_cell(100 / N, 100 / N, 100 / N, digits=1)
    assert frame.loc["at+s2o − at+ls", "warning"] == "PGD-20 gain, not under AutoAttack"
    assert frame.loc["at+s2o − at", "warning"] == ""  # AutoAttack +2 images: confirmed
    assert frame.loc["at+s2o − at", "p"] == analyse_regime(control_family()).comparison("at", "at+s2o").holm_p


def test_statistics_frame_prints_each_paired_difference_with_its_interval():
    analysis = analyse_regime(control_family())
    frame = analysis.statistics_frame([("at", "at+s2o"), ("at", "at+ls")], ["head_rho", "sigma_correlated"])
    row = analysis.statistics("at", "at+ls").loc["head_rho"]
    assert frame.loc["head ρ, mean |cos| of the class vectors", "at+ls − at"] == interval_cell(
        row["difference"], row["low"], row["high"])
    assert frame.loc["tolerated σ, KFAC-correlated", "at+s2o − at"] == "+1.00 [+1.00, +1.00]"


def _verdict_family(ls_aa) -> list[dict]:
    """Twelve seeds: at+s2o 10 images under AutoAttack, at 8 or 9, at+ls ``ls_aa(seed)``."""
    records = []
    for seed in range(12):
        records.append(control_record("at", seed, 12, aa=8 + seed % 2, stats=_stats()))
        records.append(control_record("at+ls", seed, 14, aa=ls_aa(seed), stats=_stats()))
        records.append(control_record("at+s2o", seed, 15, aa=10, stats=_stats()))
    return records


def test_control_verdict_follows_the_decision_rule():
    assert analyse_regime(control_family()).control_verdict("at") == NO_DIFFERENCE  # three seeds: nothing holds
    same_as_ls = analyse_regime(_verdict_family(lambda seed: 9 + seed % 3))  # s2o − ls: +1, 0, -1 images
    assert same_as_ls.comparison("at", "at+s2o").significant()
    assert same_as_ls.control_verdict("at") == "what S²O does here, label smoothing at the same mass does too"
    more = analyse_regime(_verdict_family(lambda seed: 8 + seed % 2))  # ls no better than the base
    assert more.control_verdict("at") == "S²O is more than label smoothing here"
