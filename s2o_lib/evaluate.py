"""Robust accuracy (clean, FGSM, PGD-N, CW-N, AutoAttack) and sanity checks for the evaluation itself.

`robust_accuracy` reports, for every attack, the fraction (in [0, 1]) of samples that are classified
correctly on the clean input *and* on that attack's adversarial input, plus ``"worst_case"``: the
fraction correct on the clean input and under every attack that was run (the per-sample minimum). This is
how AutoAttack and the S²O paper count robustness: a sample that any attack fools is not robust.

`sanity_checks` runs the checks of Carlini et al. 2019 (*On Evaluating Adversarial Robustness*) that catch
a broken evaluation — gradient masking above all — and `mask_gradients` builds a deliberately
gradient-masked model that fails them, for teaching and for tests.

Threat model: L∞ balls of radius ``eps`` around images in [0, 1].

Example:
    >>> import torch
    >>> from s2o_lib.models import build_model
    >>> from s2o_lib.evaluate import robust_accuracy
    >>> model = build_model("small-cnn", num_classes=10, in_channels=1).eval()
    >>> x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    >>> result = robust_accuracy(model, (x, y), attacks=("clean", "fgsm", "pgd5"), eps=0.1)
    >>> sorted(result)
    ['clean', 'fgsm', 'pgd5', 'worst_case']
    >>> result["worst_case"] <= result["pgd5"] <= result["clean"]
    True
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .attacks import check_eps, check_images, eval_mode, fgsm, pgd
from .errors import S2OError, unknown_name

AutoAttackVersion = Literal["standard", "fast"]
MaskMethod = Literal["saturate", "quantize"]

#: The default attacks, weakest first. ``pgdN`` / ``cwN`` with any N ≥ 1 are accepted too.
ATTACKS: tuple[str, ...] = ("clean", "fgsm", "pgd20", "cw20", "autoattack")
AUTOATTACK_VERSIONS: tuple[str, ...] = ("standard", "fast")
MASK_METHODS: tuple[str, ...] = ("saturate", "quantize")
WORST_CASE = "worst_case"

#: What each AutoAttack version runs (pyautoattack, L∞). ``fast`` is a declared cheaper subset: no FAB-T and
#: no Square, so it misses what only a gradient-free attack finds — never report it as "AutoAttack".
AUTOATTACK_PROTOCOLS: dict[str, str] = {
    "standard": "AutoAttack standard (pyautoattack): APGD-CE (100 iterations, 1 restart), APGD-T (100 iterations, "
    "9 target classes), FAB-T (100 iterations, 9 target classes), Square (5000 queries)",
    "fast": "AutoAttack fast subset (pyautoattack version='custom'): APGD-CE (100 iterations, 1 restart), "
    "APGD-T (100 iterations, 3 target classes); no FAB-T, no Square — cheaper, weaker, not the standard number",
}
_FAST_ATTACKS = ["apgd-ce", "apgd-t"]
_FAST_TARGET_CLASSES = 3
_STANDARD_TARGET_CLASSES = 9
_NAME_RE = re.compile(r"^(pgd|cw)(\d+)$")
_VALID_NAMES_TEXT = "clean, fgsm, pgd20, cw20, autoattack, or pgdN / cwN for N steps (e.g. pgd50, cw100)"


# ============================================================================================ attack names
@dataclass(frozen=True)
class AttackSpec:
    """A parsed attack name.

    Attributes:
        name: the canonical name (``"clean"``, ``"fgsm"``, ``"pgd20"``, ``"cw20"``, ``"autoattack"``, ...).
        kind: ``"clean"``, ``"fgsm"``, ``"pgd"``, ``"cw"`` or ``"autoattack"``.
        steps: gradient steps (0 for clean and AutoAttack, 1 for FGSM).
    """

    name: str
    kind: str
    steps: int


def parse_attack(name: str) -> AttackSpec:
    """Parse an attack name such as ``"pgd20"``.

    Args:
        name: ``clean``, ``fgsm``, ``autoattack``, ``pgdN`` or ``cwN`` (N ≥ 1 steps); case-insensitive.

    Returns:
        The `AttackSpec`.

    Example:
        >>> parse_attack("PGD50")
        AttackSpec(name='pgd50', kind='pgd', steps=50)
    """
    if not isinstance(name, str):
        raise S2OError(f"attack names must be strings; got {name!r}. Valid names: {_VALID_NAMES_TEXT}")
    key = name.strip().lower()
    if key in ("clean", "fgsm", "autoattack"):
        return AttackSpec(key, key, {"clean": 0, "fgsm": 1, "autoattack": 0}[key])
    match = _NAME_RE.match(key)
    if match and int(match.group(2)) >= 1:
        steps = int(match.group(2))
        return AttackSpec(f"{match.group(1)}{steps}", match.group(1), steps)
    raise S2OError(f"unknown attack {name!r}; valid attack names: {_VALID_NAMES_TEXT}")


def _parse_attacks(attacks: Sequence[str]) -> list[AttackSpec]:
    if isinstance(attacks, str):
        attacks = [a for a in attacks.split(",") if a.strip()]
    specs: list[AttackSpec] = []
    for name in attacks:
        spec = parse_attack(name)
        if spec.name not in [s.name for s in specs]:
            specs.append(spec)
    if not specs:
        raise S2OError(f"attacks is empty; give at least one of: {_VALID_NAMES_TEXT}")
    return specs


def describe_protocol(
    attacks: Sequence[str] = ATTACKS,
    *,
    eps: float,
    alpha: float | None = None,
    restarts: int = 1,
    autoattack_version: AutoAttackVersion = "standard",
) -> dict[str, str]:
    """Say in words what `robust_accuracy` runs for each attack name (for reports and notebooks).

    Args:
        attacks: attack names, as for `robust_accuracy`.
        eps: L∞ radius.
        alpha: PGD/CW step size (``None``: ``eps / 4``).
        restarts: random restarts of PGD/CW.
        autoattack_version: ``"standard"`` or ``"fast"``.

    Returns:
        ``{attack name: description}``, plus ``"worst_case"``.

    Example:
        >>> describe_protocol(("pgd20",), eps=0.031, alpha=0.003)["pgd20"]
        'PGD-20 on cross-entropy, L∞ eps=0.031, step 0.003, uniform random start, 1 restart(s)'
    """
    check_eps(eps)
    if autoattack_version not in AUTOATTACK_VERSIONS:
        raise unknown_name("AutoAttack version", autoattack_version, AUTOATTACK_VERSIONS)
    step = eps / 4 if alpha is None else alpha
    out: dict[str, str] = {}
    for spec in _parse_attacks(attacks):
        if spec.kind == "clean":
            out[spec.name] = "no attack (clean accuracy)"
        elif spec.kind == "fgsm":
            out[spec.name] = f"FGSM, one signed-gradient step of size eps={eps:g} on cross-entropy, no random start"
        elif spec.kind == "pgd":
            out[spec.name] = (f"PGD-{spec.steps} on cross-entropy, L∞ eps={eps:g}, step {step:g}, uniform random "
                              f"start, {restarts} restart(s)")
        elif spec.kind == "cw":
            out[spec.name] = (f"CW∞-{spec.steps}: PGD on the CW margin loss (margin 50), L∞ eps={eps:g}, "
                              f"step {step:g}, uniform random start, {restarts} restart(s)")
        else:
            out[spec.name] = AUTOATTACK_PROTOCOLS[autoattack_version] + f", L∞ eps={eps:g}"
    out[WORST_CASE] = "correct on the clean input and under every attack above (per-sample minimum)"
    return out


# ============================================================================================ results
class EvalResult(dict):
    """Accuracies by attack name, as fractions in [0, 1]; a plain ``dict[str, float]`` with extras.

    Keys are the canonical attack names in the order given, then ``"worst_case"``. Every value counts a
    sample as correct only if it is correct on the clean input and under that attack.

    Attributes:
        per_sample: ``{name: bool tensor (n,)}`` on the CPU (``None`` unless ``return_per_sample=True``).
        protocol: the settings used: ``eps``, ``alpha``, ``restarts``, ``seed``, ``n``,
            ``autoattack_version`` and ``attacks`` (`describe_protocol`'s words for each attack).
        notes: warnings pyautoattack raised (e.g. zero gradients), empty when it raised none.
    """

    def __init__(
        self,
        accuracies: Mapping[str, float],
        *,
        per_sample: dict[str, Tensor] | None = None,
        protocol: dict[str, Any] | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__(accuracies)
        self.per_sample = per_sample
        self.protocol = dict(protocol or {})
        self.notes = list(notes)

    def to_markdown(self) -> str:
        """A two-column markdown table of the accuracies, in percent."""
        rows = ["| attack | accuracy (%) |", "|---|---|"]
        rows += [f"| {name} | {100 * value:.2f} |" for name, value in self.items()]
        return "\n".join(rows)

    def _repr_markdown_(self) -> str:  # Jupyter
        return self.to_markdown()


# ============================================================================================ helpers
def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _check_int(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise S2OError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _take(data: Any, n: int | None) -> tuple[Tensor, Tensor]:
    """The first ``n`` (image, label) pairs of a Dataset, a DataLoader or an ``(X, y)`` tuple, on the CPU."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise S2OError(f"(X, y) must hold one label per image; got {x.shape[0]} images, {y.shape[0]} labels")
        x, y = (x[:n], y[:n]) if n is not None else (x, y)
    elif isinstance(data, DataLoader):
        xs, ys, seen = [], [], 0
        for batch in data:
            bx, by = batch[0], batch[1]
            if n is not None:
                bx, by = bx[: n - seen], by[: n - seen]
            xs.append(bx.cpu())
            ys.append(torch.as_tensor(by).cpu())
            seen += len(by)
            if n is not None and seen >= n:
                break
        if not xs:
            raise S2OError("the DataLoader yielded no batches; give it a non-empty dataset")
        x, y = torch.cat(xs), torch.cat(ys)
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        count = len(data) if n is None else min(n, len(data))
        if count == 0:
            raise S2OError("the dataset is empty; give at least one (image, label) pair")
        items = [data[i] for i in range(count)]
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
    else:
        raise S2OError(
            "data must be a map-style torch Dataset (with __len__), a DataLoader or an (X, y) tuple of tensors; "
            f"got {type(data).__name__}"
        )
    if x.shape[0] == 0:
        raise S2OError("no samples to evaluate; give a non-empty dataset (and n >= 1)")
    check_images(x, y)
    return x.detach().cpu(), y.detach().cpu().long()


def _attack_seed(seed: int, name: str) -> int:
    """A seed per attack name, so that one attack's result does not depend on which others ran."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device) if device.type != "cpu" else torch.Generator()
    generator.manual_seed(seed)
    return generator


def _cuda_devices(device: torch.device) -> list[int]:
    """CUDA devices whose generators pyautoattack may reseed (it calls ``torch.cuda.manual_seed``)."""
    devices = set()
    if device.type == "cuda":
        devices.add(device.index if device.index is not None else torch.cuda.current_device())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices.add(torch.cuda.current_device())
    return sorted(devices)


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No parameter gradients while attacking: faster, and the parameters' ``.grad`` stay as they were."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return model(x).argmax(1) == y


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def _white_box(
    model: nn.Module, spec: AttackSpec, x: Tensor, y: Tensor, *, eps: float, alpha: float, restarts: int,
    generator: torch.Generator,
) -> Tensor:
    if spec.kind == "fgsm":
        return fgsm(model, x, y, eps=eps)
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=spec.steps, loss="ce" if spec.kind == "pgd" else "cw",
               random_start=True, restarts=restarts, generator=generator)


class _CollectWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _run_autoattack(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, version: str, seed: int, batch_size: int,
    device: torch.device, num_classes: int,
) -> tuple[Tensor, list[str]]:
    """Adversarial images from pyautoattack for (x, y) (CPU tensors), and the warnings it logged.

    pyautoattack reseeds torch's global generator, logs to the ``auto-attack`` logger and calls
    ``sys.settrace(None)``; all three are contained here.
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError as error:  # pragma: no cover - it is a dependency
        raise S2OError("AutoAttack needs the 'pyautoattack' package: pip install pyautoattack") from error
    if num_classes < 4:
        raise S2OError(f"AutoAttack's DLR losses need at least 4 classes; this model has {num_classes}. "
                       "Drop 'autoattack' from attacks")
    if version == "fast":
        attack = AutoAttack(model, attacks=list(_FAST_ATTACKS), device=device, eps=eps, norm="Linf",
                            version="custom", seed=seed)
        attack.apgd.n_restarts = 1  # version="custom" keeps the constructor's 5 restarts
        attack.apgd_targeted.n_restarts = 1
        attack.apgd_targeted.n_target_classes = min(_FAST_TARGET_CLASSES, num_classes - 1)
    else:
        attack = AutoAttack(model, device=device, eps=eps, norm="Linf", version="standard", seed=seed)
        attack.apgd_targeted.n_target_classes = min(_STANDARD_TARGET_CLASSES, num_classes - 1)
        attack.fab.n_target_classes = min(_STANDARD_TARGET_CLASSES, num_classes - 1)
    attack.verbose = False  # no per-attack debug lines; its warnings still reach the handler below
    logger = logging.getLogger("auto-attack")
    handler = _CollectWarnings()
    old_propagate, old_trace = logger.propagate, sys.gettrace()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with torch.random.fork_rng(devices=_cuda_devices(device)):
            x_adv = attack.run_standard_evaluation(x, y, batch_size=batch_size)[0]
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
        sys.settrace(old_trace)
    x_adv = x_adv.detach().to(x.device)
    if not torch.isfinite(x_adv).all() or (x_adv - x).abs().max() > eps + 1e-5:
        raise RuntimeError("pyautoattack returned images outside the eps-ball; this is a bug, please report it")
    return x_adv.clamp(0, 1), handler.messages


# ============================================================================================ robust accuracy
def robust_accuracy(
    model: nn.Module,
    data: Dataset | DataLoader | tuple[Tensor, Tensor],
    *,
    attacks: Sequence[str] = ATTACKS,
    eps: float,
    alpha: float | None = None,
    n: int | None = None,
    batch_size: int = 256,
    restarts: int = 1,
    autoattack_version: AutoAttackVersion = "standard",
    seed: int = 0,
    device: torch.device | str | None = None,
    return_per_sample: bool = False,
) -> EvalResult:
    """Accuracy under clean inputs and L∞ attacks, counted per sample (worst case over clean and attack).

    A sample counts as robust under an attack only if the model classifies it correctly on the clean input
    and on the attack's adversarial input; ``"worst_case"`` counts samples correct under every attack run.
    Attacks are only run on clean-correct samples (the others are not robust anyway). PGD-N and CW-N start
    from a uniform random point of the ball; CW-N is PGD on the CW margin loss with margin 50 (CW∞).

    Args:
        model: classifier mapping (B, C, H, W) images in [0, 1] to (B, K) logits; not moved, mode restored.
        data: a Dataset of (image, label) pairs, a DataLoader of (images, labels) batches, or a tuple
            ``(X, y)`` with X of shape (N, C, H, W) in [0, 1] and y of shape (N,).
        attacks: names among ``clean``, ``fgsm``, ``pgdN``, ``cwN`` (N ≥ 1 steps) and ``autoattack``
            (case-insensitive; a comma-separated string works too; duplicates are run once).
        eps: L∞ radius (≥ 0), e.g. 0.031 as in the paper for CIFAR-10; at 0 every attack equals clean.
        alpha: PGD/CW step size (``None``: ``eps / 4``; the paper evaluates with 0.003 at eps 0.031).
        n: evaluate the first ``n`` samples (``None`` or more than there are: all).
        batch_size: images per forward pass, also AutoAttack's batch size.
        restarts: random restarts of PGD-N / CW-N (a sample is fooled if any restart fools it).
        autoattack_version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square: the number to report) or
            ``"fast"`` (APGD-CE + APGD-T with 3 target classes only; see `AUTOATTACK_PROTOCOLS`).
        seed: seed of the random starts and of AutoAttack; torch's global generator is left untouched.
        device: where the data goes; ``None``: the device of the model's first parameter. The model is never
            moved, so a ``device`` other than the model's only works for a model that can run there.
        return_per_sample: also fill ``result.per_sample`` with a bool tensor (n,) per attack.

    Returns:
        An `EvalResult`: ``{attack name: accuracy in [0, 1]}`` plus ``"worst_case"``, with ``.protocol``
        (what was run, incl. ``autoattack_version``), ``.per_sample`` and ``.notes``.

    Example:
        >>> result = robust_accuracy(model, test_set, eps=0.031, alpha=0.003, n=1000)  # doctest: +SKIP
        >>> result["pgd20"], result["autoattack"], result["worst_case"]                  # doctest: +SKIP
    """
    check_eps(eps)
    if alpha is not None:
        check_eps(alpha, name="alpha (step size)")
    specs = _parse_attacks(attacks)
    if autoattack_version not in AUTOATTACK_VERSIONS:
        raise unknown_name("AutoAttack version", autoattack_version, AUTOATTACK_VERSIONS)
    if n is not None:
        _check_int(n, "n", minimum=1)
    _check_int(batch_size, "batch_size", minimum=1)
    _check_int(restarts, "restarts", minimum=1)
    _check_int(seed, "seed", minimum=0)
    step = eps / 4 if alpha is None else alpha
    device = _model_device(model) if device is None else torch.device(device)

    x_all, y_all = _take(data, n)
    total = x_all.shape[0]
    per_sample: dict[str, Tensor] = {}
    notes: list[str] = []
    with eval_mode(model), _frozen(model):
        clean = torch.cat([_correct(model, x_all[s].to(device), y_all[s].to(device)).cpu()
                           for s in _batches(total, batch_size)])
        for spec in specs:
            if spec.kind == "clean":
                per_sample[spec.name] = clean.clone()
                continue
            correct = torch.zeros(total, dtype=torch.bool)
            idx = clean.nonzero().flatten()
            if eps == 0 or idx.numel() == 0:  # the ball is the clean point itself
                correct[idx] = True
            elif spec.kind == "autoattack":
                with torch.no_grad():
                    num_classes = model(x_all[:1].to(device)).shape[1]
                x_adv, messages = _run_autoattack(
                    model, x_all[idx], y_all[idx], eps=eps, version=autoattack_version, seed=seed,
                    batch_size=batch_size, device=device, num_classes=num_classes)
                notes += [f"AutoAttack: {m}" for m in messages]
                correct[idx] = torch.cat([_correct(model, x_adv[s].to(device), y_all[idx][s].to(device)).cpu()
                                          for s in _batches(idx.numel(), batch_size)])
            else:
                generator = _generator(_attack_seed(seed, spec.name), device)
                for s in _batches(idx.numel(), batch_size):
                    x, y = x_all[idx[s]].to(device), y_all[idx[s]].to(device)
                    x_adv = _white_box(model, spec, x, y, eps=eps, alpha=step, restarts=restarts,
                                       generator=generator)
                    correct[idx[s]] = _correct(model, x_adv, y).cpu()
            per_sample[spec.name] = correct & clean
    worst = clean.clone()
    for value in per_sample.values():
        worst &= value
    per_sample[WORST_CASE] = worst
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=2)
    protocol = {
        "eps": eps, "alpha": step, "restarts": restarts, "seed": seed, "n": total, "norm": "linf",
        "autoattack_version": autoattack_version,
        "attacks": describe_protocol([s.name for s in specs], eps=eps, alpha=step, restarts=restarts,
                                     autoattack_version=autoattack_version),
    }
    accuracies = {name: value.float().mean().item() for name, value in per_sample.items()}
    return EvalResult(accuracies, per_sample=per_sample if return_per_sample else None, protocol=protocol,
                      notes=notes)


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
        _check_int(levels, "levels", minimum=1)
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


def _accuracy_of(model: nn.Module, x: Tensor, y: Tensor, *, device: torch.device, batch_size: int) -> Tensor:
    with eval_mode(model):
        return torch.cat([_correct(model, x[s].to(device), y[s].to(device)).cpu()
                          for s in _batches(len(y), batch_size)])


def _pgd_correct(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, restarts: int, seed: int,
    device: torch.device, batch_size: int,
) -> Tensor:
    """Per-sample 'correct on clean and after PGD' (bool, CPU) — via `robust_accuracy`."""
    name = f"pgd{steps}"
    result = robust_accuracy(model, (x, y), attacks=(name,), eps=eps, alpha=alpha, restarts=restarts, seed=seed,
                             device=device, batch_size=batch_size, return_per_sample=True)
    return result.per_sample[name]


def _input_gradient_norms(model: nn.Module, x: Tensor, y: Tensor, *, device: torch.device,
                          batch_size: int) -> Tensor:
    """L1 norm of d CE(model(x), y) / dx per sample (CPU), in eval mode."""
    norms = []
    with eval_mode(model), _frozen(model), torch.enable_grad():
        for s in _batches(len(y), batch_size):
            xb = x[s].to(device).requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[s].to(device), reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
            norms.append(grad.flatten(1).abs().sum(1).cpu())
    return torch.cat(norms)


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def sanity_checks(
    model: nn.Module,
    data: Dataset | DataLoader | tuple[Tensor, Tensor],
    *,
    eps: float,
    n: int = 200,
    surrogate: nn.Module | None = None,
    seed: int = 0,
    alpha: float | None = None,
    eps_grid: Sequence[float] | None = None,
    large_eps: float = 0.5,
    large_eps_max_acc: float = 0.1,
    steps: tuple[int, int] = (10, 50),
    restarts: int = 5,
    autoattack_version: AutoAttackVersion | None = "fast",
    tol: float = 0.03,
    max_order_violations: float = 0.05,
    max_zero_grad_frac: float = 0.05,
    zero_grad_atol: float = 1e-12,
    batch_size: int = 256,
    device: torch.device | str | None = None,
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
    7. ``zero_gradients``: the fraction of samples whose cross-entropy input gradient is ~0 (L1 norm
       ≤ ``zero_grad_atol``: the float32 softmax saturated, or a non-differentiable step such as rounding)
       is ≤ ``max_zero_grad_frac``.

    Step sizes: ``alpha`` (default ``eps / 4``) at ``eps``, scaled in proportion to ε on the grid.

    Args:
        model: classifier mapping (B, C, H, W) images in [0, 1] to (B, K) logits; not moved, mode restored.
        data: a Dataset, a DataLoader or an ``(X, y)`` tuple, as for `robust_accuracy`.
        eps: the L∞ radius under evaluation (> 0).
        n: number of samples checked (the first ``n``).
        surrogate: an independently trained model for the transfer check (``None``: that check is skipped).
        seed: seed of every random start and of AutoAttack.
        alpha: PGD step size at ``eps`` (``None``: ``eps / 4``).
        eps_grid: radii for the monotonicity check (``None``: 0, ε/4, ε/2, ε, 2ε); ``large_eps`` is added.
        large_eps: the radius at which the attack must (nearly) always win.
        large_eps_max_acc: the most accuracy allowed at ``large_eps`` (default 0.1).
        steps: (fewer, more) PGD steps for the steps check.
        restarts: restarts for the restarts check.
        autoattack_version: ``"fast"``, ``"standard"`` or ``None`` (no AutoAttack in the ordering check).
        tol: allowed rise in accuracy where it should not rise (sampling noise of random starts).
        max_order_violations: allowed fraction of per-sample ordering violations per attack pair.
        max_zero_grad_frac: allowed fraction of samples with a ~0 input gradient (default 0.05).
        zero_grad_atol: an input gradient whose L1 norm is at most this counts as ~0 (default 1e-12).
        batch_size: images per forward pass.
        device: where to run (``None``: the model's device; the model is never moved).

    Returns:
        A `SanityReport`; ``report.passed`` is ``True`` when every check that ran passed.

    Example:
        >>> report = sanity_checks(model, test_set, eps=8/255, surrogate=other_model)  # doctest: +SKIP
        >>> print(report)                                                               # doctest: +SKIP
    """
    check_eps(eps)
    if eps <= 0:
        raise S2OError(f"sanity checks need eps > 0, got {eps!r}")
    if alpha is not None:
        check_eps(alpha, name="alpha (step size)")
    check_eps(large_eps, name="large_eps")
    _check_int(n, "n", minimum=1)
    _check_int(restarts, "restarts", minimum=1)
    if len(steps) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps):
        raise S2OError(f"steps must be two integers >= 1 (fewer, more), e.g. (10, 50); got {steps!r}")
    if autoattack_version is not None and autoattack_version not in AUTOATTACK_VERSIONS:
        raise unknown_name("AutoAttack version", autoattack_version, AUTOATTACK_VERSIONS)
    for name, value in (("tol", tol), ("large_eps_max_acc", large_eps_max_acc),
                        ("max_order_violations", max_order_violations), ("max_zero_grad_frac", max_zero_grad_frac)):
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise S2OError(f"{name} must be a fraction in [0, 1], got {value!r}")
    check_eps(zero_grad_atol, name="zero_grad_atol")
    grid = [0.0, eps / 4, eps / 2, eps, 2 * eps] if eps_grid is None else list(eps_grid)
    for e in grid:
        check_eps(e, name="eps_grid entries")
    grid = sorted({min(float(e), 1.0) for e in [*grid, large_eps]})
    ratio = (eps / 4 if alpha is None else alpha) / eps
    device = _model_device(model) if device is None else torch.device(device)
    x, y = _take(data, n)
    common = dict(device=device, batch_size=batch_size)
    checks: list[Check] = []

    # 1-2. accuracy against eps
    accs = [_pgd_correct(model, x, y, eps=e, alpha=ratio * e, steps=20, restarts=1, seed=seed, **common)
            .float().mean().item() for e in grid]
    rise = max([b - a for a, b in zip(accs, accs[1:])], default=0.0)
    checks.append(Check(
        "eps_monotone", rise <= tol,
        f"PGD-20 accuracy over eps={_fmt(grid)} is {_fmt(accs)}; largest rise {max(rise, 0):.3f} (tol {tol:g})",
        {"eps": grid, "accuracy": accs, "largest_rise": rise}))
    acc_large = accs[grid.index(min(large_eps, 1.0))]
    checks.append(Check(
        "large_eps", acc_large <= large_eps_max_acc,
        f"PGD-20 accuracy at eps={large_eps:g} is {acc_large:.3f} (must be <= {large_eps_max_acc:g}: "
        "an attack that cannot win with a huge budget is not finding gradients)",
        {"eps": large_eps, "accuracy": acc_large}))

    # 3-4. more steps, more restarts
    step_at_eps = ratio * eps
    few, many = steps
    acc_few = _pgd_correct(model, x, y, eps=eps, alpha=step_at_eps, steps=few, restarts=1, seed=seed, **common)
    acc_many = _pgd_correct(model, x, y, eps=eps, alpha=step_at_eps, steps=many, restarts=1, seed=seed, **common)
    acc_rs = _pgd_correct(model, x, y, eps=eps, alpha=step_at_eps, steps=few, restarts=restarts, seed=seed, **common)
    a_few, a_many, a_rs = (t.float().mean().item() for t in (acc_few, acc_many, acc_rs))
    checks.append(Check(
        "more_steps", a_many <= a_few + tol,
        f"PGD-{few} {a_few:.3f} vs PGD-{many} {a_many:.3f} (more steps may not raise accuracy by > {tol:g})",
        {f"pgd{few}": a_few, f"pgd{many}": a_many}))
    checks.append(Check(
        "more_restarts", a_rs <= a_few + tol,
        f"PGD-{few} with 1 restart {a_few:.3f} vs {restarts} restarts {a_rs:.3f} "
        f"(more restarts may not raise accuracy by > {tol:g})",
        {"restarts_1": a_few, f"restarts_{restarts}": a_rs}))

    # 6 (computed first: 5 reuses its PGD-20). Per-sample ordering clean >= FGSM >= PGD-20 >= AutoAttack.
    names = ["clean", "fgsm", "pgd20"] + (["autoattack"] if autoattack_version is not None else [])
    ordered = robust_accuracy(model, (x, y), attacks=names, eps=eps, alpha=step_at_eps, seed=seed,
                              autoattack_version=autoattack_version or "fast", return_per_sample=True, **common)
    per = ordered.per_sample or {}
    # key "fgsm_not_pgd20": fraction of samples that FGSM fools but PGD-20 does not
    violations = {f"{weak}_not_{strong}": (~per[weak] & per[strong]).float().mean().item()
                  for weak, strong in zip(names[1:], names[2:])}
    accuracy_text = ", ".join(f"{k} {ordered[k]:.3f}" for k in names)
    violation_text = ", ".join(f"{k.replace('_not_', ' but not ')} {v:.3f}" for k, v in violations.items())
    checks.append(Check(
        "attack_ordering", all(v <= max_order_violations for v in violations.values()),
        f"accuracy {accuracy_text}; fraction fooled by {violation_text} (max {max_order_violations:g} each)",
        {"accuracy": {k: ordered[k] for k in names}, "violations": violations,
         "autoattack_version": autoattack_version,
         # informative only: a large gap means PGD is hampered (e.g. cross-entropy saturates) — compare CW-20
         "pgd20_minus_autoattack": ordered["pgd20"] - ordered["autoattack"] if "autoattack" in names else None}))

    # 5. white-box beats transfer
    white = ordered["pgd20"]
    if surrogate is None:
        checks.insert(4, Check("whitebox_beats_transfer", None,
                               "skipped: pass surrogate= (an independently trained model) to run the transfer check",
                               {"pgd20": white}))
    else:
        surrogate_device = _model_device(surrogate)
        generator = _generator(_attack_seed(seed, "transfer"), surrogate_device)
        with _frozen(surrogate):
            x_transfer = torch.cat([
                pgd(surrogate, x[s].to(surrogate_device), y[s].to(surrogate_device), eps=eps, alpha=step_at_eps,
                    steps=20, generator=generator).cpu()
                for s in _batches(len(y), batch_size)])
        transfer = (_accuracy_of(model, x_transfer, y, **common) & per["clean"]).float().mean().item()
        checks.insert(4, Check(
            "whitebox_beats_transfer", white <= transfer + tol,
            f"white-box PGD-20 {white:.3f} vs PGD-20 transferred from the surrogate {transfer:.3f} "
            f"(white-box may not be weaker by > {tol:g})",
            {"pgd20": white, "transfer_pgd20": transfer}))

    # 7. zero gradients
    norms = _input_gradient_norms(model, x, y, **common)
    zero_frac = (norms <= zero_grad_atol).float().mean().item()
    checks.append(Check(
        "zero_gradients", zero_frac <= max_zero_grad_frac,
        f"{zero_frac:.3f} of samples have a ~0 cross-entropy input gradient (L1 norm <= {zero_grad_atol:g}; "
        f"max {max_zero_grad_frac:g}); "
        f"median L1 gradient norm {norms.median().item():.3g}",
        {"zero_fraction": zero_frac, "median_norm": norms.median().item(), "atol": zero_grad_atol}))
    return SanityReport(tuple(checks))
