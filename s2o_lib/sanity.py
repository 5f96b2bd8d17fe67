"""Sanity checks for a robustness evaluation itself (Carlini et al. 2019, *On Evaluating Adversarial Robustness*).

`sanity_checks` runs the checks that catch a broken evaluation — gradient masking above all — on one model and
returns a `SanityReport` with one `Check` per check; `mask_gradients` builds a deliberately gradient-masked
model that fails them, for teaching and for tests. Every accuracy comes from `s2o_lib.evaluate.robust_accuracy`.
The data may live anywhere: batches are moved to the model's device (the surrogate's for the transfer attack), and
every result (accuracies, fractions, norms in `Check.values`) comes back as CPU floats.

Example:
    >>> from s2o_lib.sanity import mask_gradients, sanity_checks                         # doctest: +SKIP
    >>> print(sanity_checks(model, test_set, eps=8/255, surrogate=other_model))          # doctest: +SKIP
    >>> sanity_checks(mask_gradients(model), test_set, eps=8/255).failed                  # doctest: +SKIP
    ['large_eps', 'attack_ordering', 'ce_cw_agreement', 'zero_gradients']
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .attacks import eval_mode, frozen_parameters, pgd
from .checks import check_eps, check_fraction, check_int
from .data import batch_slices, tensors
from .errors import S2OError, unknown_name
from .evaluate import (
    AUTOATTACK_VERSIONS,
    AutoAttackVersion,
    EvalResult,
    attack_generator,
    correct_predictions,
    robust_accuracy,
)
from .models import device_of

__all__ = [
    "MASK_METHODS", "Check", "Data", "GradientMaskedModel", "MaskMethod", "SanityReport", "accuracy_vs_eps",
    "mask_gradients", "sanity_checks",
]


Data = Dataset | DataLoader | tuple[Tensor, Tensor]
MaskMethod = Literal["saturate", "quantize"]
MASK_METHODS: tuple[str, ...] = ("saturate", "quantize")


# ============================================================================================ gradient masking
class GradientMaskedModel(nn.Module):
    """A model with the same predictions as ``model`` whose gradients are useless to attacks (for teaching).

    Two ways of breaking gradients, both seen in published "defences" that later fell:

    - ``"saturate"``: logits × ``scale`` (1e4). The argmax is unchanged, but softmax saturates in float32, so
      the cross-entropy gradient is exactly zero for nearly every sample: FGSM/PGD on cross-entropy stall,
      while margin-based attacks (CW, AutoAttack's APGD-T) and transfer attacks still work.
    - ``"quantize"``: inputs rounded to ``levels`` grey levels before the model. ``round`` has zero gradient,
      so every gradient-based attack stalls; predictions change only where rounding moves a pixel.

    Args:
        model: the classifier to wrap (shared, not copied).
        method: ``"saturate"`` or ``"quantize"``.
        scale: logit multiplier for ``"saturate"``.
        levels: number of grey levels above 0 for ``"quantize"`` (x → round(x·levels)/levels).

    Example:
        >>> masked = GradientMaskedModel(model)                      # doctest: +SKIP
        >>> bool((masked(x).argmax(1) == model(x).argmax(1)).all())  # doctest: +SKIP
        True
    """

    def __init__(self, model: nn.Module, *, method: MaskMethod = "saturate", scale: float = 1e4,
                 levels: int = 255) -> None:
        super().__init__()
        if method not in MASK_METHODS:
            raise unknown_name("gradient-masking method", method, MASK_METHODS)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise S2OError(f"scale must be a finite number > 0, got {scale!r}")
        check_int(levels, "levels", minimum=1)
        self.model = model
        self.method = method
        self.scale = float(scale)
        self.levels = levels

    def forward(self, x: Tensor) -> Tensor:
        if self.method == "quantize":
            x = torch.round(x * self.levels) / self.levels
        logits = self.model(x)
        return logits * self.scale if self.method == "saturate" else logits


def mask_gradients(model: nn.Module, *, method: MaskMethod = "saturate", scale: float = 1e4,
                   levels: int = 255) -> GradientMaskedModel:
    """Wrap ``model`` in a `GradientMaskedModel` (same predictions, broken gradients); see there for the args."""
    return GradientMaskedModel(model, method=method, scale=scale, levels=levels)


# ============================================================================================ sanity checks
@dataclass(frozen=True)
class Check:
    """One sanity check.

    Attributes:
        name: short identifier, e.g. ``"zero_gradients"``.
        passed: ``True``, ``False``, or ``None`` when skipped.
        detail: one sentence saying what was measured and against which tolerance.
        values: the numbers behind it (accuracies are fractions in [0, 1]).
    """

    name: str
    passed: bool | None
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``"pass"``, ``"FAIL"`` or ``"skipped"``."""
        return "skipped" if self.passed is None else ("pass" if self.passed else "FAIL")


@dataclass(frozen=True)
class SanityReport:
    """The result of `sanity_checks`.

    Attributes:
        checks: the checks, in the order run.
    """

    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Whether every check that was not skipped passed."""
        return all(c.passed for c in self.checks if c.passed is not None)

    @property
    def failed(self) -> list[str]:
        """Names of the checks that failed."""
        return [c.name for c in self.checks if c.passed is False]

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; checks: {', '.join(c.name for c in self.checks)}")

    def _headline(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "FAIL", "skipped")}
        verdict = "PASSED" if self.passed else "FAILED"
        return (f"Sanity checks (Carlini et al. 2019): {verdict} — {counts['pass']} passed, {counts['FAIL']} failed, "
                f"{counts['skipped']} skipped")

    def to_markdown(self) -> str:
        """The checks as a markdown table."""
        rows = [f"**{self._headline()}**", "", "| check | result | detail |", "|---|---|---|"]
        rows += [f"| {c.name} | {c.status} | {c.detail} |" for c in self.checks]
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:  # Jupyter
        return self.to_markdown()

    def __str__(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [self._headline()]
        lines += [f"  {c.name:<{width}}  {c.status:<7}  {c.detail}" for c in self.checks]
        return "\n".join(lines)


# ============================================================================================ the checks
@dataclass(frozen=True)
class _Setup:
    """What every check evaluates: the model, the first n samples and the shared attack settings."""

    model: nn.Module
    x: Tensor
    y: Tensor
    eps: float
    step: float  # PGD step size at eps
    seed: int
    device: torch.device
    batch_size: int
    tol: float
    runs: dict[tuple[float, float, int, int], Tensor] = field(default_factory=dict, compare=False, repr=False)

    def pgd_correct(self, *, eps: float, alpha: float, steps: int, restarts: int = 1) -> Tensor:
        """Per-sample 'correct on clean and after PGD' (bool, CPU), via `robust_accuracy`.

        Each attack runs once: its starts are seeded, so a second check asking for the same PGD (the ε-grid's
        PGD-20 at ε is also the steps check's PGD-20 when ``steps[1]`` is 20) gets the same answer from ``runs``.
        """
        key = (eps, alpha, steps, restarts)
        if key not in self.runs:
            name = f"pgd{steps}"
            result = robust_accuracy(self.model, (self.x, self.y), attacks=(name,), eps=eps, alpha=alpha,
                                     restarts=restarts, seed=self.seed, device=self.device,
                                     batch_size=self.batch_size, return_per_sample=True)
            self.runs[key] = result.per_sample[name]
        return self.runs[key].clone()

    def pgd_accuracy(self, **kwargs: Any) -> float:
        return self.pgd_correct(**kwargs).float().mean().item()

    def cw_accuracy(self, *, steps: int) -> float:
        """Accuracy under PGD on the CW margin loss at ε with the shared step (`robust_accuracy`'s ``cw<steps>``)."""
        name = f"cw{steps}"
        result = robust_accuracy(self.model, (self.x, self.y), attacks=(name,), eps=self.eps, alpha=self.step,
                                 seed=self.seed, device=self.device, batch_size=self.batch_size)
        return float(result[name])


def _format_list(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def _at_most(value: float, limit: float) -> bool:
    """``value <= limit`` for accuracies and fractions of n images: 3 of 30 is "at most 0.10", though a float32
    mean puts it at 0.1000000015. Every check allows that rounding (1e-6, a tenth of one image in 100,000) and
    nothing more."""
    return value <= limit + 1e-6


def _check_eps_monotone(grid: list[float], accs: list[float], *, tol: float) -> Check:
    rise = max([b - a for a, b in itertools.pairwise(accs)], default=0.0)
    return Check(
        "eps_monotone", _at_most(rise, tol),
        f"PGD-20 accuracy over eps={_format_list(grid)} is {_format_list(accs)}; largest rise {max(rise, 0):.3f} "
        f"(tol {tol:g})",
        {"eps": grid, "accuracy": accs, "largest_rise": rise})


def _check_large_eps(grid: list[float], accs: list[float], *, large_eps: float, max_acc: float) -> Check:
    acc_large = accs[grid.index(min(large_eps, 1.0))]
    return Check(
        "large_eps", _at_most(acc_large, max_acc),
        f"PGD-20 accuracy at eps={large_eps:g} is {acc_large:.3f} (must be <= {max_acc:g}: "
        "an attack that cannot win with a huge budget is not finding gradients)",
        {"eps": large_eps, "accuracy": acc_large})


def _check_more_steps(setup: _Setup, *, few: int, many: int, acc_few: float) -> Check:
    acc_many = setup.pgd_accuracy(eps=setup.eps, alpha=setup.step, steps=many)
    return Check(
        "more_steps", _at_most(acc_many, acc_few + setup.tol),
        f"PGD-{few} {acc_few:.3f} vs PGD-{many} {acc_many:.3f} (more steps may not raise accuracy by > {setup.tol:g})",
        {f"pgd{few}": acc_few, f"pgd{many}": acc_many})


def _check_ce_cw(setup: _Setup, *, steps: int, acc_ce: float, max_gap: float) -> Check:
    """PGD on cross-entropy and PGD on the CW margin loss must roughly agree (notebook 02's rule)."""
    acc_cw = setup.cw_accuracy(steps=steps)
    gap = acc_ce - acc_cw
    return Check(
        "ce_cw_agreement", _at_most(abs(gap), max_gap),
        f"PGD-{steps} (cross-entropy) {acc_ce:.3f} vs CW-{steps} (margin loss) {acc_cw:.3f}: they differ by "
        f"{abs(gap):.3f} (max {max_gap:g}; a cross-entropy result that the margin loss does not confirm is suspect: "
        "its gradients may be saturated or smoothed)",
        {f"pgd{steps}": acc_ce, f"cw{steps}": acc_cw, "difference": gap})


def _check_more_restarts(setup: _Setup, *, few: int, restarts: int, acc_few: float) -> Check:
    acc_rs = setup.pgd_accuracy(eps=setup.eps, alpha=setup.step, steps=few, restarts=restarts)
    return Check(
        "more_restarts", _at_most(acc_rs, acc_few + setup.tol),
        f"PGD-{few} with 1 restart {acc_few:.3f} vs {restarts} restarts {acc_rs:.3f} "
        f"(more restarts may not raise accuracy by > {setup.tol:g})",
        {"restarts_1": acc_few, f"restarts_{restarts}": acc_rs})


def _check_attack_ordering(
    setup: _Setup, *, autoattack_version: AutoAttackVersion | None, max_violations: float
) -> tuple[Check, EvalResult]:
    """Per-sample ordering clean ≥ FGSM ≥ PGD-20 ≥ AutoAttack; also returns the results (the transfer check
    reuses their PGD-20)."""
    names = ["clean", "fgsm", "pgd20"] + (["autoattack"] if autoattack_version is not None else [])
    ordered = robust_accuracy(setup.model, (setup.x, setup.y), attacks=names, eps=setup.eps, alpha=setup.step,
                              seed=setup.seed, autoattack_version=autoattack_version or "fast",
                              return_per_sample=True, device=setup.device, batch_size=setup.batch_size)
    per = ordered.per_sample or {}
    # key "fgsm_not_pgd20": fraction of samples that FGSM fools but PGD-20 does not
    violations = {f"{weak}_not_{strong}": (~per[weak] & per[strong]).float().mean().item()
                  for weak, strong in itertools.pairwise(names[1:])}
    accuracy_text = ", ".join(f"{k} {ordered[k]:.3f}" for k in names)
    violation_text = ", ".join(f"{k.replace('_not_', ' but not ')} {v:.3f}" for k, v in violations.items())
    check = Check(
        "attack_ordering", all(_at_most(v, max_violations) for v in violations.values()),
        f"accuracy {accuracy_text}; fraction fooled by {violation_text} (max {max_violations:g} each)",
        {"accuracy": {k: ordered[k] for k in names}, "violations": violations,
         "autoattack_version": autoattack_version,
         # informative only: a large gap means PGD is hampered (e.g. cross-entropy saturates) — compare CW-20
         "pgd20_minus_autoattack": ordered["pgd20"] - ordered["autoattack"] if "autoattack" in names else None})
    return check, ordered


def _check_transfer(setup: _Setup, surrogate: nn.Module | None, ordered: EvalResult) -> Check:
    """White-box PGD-20 must beat PGD-20 crafted on an independently trained surrogate (skipped without one)."""
    white = ordered["pgd20"]
    if surrogate is None:
        return Check("whitebox_beats_transfer", None,
                     "skipped: pass surrogate= (an independently trained model) to run the transfer check",
                     {"pgd20": white})
    x, y, device = setup.x, setup.y, device_of(surrogate)
    generator = attack_generator(setup.seed, "transfer", device)
    with frozen_parameters(surrogate):
        x_transfer = torch.cat([
            pgd(surrogate, x[s].to(device), y[s].to(device), eps=setup.eps, alpha=setup.step, steps=20,
                generator=generator).cpu()
            for s in batch_slices(len(y), setup.batch_size)])
    clean = (ordered.per_sample or {})["clean"]
    transferred = correct_predictions(setup.model, x_transfer, y, device=setup.device, batch_size=setup.batch_size)
    transfer = (transferred & clean).float().mean().item()
    return Check(
        "whitebox_beats_transfer", _at_most(white, transfer + setup.tol),
        f"white-box PGD-20 {white:.3f} vs PGD-20 transferred from the surrogate {transfer:.3f} "
        f"(white-box may not be weaker by > {setup.tol:g})",
        {"pgd20": white, "transfer_pgd20": transfer})


def _input_gradient_norms(setup: _Setup) -> Tensor:
    """L1 norm of d CE(model(x), y) / dx per sample (CPU), in eval mode."""
    model, norms = setup.model, []
    with eval_mode(model), frozen_parameters(model), torch.enable_grad():
        for s in batch_slices(len(setup.y), setup.batch_size):
            xb = setup.x[s].to(setup.device).requires_grad_(True)
            loss = F.cross_entropy(model(xb), setup.y[s].to(setup.device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
            norms.append(grad.flatten(1).abs().sum(1).cpu())
    return torch.cat(norms)


def _check_zero_gradients(setup: _Setup, *, max_fraction: float, atol: float) -> Check:
    norms = _input_gradient_norms(setup)
    zero_frac = (norms <= atol).float().mean().item()
    return Check(
        "zero_gradients", _at_most(zero_frac, max_fraction),
        f"{zero_frac:.3f} of samples have a ~0 cross-entropy input gradient (L1 norm <= {atol:g}; "
        f"max {max_fraction:g}); median L1 gradient norm {norms.median().item():.3g}",
        {"zero_fraction": zero_frac, "median_norm": norms.median().item(), "atol": atol})


def _check_sanity_args(
    *, eps: float, alpha: float | None, large_eps: float, n: int, restarts: int, steps: tuple[int, int],
    autoattack_version: str | None, fractions: dict[str, float], zero_grad_atol: float,
    eps_grid: Sequence[float] | None,
) -> None:
    check_eps(eps)
    if eps <= 0:
        raise S2OError(f"sanity checks need eps > 0, got {eps!r}")
    if alpha is not None:
        check_eps(alpha, name="alpha (step size)")
    check_eps(large_eps, name="large_eps")
    check_int(n, "n", minimum=1)
    check_int(restarts, "restarts", minimum=1)
    if len(steps) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps):
        raise S2OError(f"steps must be two integers >= 1 (fewer, more), e.g. (10, 50); got {steps!r}")
    if autoattack_version is not None and autoattack_version not in AUTOATTACK_VERSIONS:
        raise unknown_name("AutoAttack version", autoattack_version, AUTOATTACK_VERSIONS)
    for name, value in fractions.items():
        check_fraction(value, name)
    check_eps(zero_grad_atol, name="zero_grad_atol")
    for e in eps_grid or ():
        check_eps(e, name="eps_grid entries")


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
        The accuracies (Python floats in [0, 1]), one per radius; the data is moved to the model's device.

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


def sanity_checks(
    model: nn.Module, data: Data, *, eps: float, n: int = 200,
    surrogate: nn.Module | None = None, seed: int = 0, alpha: float | None = None,
    eps_grid: Sequence[float] | None = None, large_eps: float = 0.5, large_eps_max_acc: float = 0.1,
    steps: tuple[int, int] = (10, 50), restarts: int = 5, autoattack_version: AutoAttackVersion | None = "fast",
    tol: float = 0.03, max_ce_cw_gap: float = 0.10, max_order_violations: float = 0.05, max_zero_grad_frac: float = 0.05,
    zero_grad_atol: float = 1e-12, batch_size: int = 256, device: torch.device | str | None = None,
) -> SanityReport:
    """Check that the robustness evaluation itself is sound (Carlini et al. 2019, "On Evaluating Adversarial
    Robustness"); every failed check points at gradient masking or a too-weak attack.

    Checks, all on the first ``n`` samples (accuracies are fractions in [0, 1], each counted per sample as
    correct on the clean input and under the attack):

    1. ``eps_monotone``: PGD-20 accuracy over the ε grid never rises by more than ``tol``.
    2. ``large_eps``: at ε = ``large_eps`` (0.5 lets the attack turn any [0, 1] image mid-grey, so a working
       attack wins) PGD-20 accuracy is ≤ ``large_eps_max_acc``.
    3. ``more_steps``: PGD with ``steps[1]`` steps is no more than ``tol`` above PGD with ``steps[0]``.
    4. ``more_restarts``: PGD-``steps[0]`` with ``restarts`` restarts is no more than ``tol`` above 1 restart.
    5. ``whitebox_beats_transfer``: white-box PGD-20 accuracy ≤ accuracy under PGD-20 crafted on
       ``surrogate`` + ``tol`` (skipped without a surrogate).
    6. ``attack_ordering``: per sample, clean ≥ FGSM ≥ PGD-20 ≥ AutoAttack: the fraction of samples that a
       weaker attack fools but a stronger one does not is ≤ ``max_order_violations`` for each pair
       (AutoAttack is left out when ``autoattack_version`` is ``None``). Clean ≥ attack holds by construction.
    7. ``ce_cw_agreement``: PGD-20 on cross-entropy and PGD-20 on the CW margin loss (CW-20) differ by at most
       ``max_ce_cw_gap`` (0.10, the tolerance notebook 02 teaches): a PGD-CE accuracy that the margin loss does
       not confirm is suspect (saturated or smoothed cross-entropy gradients).
    8. ``zero_gradients``: the fraction of samples whose cross-entropy input gradient is ~0 (L1 norm
       ≤ ``zero_grad_atol``: the float32 softmax saturated, or a non-differentiable step such as rounding)
       is ≤ ``max_zero_grad_frac``.

    Args:
        model: classifier mapping (B, C, H, W) images in [0, 1] to (B, K) logits; not moved, mode restored.
        data: a Dataset, a DataLoader or an ``(X, y)`` tuple, as for `robust_accuracy`.
        eps: the L∞ radius under evaluation (> 0).
        n: number of samples checked (the first ``n``).
        surrogate: an independently trained model for the transfer check (``None``: that check is skipped).
        seed: seed of every random start and of AutoAttack.
        alpha: PGD step size at ``eps`` (``None``: ``eps / 4``), scaled in proportion to ε on the grid.
        eps_grid: radii for the monotonicity check (``None``: 0, ε/4, ε/2, ε, 2ε); ``large_eps`` is added.
        large_eps: the radius at which the attack must (nearly) always win.
        large_eps_max_acc: the most accuracy allowed at ``large_eps`` (default 0.1).
        steps: (fewer, more) PGD steps for the steps check.
        restarts: restarts for the restarts check.
        autoattack_version: ``"fast"``, ``"standard"`` or ``None`` (no AutoAttack in the ordering check).
        tol: allowed rise in accuracy where it should not rise (sampling noise of random starts).
        max_ce_cw_gap: the largest allowed |PGD-20 − CW-20| accuracy difference (default 0.10).
        max_order_violations: allowed fraction of per-sample ordering violations per attack pair.
        max_zero_grad_frac: allowed fraction of samples with a ~0 input gradient (default 0.05).
        zero_grad_atol: an input gradient whose L1 norm is at most this counts as ~0 (default 1e-12).
        batch_size: images per forward pass.
        device: where to run (``None``: the model's device; the model is never moved).

    Returns:
        A `SanityReport` (CPU floats); ``report.passed`` is ``True`` when every check that ran passed (see the
        module example).
    """
    fractions = {"tol": tol, "large_eps_max_acc": large_eps_max_acc, "max_ce_cw_gap": max_ce_cw_gap,
                 "max_order_violations": max_order_violations,
                 "max_zero_grad_frac": max_zero_grad_frac}
    _check_sanity_args(eps=eps, alpha=alpha, large_eps=large_eps, n=n, restarts=restarts, steps=steps,
                       eps_grid=eps_grid, autoattack_version=autoattack_version, zero_grad_atol=zero_grad_atol,
                       fractions=fractions)
    grid = [0.0, eps / 4, eps / 2, eps, 2 * eps] if eps_grid is None else list(eps_grid)
    grid = sorted({min(float(e), 1.0) for e in [*grid, large_eps]})
    ratio = (eps / 4 if alpha is None else alpha) / eps
    x, y = tensors(data, n=n)
    setup = _Setup(model=model, x=x, y=y, eps=eps, step=ratio * eps, seed=seed, batch_size=batch_size, tol=tol,
                   device=device_of(model) if device is None else torch.device(device))
    accs = [setup.pgd_accuracy(eps=e, alpha=ratio * e, steps=20) for e in grid]
    few, many = steps
    acc_few = setup.pgd_accuracy(eps=eps, alpha=setup.step, steps=few)
    more_steps = _check_more_steps(setup, few=few, many=many, acc_few=acc_few)
    more_restarts = _check_more_restarts(setup, few=few, restarts=restarts, acc_few=acc_few)
    ordering, ordered = _check_attack_ordering(setup, autoattack_version=autoattack_version,
                                               max_violations=max_order_violations)
    return SanityReport((
        _check_eps_monotone(grid, accs, tol=tol),
        _check_large_eps(grid, accs, large_eps=large_eps, max_acc=large_eps_max_acc),
        more_steps,
        more_restarts,
        _check_transfer(setup, surrogate, ordered),
        ordering,
        _check_ce_cw(setup, steps=20, acc_ce=setup.pgd_accuracy(eps=eps, alpha=setup.step, steps=20),
                     max_gap=max_ce_cw_gap),
        _check_zero_gradients(setup, max_fraction=max_zero_grad_frac, atol=zero_grad_atol),
    ))
