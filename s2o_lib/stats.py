"""Paired statistics for two classifiers evaluated on the same images, over one or several training seeds.

Robust accuracy on a few hundred images is a binomial proportion: 1 image in 200 is half a percentage point, so
a printed difference of one to three images says nothing by itself. This module says how sure we are:

- `wilson_interval` / `proportion`: the Wilson score interval of an accuracy (Wilson 1927; recommended over
  the Wald interval by Newcombe 1998a and Brown, Cai & DasGupta 2001).
- `paired_test`: two models on the *same* images. McNemar's exact test on the discordant images (b: A right and
  B wrong, c: A wrong and B right; under "no difference" each discordant image is a fair coin, so
  ``p = scipy.stats.binomtest(b, b + c, 0.5).pvalue``, and ``p = 1`` when ``b + c = 0``), and a confidence
  interval for the paired difference acc(B) − acc(A) = (c − b) / n by Newcombe's method 10 (`newcombe_interval`):
  the square-and-add combination of the two accuracies' Wilson intervals, corrected for their correlation
  (Newcombe 1998b; recommended for paired proportions by Fagerland, Lydersen & Laake 2014). The interval and the
  exact test are different procedures and can disagree at the margin: with b = 0 and c = 5 the 95% interval
  excludes 0 while the exact p is 0.0625. Significance is decided by the p-value only (the more conservative of
  the two there); the interval says how large the difference may be.
- `s2o_lib.seeds.compare_seeds`: several training seeds per method, seed s of A paired with seed s of B. Per method the mean
  accuracy and its spread across seeds (`SeedSummary`); for the pair the per-seed differences, their mean with a
  Student-t interval across seeds and the paired t-test (`t_interval`, `t_test`), plus McNemar pooled over all
  (seed, image) pairs.

- `signed_rank_test` (Wilcoxon) on the same per-seed differences, and `holm` (Holm's step-down adjustment) for a
  family of comparisons tested together.

Which test is primary (`SeedComparison.primary`): with two or more seeds, the **t-test across seeds**. The claim
being tested ("S²O improves robustness") is about a training *method*, so the unit that must be replicated is a
training run: seeds vary the training (initialisation, data order, the attacks during training), images vary
only the evaluation. McNemar on one seed conditions on one pair of trained models: it can tell that *these two
models* differ on this image distribution, not that the methods do, because a lucky seed is indistinguishable
from a better method. Pooled over seeds, McNemar treats all seeds × images pairs as independent although every
image of a seed shares the same two models, so it is over-confident whenever seeds disagree; it is reported as a
secondary, evaluation-noise-only check. The t-test has only ``seeds − 1`` degrees of freedom (little power with
three seeds) and treats the test images as fixed (all seeds share them): its interval is for the mean difference
over training runs on this test set. With one seed McNemar is the only test there is, and it answers the narrower
question about the two models.

References:
    S. Holm (1979), A simple sequentially rejective multiple test procedure, Scand. J. Statistics 6:65-70.
    E. B. Wilson (1927), Probable inference, the law of succession, and statistical inference, JASA 22:209-212.
    Q. McNemar (1947), Note on the sampling error of the difference between correlated proportions or
    percentages, Psychometrika 12:153-157.
    R. G. Newcombe (1998a), Two-sided confidence intervals for the single proportion: comparison of seven
    methods, Statistics in Medicine 17:857-872.
    R. G. Newcombe (1998b), Improved confidence intervals for the difference between binomial proportions
    based on paired data, Statistics in Medicine 17:2635-2650 (method 10).
    L. D. Brown, T. T. Cai, A. DasGupta (2001), Interval estimation for a binomial proportion, Statistical
    Science 16:101-133.
    M. W. Fagerland, S. Lydersen, P. Laake (2014), Recommended tests and confidence intervals for paired
    binomial proportions, Statistics in Medicine 33:2850-2875.

Example:
    >>> import torch
    >>> from s2o_lib.stats import paired_test
    >>> base = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)   # model A, per image
    >>> s2o = torch.tensor([0, 0, 0, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)    # model B: 3 images lost
    >>> test = paired_test(base, s2o)
    >>> test.b, test.c, test.difference, test.p_value
    (3, 0, -0.3, 0.25)
    >>> test.significant(alpha=0.05)
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps
from torch import Tensor

from .errors import S2OError
from .evaluate import EvalResult

__all__ = [
    "NO_DIFFERENCE", "Outcomes", "PairedTest", "PrimaryTest", "Proportion", "Runs", "as_outcomes", "as_runs",
    "by_seed", "check_level", "holm", "mcnemar_p_value", "newcombe_interval", "p_text", "paired_counts",
    "paired_from_counts", "paired_test", "proportion", "signed_rank_test", "t_interval", "t_test",
    "wilson_interval",
]


#: Per-image outcomes of one model: a bool vector (n,) (torch, NumPy or a list of 0/1), or an `EvalResult`
#: evaluated with ``return_per_sample=True`` (its ``per_sample[attack]`` is used).
Outcomes = Tensor | np.ndarray | Sequence[bool] | EvalResult
#: One method's runs: one `Outcomes` per training seed, as a list (seeds 0, 1, ...) or ``{seed: outcomes}``.
Runs = Sequence[Outcomes] | Mapping[int, Outcomes]
PrimaryTest = Literal["t-test across seeds", "McNemar"]
NO_DIFFERENCE = "no detectable difference at this scale"


# ============================================================================================ input
def check_level(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise S2OError(f"{name} must be a number strictly between 0 and 1 (e.g. 0.95 or 0.05), got {value!r}")
    return float(value)


def _z(confidence: float) -> float:
    """The two-sided standard-normal quantile, 1.96 for 95%."""
    return float(sps.norm.ppf(0.5 + check_level(confidence, "confidence") / 2))


def as_outcomes(values: Outcomes, *, attack: str = "worst_case", name: str = "outcomes") -> np.ndarray:
    """Per-image outcomes as a NumPy bool vector (n,), with a one-line `S2OError` for anything else.

    Args:
        values: a bool (or 0/1) vector (n,) as a torch tensor, NumPy array or list, or an `EvalResult` with
            per-sample outcomes.
        attack: which of an `EvalResult`'s per-sample outcomes to use (ignored for vectors).
        name: what to call ``values`` in error messages.

    Returns:
        A bool array of shape (n,), n ≥ 1.
    """
    if isinstance(values, EvalResult):
        if values.per_sample is None:
            raise S2OError(f"{name} is an EvalResult without per-sample outcomes; evaluate with "
                           "robust_accuracy(..., return_per_sample=True) or compare_models")
        if attack not in values.per_sample:
            raise S2OError(f"{name} has no per-sample outcomes for attack {attack!r}; it has: "
                           + ", ".join(values.per_sample))
        values = values.per_sample[attack]
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise S2OError(f"{name} must be a non-empty 1-D vector of per-image outcomes (True = correct), "
                       f"got shape {array.shape}")
    if array.dtype != bool:
        if not np.issubdtype(array.dtype, np.number) or not np.isin(array, (0, 1)).all():
            raise S2OError(f"{name} must hold booleans or 0/1 values (True = correct), got dtype {array.dtype}")
        array = array.astype(bool)
    return array


def by_seed(entries: Any, *, name: str, what: str) -> dict[int, Any]:
    """``{seed: entry}``, sorted by seed, from a list (seeds 0, 1, ...) or a ``{seed: entry}`` mapping.

    The one reading of "several training seeds" for the statistics here and `s2o_lib.compare`.

    Args:
        entries: a list with one entry per seed, or a mapping from seed (an integer >= 0) to entry.
        name: what the caller calls ``entries`` (for the errors).
        what: what one entry is (for the errors), e.g. ``"outcome vector"``.
    """
    if isinstance(entries, Mapping):
        items = list(entries.items())
    elif isinstance(entries, Sequence) and not isinstance(entries, (str, bytes)):
        items = list(enumerate(entries))
    else:
        raise S2OError(f"{name} must be a list with one {what} per seed, or {{seed: {what}}}; "
                       f"got {type(entries).__name__}")
    if not items:
        raise S2OError(f"{name} is empty; give at least one {what}")
    for seed, _ in items:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise S2OError(f"the seeds of {name} must be integers >= 0, got {seed!r}")
    return dict(sorted(items, key=lambda item: item[0]))


def as_runs(runs: Runs, *, attack: str, name: str) -> dict[int, np.ndarray]:
    """``{seed: outcomes}`` from a list (seeds 0, 1, ...) or a mapping; all runs on the same number of images."""
    out = {seed: as_outcomes(values, attack=attack, name=f"{name}[{seed}]")
           for seed, values in by_seed(runs, name=name, what="outcome vector (or EvalResult)").items()}
    sizes = {seed: values.size for seed, values in out.items()}
    if len(set(sizes.values())) > 1:
        raise S2OError(f"the seeds of {name} were evaluated on different numbers of images {sizes}; evaluate "
                       "every seed on the same images")
    return out


# ============================================================================================ one accuracy
@dataclass(frozen=True)
class Proportion:
    """An accuracy with its Wilson score interval.

    Attributes:
        successes: images counted correct.
        n: images.
        low: lower end of the interval (a fraction in [0, 1]).
        high: upper end of the interval.
        confidence: the interval's confidence level (0.95: 95%).
    """

    successes: int
    n: int
    low: float
    high: float
    confidence: float

    @property
    def estimate(self) -> float:
        """The accuracy ``successes / n``."""
        return self.successes / self.n

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion, in closed form (Wilson 1927).

    With ``z`` the two-sided normal quantile and ``p̂ = k / n``, the interval is
    ``(k + z²/2) / (n + z²) ± z / (n + z²) · sqrt(k (n − k) / n + z²/4)``: the proportions p for which
    ``|p̂ − p| ≤ z · sqrt(p (1 − p) / n)``. Unlike the Wald interval it never leaves [0, 1] and does not collapse
    to a point at 0 or n successes. It equals ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``.

    Args:
        successes: number of successes k, 0 ≤ k ≤ n.
        n: number of trials (≥ 1).
        confidence: confidence level, e.g. 0.95.

    Returns:
        ``(low, high)``, fractions in [0, 1].

    Example:
        >>> low, high = wilson_interval(81, 263)          # Newcombe (1998a): 0.2553 to 0.3662
        >>> round(low, 4), round(high, 4)
        (0.2553, 0.3662)
    """
    for value, label in ((successes, "successes"), (n, "n")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise S2OError(f"{label} must be an integer, got {value!r}")
    if n < 1 or not 0 <= successes <= n:
        raise S2OError(f"need n >= 1 and 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z(confidence)
    center = (successes + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(successes * (n - successes) / n + z * z / 4)
    # At 0 or n successes one end is exactly 0 or 1; rounding must not move it inside.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def proportion(outcomes: Outcomes, *, attack: str = "worst_case", confidence: float = 0.95) -> Proportion:
    """The accuracy of per-image outcomes with its Wilson interval.

    Args:
        outcomes: a bool vector (n,) or an `EvalResult` with per-sample outcomes.
        attack: which outcomes of an `EvalResult` to use.
        confidence: confidence level of the interval.

    Returns:
        A `Proportion`.

    Example:
        >>> str(proportion([True] * 8 + [False] * 2))
        '0.800 [0.490, 0.943]'
    """
    values = as_outcomes(outcomes, attack=attack)
    successes, n = int(values.sum()), int(values.size)
    return Proportion(successes, n, *wilson_interval(successes, n, confidence=confidence), confidence)


# ============================================================================================ two models
def mcnemar_p_value(b: int, c: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts: ``binomtest(b, b + c, 0.5)``, 1 if b + c = 0.

    Args:
        b: images the first model gets right and the second wrong.
        c: images the first model gets wrong and the second right.

    Example:
        >>> mcnemar_p_value(3, 0)            # 2 · (1/2)³
        0.25
    """
    if b < 0 or c < 0:
        raise S2OError(f"discordant counts must be >= 0, got b={b}, c={c}")
    return 1.0 if b + c == 0 else float(min(1.0, sps.binomtest(int(b), int(b + c), 0.5).pvalue))


def newcombe_interval(
    *, both: int, first_only: int, second_only: int, neither: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's method 10 interval for ``p_first − p_second`` of two proportions measured on the same items.

    With ``p1 = (both + first_only) / n`` and ``p2 = (both + second_only) / n``, their Wilson intervals
    ``(l1, u1)``, ``(l2, u2)`` and the estimate ``θ = p1 − p2``:
    ``θ − sqrt((p1 − l1)² − 2φ(p1 − l1)(u2 − p2) + (u2 − p2)²)`` to
    ``θ + sqrt((p2 − l2)² − 2φ(p2 − l2)(u1 − p1) + (u1 − p1)²)``, where φ is the correlation of the 2 × 2 table,
    ``A / sqrt(product of the four margins)`` with ``A = both · neither − first_only · second_only``, reduced to
    ``max(A − n/2, 0)`` when A > 0, and 0 when a margin is empty (Newcombe 1998b, method 10; Fagerland et al. 2014,
    "Newcombe square-and-add").

    Args:
        both: items both count as successes.
        first_only: items only the first counts as a success.
        second_only: items only the second counts as a success.
        neither: items neither counts as a success.
        confidence: confidence level.

    Returns:
        ``(low, high)`` in [−1, 1].

    Example:
        >>> low, high = newcombe_interval(both=36, first_only=12, second_only=2, neither=0)
        >>> round(low, 4), round(high, 4)                     # Newcombe (1998b): 0.0569 to 0.3404
        (0.0569, 0.3404)
    """
    cells = (both, first_only, second_only, neither)
    if any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0 for x in cells) or sum(cells) < 1:
        raise S2OError(f"the four counts must be integers >= 0 with a positive total, got {cells}")
    n = sum(cells)
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    l1, u1 = wilson_interval(both + first_only, n, confidence=confidence)
    l2, u2 = wilson_interval(both + second_only, n, confidence=confidence)
    margins = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    a = both * neither - first_only * second_only
    if margins == 0:
        phi = 0.0
    elif a > 0:
        phi = max(a - n / 2, 0.0) / math.sqrt(margins)
    else:
        phi = a / math.sqrt(margins)
    theta = p1 - p2
    low = theta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = theta + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class PairedTest:
    """Two models on the same n images: the 2 × 2 counts, McNemar's exact test and Newcombe's interval.

    Attributes:
        n: images.
        both: images both models get right.
        b: images A gets right and B wrong.
        c: images A gets wrong and B right.
        neither: images both get wrong.
        low: lower end of the interval for ``difference`` (Newcombe's method 10).
        high: upper end.
        p_value: McNemar's exact two-sided p-value, in [0, 1].
        confidence: the interval's confidence level.
    """

    n: int
    both: int
    b: int
    c: int
    neither: int
    low: float
    high: float
    p_value: float
    confidence: float

    @property
    def difference(self) -> float:
        """acc(B) − acc(A) = (c − b) / n, a fraction in [−1, 1]."""
        return (self.c - self.b) / self.n

    @property
    def accuracy_a(self) -> float:
        """acc(A) = (both + b) / n."""
        return (self.both + self.b) / self.n

    @property
    def accuracy_b(self) -> float:
        """acc(B) = (both + c) / n."""
        return (self.both + self.c) / self.n

    def significant(self, *, alpha: float = 0.05) -> bool:
        """Whether McNemar's p-value is below ``alpha`` (never when p ≥ alpha)."""
        return self.p_value < check_level(alpha, "alpha")


def paired_counts(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    """``(both, a only, b only, neither)`` of two bool vectors of the same length."""
    return int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum())


def paired_from_counts(both: int, b: int, c: int, neither: int, confidence: float) -> PairedTest:
    low, high = newcombe_interval(both=both, first_only=c, second_only=b, neither=neither, confidence=confidence)
    return PairedTest(both + b + c + neither, both, b, c, neither, low, high, mcnemar_p_value(b, c), confidence)


def paired_test(
    outcomes_a: Outcomes, outcomes_b: Outcomes, *, attack: str = "worst_case", confidence: float = 0.95
) -> PairedTest:
    """Compare model B with model A on the same images: McNemar's exact test and Newcombe's interval.

    The images must be the same and in the same order (e.g. both results from `compare_models`, or from
    `robust_accuracy` with the same data, ``n`` and seed); only their number can be checked here.

    Args:
        outcomes_a: per-image outcomes of A (the reference, e.g. the base method), a bool vector (n,) or an
            `EvalResult` with per-sample outcomes.
        outcomes_b: per-image outcomes of B (e.g. base+s2o), on the same images.
        attack: which outcomes of an `EvalResult` to use.
        confidence: confidence level of the interval for acc(B) − acc(A).

    Returns:
        A `PairedTest` (``difference`` = acc(B) − acc(A)).

    Example:
        >>> test = paired_test(table.runs["at"][0], table.runs["at+s2o"][0], attack="pgd20")  # doctest: +SKIP
    """
    a = as_outcomes(outcomes_a, attack=attack, name="outcomes_a")
    b = as_outcomes(outcomes_b, attack=attack, name="outcomes_b")
    if a.size != b.size:
        raise S2OError(f"the two models were evaluated on different numbers of images ({a.size} vs {b.size}); "
                       "a paired test needs the same images for both")
    check_level(confidence, "confidence")
    return paired_from_counts(*paired_counts(a, b), confidence)


# ============================================================================================ several seeds
def t_interval(values: Sequence[float], *, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean: ``mean ± t_{(1+confidence)/2, k−1} · sd / sqrt(k)`` (sd with k − 1).

    Args:
        values: k ≥ 2 numbers (e.g. one paired difference per seed).
        confidence: confidence level.

    Returns:
        ``(low, high)``; a single point when all values are equal.

    Example:
        >>> low, high = t_interval([0.01, 0.03, 0.05])
        >>> round(low, 4), round(high, 4)
        (-0.0197, 0.0797)
    """
    array = _at_least_two(values)
    mean, sem = float(array.mean()), _sem(array)
    half = float(sps.t.ppf(0.5 + check_level(confidence, "confidence") / 2, array.size - 1)) * sem
    return mean - half, mean + half


def t_test(values: Sequence[float]) -> float | None:
    """Two-sided p-value of the one-sample t-test of "mean = 0" (the paired t-test on differences).

    Same as ``scipy.stats.ttest_1samp(values, 0).pvalue``, except when all values are equal: then the test is
    undefined and this returns 1 if they are all 0 and ``None`` otherwise (scipy returns 0 or NaN with a warning).

    Args:
        values: k ≥ 2 numbers.

    Example:
        >>> round(t_test([0.01, 0.03, 0.05]), 4)
        0.1217
    """
    array = _at_least_two(values)
    if array.max() == array.min():
        return 1.0 if array[0] == 0 else None
    statistic = float(array.mean()) / _sem(array)
    return float(min(1.0, 2 * sps.t.sf(abs(statistic), array.size - 1)))


def signed_rank_test(values: Sequence[float]) -> float:
    """Two-sided p-value of Wilcoxon's signed-rank test of "symmetric about 0" on paired differences.

    ``scipy.stats.wilcoxon(values).pvalue`` (zero differences dropped, its default; the exact distribution when
    there are no ties or zeros, else the normal approximation), and 1 when every value is 0. With k seeds and no
    ties the smallest possible p is ``2 / 2**k`` (0.0625 for 5 seeds, 0.0078 for 8).

    Args:
        values: k ≥ 2 numbers (e.g. one paired difference per seed).

    Example:
        >>> round(signed_rank_test([0.01, 0.02, 0.03, 0.04, 0.05]), 4)
        0.0625
    """
    array = _at_least_two(values)
    if not array.any():
        return 1.0
    return float(min(1.0, sps.wilcoxon(array).pvalue))


def p_text(p: float | None) -> str:
    """A p-value as the suite's tables and sentences print it: three decimals, two significant digits below
    0.001 (``5.1e-04``), ``"–"`` when it is undefined (fewer than two seeds, no discordant pairs)."""
    return "–" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (Holm 1979).

    With the m p-values sorted ascending, ``p_(1) ≤ … ≤ p_(m)``, the adjusted value of ``p_(i)`` is
    ``max_{j ≤ i} min(1, (m − j + 1) · p_(j))``; rejecting where the adjusted p is below α controls the
    family-wise error rate at α for any dependence between the tests.

    Args:
        p_values: m ≥ 1 p-values in [0, 1].

    Returns:
        The m adjusted p-values, each ≥ its raw value, in the input order.

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    array = np.asarray(p_values, dtype=float)
    if array.ndim != 1 or array.size < 1 or not np.isfinite(array).all() or (array < 0).any() or (array > 1).any():
        raise S2OError(f"holm needs one or more p-values in [0, 1], got {list(np.ravel(array))}")
    m = array.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(np.argsort(array, kind="stable")):
        running = max(running, min(1.0, (m - rank) * float(array[index])))
        adjusted[index] = running
    return [float(a) for a in adjusted]


def _at_least_two(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size < 2 or not np.isfinite(array).all():
        raise S2OError(f"need at least two finite numbers (one per seed), got {list(np.ravel(array))}")
    return array


def _sem(array: np.ndarray) -> float:
    """Standard error of the mean; exactly 0 when all values are equal."""
    return 0.0 if array.max() == array.min() else float(array.std(ddof=1)) / math.sqrt(array.size)
