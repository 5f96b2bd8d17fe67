"""The small-data regime of issue 13 §2: its committed results and their pre-registered analysis.

``benchmarks/regime_search.py run`` trained small-cnn on 100 digits (10 per class) for 80 epochs, eight training
seeds per method, and stored one JSON line per (method, seed) with per-image outcomes on the whole digits test
split (360 images). ``benchmarks/REGIME.md`` fixed the analysis before that round was run; this module carries it
out from the committed lines (``benchmarks/results/regime/<round>.jsonl``) with `s2o_lib.stats`, so the
benchmark's ``report`` and the notebooks print the same numbers without training anything:

- primary endpoint: PGD-20 accuracy of the last-epoch model (``"pgd20"``, ``checkpoint="last"``);
- primary comparisons (`PRIMARY_PAIRS`): ``at+s2o − at``, ``trades+s2o − trades``, ``at+awp − at``; the paired
  t-test on the per-seed differences (same seed, same images) with its 95% t-interval (`stats.compare_seeds`),
  Holm's adjustment over the three (`stats.holm`) at family-wise α = 0.05;
- secondary (reported, not used for the verdict): ``mart+s2o − mart``; Wilcoxon's signed-rank test on the same
  differences (`stats.signed_rank_test`); McNemar per seed (in ``SeedComparison.per_seed``); CW-20, the worst
  case over PGD-20 and CW-20 (`WORST`), AutoAttack "fast" (last epoch only) and the
  best-on-validation checkpoint.

Example:
    >>> from s2o_lib.regime import analyse_regime, load_results          # doctest: +SKIP
    >>> analysis = analyse_regime(load_results("confirm"))
    >>> [c.verdict() for c in analysis.primary()]
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import S2OError
from .stats import NO_DIFFERENCE, SeedComparison, compare_seeds, holm, signed_rank_test

if TYPE_CHECKING:
    import pandas as pd

#: Where the committed result lines live (a checkout's ``benchmarks/results/regime``).
RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "regime"
#: (baseline, treatment) of the three primary comparisons, then the secondary one (REGIME.md).
PRIMARY_PAIRS: tuple[tuple[str, str], ...] = (("at", "at+s2o"), ("trades", "trades+s2o"), ("at", "at+awp"))
SECONDARY_PAIRS: tuple[tuple[str, str], ...] = (("mart", "mart+s2o"),)
PRIMARY_ENDPOINT = "pgd20"
#: The per-image worst case over PGD-20 and CW-20 (an image counts only if both attacks fail on it).
WORST = "worst_pgd20_cw20"
#: Every endpoint, in report order.
ENDPOINTS: tuple[str, ...] = ("pgd20", "cw20", WORST, "autoattack")
Checkpoint = Literal["last", "best"]
METHOD_ORDER = ("standard", "at", "at+s2o", "at+awp", "trades", "trades+s2o", "mart", "mart+s2o")
#: A last-epoch clean test accuracy below this counts as a training run that collapsed (chance is 0.1).
COLLAPSE_CLEAN = 0.2


# ============================================================================================ loading
def load_results(round_name: str = "confirm", *, directory: Path | str | None = None) -> list[dict[str, Any]]:
    """The JSON lines of one round of ``benchmarks/regime_search.py run``.

    Args:
        round_name: the round's name (its file ``<round_name>.jsonl``), e.g. ``"confirm"`` or ``"explore1"``.
        directory: where the files are (default `RESULTS_DIR`, the committed copy).

    Returns:
        One dict per trained (method, seed), in file order.
    """
    folder = RESULTS_DIR if directory is None else Path(directory)
    path = folder / f"{round_name}.jsonl"
    if not path.is_file():
        raise S2OError(f"no regime results at {path}; they ship with a checkout of the repository "
                       "(benchmarks/results/regime/), or give directory=")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def method_label(record: Mapping[str, Any]) -> str:
    """``method``, with the AWP settings for AWP methods (``at+awp[g0.01,w0]``), as the benchmark labels it."""
    method, regime = record["method"], record["regime"]
    if "awp" in method.split("+"):
        return f"{method}[g{regime['awp_gamma']:g},w{regime['awp_warmup']}]"
    return method


def regime_key(record: Mapping[str, Any]) -> str:
    """The regime's name without the AWP settings, e.g. ``n100s0-e80-pw40-60-lr0.05-b16``."""
    r = record["regime"]
    sched = "const" if r["schedule"] == "constant" else "pw" + "-".join(str(m) for m in record["milestones"])
    return (f"n{r['subset']}{r['subset_kind'][0]}{r['data_seed']}-e{r['epochs']}-{sched}-lr{r['lr']:g}"
            f"-b{r['batch_size']}")


def _outcomes(record: Mapping[str, Any], endpoint: str, checkpoint: Checkpoint) -> np.ndarray | None:
    """Per-image outcomes (bool, (360,)) of an endpoint, or ``None`` when the record lacks it."""
    bits = record["final"][checkpoint]["test_bits"]
    names = ("pgd20", "cw20") if endpoint == WORST else (endpoint,)
    if any(name not in bits for name in names):
        return None
    vectors = [np.frombuffer(bits[name].encode(), dtype=np.uint8) == ord("1") for name in names]
    return np.logical_and.reduce(vectors)


def _by_method(records: Iterable[Mapping[str, Any]]) -> tuple[str, dict[str, dict[int, Mapping[str, Any]]]]:
    """``(regime key, {label: {seed: record}})``; a later line for the same run replaces an earlier one."""
    out: dict[str, dict[int, Mapping[str, Any]]] = defaultdict(dict)
    keys = set()
    for record in records:
        keys.add(regime_key(record))
        out[method_label(record)][int(record["seed"])] = record
    if len(keys) != 1:
        raise S2OError(f"the records hold {len(keys)} regimes ({', '.join(sorted(keys)) or 'none'}); analyse one "
                       "regime at a time (filter the records by regime_key)")
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    ordered = sorted(out, key=lambda label: (rank.get(label.split("[")[0], 99), label))
    return keys.pop(), {label: dict(sorted(out[label].items())) for label in ordered}


# ============================================================================================ results
@dataclass(frozen=True)
class RegimeComparison:
    """One comparison of the plan: treatment − baseline over paired seeds on one endpoint and checkpoint.

    Attributes:
        base: the baseline's label (e.g. ``"at"``).
        treatment: the treatment's label (e.g. ``"at+s2o"`` or ``"at+awp[g0.01,w0]"``).
        endpoint: one of `ENDPOINTS`.
        checkpoint: ``"last"`` (last epoch) or ``"best"`` (best PGD-10 accuracy on the validation images).
        primary: whether this is one of the three primary comparisons (Holm-adjusted, decides the verdict).
        stats: `stats.compare_seeds` of the two methods (t-interval, t-test, per-seed and pooled McNemar).
        wilcoxon_p: Wilcoxon's signed-rank p-value on the same per-seed differences.
        holm_p: the Holm-adjusted t-test p-value over the primary family (``None`` for secondary comparisons).
        alpha: the family-wise significance level.
    """

    base: str
    treatment: str
    endpoint: str
    checkpoint: Checkpoint
    primary: bool
    stats: SeedComparison
    wilcoxon_p: float
    holm_p: float | None
    alpha: float

    @property
    def seeds(self) -> tuple[int, ...]:
        """The paired training seeds."""
        return self.stats.seeds

    @property
    def difference(self) -> float:
        """Mean per-seed difference treatment − baseline, in percentage points."""
        return 100 * self.stats.mean_difference

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% t-interval of the mean difference, in percentage points."""
        low, high = self.stats.interval
        return 100 * low, 100 * high

    @property
    def p_value(self) -> float | None:
        """The paired t-test's two-sided p-value (unadjusted)."""
        return self.stats.p_value

    def significant(self) -> bool:
        """Primary: Holm-adjusted p < α. Secondary: unadjusted p < α (descriptive only)."""
        p = self.holm_p if self.primary else self.p_value
        return p is not None and p < self.alpha

    def verdict(self) -> str:
        """In words, e.g. ``"lower: -8.21 points [-14.02, -2.40], Holm p = 0.012"`` or "no detectable difference..."."""
        low, high = self.interval
        p_name, p = ("Holm p", self.holm_p) if self.primary else ("p", self.p_value)
        numbers = f"{self.difference:+.2f} points [{low:+.2f}, {high:+.2f}], {p_name} = {_p_text(p)}"
        if self.significant():
            return f"{_direction(self)}: {numbers}"
        return f"{NO_DIFFERENCE} ({numbers})"


@dataclass(frozen=True)
class RegimeAnalysis:
    """The plan's analysis of one round: method summaries and every comparison.

    Attributes:
        regime: the regime's key.
        runs: ``{label: {seed: record}}``, the JSON lines analysed.
        comparisons: every `RegimeComparison`, primary ones first.
        alpha: the family-wise significance level of the primary comparisons.
    """

    regime: str
    runs: Mapping[str, Mapping[int, Mapping[str, Any]]]
    comparisons: tuple[RegimeComparison, ...]
    alpha: float

    def source_line(self) -> str:
        """Where the numbers come from, for a notebook's label (seeds, regime, that it ran offline)."""
        seeds = sorted({s for by_seed in self.runs.values() for s in by_seed})
        per_method = sorted({len(by_seed) for label, by_seed in self.runs.items() if label != "standard"})
        record = next(iter(next(iter(self.runs.values())).values()))
        r = record["regime"]
        counts = "/".join(map(str, per_method))
        return (f"from benchmarks/regime_search.py, {counts} seeds ({seeds[0]}–{seeds[-1]}), run offline: small-cnn "
                f"on {r['subset']} training digits, {r['epochs']} epochs, batch {r['batch_size']}, lr {r['lr']:g} "
                f"(×0.1 at epochs {', '.join(map(str, record['milestones']))}); PGD-20 on the "
                f"{len(record['final']['last']['test_bits']['pgd20'])} test digits")

    def primary(self) -> list[RegimeComparison]:
        """The three primary comparisons (last epoch, PGD-20), in `PRIMARY_PAIRS` order."""
        return [c for c in self.comparisons if c.primary]

    def comparison(self, base: str, treatment: str, *, endpoint: str = PRIMARY_ENDPOINT,
                   checkpoint: Checkpoint = "last") -> RegimeComparison:
        """One comparison; ``treatment`` may omit the AWP settings (``"at+awp"``)."""
        for c in self.comparisons:
            if (c.base == base and _matches(c.treatment, treatment) and c.endpoint == endpoint
                    and c.checkpoint == checkpoint):
                return c
        raise S2OError(f"no comparison {treatment} − {base} on {endpoint} ({checkpoint}); the analysis has: "
                       + ", ".join(sorted({f"{c.treatment} − {c.base}" for c in self.comparisons})))

    def method_frame(self) -> pd.DataFrame:
        """Per method: seeds, mean and sd over seeds of the last-epoch accuracies (percent), gap, collapses.

        Columns: ``seeds``, ``clean``, ``pgd20``, ``cw20``, ``autoattack`` (means), ``pgd20 sd``, ``train pgd20``,
        ``gap`` (train − test PGD-20), ``best pgd20`` (best-on-validation checkpoint), ``collapsed`` (seeds whose
        clean test accuracy ended below `COLLAPSE_CLEAN`, i.e. near chance).
        """
        import pandas as pd

        rows = []
        for label, by_seed in self.runs.items():
            last = [r["final"]["last"] for r in by_seed.values()]
            test = {k: [100 * f["test"].get(k, math.nan) for f in last] for k in ("clean", "pgd20", "cw20",
                                                                                   "autoattack")}
            train = [100 * f["train"]["pgd20"] for f in last]
            rows.append({"method": label, "seeds": len(by_seed), **{k: float(np.mean(v)) for k, v in test.items()},
                         "pgd20 sd": float(np.std(test["pgd20"], ddof=1)) if len(last) > 1 else math.nan,
                         "train pgd20": float(np.mean(train)),
                         "gap": float(np.mean(train) - np.mean(test["pgd20"])),
                         "best pgd20": float(np.mean([100 * r["final"]["best"]["test"]["pgd20"]
                                                      for r in by_seed.values()])),
                         "collapsed": sum(f["test"]["clean"] < COLLAPSE_CLEAN for f in last)})
        return pd.DataFrame(rows).set_index("method")

    def frame(self, *, primary_only: bool = False) -> pd.DataFrame:
        """One row per comparison: difference, interval (points), t-test p, Holm p, Wilcoxon p, seeds up, verdict."""
        import pandas as pd

        rows = [{"comparison": f"{c.treatment} − {c.base}", "endpoint": c.endpoint, "checkpoint": c.checkpoint,
                 "primary": c.primary, "seeds": len(c.seeds), "difference": c.difference,
                 "low": c.interval[0], "high": c.interval[1], "t-test p": c.p_value, "Holm p": c.holm_p,
                 "Wilcoxon p": c.wilcoxon_p, "seeds up": sum(d > 0 for d in c.stats.differences),
                 "seeds down": sum(d < 0 for d in c.stats.differences), "verdict": c.verdict()}
                for c in self.comparisons if c.primary or not primary_only]
        return pd.DataFrame(rows)

    def curves(self, label: str) -> pd.DataFrame:
        """Mean over seeds of the per-epoch curve of one method: train / val / test, clean and PGD-10 (percent)."""
        import pandas as pd

        if label not in self.runs:
            raise S2OError(f"no method {label!r} in the analysis; it has: {', '.join(self.runs)}")
        points = pd.DataFrame([p for r in self.runs[label].values() for p in r["curve"]])
        return 100 * points.groupby("epoch").mean()


    def to_markdown(self) -> str:
        """The methods, the primary comparisons (with Holm and the verdict), the secondary ones and the per-seed
        McNemar tests of the primary comparisons, as markdown tables."""
        intro = (f"Regime `{self.regime}`; last-epoch model, whole digits test split (360 images), % (mean over "
                 "seeds; `collapsed`: seeds whose clean accuracy ended near chance).")
        lines = [intro, "", *_method_markdown(self.method_frame())]
        primary = [c for c in self.comparisons if c.primary]
        secondary = [c for c in self.comparisons if not c.primary]
        lines += ["", f"Primary (Holm over these three, family-wise α = {self.alpha:g}):", "",
                  *_comparison_markdown(primary, last="verdict")]
        lines += ["", "Secondary (descriptive; not used for the verdict):", "",
                  *_comparison_markdown(secondary, last=f"t-test p < {self.alpha:g}, unadjusted")]
        lines += ["", ("Per-seed McNemar of the primary comparisons: difference in points (images right only with "
                       "the baseline / only with the treatment, exact p):"), ""]
        for c in primary:
            cells = [f"s{s}: {100 * t.difference:+.1f} ({t.b}/{t.c}, p={_p_text(t.p_value)})"
                     for s, t in zip(c.seeds, c.stats.per_seed, strict=True)]
            lines.append(f"- {c.treatment} − {c.base}: " + "; ".join(cells))
        return "\n".join(lines)


def _method_markdown(methods: pd.DataFrame) -> list[str]:
    lines = [("| method | seeds | clean | PGD-20 (sd) | CW-20 | AA-fast | train PGD-20 | gap | PGD-20 @best-val "
              "| collapsed |"), "|---" * 10 + "|"]
    for label, m in methods.iterrows():
        lines.append(f"| {label} | {int(m['seeds'])} | {m['clean']:.1f} | {m['pgd20']:.1f} ({m['pgd20 sd']:.1f}) | "
                     f"{m['cw20']:.1f} | {m['autoattack']:.1f} | {m['train pgd20']:.1f} | {m['gap']:.1f} | "
                     f"{m['best pgd20']:.1f} | {int(m['collapsed'])} |")
    return lines


def _comparison_markdown(comparisons: Sequence[RegimeComparison], *, last: str) -> list[str]:
    lines = [("| comparison | endpoint | checkpoint | seeds | mean diff (pts) | 95% t-CI | t-test p | Holm p | "
              f"Wilcoxon p | seeds up/down | {last} |"), "|---" * 11 + "|"]
    for c in comparisons:
        low, high = c.interval
        d = c.stats.differences
        said = _direction(c) if c.significant() else (NO_DIFFERENCE if c.primary else "—")
        lines.append(f"| {c.treatment} − {c.base} | {c.endpoint} | {c.checkpoint} | {len(c.seeds)} | "
                     f"{c.difference:+.2f} | [{low:+.2f}, {high:+.2f}] | {_p_text(c.p_value)} | "
                     f"{'—' if c.holm_p is None else _p_text(c.holm_p)} | {_p_text(c.wilcoxon_p)} | "
                     f"{sum(x > 0 for x in d)}/{sum(x < 0 for x in d)} | {said} |")
    return lines


def _direction(c: RegimeComparison) -> str:
    return "higher" if c.difference > 0 else "lower"


def _matches(label: str, name: str) -> bool:
    return label == name or label.startswith(name + "[")


def _p_text(p: float | None) -> str:
    return "undefined" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _compare(runs: Mapping[str, Mapping[int, Mapping[str, Any]]], base: str, treatment: str, endpoint: str,
             checkpoint: Checkpoint, confidence: float) -> SeedComparison | None:
    seeds = sorted(set(runs[base]) & set(runs[treatment]))
    a = {s: _outcomes(runs[base][s], endpoint, checkpoint) for s in seeds}
    b = {s: _outcomes(runs[treatment][s], endpoint, checkpoint) for s in seeds}
    seeds = [s for s in seeds if a[s] is not None and b[s] is not None]
    if len(seeds) < 2:
        return None
    return compare_seeds({s: a[s] for s in seeds}, {s: b[s] for s in seeds}, confidence=confidence)


def analyse_regime(records: Sequence[Mapping[str, Any]], *, alpha: float = 0.05,
                   confidence: float = 0.95) -> RegimeAnalysis:
    """Carry out REGIME.md's analysis plan on one round's records (e.g. ``load_results("confirm")``).

    Every pair of `PRIMARY_PAIRS` and `SECONDARY_PAIRS` whose two methods are present is compared on every
    endpoint of `ENDPOINTS` the records hold, at the last epoch and at the best-on-validation checkpoint, over
    the seeds both methods have (at least two). The three primary comparisons (last epoch, PGD-20) get Holm's
    adjustment of their t-test p-values; an undefined t-test (every seed differs by the same non-zero amount)
    enters Holm as p = 1 and is reported as undefined.

    Args:
        records: the JSON lines of one regime (one `regime_key`).
        alpha: family-wise significance level of the primary comparisons.
        confidence: confidence level of every interval.

    Returns:
        A `RegimeAnalysis`.
    """
    key, runs = _by_method(records)
    found: list[tuple[str, str, str, Checkpoint, bool, SeedComparison]] = []
    for pairs, is_primary in ((PRIMARY_PAIRS, True), (SECONDARY_PAIRS, False)):
        for base, name in pairs:
            for treatment in (label for label in runs if _matches(label, name)):
                if base not in runs:
                    continue
                for checkpoint in ("last", "best"):
                    for endpoint in ENDPOINTS:
                        result = _compare(runs, base, treatment, endpoint, checkpoint, confidence)
                        if result is not None:
                            primary = is_primary and endpoint == PRIMARY_ENDPOINT and checkpoint == "last"
                            found.append((base, treatment, endpoint, checkpoint, primary, result))
    primary_p = [1.0 if f[5].p_value is None else f[5].p_value for f in found if f[4]]
    adjusted = iter(holm(primary_p)) if primary_p else iter(())
    comparisons = [RegimeComparison(base, treatment, endpoint, checkpoint, primary, result,
                                    signed_rank_test(result.differences), next(adjusted) if primary else None,
                                    alpha)
                   for base, treatment, endpoint, checkpoint, primary, result in found]
    comparisons.sort(key=lambda c: not c.primary)
    return RegimeAnalysis(key, runs, tuple(comparisons), alpha)
