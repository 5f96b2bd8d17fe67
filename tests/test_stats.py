"""Tests for `s2o_lib.stats`: Wilson, McNemar, Newcombe and the multi-seed summary, against hand counts, closed
forms, scipy and published numbers. No models are trained here: the outcomes are constructed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from s2o_lib.errors import S2OError
from s2o_lib.evaluate import EvalResult
from s2o_lib.seeds import compare_seeds, summarize_seeds
from s2o_lib.stats import (
    NO_DIFFERENCE,
    as_outcomes,
    by_seed,
    holm,
    mcnemar_p_value,
    newcombe_interval,
    p_text,
    paired_test,
    proportion,
    signed_rank_test,
    t_interval,
    t_test,
    wilson_interval,
)


def outcomes(*, both: int = 0, a_only: int = 0, b_only: int = 0, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image outcomes of models A and B with the given 2 × 2 counts (images in that order)."""
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return np.array(a), np.array(b)


# ------------------------------------------------------------------------------------------- McNemar
def test_paired_test_agrees_with_a_hand_count_on_ten_images():
    a = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    b = torch.tensor([0, 0, 0, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    # By hand: A right and B wrong on images 0, 1, 2; never the reverse.
    b_count = sum(1 for x, y in zip(a.tolist(), b.tolist()) if x and not y)
    c_count = sum(1 for x, y in zip(a.tolist(), b.tolist()) if y and not x)
    assert (b_count, c_count) == (3, 0)
    test = paired_test(a, b)
    assert (test.n, test.both, test.b, test.c, test.neither) == (10, 2, 3, 0, 5)
    assert test.accuracy_a == 0.5 and test.accuracy_b == 0.2 and test.difference == pytest.approx(-0.3)
    # Under "no difference" each of the 3 discordant images is a fair coin: P(all 3 one way) · 2 sides = 0.25.
    assert test.p_value == pytest.approx(2 * 0.5**3) == 0.25


@pytest.mark.parametrize("b, c", [(3, 0), (0, 3), (5, 1), (1, 5), (7, 7), (2, 9), (20, 31)])
def test_mcnemar_is_the_two_sided_exact_binomial_tail(b, c):
    # Two-sided exact p by counting: 2 · P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), capped at 1.
    m = b + c
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2**m
    assert mcnemar_p_value(b, c) == pytest.approx(min(1.0, 2 * tail), abs=1e-12)
    a_out, b_out = outcomes(both=4, a_only=b, b_only=c, neither=3)
    assert paired_test(a_out, b_out).p_value == mcnemar_p_value(b, c)


def test_no_discordant_image_gives_p_one():
    a, b = outcomes(both=6, neither=4)
    test = paired_test(a, b)
    assert (test.b, test.c, test.p_value, test.difference) == (0, 0, 1.0, 0.0)
    assert test.low < 0 < test.high  # no evidence either way: the interval straddles 0
    assert not test.significant(alpha=0.05)


# ------------------------------------------------------------------------------------------- Wilson
@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (81, 263), (15, 148), (499, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_closed_form_matches_scipy_and_contains_the_estimate(k, n, confidence):
    low, high = wilson_interval(k, n, confidence=confidence)
    reference = sps.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert low == pytest.approx(reference.low, abs=1e-12) and high == pytest.approx(reference.high, abs=1e-12)
    assert 0 <= low <= k / n <= high <= 1
    assert low < high  # never collapses to a point, even at 0 or n successes


def test_wilson_reproduces_newcombe_1998a():
    # Newcombe (1998a), Statistics in Medicine 17:857-872: the Wilson score interval of its worked examples.
    assert [round(v, 4) for v in wilson_interval(81, 263)] == [0.2553, 0.3662]
    assert [round(v, 4) for v in wilson_interval(15, 148)] == [0.0624, 0.1605]


def test_proportion_of_outcomes():
    result = proportion(torch.tensor([True] * 7 + [False] * 3))
    assert (result.successes, result.n, result.estimate) == (7, 10, 0.7)
    assert (result.low, result.high) == wilson_interval(7, 10)
    assert str(result).startswith("0.700 [")


# ------------------------------------------------------------------------------------------- Newcombe
@pytest.mark.parametrize(
    "cells, published",
    [  # Newcombe (1998b), Statistics in Medicine 17:2635-2650: method 10 on the paper's worked examples.
        ((36, 12, 2, 0), (0.0569, 0.3404)),
        ((18, 12, 2, 18), (0.0562, 0.3290)),
        ((53, 0, 0, 1), (-0.0729, 0.0729)),
        ((0, 30, 0, 0), (0.8395, 1.0)),
    ],
)
def test_newcombe_reproduces_the_published_examples(cells, published):
    both, first_only, second_only, neither = cells
    low, high = newcombe_interval(both=both, first_only=first_only, second_only=second_only, neither=neither)
    assert (round(low, 4), round(high, 4)) == published
    # paired_test reports acc(B) − acc(A): with A = "second", B = "first" it is the same interval.
    a, b = outcomes(both=both, a_only=second_only, b_only=first_only, neither=neither)
    test = paired_test(a, b)
    assert test.difference == pytest.approx((first_only - second_only) / sum(cells))
    assert (test.low, test.high) == (low, high)
    # Swapping the models mirrors the interval.
    swapped = paired_test(b, a)
    assert swapped.low == pytest.approx(-high) and swapped.high == pytest.approx(-low)


def test_p_values_in_unit_interval_and_intervals_contain_the_estimate():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 40, 200):
        for _ in range(30):
            a, b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
            test = paired_test(a, b)
            assert 0 <= test.p_value <= 1
            assert -1 <= test.low <= test.difference <= test.high <= 1
            for side in (a, b):
                result = proportion(side)
                assert 0 <= result.low <= result.estimate <= result.high <= 1


# ------------------------------------------------------------------------------------------- significance
def test_significance_marker_is_set_only_below_alpha():
    a, b = outcomes(both=10, b_only=5, neither=5)          # b = 0, c = 5: p = 2 / 2⁵ = 0.0625
    test = paired_test(a, b)
    assert test.p_value == pytest.approx(0.0625)
    assert not test.significant(alpha=0.05)                # p ≥ α
    assert not test.significant(alpha=test.p_value)        # p = α is not below α
    assert test.significant(alpha=0.07)                    # p < α
    strong = paired_test(*outcomes(both=10, b_only=12, neither=5))  # p = 2 / 2¹²
    assert strong.p_value < 0.001 and strong.significant(alpha=0.05)
    # The same rule through the seed summary, one seed: the primary test is McNemar.
    one_seed = compare_seeds([a], [b])
    assert one_seed.primary == "McNemar" and one_seed.p_value == test.p_value
    assert not one_seed.significant(alpha=0.05) and one_seed.verdict(alpha=0.05) == NO_DIFFERENCE
    assert not one_seed.significant(alpha=one_seed.p_value)
    assert one_seed.significant(alpha=0.07) and one_seed.verdict(alpha=0.07, name="S²O") == "S²O higher (p < 0.07)"
    assert one_seed.interval == (test.low, test.high)


# ------------------------------------------------------------------------------------------- several seeds
def test_t_interval_and_t_test_match_a_hand_computation_on_three_numbers():
    values = [0.01, 0.03, 0.05]
    mean = sum(values) / 3                                                     # 0.03
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)                   # 0.02
    se = sd / math.sqrt(3)
    # Student t with 2 degrees of freedom has closed forms: quantile q(P) = (2P − 1) / sqrt(2 P (1 − P)) and
    # two-sided p-value 1 − |t| / sqrt(2 + t²).
    quantile = (2 * 0.975 - 1) / math.sqrt(2 * 0.975 * 0.025)                  # 4.3027
    assert quantile == pytest.approx(4.302653, abs=1e-6)
    low, high = t_interval(values, confidence=0.95)
    assert low == pytest.approx(mean - quantile * se, abs=1e-12) and high == pytest.approx(mean + quantile * se)
    statistic = mean / se
    assert t_test(values) == pytest.approx(1 - statistic / math.sqrt(2 + statistic**2), abs=1e-12)
    assert t_test(values) == pytest.approx(sps.ttest_1samp(values, 0).pvalue, abs=1e-12)


def test_compare_seeds_on_constructed_outcomes():
    # Three seeds on 100 images; S²O gains 1, 3 and 5 images (c) and loses none (b): differences 0.01, 0.03, 0.05.
    base = [outcomes(both=50, b_only=c, neither=50 - c)[0] for c in (1, 3, 5)]
    s2o = [outcomes(both=50, b_only=c, neither=50 - c)[1] for c in (1, 3, 5)]
    result = compare_seeds({0: base[0], 1: base[1], 2: base[2]}, s2o)
    assert result.seeds == (0, 1, 2) and result.primary == "t-test across seeds"
    assert result.differences == pytest.approx((0.01, 0.03, 0.05))
    assert result.mean_difference == pytest.approx(0.03) and result.std_difference == pytest.approx(0.02)
    assert (result.low, result.high) == pytest.approx(t_interval([0.01, 0.03, 0.05]))
    assert result.interval == (result.low, result.high)
    assert result.p_value == pytest.approx(t_test([0.01, 0.03, 0.05]))
    assert not result.significant(alpha=0.05) and result.verdict() == NO_DIFFERENCE
    # Pooled McNemar on the 300 (seed, image) pairs: b = 0, c = 9, p = 2 / 2⁹ — "significant" while the seeds
    # are not: pooling ignores the spread across seeds, which is why it is not the primary test.
    assert (result.pooled.n, result.pooled.b, result.pooled.c) == (300, 0, 9)
    assert result.pooled.p_value == pytest.approx(2 / 2**9)
    assert [t.c for t in result.per_seed] == [1, 3, 5]
    assert result.a.accuracies == (0.5, 0.5, 0.5) and result.b.accuracies == pytest.approx((0.51, 0.53, 0.55))
    assert result.b.mean == pytest.approx(0.53) and result.b.std == pytest.approx(0.02)
    assert (result.b.pooled.successes, result.b.pooled.n) == (159, 300)


def test_summarize_seeds_by_hand():
    summary = summarize_seeds([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    assert summary.accuracies == (0.5, 0.75, 0.25) and summary.mean == pytest.approx(0.5)
    assert summary.std == pytest.approx(0.25)                           # sqrt((0.25² + 0² + 0.25²) / 2)
    assert (summary.pooled.successes, summary.pooled.n) == (6, 12)
    assert summarize_seeds([[1, 0]]).std is None


def test_equal_differences_on_every_seed():
    a, b = outcomes(both=5, b_only=2, neither=3)
    tied = compare_seeds([a, a], [a, a])
    assert tied.t_p_value == 1.0 and tied.interval == (0.0, 0.0) and not tied.significant()
    shifted = compare_seeds([a, a, a], [b, b, b])                         # +0.2 on every seed: t = ∞ / undefined
    assert shifted.t_p_value is None and not shifted.significant(alpha=0.5)
    assert shifted.verdict().startswith("undetermined")
    assert t_test([0.0, 0.0]) == 1.0 and t_test([0.2, 0.2]) is None


def test_eval_results_are_read_per_attack():
    per_sample = {"pgd5": torch.tensor([True, False, True, True]), "worst_case": torch.tensor([True, False, False,
                                                                                                True])}
    result = EvalResult({"pgd5": 0.75, "worst_case": 0.5}, per_sample=per_sample)
    assert as_outcomes(result, attack="pgd5").tolist() == [True, False, True, True]
    assert proportion(result).successes == 2                               # worst_case by default
    assert compare_seeds([result], [result], attack="pgd5").pooled.both == 3


# ------------------------------------------------------------------------------------------- bad input
def _one_line_error(call, match: str) -> None:
    with pytest.raises(S2OError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: paired_test([1, 0, 1], [1, 0]), "different numbers of images"),
        (lambda: compare_seeds([[1, 0]], [[1, 0, 1]]), "different numbers of images"),
        (lambda: compare_seeds([[1, 0], [1, 1, 0]], [[1, 0], [0, 1]]), "different numbers of images"),
        (lambda: compare_seeds([], []), "empty"),
        (lambda: summarize_seeds({}), "empty"),
        (lambda: proportion([]), "non-empty 1-D"),
        (lambda: compare_seeds([[1, 0], [0, 1]], [[1, 0]]), "seeds do not match"),
        (lambda: compare_seeds({0: [1, 0], 1: [0, 1]}, {0: [1, 0], 2: [0, 1]}), "seeds do not match"),
        (lambda: compare_seeds({-1: [1, 0]}, {-1: [1, 0]}), "integers >= 0"),
        (lambda: compare_seeds([1, 0, 1], [1, 0, 1]), r"runs_a\[0\] must be a non-empty 1-D"),
        (lambda: compare_seeds("abc", "abc"), "one outcome vector"),
        (lambda: proportion([[1, 0], [0, 1]]), "1-D"),
        (lambda: proportion([0, 2, 1]), "booleans or 0/1"),
        (lambda: proportion(["yes", "no"]), "booleans or 0/1"),
        (lambda: proportion(EvalResult({"clean": 1.0})), "return_per_sample=True"),
        (lambda: proportion(EvalResult({"clean": 1.0}, per_sample={"clean": torch.ones(2, dtype=torch.bool)}),
                            attack="pgd20"), "no per-sample outcomes for attack 'pgd20'"),
        (lambda: proportion([1, 0], confidence=95), "confidence"),
        (lambda: paired_test([1, 0], [1, 0]).significant(alpha=0), "alpha"),
        (lambda: wilson_interval(3, 0), "n >= 1"),
        (lambda: wilson_interval(5, 3), "successes <= n"),
        (lambda: wilson_interval(1.5, 3), "integer"),
        (lambda: newcombe_interval(both=-1, first_only=0, second_only=0, neither=1), "integers >= 0"),
        (lambda: t_interval([0.1]), "at least two"),
        (lambda: t_test([0.1, float("nan")]), "at least two finite"),
        (lambda: mcnemar_p_value(-1, 2), ">= 0"),
    ],
)
def test_bad_input_gets_a_one_line_error(call, match):
    _one_line_error(call, match)


# ------------------------------------------------------------------------------------------- families of tests
def test_holm_matches_the_step_down_rule_by_hand():
    # Sorted: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to the running max 0.06).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # One p-value is its own adjustment; large products are capped at 1.
    assert holm([0.2]) == [0.2]
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_holm_never_lowers_a_p_value_and_is_monotone_in_rank():
    rng = np.random.default_rng(0)
    raw = rng.uniform(size=7)
    adjusted = np.array(holm(raw))
    assert (adjusted >= raw).all() and (adjusted <= 1).all()
    order = np.argsort(raw)
    assert (np.diff(adjusted[order]) >= 0).all()


@pytest.mark.parametrize("bad", [[], [0.2, 1.5], [-0.1], [float("nan")]])
def test_holm_rejects_what_is_not_a_list_of_p_values(bad):
    with pytest.raises(S2OError, match="holm needs"):
        holm(bad)


def test_signed_rank_test_is_scipys_wilcoxon_and_its_smallest_p_with_eight_seeds():
    values = [0.03, -0.01, 0.02, 0.05, 0.04, -0.02, 0.06, 0.01]
    assert signed_rank_test(values) == pytest.approx(sps.wilcoxon(values).pvalue)
    # All eight differences positive, no ties: the exact two-sided p is 2 / 2**8.
    assert signed_rank_test([0.01 * k for k in range(1, 9)]) == pytest.approx(2 / 2**8)
    assert signed_rank_test([0.0, 0.0, 0.0]) == 1.0
    with pytest.raises(S2OError, match="at least two"):
        signed_rank_test([0.1])


def test_by_seed_reads_lists_and_mappings_and_rejects_bad_seeds():
    assert by_seed(["a", "b"], name="runs", what="run") == {0: "a", 1: "b"}
    assert list(by_seed({3: "c", 1: "a"}, name="runs", what="run")) == [1, 3]
    for bad, match in [([], "runs is empty"), ({-1: "a"}, "integers >= 0"), ({True: "a"}, "integers >= 0"),
                       ("ab", "must be a list with one run per seed")]:
        _one_line_error(lambda bad=bad: by_seed(bad, name="runs", what="run"), match)


@pytest.mark.parametrize(("p", "text"), [(0.5, "0.500"), (0.001, "0.001"), (0.00051, "5.1e-04"), (None, "–")])
def test_one_p_value_format_for_tables_and_sentences(p, text):
    assert p_text(p) == text
