"""The small-data regime: its committed results and their pre-registered analysis.

``benchmarks/regime_search.py run`` trains small-cnn on 100 digits (10 per class) for 80 epochs, eight training
seeds per method, and stores one JSON line per (method, seed) with per-image outcomes on the whole digits test
split (360 images) and, with ``--stats``, the last model's last-layer statistics. ``benchmarks/REGIME.md`` fixes
each round's analysis before it is run (`PLANS`); this module carries it out from the committed lines
(``benchmarks/results/regime/<round>.jsonl``) with `s2o_lib.stats`, so the benchmark's ``report`` and the
notebooks print the same numbers without training anything:

- ``confirm`` (issue 13): PGD-20 of the last-epoch model; ``at+s2o − at``, ``trades+s2o − trades``,
  ``at+awp − at`` primary (Holm over the three), ``mart+s2o − mart`` secondary;
- ``control`` (issue 21): the per-image worst case over PGD-20, CW-20 and AutoAttack (`WORST_ALL`);
  ``base+s2o − base`` and ``base+s2o − base+ls`` for AT, TRADES and MART primary (Holm over the six),
  ``base+ls − base`` secondary; and `RegimeAnalysis.statistics`: the same pairs' per-seed differences of the
  last-layer statistics, the robust gap and the bound (`STATISTICS`), with t-intervals.

Every comparison is the paired t-test on the per-seed differences (same seed, same images) with its 95%
t-interval (`s2o_lib.seeds.compare_seeds`); Wilcoxon's signed-rank test on the same differences, McNemar per seed, each
attack alone and the best-on-validation checkpoint are reported beside it.

Example:
    >>> from benchmarks.regime import analyse_regime, load_results          # doctest: +SKIP
    >>> analysis = analyse_regime(load_results("control"))
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

from s2o_lib.errors import S2OError
from s2o_lib.methods import METHODS
from s2o_lib.norms import compound_symmetry_logdet
from s2o_lib.seeds import SeedComparison, compare_seeds
from s2o_lib.stats import NO_DIFFERENCE, holm, p_text, signed_rank_test, t_interval, t_test

if TYPE_CHECKING:
    import pandas as pd

#: Where the committed result lines live: beside this file, ``benchmarks/results/regime``.
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "regime"
#: The per-image worst case over PGD-20 and CW-20 (an image counts only if both attacks fail on it).
WORST = "worst_pgd20_cw20"
#: The per-image worst case over PGD-20, CW-20 and AutoAttack: the robust accuracy notebook 09 teaches to report.
WORST_ALL = "worst_case"
#: The attacks behind each worst-case endpoint.
WORST_OF: dict[str, tuple[str, ...]] = {WORST: ("pgd20", "cw20"), WORST_ALL: ("pgd20", "cw20", "autoattack")}
Checkpoint = Literal["last", "best"]
#: The order of methods in the tables: the one method list's (`s2o_lib.methods.METHODS`).
METHOD_ORDER: tuple[str, ...] = METHODS


@dataclass(frozen=True)
class Plan:
    """A round's pre-registered analysis (``benchmarks/REGIME.md``).

    Attributes:
        primary_pairs: (baseline, treatment) of the primary comparisons (Holm over them, at the primary
            endpoint and the last epoch).
        secondary_pairs: (baseline, treatment) compared on every endpoint, descriptively.
        primary_endpoint: the endpoint of the primary comparisons.
        endpoints: every endpoint compared, in report order.
    """

    primary_pairs: tuple[tuple[str, str], ...]
    secondary_pairs: tuple[tuple[str, str], ...]
    primary_endpoint: str
    endpoints: tuple[str, ...]


#: Each round's plan. ``confirm``: S²O and AWP on PGD-20 (issue 13). ``control``: S²O against its base and
#: against label smoothing at the same label mass, on the worst case over PGD-20, CW-20 and AutoAttack (issue 21).
PLANS: dict[str, Plan] = {
    "confirm": Plan(primary_pairs=(("at", "at+s2o"), ("trades", "trades+s2o"), ("at", "at+awp")),
                    secondary_pairs=(("mart", "mart+s2o"),), primary_endpoint="pgd20",
                    endpoints=("pgd20", "cw20", WORST, "autoattack")),
    "control": Plan(primary_pairs=tuple(pair for base in ("at", "trades", "mart")
                                        for pair in ((base, f"{base}+s2o"), (f"{base}+ls", f"{base}+s2o"))),
                    secondary_pairs=tuple((base, f"{base}+ls") for base in ("at", "trades", "mart")),
                    primary_endpoint=WORST_ALL, endpoints=(WORST_ALL, "pgd20", "cw20", "autoattack", "clean")),
}
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
    names = WORST_OF.get(endpoint, (endpoint,))
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
        endpoint: one of the plan's endpoints.
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
        numbers = f"{self.difference:+.2f} points [{low:+.2f}, {high:+.2f}], {p_name} = {p_text(p)}"
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
        plan: the round's `Plan`.
    """

    regime: str
    runs: Mapping[str, Mapping[int, Mapping[str, Any]]]
    comparisons: tuple[RegimeComparison, ...]
    alpha: float
    plan: Plan = PLANS["confirm"]

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
        """The primary comparisons (last epoch, the plan's primary endpoint), in the plan's order."""
        return [c for c in self.comparisons if c.primary]

    def comparison(self, base: str, treatment: str, *, endpoint: str | None = None,
                   checkpoint: Checkpoint = "last") -> RegimeComparison:
        """One comparison (``endpoint``: the plan's primary one by default); ``treatment`` may omit the AWP
        settings (``"at+awp"``)."""
        endpoint = self.plan.primary_endpoint if endpoint is None else endpoint
        found = self._find(base, treatment, endpoint, checkpoint)
        if found is not None:
            return found
        raise S2OError(f"no comparison {treatment} − {base} on {endpoint} ({checkpoint}); the analysis has: "
                       + ", ".join(sorted({f"{c.treatment} − {c.base}" for c in self.comparisons})))

    def _find(self, base: str, treatment: str, endpoint: str, checkpoint: Checkpoint) -> RegimeComparison | None:
        return next((c for c in self.comparisons if c.base == base and _matches(c.treatment, treatment)
                     and c.endpoint == endpoint and c.checkpoint == checkpoint), None)

    def control_verdict(self, base: str) -> str:
        """REGIME.md's decision rule of round "control" for one base method, in words.

        "S²O is more than label smoothing here" when ``base+s2o − base+ls`` is higher (Holm p < α); "what S²O
        does here, label smoothing at the same mass does too" when that is not detectable while
        ``base+s2o − base`` is; otherwise `NO_DIFFERENCE`.
        """
        vs_base = self.comparison(base, f"{base}+s2o")
        vs_ls = self.comparison(f"{base}+ls", f"{base}+s2o")
        if vs_ls.significant() and vs_ls.difference > 0:
            return "S²O is more than label smoothing here"
        if vs_base.significant() and not vs_ls.significant():
            return "what S²O does here, label smoothing at the same mass does too"
        return NO_DIFFERENCE

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
            worst = [100 * float(_outcomes(r, WORST_ALL, "last").mean()) if _has(r, WORST_ALL) else math.nan
                     for r in by_seed.values()]
            rows.append({"method": label, "seeds": len(by_seed), **{k: float(np.mean(v)) for k, v in test.items()},
                         "worst case": float(np.mean(worst)),
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

    def statistics(self, base: str, treatment: str) -> pd.DataFrame:
        """treatment − baseline of every `STATISTICS` entry over paired seeds: one row per statistic with
        ``what``, the two means, ``difference``, ``low``, ``high`` (95% t-interval), ``p`` and ``seeds``."""
        import pandas as pd

        for label in (base, treatment):
            if label not in self.runs:
                raise S2OError(f"no method {label!r} in the analysis; it has: {', '.join(self.runs)}")
        rows = [{"statistic": d.statistic, "what": STATISTICS[d.statistic][0], base: d.base_mean,
                 treatment: d.treatment_mean, "difference": d.difference, "low": d.interval[0],
                 "high": d.interval[1], "p": d.p_value, "seeds": len(d.differences)}
                for d in statistic_differences(self.runs, base, treatment)]
        if not rows:
            raise S2OError(f"no last-layer statistics recorded for {base} and {treatment}: the round was run without "
                           "--stats (benchmarks/regime_search.py run ... --stats)")
        return pd.DataFrame(rows).set_index("statistic")

    def endpoint_frame(self, pairs: Sequence[tuple[str, str]] | None = None, *, digits: int = 1) -> pd.DataFrame:
        """One row per (baseline, treatment) pair, one column per endpoint of the plan: the paired difference in
        points as ``"+1.2 [-0.3, +2.7]"`` (95% t-interval), a ``p`` column (the plan's primary endpoint; Holm's
        where adjusted), and ``warning``: the pattern notebook 02 teaches to distrust, a PGD-20 gain that CW-20 or
        AutoAttack does not confirm. ``pairs``: the plan's primary then secondary pairs by default."""
        import pandas as pd

        pairs = pairs or [*self.plan.primary_pairs, *self.plan.secondary_pairs]
        rows = []
        for base, treatment in pairs:
            found = {e: self._find(base, treatment, e, "last") for e in self.plan.endpoints}
            cells = {e: c for e, c in found.items() if c is not None}
            if not cells:
                continue
            main = cells[self.plan.primary_endpoint]
            pgd = cells.get("pgd20")
            unconfirmed = [e for e in ("cw20", "autoattack") if e in cells and cells[e].difference <= 0]
            rows.append({"comparison": f"{treatment} − {base}", "seeds": len(main.seeds),
                         **{ENDPOINT_NAMES.get(e, e): interval_cell(c.difference, *c.interval, digits=digits)
                            for e, c in cells.items()},
                         "p": main.p_value if main.holm_p is None else main.holm_p,
                         "warning": ("PGD-20 gain, not under " + " or ".join(ENDPOINT_NAMES[e] for e in unconfirmed)
                                     if pgd is not None and pgd.difference > 0 and unconfirmed else "")})
        return pd.DataFrame(rows).set_index("comparison")

    def statistics_frame(self, pairs: Sequence[tuple[str, str]], names: Sequence[str]) -> pd.DataFrame:
        """``names`` of `STATISTICS` (rows) by pairs (columns): the paired difference ``"+1.2 [-0.3, +2.7]"``."""
        import pandas as pd

        columns = {}
        for base, treatment in pairs:
            frame = self.statistics(base, treatment)
            columns[f"{treatment} − {base}"] = {STATISTICS[n][0]: interval_cell(frame.loc[n, "difference"],
                                                                                frame.loc[n, "low"], frame.loc[n, "high"])
                                                for n in names if n in frame.index}
        return pd.DataFrame(columns)

    def rank_correlations(self, *, against: str = "gap") -> pd.Series:
        """Spearman's rank correlation, across every model that recorded statistics, of each statistic with
        ``against`` (the robust gap by default); a statistic equal in every model has none and is left out."""
        import pandas as pd
        from scipy import stats as sps

        rows = [{name: _statistic(r, name) for name in STATISTICS}
                for by_seed in self.runs.values() for r in by_seed.values() if "stats" in r["final"]["last"]]
        frame = pd.DataFrame(rows).dropna()
        varying = [name for name in STATISTICS if name != against and frame[name].nunique() > 1]
        return pd.Series({name: float(sps.spearmanr(frame[name], frame[against]).statistic) for name in varying},
                         name=f"Spearman ρ with {against}")

    def to_markdown(self) -> str:
        """The methods, the primary comparisons (with Holm and the verdict), the secondary ones and the per-seed
        McNemar tests of the primary comparisons, as markdown tables."""
        intro = (f"Regime `{self.regime}`; last-epoch model, whole digits test split (360 images), % (mean over "
                 "seeds; `collapsed`: seeds whose clean accuracy ended near chance).")
        lines = [intro, "", *_method_markdown(self.method_frame())]
        primary = [c for c in self.comparisons if c.primary]
        secondary = [c for c in self.comparisons if not c.primary]
        lines += ["", f"Primary (Holm over these {len(primary)}, family-wise α = {self.alpha:g}):", "",
                  *_comparison_markdown(primary, last="verdict")]
        lines += ["", "Secondary (descriptive; not used for the verdict):", "",
                  *_comparison_markdown(secondary, last=f"t-test p < {self.alpha:g}, unadjusted")]
        lines += ["", ("Per-seed McNemar of the primary comparisons: difference in points (images right only with "
                       "the baseline / only with the treatment, exact p):"), ""]
        for c in primary:
            cells = [f"s{s}: {100 * t.difference:+.1f} ({t.b}/{t.c}, p={p_text(t.p_value)})"
                     for s, t in zip(c.seeds, c.stats.per_seed, strict=True)]
            lines.append(f"- {c.treatment} − {c.base}: " + "; ".join(cells))
        return "\n".join(lines + self._mechanism_markdown())

    def _mechanism_markdown(self) -> list[str]:
        """The paired last-layer statistics of every +s2o / +ls against its base, when the round recorded them."""
        pairs = [(m.split("+")[0], m) for m in self.runs if m.endswith(("+s2o", "+ls")) and m.split("+")[0] in self.runs]
        lines = []
        for base, treatment in pairs:
            try:
                frame = self.statistics(base, treatment)
            except S2OError:
                continue
            lines += ["", f"Last-layer statistics, {treatment} − {base} (mean over seeds, paired 95% t-interval):", "",
                      f"| statistic | {base} | {treatment} | difference | 95% t-CI | t-test p |", "|---" * 6 + "|"]
            lines += [f"| {row['what']} | {row[base]:.4g} | {row[treatment]:.4g} | {row['difference']:+.4g} | "
                      f"[{row['low']:+.3g}, {row['high']:+.3g}] | {p_text(row['p'])} |" for _, row in frame.iterrows()]
        if lines:
            rho = self.rank_correlations()
            lines += ["", f"Spearman ρ with the robust gap, across all {self.models_with_statistics()} models: "
                      + "; ".join(f"{STATISTICS[name][0]} {value:+.2f}" for name, value in rho.items())]
        return lines

    def models_with_statistics(self) -> int:
        """How many models of the round recorded last-layer statistics (``run --stats``)."""
        return sum("stats" in r["final"]["last"] for by_seed in self.runs.values() for r in by_seed.values())


#: Column names of `RegimeAnalysis.endpoint_frame`.
ENDPOINT_NAMES = {WORST_ALL: "worst case", "pgd20": "PGD-20", "cw20": "CW-20", "autoattack": "AutoAttack",
                  "clean": "clean", WORST: "worst of PGD/CW"}


def interval_cell(difference: float, low: float, high: float, *, digits: int = 2) -> str:
    """``"+1.20 [-0.30, +2.70]"``: a difference and its interval, as the notebooks' tables print them.

    Example:
        >>> interval_cell(1.2, -0.3, 2.7, digits=1)
        '+1.2 [-0.3, +2.7]'
    """
    return f"{difference:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _has(record: Mapping[str, Any], endpoint: str, checkpoint: Checkpoint = "last") -> bool:
    return _outcomes(record, endpoint, checkpoint) is not None


def _method_markdown(methods: pd.DataFrame) -> list[str]:
    lines = [("| method | seeds | clean | PGD-20 (sd) | CW-20 | AA-fast | worst case | train PGD-20 | gap "
              "| PGD-20 @best-val | collapsed |"), "|---" * 11 + "|"]
    for label, m in methods.iterrows():
        lines.append(f"| {label} | {int(m['seeds'])} | {m['clean']:.1f} | {m['pgd20']:.1f} ({m['pgd20 sd']:.1f}) | "
                     f"{m['cw20']:.1f} | {m['autoattack']:.1f} | {m['worst case']:.1f} | {m['train pgd20']:.1f} | "
                     f"{m['gap']:.1f} | "
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
                     f"{c.difference:+.2f} | [{low:+.2f}, {high:+.2f}] | {p_text(c.p_value)} | "
                     f"{'—' if c.holm_p is None else p_text(c.holm_p)} | {p_text(c.wilcoxon_p)} | "
                     f"{sum(x > 0 for x in d)}/{sum(x < 0 for x in d)} | {said} |")
    return lines


# ============================================================================================ mechanism
def _last_layer_kl(stats: Mapping[str, Any], posterior: str) -> float:
    """½[k/σ² − ln det S] of the last layer (k = C·D, σ relative to the weights' RMS): notebook 08's KL."""
    c, d = stats["head_shape"]
    sigma = stats[f"sigma_{posterior}"]
    logdet = {"isotropic": 0.0, "correlated": stats["R_logdet"],
              "jin": compound_symmetry_logdet(stats["head_rho"], n_out=c, n_in=d)}[posterior]
    return math.inf if sigma == 0 else 0.5 * (c * d / sigma**2 - logdet)


#: The statistics `RegimeAnalysis.statistics` compares: name → (what it is, how to read it off a record).
STATISTICS: dict[str, tuple[str, Any]] = {
    "logit_corr": ("mean |corr| of M = ZᵀZ (test logits)", lambda r, s: s["logit_corr"]),
    "head_rho": ("head ρ, mean |cos| of the class vectors", lambda r, s: s["head_rho"]),
    "R_fro_norm": ("‖R‖_F/√dim, KFAC-Laplace", lambda r, s: s["R_fro"] / math.sqrt(s["R_dim"])),
    "neg_logdet_R": ("−ln det R, KFAC-Laplace", lambda r, s: -s["R_logdet"]),
    "jin_neg_logdet": ("−Σ ln det S_i, Jin et al. 2020", lambda r, s: s["jin_neg_logdet"]),
    "sigma_isotropic": ("tolerated σ, isotropic", lambda r, s: s["sigma_isotropic"]),
    "sigma_correlated": ("tolerated σ, KFAC-correlated", lambda r, s: s["sigma_correlated"]),
    "kl_isotropic": ("last-layer KL, isotropic", lambda r, s: _last_layer_kl(s, "isotropic")),
    "kl_correlated": ("last-layer KL, KFAC-correlated", lambda r, s: _last_layer_kl(s, "correlated")),
    "log10_bound_independent": ("log10 bound term, S = I", lambda r, s: s["log10_bound_independent"]),
    "log10_bound_correlated": ("log10 bound term, S = R", lambda r, s: s["log10_bound_correlated"]),
    "log10_bound_jin": ("log10 bound term, Jin", lambda r, s: s["log10_bound_jin"]),
    "gap": ("robust gap, train − test PGD-20 (points)",
            lambda r, s: 100 * (r["final"]["last"]["train"]["pgd20"] - r["final"]["last"]["test"]["pgd20"])),
}


@dataclass(frozen=True)
class StatisticDifference:
    """treatment − baseline of one last-layer statistic over paired seeds.

    Attributes:
        base: the baseline's label.
        treatment: the treatment's label.
        statistic: a key of `STATISTICS`.
        differences: the per-seed differences, in seed order.
        base_mean: the baseline's mean over those seeds.
        treatment_mean: the treatment's mean.
        interval: the 95% t-interval of the mean difference.
        p_value: the paired t-test's two-sided p (``None`` when undefined).
    """

    base: str
    treatment: str
    statistic: str
    differences: tuple[float, ...]
    base_mean: float
    treatment_mean: float
    interval: tuple[float, float]
    p_value: float | None

    @property
    def difference(self) -> float:
        """The mean per-seed difference."""
        return float(np.mean(self.differences))


def _statistic(record: Mapping[str, Any], name: str) -> float | None:
    stats = record["final"]["last"].get("stats")
    return None if stats is None else float(STATISTICS[name][1](record, stats))


def statistic_differences(runs: Mapping[str, Mapping[int, Mapping[str, Any]]], base: str, treatment: str,
                          *, confidence: float = 0.95) -> list[StatisticDifference]:
    """Every `STATISTICS` entry, treatment − baseline, over the seeds where both recorded it (at least two)."""
    out = []
    for name in STATISTICS:
        pairs = {s: (_statistic(runs[base][s], name), _statistic(runs[treatment][s], name))
                 for s in sorted(set(runs[base]) & set(runs[treatment]))}
        pairs = {s: (a, b) for s, (a, b) in pairs.items() if a is not None and b is not None}
        differences = [b - a for a, b in pairs.values()]
        if len(differences) < 2 or not all(map(math.isfinite, differences)):
            continue
        out.append(StatisticDifference(base, treatment, name, tuple(differences),
                                       float(np.mean([a for a, _ in pairs.values()])),
                                       float(np.mean([b for _, b in pairs.values()])),
                                       t_interval(differences, confidence=confidence), t_test(differences)))
    return out


def _direction(c: RegimeComparison) -> str:
    return "higher" if c.difference > 0 else "lower"


def _matches(label: str, name: str) -> bool:
    return label == name or label.startswith(name + "[")


def _compare(runs: Mapping[str, Mapping[int, Mapping[str, Any]]], base: str, treatment: str, endpoint: str,
             checkpoint: Checkpoint, confidence: float) -> SeedComparison | None:
    seeds = sorted(set(runs[base]) & set(runs[treatment]))
    a = {s: _outcomes(runs[base][s], endpoint, checkpoint) for s in seeds}
    b = {s: _outcomes(runs[treatment][s], endpoint, checkpoint) for s in seeds}
    seeds = [s for s in seeds if a[s] is not None and b[s] is not None]
    if len(seeds) < 2:
        return None
    return compare_seeds({s: a[s] for s in seeds}, {s: b[s] for s in seeds}, confidence=confidence)


def analyse_regime(records: Sequence[Mapping[str, Any]], *, plan: Plan | None = None, alpha: float = 0.05,
                   confidence: float = 0.95) -> RegimeAnalysis:
    """Carry out REGIME.md's analysis plan on one round's records (e.g. ``load_results("confirm")``).

    Every pair of the plan's primary and secondary pairs whose two methods are present is compared on every
    endpoint of the plan the records hold, at the last epoch and at the best-on-validation checkpoint, over the
    seeds both methods have (at least two). The primary comparisons (last epoch, the primary endpoint) get
    Holm's adjustment of their t-test p-values; an undefined t-test (every seed differs by the same non-zero
    amount) enters Holm as p = 1 and is reported as undefined.

    Args:
        records: the JSON lines of one regime (one `regime_key`).
        plan: the analysis plan (``None``: `PLANS` of the records' round, else the confirmatory one).
        alpha: family-wise significance level of the primary comparisons.
        confidence: confidence level of every interval.

    Returns:
        A `RegimeAnalysis`.
    """
    key, runs = _by_method(records)
    if plan is None:
        rounds = {record.get("round") for record in records}
        plan = PLANS.get(rounds.pop(), PLANS["confirm"]) if len(rounds) == 1 else PLANS["confirm"]
    found: list[tuple[str, str, str, Checkpoint, bool, SeedComparison]] = []
    for pairs, is_primary in ((plan.primary_pairs, True), (plan.secondary_pairs, False)):
        for base, name in pairs:
            for treatment in (label for label in runs if _matches(label, name)):
                if base not in runs:
                    continue
                for checkpoint in ("last", "best"):
                    for endpoint in plan.endpoints:
                        result = _compare(runs, base, treatment, endpoint, checkpoint, confidence)
                        if result is not None:
                            primary = is_primary and endpoint == plan.primary_endpoint and checkpoint == "last"
                            found.append((base, treatment, endpoint, checkpoint, primary, result))
    primary_p = [1.0 if f[5].p_value is None else f[5].p_value for f in found if f[4]]
    adjusted = iter(holm(primary_p)) if primary_p else iter(())
    comparisons = [RegimeComparison(base, treatment, endpoint, checkpoint, primary, result,
                                    signed_rank_test(result.differences), next(adjusted) if primary else None,
                                    alpha)
                   for base, treatment, endpoint, checkpoint, primary, result in found]
    comparisons.sort(key=lambda c: not c.primary)
    return RegimeAnalysis(key, runs, tuple(comparisons), alpha, plan)
