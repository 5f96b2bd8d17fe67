"""Compare many trained models under one robustness protocol, and put the authors' numbers beside them.

`compare_models` runs `s2o_lib.evaluate.robust_accuracy` on every model with exactly the same arguments (same
images, ε, step size, attacks, AutoAttack version and seed), so the rows of the resulting `ComparisonTable`
differ only in the model. The table reports every attack and the per-sample worst case, and the S²O gain:
for every base method whose ``base+s2o`` is in the table too, S²O minus base in percentage points.
`accuracy_vs_eps` gives a robustness-versus-ε curve, and `published_table` the authors' released CIFAR-10
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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .attacks import check_eps
from .defenses import Method, parse_method
from .errors import S2OError
from .evaluate import ATTACKS, AutoAttackVersion, EvalResult, describe_protocol, robust_accuracy
from .presets import PRESETS, ROBUSTBENCH_CONTEXT

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: The methods notebook 08 compares: each base method, then the same with S²O.
COMPARISON_METHODS: tuple[str, ...] = (
    "standard",
    "at", "at+s2o",
    "trades", "trades+s2o",
    "mart", "mart+s2o",
    "at+awp", "at+awp+s2o",
    "trades+awp", "trades+awp+s2o",
)

#: Display names of the architectures that appear in the published numbers.
ARCH_NAMES: dict[str, str] = {"preact-resnet18": "PreAct ResNet-18", "wrn-34-10": "WRN-34-10",
                              "small-cnn": "small CNN"}
AUTHORS_SOURCE = "authors' figures (Jin et al., released S²O results)"
ROBUSTBENCH_SOURCE = "RobustBench (context, not S²O)"
PUBLISHED_ATTACKS: tuple[str, ...] = ("clean", "pgd20", "autoattack")

Data = Dataset | DataLoader | tuple[Tensor, Tensor]


# ============================================================================================ the table
@dataclass(frozen=True)
class ComparisonTable:
    """Robust accuracies of several models measured with one protocol.

    Attributes:
        results: ``{method name: EvalResult}`` in the order the models were given (fractions in [0, 1]).
        protocol: the protocol every result shares (`EvalResult.protocol`: ``eps``, ``alpha``, ``n``, ``seed``,
            ``restarts``, ``autoattack_version`` and ``attacks``, the words of `describe_protocol`).
    """

    results: dict[str, EvalResult]
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        """The method names (rows), in order."""
        return list(self.results)

    @property
    def attacks(self) -> list[str]:
        """The attack names (columns), in order, ending with ``"worst_case"``."""
        return list(next(iter(self.results.values()))) if self.results else []

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
        canonical: dict[str, str] = {}
        for name in self.results:
            method = _as_method(name)
            if method is not None:
                canonical.setdefault(method.name, name)
        pairs = {}
        for name in self.results:
            method = _as_method(name)
            if method is None or method.s2o is not None or method.base == "standard":
                continue
            partner = Method(method.base, method.awp, "official").name
            if partner in canonical:
                pairs[name] = canonical[partner]
        return pairs

    def s2o_gain(self) -> dict[str, dict[str, float]]:
        """S²O minus base, in percentage points, for every attack and every base that has its S²O partner.

        Returns:
            ``{base method: {attack: 100 · (acc(base+s2o) − acc(base))}}``, including ``"worst_case"``; a base
            without its ``+s2o`` partner in the table is absent.

        Example:
            >>> table.s2o_gain()["at"]["autoattack"]                  # doctest: +SKIP
            1.5
        """
        return {base: {a: 100.0 * (self.results[s2o][a] - self.results[base][a]) for a in self.attacks}
                for base, s2o in self.s2o_pairs().items()}

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
        """The protocol in one line, e.g. ``L∞ ε = 0.15, step 0.02, 200 images, seed 0, ...``."""
        p = self.protocol
        if not p:
            return "protocol unknown"
        return (f"L∞ ε = {p['eps']:.4g}, step {p['alpha']:.4g}, {p['n']} images, seed {p['seed']}, "
                f"{p['restarts']} restart(s) of PGD/CW, AutoAttack version: {p['autoattack_version']}")

    def to_markdown(self, *, percent: bool = True, digits: int = 2) -> str:
        """The table (methods × attacks), then the S²O gain per base method, then the protocol.

        Args:
            percent: accuracies in percent (the gain is always in percentage points).
            digits: decimals shown.

        Example:
            >>> print(table.to_markdown())                            # doctest: +SKIP
        """
        scale, unit = (100.0, " (%)") if percent else (1.0, "")
        header = "| method | " + " | ".join(self.attacks) + " |"
        rule = "|---|" + "---:|" * len(self.attacks)
        lines = [f"**Accuracy{unit}**", "", header, rule]
        for name, result in self.results.items():
            lines.append(f"| {name} | " + " | ".join(f"{scale * result[a]:.{digits}f}" for a in self.attacks) + " |")
        gains = self.s2o_gain()
        if gains:
            pairs = self.s2o_pairs()
            lines += ["", "**S²O gain** (base+s2o − base, percentage points)", "",
                      "| base → +S²O | " + " | ".join(self.attacks) + " |", rule]
            for base, gain in gains.items():
                lines.append(f"| {base} → {pairs[base]} | "
                             + " | ".join(f"{gain[a]:+.{digits}f}" for a in self.attacks) + " |")
        lines += ["", f"*Protocol: {self.protocol_line()}.*"]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:  # Jupyter
        return self.to_markdown()

    def to_dataframe(self, *, percent: bool = True, with_gain: bool = False) -> pd.DataFrame:
        """The table as a pandas DataFrame: one row per method (index ``method``), one column per attack.

        Args:
            percent: accuracies in percent instead of fractions.
            with_gain: add a column ``"ΔS²O <attack>"`` per attack holding `s2o_gain` (percentage points) on
                each ``+s2o`` row that has its base in the table (NaN on the other rows).

        Example:
            >>> table.to_dataframe().loc["at", "pgd20"]               # doctest: +SKIP
            44.0
        """
        import pandas as pd

        frame = pd.DataFrame(self.rows(percent=percent), columns=["method", *self.attacks]).set_index("method")
        if with_gain:
            gains, pairs = self.s2o_gain(), self.s2o_pairs()
            for attack in self.attacks:
                frame[f"ΔS²O {attack}"] = float("nan")
            for base, gain in gains.items():
                for attack in self.attacks:
                    frame.loc[pairs[base], f"ΔS²O {attack}"] = gain[attack]
        return frame


def _as_method(name: str) -> Method | None:
    """The parsed method of a table row's name, or ``None`` if the name is not a method."""
    try:
        return parse_method(name)
    except S2OError:
        return None


# ============================================================================================ evaluation
def compare_models(
    models: Mapping[str, nn.Module],
    data: Data,
    *,
    eps: float,
    alpha: float | None = None,
    attacks: Sequence[str] = ATTACKS,
    n: int | None = None,
    autoattack_version: AutoAttackVersion = "standard",
    seed: int = 0,
    batch_size: int = 256,
    return_per_sample: bool = False,
) -> ComparisonTable:
    """Evaluate every model with exactly the same protocol (`s2o_lib.evaluate.robust_accuracy`).

    Args:
        models: ``{method name: model}``; names such as ``"at"`` and ``"at+s2o"`` are paired for the S²O gain.
        data: a Dataset, a DataLoader or an ``(X, y)`` tuple, as for `robust_accuracy`; every model sees the
            same first ``n`` samples.
        eps: L∞ radius (e.g. 0.031 as in the paper for CIFAR-10).
        alpha: PGD/CW step size (``None``: ``eps / 4``; the paper: 0.003).
        attacks: attack names, as for `robust_accuracy` (default: clean, FGSM, PGD-20, CW∞-20, AutoAttack).
        n: evaluate the first ``n`` samples (``None``: all).
        autoattack_version: ``"standard"`` (the number to report) or ``"fast"`` (a declared cheaper subset).
        seed: seed of the random starts and of AutoAttack, the same for every model.
        batch_size: images per forward pass.
        return_per_sample: keep each result's per-sample correctness (``result.per_sample``).

    Returns:
        A `ComparisonTable` whose ``results[name]`` is exactly what `robust_accuracy` returns for that model.

    Example:
        >>> table = compare_models({"at": model_at, "at+s2o": model_s2o}, test_set, eps=0.031,
        ...                        alpha=0.003, n=1000)                              # doctest: +SKIP
        >>> print(table.to_markdown())                                               # doctest: +SKIP
    """
    if not isinstance(models, Mapping) or not models:
        raise S2OError("models must be a non-empty mapping {method name: model}, e.g. {'at': model_at}")
    for name, model in models.items():
        if not isinstance(name, str) or not name:
            raise S2OError(f"model names must be non-empty strings, got {name!r}")
        if not isinstance(model, nn.Module):
            raise S2OError(f"models[{name!r}] must be a torch nn.Module, got {type(model).__name__}")
    # Validates eps, alpha, the attack names and the AutoAttack version before any model is evaluated.
    if alpha is not None:
        check_eps(alpha, name="alpha (step size)")
    describe_protocol(attacks, eps=eps, alpha=alpha, autoattack_version=autoattack_version)
    settings = dict(attacks=attacks, eps=eps, alpha=alpha, n=n, autoattack_version=autoattack_version, seed=seed,
                    batch_size=batch_size, return_per_sample=return_per_sample)
    results = {name: robust_accuracy(model, data, **settings) for name, model in models.items()}
    return ComparisonTable(results, dict(next(iter(results.values())).protocol))


def accuracy_vs_eps(
    model: nn.Module,
    data: Data,
    *,
    eps_values: Sequence[float],
    steps: int = 20,
    alpha_ratio: float = 0.25,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> list[float]:
    """PGD-``steps`` accuracy (clean-and-adversarial correct) at each radius, for a robustness-vs-ε plot.

    Each point is ``robust_accuracy(model, data, attacks=(f"pgd{steps}",), eps=e, alpha=alpha_ratio * e, ...)``:
    the step size scales with the radius, so every point runs the same attack in a bigger or smaller ball. With
    the same ``n``, ``seed`` and ratio these are exactly the numbers of the ``eps_monotone`` check of
    `s2o_lib.evaluate.sanity_checks`.

    Args:
        model: classifier mapping images in [0, 1] to logits.
        data: a Dataset, a DataLoader or an ``(X, y)`` tuple, as for `robust_accuracy`.
        eps_values: the radii (≥ 0), in the order the accuracies are returned; at 0 the accuracy is clean.
        steps: PGD steps (20: PGD-20).
        alpha_ratio: step size divided by the radius (0.25: ε/4, `robust_accuracy`'s default).
        n: evaluate the first ``n`` samples (``None``: all).
        seed: seed of the random starts.
        batch_size: images per forward pass.

    Returns:
        The accuracies (fractions in [0, 1]), one per radius.

    Example:
        >>> accuracy_vs_eps(model, test_set, eps_values=[0, 2/255, 4/255, 8/255], n=500)   # doctest: +SKIP
        [0.84, 0.75, 0.66, 0.48]
    """
    radii = eps_values.tolist() if hasattr(eps_values, "tolist") else eps_values  # NumPy / torch arrays too
    if isinstance(radii, (str, bytes)) or not isinstance(radii, Iterable) or not (radii := list(radii)):
        raise S2OError("eps_values must be a non-empty sequence of radii >= 0, e.g. [0, 0.01, 0.03]; "
                       f"got {eps_values!r}")
    for e in radii:
        check_eps(e, name="every entry of eps_values")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise S2OError(f"steps must be an integer >= 1 (20 for PGD-20), got {steps!r}")
    if isinstance(alpha_ratio, bool) or not isinstance(alpha_ratio, (int, float)) or not math.isfinite(alpha_ratio) \
            or alpha_ratio <= 0:
        raise S2OError(f"alpha_ratio (step size / eps) must be a finite number > 0, e.g. 0.25; got {alpha_ratio!r}")
    name = f"pgd{steps}"
    return [robust_accuracy(model, data, attacks=(name,), eps=e, alpha=alpha_ratio * e, n=n, seed=seed,
                            batch_size=batch_size)[name] for e in radii]


# ============================================================================================ published numbers
def _split_robustbench(entry: str) -> tuple[str, str]:
    """``"TRADES WRN-34-10"`` → ``("TRADES", "WRN-34-10")`` (the architecture is the entry's known suffix)."""
    for arch in ARCH_NAMES.values():
        if entry.endswith(" " + arch):
            return entry[: -len(arch) - 1].strip(), arch
    return entry, ""


def published_table(*, include_context: bool = True) -> list[dict[str, Any]]:
    """The authors' released CIFAR-10 results of S²O, and optionally RobustBench entries for context.

    Every number comes from `s2o_lib.presets` (``Preset.published`` and ``ROBUSTBENCH_CONTEXT``): CIFAR-10,
    L∞ ε = 8/255, in percent. They are the authors' and RobustBench's figures, not reproduced here.

    Args:
        include_context: also add the RobustBench rows (clean and AutoAttack only; PGD-20 is ``None``).

    Returns:
        One dict per row: ``source``, ``method``, ``arch``, ``dataset``, ``clean``, ``pgd20``, ``autoattack``.

    Example:
        >>> rows = published_table(include_context=False)
        >>> rows[0]["method"], rows[0]["arch"], rows[0]["source"].startswith("authors")
        ('at+s2o', 'PreAct ResNet-18', True)
    """
    rows = []
    for preset in PRESETS.values():
        rows.append({"source": AUTHORS_SOURCE, "method": preset.method,
                     "arch": ARCH_NAMES.get(preset.arch, preset.arch), "dataset": preset.dataset,
                     **{attack: preset.published.get(attack) for attack in PUBLISHED_ATTACKS}})
    if include_context:
        for entry, numbers in ROBUSTBENCH_CONTEXT.items():
            method, arch = _split_robustbench(entry)
            rows.append({"source": ROBUSTBENCH_SOURCE, "method": method, "arch": arch, "dataset": "cifar10",
                         **{attack: numbers.get(attack) for attack in PUBLISHED_ATTACKS}})
    return rows
