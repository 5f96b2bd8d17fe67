"""Tests for `s2o_lib.regime`: the pre-registered analysis of the small-data regime, on constructed records (whose
answers are known by hand) and on the committed results (shape and sanity only: never which method wins)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from s2o_lib.errors import S2OError
from s2o_lib.regime import RESULTS_DIR, WORST, analyse_regime, load_results, method_label, regime_key
from s2o_lib.stats import holm

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
