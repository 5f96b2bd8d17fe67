"""Several training seeds per method: each method's accuracy across seeds and the paired comparison of two methods.

A claim about a training *method* ("S²O improves robustness") is replicated over training runs, so seed s of
method A is paired with seed s of method B. `summarize_seeds` gives one method's mean accuracy and its spread
across seeds (`SeedSummary`); `compare_seeds` the per-seed differences of two, their mean with a Student-t
interval and the paired t-test across seeds (primary with two or more seeds), Wilcoxon's signed-rank test, and
McNemar pooled over every (seed, image) pair as a secondary, evaluation-noise-only check (`SeedComparison`). Why
the t-test is primary, and the tests themselves, are in `s2o_lib.stats`.

Example:
    >>> import numpy as np
    >>> from s2o_lib.seeds import compare_seeds
    >>> a = [np.array([1, 1, 0, 0] * 5, dtype=bool) for _ in range(3)]
    >>> b = [np.array([1, 1, 1, 0] * 5, dtype=bool) for _ in range(3)]
    >>> round(compare_seeds(a, b).mean_difference, 2)
    0.25
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import S2OError
from .stats import (
    NO_DIFFERENCE,
    PairedTest,
    PrimaryTest,
    Proportion,
    Runs,
    as_runs,
    check_level,
    paired_counts,
    paired_from_counts,
    t_interval,
    t_test,
    wilson_interval,
)

__all__ = ["SeedComparison", "SeedSummary", "compare_seeds", "summarize_seeds"]


@dataclass(frozen=True)
class SeedSummary:
    """One method's accuracy over several training seeds (all evaluated on the same images).

    Attributes:
        seeds: the seed labels, in order.
        accuracies: the accuracy of each seed (fractions).
        pooled: the Wilson interval of all seeds × images outcomes pooled (evaluation noise only; with one seed,
            that seed's interval).
    """

    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]
    pooled: Proportion

    @property
    def mean(self) -> float:
        """Mean accuracy over seeds."""
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float | None:
        """Standard deviation across seeds (k − 1 in the denominator); ``None`` with one seed."""
        return float(np.std(self.accuracies, ddof=1)) if len(self.accuracies) > 1 else None


def summarize_seeds(runs: Runs, *, attack: str = "worst_case", confidence: float = 0.95) -> SeedSummary:
    """Mean accuracy, spread across seeds and pooled Wilson interval of one method's seeds.

    Args:
        runs: one outcome vector or `EvalResult` per seed, as a list (seeds 0, 1, ...) or ``{seed: outcomes}``.
        attack: which outcomes of an `EvalResult` to use.
        confidence: confidence level of the pooled interval.

    Returns:
        A `SeedSummary`.

    Example:
        >>> summary = summarize_seeds([[1, 1, 0, 0], [1, 1, 1, 0]])
        >>> summary.mean, round(summary.std, 4)
        (0.625, 0.1768)
    """
    return _summary(as_runs(runs, attack=attack, name="runs"), confidence)


def _summary(runs: dict[int, np.ndarray], confidence: float) -> SeedSummary:
    successes = sum(int(v.sum()) for v in runs.values())
    total = sum(int(v.size) for v in runs.values())
    pooled = Proportion(successes, total, *wilson_interval(successes, total, confidence=confidence), confidence)
    return SeedSummary(tuple(runs), tuple(float(v.mean()) for v in runs.values()), pooled)


@dataclass(frozen=True)
class SeedComparison:
    """Method B against method A over paired training seeds (seed s of A with seed s of B), on the same images.

    Attributes:
        a: A's `SeedSummary`.
        b: B's `SeedSummary`.
        per_seed: one `PairedTest` (McNemar, Newcombe) per seed, in seed order.
        pooled: McNemar and Newcombe on all (seed, image) pairs pooled (secondary: why, in `s2o_lib.stats`' module
            docstring).
        low: lower end of the t-interval of the mean per-seed difference (``None`` with one seed).
        high: upper end (``None`` with one seed).
        t_p_value: paired t-test across seeds (``None`` with one seed, or when every seed differs equally).
        confidence: confidence level of the intervals.
    """

    a: SeedSummary
    b: SeedSummary
    per_seed: tuple[PairedTest, ...]
    pooled: PairedTest
    low: float | None
    high: float | None
    t_p_value: float | None
    confidence: float

    @property
    def seeds(self) -> tuple[int, ...]:
        """The paired seed labels."""
        return self.a.seeds

    @property
    def differences(self) -> tuple[float, ...]:
        """acc(B) − acc(A) for each seed."""
        return tuple(test.difference for test in self.per_seed)

    @property
    def mean_difference(self) -> float:
        """Mean of the per-seed differences (= mean acc(B) − mean acc(A))."""
        return float(np.mean(self.differences))

    @property
    def std_difference(self) -> float | None:
        """Standard deviation of the per-seed differences; ``None`` with one seed."""
        return float(np.std(self.differences, ddof=1)) if len(self.per_seed) > 1 else None

    @property
    def primary(self) -> PrimaryTest:
        """``"t-test across seeds"`` with two or more seeds, else ``"McNemar"`` (why: `s2o_lib.stats`' docstring)."""
        return "t-test across seeds" if len(self.per_seed) > 1 else "McNemar"

    @property
    def p_value(self) -> float | None:
        """The primary test's p-value (``None`` only when the t-test is undefined)."""
        return self.t_p_value if len(self.per_seed) > 1 else self.per_seed[0].p_value

    @property
    def interval(self) -> tuple[float, float]:
        """The primary interval for the difference: the t-interval across seeds, or Newcombe's for one seed."""
        if len(self.per_seed) > 1:
            return float(self.low), float(self.high)  # type: ignore[arg-type]
        return self.per_seed[0].low, self.per_seed[0].high

    def significant(self, *, alpha: float = 0.05) -> bool:
        """Whether the primary p-value is below ``alpha``; never when p ≥ alpha or the test is undefined."""
        alpha = check_level(alpha, "alpha")
        return self.p_value is not None and self.p_value < alpha

    def verdict(self, *, alpha: float = 0.05, name: str = "B") -> str:
        """In words: ``"B higher (p < 0.05)"`` / ``"B lower (p < 0.05)"``, or "no detectable difference at this scale".

        Args:
            alpha: significance level.
            name: what to call method B (e.g. ``"S²O"``).
        """
        if self.significant(alpha=alpha):
            return f"{name} {'higher' if self.mean_difference > 0 else 'lower'} (p < {alpha:g})"
        if self.p_value is None:
            return "undetermined: every seed differs by the same amount, the t-test is undefined"
        return NO_DIFFERENCE


def compare_seeds(
    runs_a: Runs, runs_b: Runs, *, attack: str = "worst_case", confidence: float = 0.95
) -> SeedComparison:
    """Compare method B with method A over paired seeds: per-seed McNemar, a t-interval and t-test across seeds.

    Seed s of A is paired with seed s of B (same training seed, same images). The per-seed differences
    ``d_s = acc_s(B) − acc_s(A)`` give the primary result: their mean, a Student-t interval
    ``mean ± t_{k−1} · sd / sqrt(k)`` and the paired t-test. McNemar on all (seed, image) pairs pooled is
    reported beside them (`s2o_lib.stats`' module docstring says why it is secondary). With one seed this
    reduces to `paired_test`.

    Args:
        runs_a: A's per-image outcomes, one per seed: a list (seeds 0, 1, ...) or ``{seed: outcomes}``; each an
            outcome vector (n,) or an `EvalResult` with per-sample outcomes.
        runs_b: B's, with the same seeds and the same images.
        attack: which outcomes of an `EvalResult` to use.
        confidence: confidence level of every interval.

    Returns:
        A `SeedComparison`.

    Example:
        >>> result = compare_seeds([base_s0, base_s1, base_s2], [s2o_s0, s2o_s1, s2o_s2])      # doctest: +SKIP
        >>> result.mean_difference, result.interval, result.p_value, result.significant()    # doctest: +SKIP
    """
    check_level(confidence, "confidence")
    a = as_runs(runs_a, attack=attack, name="runs_a")
    b = as_runs(runs_b, attack=attack, name="runs_b")
    if list(a) != list(b):
        raise S2OError(f"the seeds do not match: runs_a has seeds {list(a)}, runs_b has {list(b)}; pair seed s of "
                       "one method with seed s of the other")
    if a[next(iter(a))].size != b[next(iter(b))].size:
        raise S2OError(f"the methods were evaluated on different numbers of images ({a[next(iter(a))].size} vs "
                       f"{b[next(iter(b))].size}); a paired test needs the same images for both")
    counts = [paired_counts(a[seed], b[seed]) for seed in a]
    per_seed = tuple(paired_from_counts(*cell, confidence) for cell in counts)
    pooled = paired_from_counts(*(sum(column) for column in zip(*counts)), confidence)
    low = high = p_value = None
    if len(per_seed) > 1:
        # Differences from the integer counts: equal counts give exactly equal differences (no rounding noise).
        differences = [(test.c - test.b) / test.n for test in per_seed]
        low, high = t_interval(differences, confidence=confidence)
        p_value = t_test(differences)
    return SeedComparison(_summary(a, confidence), _summary(b, confidence), per_seed, pooled, low, high, p_value,
                          confidence)
