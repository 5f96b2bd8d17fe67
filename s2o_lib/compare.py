"""Compare many trained models under one robustness protocol, with intervals and paired tests, and put the
authors' numbers beside them.

`compare_models` runs `s2o_lib.evaluate.robust_accuracy` on every model with exactly the same arguments (same
images, ε, step size, attacks, AutoAttack version and attack seed), so the rows of the resulting
`ComparisonTable` differ only in the model. A method may come with several models, one per training seed
(``{"at": [model_seed0, model_seed1, ...]}``); the table then reports the mean over seeds and the spread across
them. The table reports every attack and the per-sample worst case, each accuracy with its Wilson interval, and
the S²O gain: for every base method whose ``base+s2o`` is in the table too, S²O minus base in percentage points
with its confidence interval, its p-value and a significance marker set only when p < α (`s2o_lib.stats`:
McNemar's exact test on the per-image outcomes with one seed, the paired t-test across seeds with several).
`s2o_lib.sanity.accuracy_vs_eps` gives a robustness-versus-ε curve, and `s2o_lib.presets.published_table` the authors' released CIFAR-10
numbers (from `s2o_lib.presets`, never typed in here) with RobustBench entries for context.

Example:
    >>> import torch
    >>> from s2o_lib.models import build_model
    >>> from s2o_lib.compare import compare_models
    >>> _ = torch.manual_seed(0)
    >>> models = {name: build_model("small-cnn", num_classes=10, in_channels=1) for name in ("at", "at+s2o")}
    >>> x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    >>> table = compare_models(models, (x, y), eps=0.1, attacks=("clean", "pgd5"))
    >>> table.methods, table.attacks
    (['at', 'at+s2o'], ['clean', 'pgd5', 'worst_case'])
    >>> list(table.s2o_gain())
    ['at']
    >>> gain = table.s2o_statistics()["at"]["pgd5"]      # McNemar and Newcombe on the 8 images
    >>> 0 <= gain.p_value <= 1 and gain.interval[0] <= gain.mean_difference <= gain.interval[1]
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .attacks import check_eps
from .config import Profile
from .errors import S2OError
from .evaluate import ATTACKS, AutoAttackBudget, AutoAttackVersion, EvalResult, describe_protocol, robust_accuracy
from .methods import COMPARISON_METHODS, Method, parse_method
from .presets import ARCH_NAMES, PRESETS, PUBLISHED_ATTACKS
from .seeds import SeedComparison, SeedSummary, compare_seeds, summarize_seeds
from .stats import by_seed, p_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "ComparisonTable", "Data", "Models", "compare_models", "comparison_methods",
]


def comparison_methods(profile: Profile, *, root: str | Path | None = None) -> tuple[str, ...]:
    """The methods notebook 09 compares in ``profile``, in the order of `COMPARISON_METHODS`.

    ``profile.compare_methods`` (all of `COMPARISON_METHODS` when ``None``), which `s2o_lib.zoo.trained_model`
    trains when missing, and every other method whose model is already cached for the profile (seed 0), e.g.
    unpacked from a pretrained bundle: `class` trains fewer models to fit a lab but compares all it has.

    Args:
        profile: the profile.
        root: the model cache (``None``: `s2o_lib.zoo.runs_root`).
    """
    from .zoo import runs_root

    chosen = COMPARISON_METHODS if profile.compare_methods is None else profile.compare_methods
    unknown = [m for m in chosen if m not in COMPARISON_METHODS]
    if unknown:
        raise S2OError(f"compare_methods of profile {profile.name!r} holds {', '.join(unknown)}, not in "
                       f"COMPARISON_METHODS ({', '.join(COMPARISON_METHODS)})")
    folder = Path(root) if root is not None else runs_root()
    cached = {m for m in COMPARISON_METHODS
              if (folder / profile.name / f"{parse_method(m).name}-seed0" / "checkpoint.pt").is_file()}
    return tuple(m for m in COMPARISON_METHODS if m in chosen or m in cached)


Data = Dataset | DataLoader | tuple[Tensor, Tensor]
#: One model per method, or several (one per training seed) as a list or ``{seed: model}``.
Models = Mapping[str, nn.Module | Sequence[nn.Module] | Mapping[int, nn.Module]]


# ============================================================================================ the table
@dataclass(frozen=True)
class ComparisonTable:
    """Robust accuracies of several models measured with one protocol, with intervals and paired tests.

    Every accuracy carries its Wilson interval, and every S²O gain (base → base+s2o) its interval, p-value and a
    significance marker that is set only when the primary p-value is below α (`s2o_lib.stats`: McNemar's exact
    test with one seed, the paired t-test across seeds with several). A gain that is not significant reads
    "no detectable difference at this scale".

    Attributes:
        results: ``{method name: EvalResult}`` in the order the models were given (fractions in [0, 1]): the one
            model's result, or with several seeds the mean accuracy over seeds (an `EvalResult` without
            per-sample outcomes).
        protocol: the protocol every result shares (`EvalResult.protocol`: ``eps``, ``alpha``, ``n``, ``seed``,
            ``restarts``, ``autoattack_version`` and ``attacks``, the words of `describe_protocol`); its ``seed``
            is the attack seed, the same for every model.
        runs: ``{method name: {training seed: EvalResult}}``, every evaluated model with its per-sample outcomes;
            a single model per method is seed 0. Filled from ``results`` when not given, and ``results`` from it
            when only ``runs`` is given.
    """

    results: dict[str, EvalResult] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, dict[int, EvalResult]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.runs:
            object.__setattr__(self, "runs", {name: {0: result} for name, result in self.results.items()})
        elif not self.results:
            object.__setattr__(self, "results", {name: _mean_result(name, by_seed)
                                                 for name, by_seed in self.runs.items()})
        if list(self.runs) != list(self.results):
            raise S2OError(f"runs and results must name the same methods in the same order, got {list(self.runs)} "
                           f"and {list(self.results)}")

    @property
    def methods(self) -> list[str]:
        """The method names (rows), in order."""
        return list(self.results)

    @property
    def attacks(self) -> list[str]:
        """The attack names (columns), in order, ending with ``"worst_case"``."""
        return list(next(iter(self.results.values()))) if self.results else []

    @property
    def seeds(self) -> dict[str, list[int]]:
        """``{method name: its training seeds}`` (``[0]`` for a single model)."""
        return {name: list(by_seed) for name, by_seed in self.runs.items()}

    @property
    def has_outcomes(self) -> bool:
        """Whether every run kept its per-sample outcomes (needed for intervals and tests)."""
        return all(r.per_sample is not None for by_seed in self.runs.values() for r in by_seed.values())

    def rows(self, *, percent: bool = False) -> list[dict[str, Any]]:
        """One dict per method: ``{"method": name, attack: accuracy, ..., "worst_case": accuracy}``.

        Args:
            percent: accuracies in percent instead of fractions.

        Example:
            >>> table.rows()[0]                                      # doctest: +SKIP
            {'method': 'standard', 'clean': 0.98, 'fgsm': 0.02, ..., 'worst_case': 0.0}
        """
        scale = 100.0 if percent else 1.0
        return [{"method": name, **{a: scale * result[a] for a in self.attacks}}
                for name, result in self.results.items()]

    def s2o_pairs(self) -> dict[str, str]:
        """``{base method: its S²O method}`` for every base whose ``base+s2o`` is also in the table.

        Names are matched as methods (`s2o_lib.defenses.parse_method`), so ``"AT"`` pairs with ``"at+s2o"``;
        names that are not methods (e.g. ``"masked"``) are never paired.

        Example:
            >>> table.s2o_pairs()                                    # doctest: +SKIP
            {'at': 'at+s2o', 'trades+awp': 'trades+awp+s2o'}
        """
        return _s2o_pairs(self.results)

    def s2o_gain(self) -> dict[str, dict[str, float]]:
        """S²O minus base, in percentage points, for every attack and every base that has its S²O partner.

        A point estimate only: `s2o_statistics` says whether it is distinguishable from zero.

        Returns:
            ``{base method: {attack: 100 · (acc(base+s2o) − acc(base))}}``, including ``"worst_case"``; a base
            without its ``+s2o`` partner in the table is absent. With several seeds, accuracies are seed means.

        Example:
            >>> table.s2o_gain()["at"]["autoattack"]                  # doctest: +SKIP
            1.5
        """
        return {base: {a: 100.0 * (self.results[s2o][a] - self.results[base][a]) for a in self.attacks}
                for base, s2o in self.s2o_pairs().items()}

    def accuracy_summaries(self, *, confidence: float = 0.95) -> dict[str, dict[str, SeedSummary]]:
        """Every accuracy with its Wilson interval (and, with several seeds, its spread across seeds).

        Args:
            confidence: confidence level of the intervals.

        Returns:
            ``{method: {attack: SeedSummary}}``: ``.pooled`` is the Wilson interval (of the one seed, or of all
            seeds × images pooled), ``.mean`` / ``.std`` the mean and standard deviation across seeds.

        Example:
            >>> str(table.accuracy_summaries()["at"]["pgd20"].pooled)    # doctest: +SKIP
            '0.440 [0.372, 0.510]'
        """
        self._need_outcomes()
        return {name: {attack: summarize_seeds(by_seed, attack=attack, confidence=confidence)
                       for attack in self.attacks} for name, by_seed in self.runs.items()}

    def s2o_statistics(self, *, confidence: float = 0.95) -> dict[str, dict[str, SeedComparison]]:
        """Paired statistics of every S²O gain: base (A) against base+s2o (B), per attack.

        Args:
            confidence: confidence level of the intervals (use ``1 − α`` to match a test at level α).

        Returns:
            ``{base method: {attack: SeedComparison}}`` (`s2o_lib.seeds.compare_seeds`): per seed McNemar's exact
            test and Newcombe's interval; with several seeds the t-interval and paired t-test across seeds (the
            primary test) and McNemar pooled over all (seed, image) pairs. ``mean_difference`` is a fraction.

        Example:
            >>> stats = table.s2o_statistics()["at"]["autoattack"]              # doctest: +SKIP
            >>> stats.mean_difference, stats.interval, stats.p_value, stats.significant(alpha=0.05)  # doctest: +SKIP
        """
        self._need_outcomes()
        return {base: {attack: compare_seeds(self.runs[base], self.runs[s2o], attack=attack, confidence=confidence)
                       for attack in self.attacks} for base, s2o in self.s2o_pairs().items()}

    def gain_frame(self, *, alpha: float = 0.05) -> pd.DataFrame:
        """The S²O gains with their intervals and tests, one row per (base method, attack).

        Args:
            alpha: significance level; the intervals are at confidence ``1 − alpha``.

        Returns:
            A DataFrame with columns ``base``, ``s2o``, ``attack``, ``seeds``, ``gain`` (mean over seeds,
            percentage points, from the per-image counts), ``low`` / ``high`` (the primary interval, points),
            ``test`` (the primary test), ``p``, ``significant`` (p < alpha), ``verdict``, and ``b`` / ``c`` /
            ``McNemar p`` (McNemar on all seeds × images: b images right only with the base, c only with S²O).

        Example:
            >>> table.gain_frame().query("attack == 'autoattack'")      # doctest: +SKIP
        """
        import pandas as pd

        return pd.DataFrame(self._gain_records(alpha), columns=list(_GAIN_COLUMNS))

    def beside_published(self) -> list[dict[str, Any]]:
        """The reproduced numbers beside the authors' figures, for every method that has a preset.

        Returns:
            One dict per method of the table that a preset of `s2o_lib.presets.PRESETS` trains: ``method``,
            ``reproduced clean`` / ``reproduced pgd20`` / ``reproduced autoattack`` (percent, this table),
            ``authors clean`` / ``authors pgd20`` / ``authors autoattack`` (percent, the authors' released
            CIFAR-10 results), ``authors arch`` and ``preset``.

        Example:
            >>> table.beside_published()[0]["authors autoattack"]      # doctest: +SKIP
            48.3
        """
        rows = []
        for name, result in self.results.items():
            method = _as_method(name)
            for preset in PRESETS.values():
                if method is None or parse_method(preset.method).name != method.name:
                    continue
                row: dict[str, Any] = {"method": name}
                for attack in PUBLISHED_ATTACKS:
                    row[f"reproduced {attack}"] = 100.0 * result[attack] if attack in result else None
                for attack in PUBLISHED_ATTACKS:
                    row[f"authors {attack}"] = preset.published.get(attack)
                row["authors arch"] = ARCH_NAMES.get(preset.arch, preset.arch)
                row["preset"] = preset.name
                rows.append(row)
        return rows

    def protocol_line(self) -> str:
        """The protocol in one line, e.g. ``L∞ ε = 0.15 (FGSM/PGD/CW), AutoAttack ε = 0.15, step 0.02, ...``."""
        p = self.protocol
        if not p:
            return "protocol unknown"
        aa_eps = p.get("aa_eps", p["eps"])  # protocols recorded before AutoAttack had its own radius: eps
        line = (f"L∞ ε = {p['eps']:.4g} (FGSM/PGD/CW), AutoAttack ε = {aa_eps:.4g}, step {p['alpha']:.4g}, "
                f"{p['n']} images, attack seed {p['seed']}, {p['restarts']} restart(s) of PGD/CW, "
                f"AutoAttack version: {p['autoattack_version']}")
        seeds = self.seeds
        if any(len(labels) > 1 for labels in seeds.values()):
            distinct = {tuple(labels) for labels in seeds.values()}
            line += ("; training seeds " + ", ".join(map(str, distinct.pop())) + " for every method"
                     if len(distinct) == 1 else
                     "; training seeds: " + "; ".join(f"{m} {', '.join(map(str, s))}" for m, s in seeds.items()))
        return line

    def to_markdown(self, *, percent: bool = True, digits: int = 2, alpha: float = 0.05) -> str:
        """The accuracies with their intervals, then every S²O gain with its interval and test, then the protocol.

        Args:
            percent: accuracies in percent (the gain is always in percentage points).
            digits: decimals shown.
            alpha: significance level of the marker ``*``; intervals are at confidence ``1 − alpha``.

        Example:
            >>> print(table.to_markdown())                            # doctest: +SKIP
        """
        _check_alpha(alpha)
        lines = self._accuracy_markdown(percent=percent, digits=digits, alpha=alpha)
        if self.s2o_pairs():
            lines += ["", *self._gain_markdown(digits=digits, alpha=alpha)]
        lines += ["", f"*Protocol: {self.protocol_line()}.*"]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:  # Jupyter
        return self.to_markdown()

    def to_dataframe(
        self, *, percent: bool = True, with_gain: bool = False, with_intervals: bool = False, alpha: float = 0.05
    ) -> pd.DataFrame:
        """The table as a pandas DataFrame: one row per method (index ``method``), one column per attack.

        Args:
            percent: accuracies in percent instead of fractions.
            with_gain: add per attack ``"ΔS²O <attack>"`` (`s2o_gain`, percentage points), ``"p <attack>"`` (the
                primary p-value) and ``"significant <attack>"`` (p < alpha) on each ``+s2o`` row that has its base
                in the table (NaN / NA on the other rows).
            with_intervals: add ``"<attack> low"`` / ``"<attack> high"`` (Wilson, pooled over seeds), with several
                seeds ``"<attack> sd"`` (across seeds), and with ``with_gain`` ``"ΔS²O <attack> low"`` / ``high``.
            alpha: significance level; intervals are at confidence ``1 − alpha``.

        Example:
            >>> table.to_dataframe().loc["at", "pgd20"]               # doctest: +SKIP
            44.0
        """
        import pandas as pd

        _check_alpha(alpha)
        scale = 100.0 if percent else 1.0
        frame = pd.DataFrame(self.rows(percent=percent), columns=["method", *self.attacks]).set_index("method")
        if with_intervals:
            summaries = self.accuracy_summaries(confidence=1 - alpha)
            several = any(len(labels) > 1 for labels in self.seeds.values())
            for attack in self.attacks:
                frame[f"{attack} low"] = [scale * summaries[m][attack].pooled.low for m in frame.index]
                frame[f"{attack} high"] = [scale * summaries[m][attack].pooled.high for m in frame.index]
                if several:
                    frame[f"{attack} sd"] = [_scaled(summaries[m][attack].std, scale) for m in frame.index]
        if with_gain:
            self._add_gain_columns(frame, alpha=alpha, with_intervals=with_intervals)
        return frame

    # ------------------------------------------------------------------------------------------- helpers
    def _need_outcomes(self) -> None:
        if not self.has_outcomes:
            raise S2OError("this table has no per-sample outcomes, so no intervals or tests; build it with "
                           "compare_models(..., return_per_sample=True) (the default)")

    def _gain_records(self, alpha: float) -> list[dict[str, Any]]:
        """One dict per (pair, attack) with the columns of `gain_frame`."""
        _check_alpha(alpha)
        statistics = self.s2o_statistics(confidence=1 - alpha) if self.has_outcomes else {}
        gains, records = self.s2o_gain(), []
        for base, s2o in self.s2o_pairs().items():
            for attack in self.attacks:
                record: dict[str, Any] = dict.fromkeys(_GAIN_COLUMNS)
                record.update(base=base, s2o=s2o, attack=attack, seeds=len(self.runs[base]), significant=False,
                              gain=gains[base][attack], verdict="untested: no per-sample outcomes")
                comparison = statistics.get(base, {}).get(attack)
                if comparison is not None:
                    low, high = comparison.interval
                    record.update(gain=100 * comparison.mean_difference, low=100 * low, high=100 * high,
                                  test=comparison.primary, p=comparison.p_value,
                                  significant=comparison.significant(alpha=alpha),
                                  verdict=comparison.verdict(alpha=alpha, name="S²O"),
                                  b=comparison.pooled.b, c=comparison.pooled.c,
                                  **{"McNemar p": comparison.pooled.p_value})
                records.append(record)
        return records

    def _accuracy_markdown(self, *, percent: bool, digits: int, alpha: float) -> list[str]:
        scale, unit = (100.0, " (%)") if percent else (1.0, "")
        several = any(len(labels) > 1 for labels in self.seeds.values())
        summaries = self.accuracy_summaries(confidence=1 - alpha) if self.has_outcomes else None
        level = f"{100 * (1 - alpha):g}%"
        if summaries is None:
            caption = f"**Accuracy{unit}** (no per-sample outcomes: no intervals)"
        elif several:
            caption = (f"**Accuracy{unit}**: mean over seeds ± standard deviation across seeds; in brackets the "
                       f"{level} Wilson interval of all seeds × images pooled (evaluation noise only)")
        else:
            caption = f"**Accuracy{unit}**, in brackets its {level} Wilson interval"
        seeds_header = " seeds |" if several else ""
        lines = [caption, "", f"| method |{seeds_header} " + " | ".join(self.attacks) + " |",
                 "|---|" + ("---:|" if several else "") + "---:|" * len(self.attacks)]
        for name, result in self.results.items():
            cells = []
            for attack in self.attacks:
                cell = f"{scale * result[attack]:.{digits}f}"
                if summaries is not None:
                    summary = summaries[name][attack]
                    if summary.std is not None:
                        cell += f" ± {scale * summary.std:.{digits}f}"
                    cell += f" [{scale * summary.pooled.low:.{digits}f}, {scale * summary.pooled.high:.{digits}f}]"
                cells.append(cell)
            seeds_cell = f" {len(self.runs[name])} |" if several else ""
            lines.append(f"| {name} |{seeds_cell} " + " | ".join(cells) + " |")
        return lines

    def _gain_markdown(self, *, digits: int, alpha: float) -> list[str]:
        records = self._gain_records(alpha)
        several = any(record["seeds"] > 1 for record in records)
        level = f"{100 * (1 - alpha):g}%"
        title = f"**S²O gain** (base+s2o − base, percentage points; `*`: significant at α = {alpha:g}, i.e. p < α)"
        lines = [title, ""]
        if several:
            header = (f"| base → +S²O | attack | seeds | mean gain | {level} CI | test | p | pooled b / c "
                      "| pooled McNemar p | sig. | verdict |")
            lines += [header, "|---|---|---:|---:|---|---|---:|---:|---:|:---:|---|"]
        else:
            lines += [f"| base → +S²O | attack | gain | {level} CI | b / c | McNemar p | sig. | verdict |",
                      "|---|---|---:|---|---:|---:|:---:|---|"]
        for r in records:
            interval = "–" if r["low"] is None else f"[{r['low']:+.{digits}f}, {r['high']:+.{digits}f}]"
            counts = "–" if r["b"] is None else f"{r['b']} / {r['c']}"
            cells = [f"{r['base']} → {r['s2o']}", r["attack"]]
            if several:
                cells += [str(r["seeds"]), f"{r['gain']:+.{digits}f}", interval, r["test"] or "–", p_text(r["p"]),
                          counts, p_text(r["McNemar p"])]
            else:
                cells += [f"{r['gain']:+.{digits}f}", interval, counts, p_text(r["p"])]
            lines.append("| " + " | ".join(cells + ["*" if r["significant"] else "", r["verdict"]]) + " |")
        lines += ["", ("b: images right with the base only, c: right with S²O only (McNemar's exact test on them; "
                       "interval: Newcombe's method 10).")]
        if several:
            lines[-1] += (" With several seeds the primary test is the paired t-test across seeds (seeds vary the "
                          "training, the unit a method claim is about); pooled McNemar ignores the seed-to-seed "
                          "spread and is shown as a secondary check.")
        return lines

    def _add_gain_columns(self, frame: pd.DataFrame, *, alpha: float, with_intervals: bool) -> None:
        import pandas as pd

        records = {(r["s2o"], r["attack"]): r for r in self._gain_records(alpha)}
        for attack in self.attacks:
            frame[f"ΔS²O {attack}"] = float("nan")
            if with_intervals:
                frame[f"ΔS²O {attack} low"] = float("nan")
                frame[f"ΔS²O {attack} high"] = float("nan")
            frame[f"p {attack}"] = float("nan")
            frame[f"significant {attack}"] = pd.array([pd.NA] * len(frame), dtype="boolean")
        for base, gain in self.s2o_gain().items():
            s2o = self.s2o_pairs()[base]
            for attack in self.attacks:
                record = records[(s2o, attack)]
                frame.loc[s2o, f"ΔS²O {attack}"] = gain[attack]
                if record["test"] is not None:
                    frame.loc[s2o, f"p {attack}"] = float("nan") if record["p"] is None else record["p"]
                    frame.loc[s2o, f"significant {attack}"] = record["significant"]
                    if with_intervals:
                        frame.loc[s2o, f"ΔS²O {attack} low"] = record["low"]
                        frame.loc[s2o, f"ΔS²O {attack} high"] = record["high"]


_GAIN_COLUMNS = ("base", "s2o", "attack", "seeds", "gain", "low", "high", "test", "p", "significant", "verdict",
                 "b", "c", "McNemar p")


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise S2OError(f"alpha (significance level) must be a number strictly between 0 and 1, e.g. 0.05; "
                       f"got {alpha!r}")


def _scaled(value: float | None, scale: float) -> float:
    return float("nan") if value is None else scale * value


def _as_method(name: str) -> Method | None:
    """The parsed method of a table row's name, or ``None`` if the name is not a method."""
    try:
        return parse_method(name)
    except S2OError:
        return None


def _s2o_pairs(names: Iterable[str]) -> dict[str, str]:
    """``{base name: its +s2o name}`` among ``names`` (matched as methods; see `ComparisonTable.s2o_pairs`)."""
    names = list(names)
    canonical: dict[str, str] = {}
    for name in names:
        method = _as_method(name)
        if method is not None:
            canonical.setdefault(method.name, name)
    pairs = {}
    for name in names:
        method = _as_method(name)
        if method is None or method.s2o is not None or method.base == "standard":
            continue
        partner = Method(method.base, method.awp, "official").name
        if partner in canonical:
            pairs[name] = canonical[partner]
    return pairs


def _mean_result(name: str, by_seed: Mapping[int, EvalResult]) -> EvalResult:
    """The one seed's result, or the mean accuracy over seeds (no per-sample outcomes) under their shared protocol."""
    results = list(by_seed.values())
    if not results:
        raise S2OError(f"runs[{name!r}] is empty; give at least one seed's EvalResult")
    if len(results) == 1:
        return results[0]
    first = results[0]
    for seed, result in by_seed.items():
        if list(result) != list(first) or result.protocol != first.protocol:
            raise S2OError(f"the seeds of {name!r} were evaluated under different protocols (seed {seed}); "
                           "evaluate every seed with the same compare_models call")
    return EvalResult({a: float(np.mean([r[a] for r in results])) for a in first}, protocol=first.protocol,
                      notes=[note for r in results for note in r.notes])


# ============================================================================================ evaluation
def _seeded_models(models: Models) -> dict[str, dict[int, nn.Module]]:
    """``{name: {seed: model}}`` from ``{name: model}``, ``{name: [model per seed]}`` or ``{name: {seed: model}}``."""
    if not isinstance(models, Mapping) or not models:
        raise S2OError("models must be a non-empty mapping {method name: model}, e.g. {'at': model_at}, or "
                       "{method name: [model per seed]}")
    seeded: dict[str, dict[int, nn.Module]] = {}
    for name, entry in models.items():
        if not isinstance(name, str) or not name:
            raise S2OError(f"model names must be non-empty strings, got {name!r}")
        if not isinstance(entry, (nn.Module, Mapping, Sequence)) or isinstance(entry, (str, bytes)):
            raise S2OError(f"models[{name!r}] must be a torch nn.Module, a list of them (one per training seed) or "
                           f"{{seed: model}}; got {type(entry).__name__}")
        models_by_seed = by_seed({0: entry} if isinstance(entry, nn.Module) else entry, name=f"models[{name!r}]",
                                 what="model")
        for seed, model in models_by_seed.items():
            if not isinstance(model, nn.Module):
                raise S2OError(f"models[{name!r}] seed {seed} must be a torch nn.Module, got {type(model).__name__}")
        seeded[name] = models_by_seed
    for base, s2o in _s2o_pairs(seeded).items():
        if list(seeded[base]) != list(seeded[s2o]):
            raise S2OError(f"{base!r} has seeds {list(seeded[base])} but {s2o!r} has {list(seeded[s2o])}; give a "
                           "method and its +s2o partner the same seeds so that every seed is paired")
    return seeded


def compare_models(
    models: Models,
    data: Data,
    *,
    eps: float,
    alpha: float | None = None,
    attacks: Sequence[str] = ATTACKS,
    n: int | None = None,
    autoattack_version: AutoAttackVersion = "standard",
    autoattack_budget: AutoAttackBudget = "full",
    aa_eps: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    return_per_sample: bool = True,
) -> ComparisonTable:
    """Evaluate every model (every seed of every method) with exactly the same protocol (`robust_accuracy`).

    Args:
        models: ``{method name: model}``, or with several training seeds ``{method name: [model_seed0, ...]}``
            or ``{method name: {seed: model}}``; names such as ``"at"`` and ``"at+s2o"`` are paired for the S²O
            gain, and a pair must have the same seeds (seed s of one is paired with seed s of the other).
        data: a Dataset, a DataLoader or an ``(X, y)`` tuple, as for `robust_accuracy`; every model sees the
            same first ``n`` samples.
        eps: L∞ radius (e.g. 0.031 as in the paper for CIFAR-10).
        alpha: PGD/CW step size (``None``: ``eps / 4``; the paper: 0.003).
        attacks: attack names, as for `robust_accuracy` (default: clean, FGSM, PGD-20, CW∞-20, AutoAttack).
        n: evaluate the first ``n`` samples (``None``: all).
        autoattack_version: ``"standard"`` (the number to report) or ``"fast"`` (a declared cheaper subset).
        aa_eps: AutoAttack's L∞ radius (``None``: ``eps``; the paper: 8/255 beside PGD/CW's 0.031).
        autoattack_budget: ``"full"`` or ``"dry-run"`` (`s2o_lib.evaluate.robust_accuracy`).
        seed: attack seed (random starts and AutoAttack), the same for every model; not a training seed.
        batch_size: images per forward pass.
        return_per_sample: keep each result's per-sample correctness (``result.per_sample``), which the intervals
            and tests need; ``False`` keeps the accuracies only (the table then shows no intervals or tests).

    Returns:
        A `ComparisonTable`: ``runs[name][s]`` is exactly what `robust_accuracy` returns for that method's seed
        ``s`` (``results[name]`` too for a single model; the mean over seeds otherwise). Each model runs on its
        own device (the data is moved there batch by batch); every number and per-sample tensor is on the CPU.

    Example:
        >>> table = compare_models({"at": model_at, "at+s2o": model_s2o}, test_set, eps=0.031,
        ...                        alpha=0.003, n=1000)                              # doctest: +SKIP
        >>> seeds = {m: [trained_model(m, seed=s)[0] for s in range(3)] for m in ("at", "at+s2o")}  # doctest: +SKIP
        >>> table = compare_models(seeds, test_set, eps=0.031, alpha=0.003)          # doctest: +SKIP
        >>> print(table.to_markdown())                                               # doctest: +SKIP
    """
    seeded = _seeded_models(models)
    # Validates eps, alpha, the attack names and the AutoAttack version before any model is evaluated.
    if alpha is not None:
        check_eps(alpha, name="alpha (step size)")
    describe_protocol(attacks, eps=eps, alpha=alpha, autoattack_version=autoattack_version, aa_eps=aa_eps)
    settings = {"attacks": attacks, "eps": eps, "alpha": alpha, "n": n, "autoattack_version": autoattack_version,
                "aa_eps": aa_eps, "seed": seed, "batch_size": batch_size, "return_per_sample": return_per_sample,
                "autoattack_budget": autoattack_budget}
    runs = {name: {s: robust_accuracy(model, data, **settings) for s, model in by_seed.items()}
            for name, by_seed in seeded.items()}
    first = next(iter(next(iter(runs.values())).values()))
    return ComparisonTable(protocol=dict(first.protocol), runs=runs)
