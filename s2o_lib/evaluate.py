"""Robust accuracy under clean inputs, FGSM, PGD-N, CW-N and AutoAttack, counted per sample.

`robust_accuracy` reports, for every attack, the fraction (in [0, 1]) of samples that are classified
correctly on the clean input *and* on that attack's adversarial input, plus ``"worst_case"``: the
fraction correct on the clean input and under every attack that was run (the per-sample minimum). This is
how AutoAttack counts robustness (a sample that any attack fools is not robust), and it is stricter than the
released S²O code: its PGD-20/CW-20 loops count accuracy on x′ over all images, right on x or not (as do the
AWP and TRADES scripts), which can only give an equal or higher number. ``counting="adversarial"`` counts that
way, to set a reproduced row beside a published one like for like.

`s2o_lib.sanity` checks that such an evaluation is itself sound (gradient masking, too-weak attacks).

Threat model: L∞ balls of radius ``eps`` around images in [0, 1]. AutoAttack has its own radius ``aa_eps``
(``None``: ``eps``): the S²O paper evaluates PGD-20 and CW-20 at ε = 0.031 and reports AutoAttack at ε = 8/255
≈ 0.03137, the default of AutoAttack's own example and of the AWP evaluation script (the S²O repository has no
AutoAttack script), so the ``paper`` profile and the presets set both.

Devices: the data may live anywhere; every batch is moved to the model's device (`s2o_lib.models.device_of`) and
every result comes back on the CPU (accuracies as floats, per-sample outcomes as CPU bool tensors).

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

import logging
import re
import sys
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .attacks import CW_MARGIN, eval_mode, fgsm, frozen_parameters, pgd
from .checks import check_eps, check_int, check_labels, check_linf_eps, check_model_input, check_step_size
from .data import batch_slices, tensors
from .errors import S2OError, unknown_name
from .models import device_of, dtype_of, model_spec
from .processes import Shards

__all__ = [
    "ATTACKS", "AUTOATTACK_BUDGETS", "AUTOATTACK_PROTOCOLS", "AUTOATTACK_VERSIONS", "COUNTINGS",
    "DRY_RUN_AUTOATTACK", "WORST_CASE", "AttackSpec", "AutoAttackBudget", "AutoAttackVersion", "Counting",
    "EvalResult", "attack_generator", "chunk_generator", "correct_predictions", "describe_protocol",
    "parse_attack", "robust_accuracy",
]


AutoAttackVersion = Literal["standard", "fast"]
#: How an attack's accuracy counts an image: ``"both"`` right on the clean input and under the attack (this
#: library, AutoAttack); ``"adversarial"`` right on the adversarial input alone (the S²O/AWP/TRADES scripts).
Counting = Literal["both", "adversarial"]
COUNTINGS: tuple[str, ...] = ("both", "adversarial")

#: The default attacks, weakest first. ``pgdN`` / ``cwN`` with any N ≥ 1 are accepted too.
ATTACKS: tuple[str, ...] = ("clean", "fgsm", "pgd20", "cw20", "autoattack")
AUTOATTACK_VERSIONS: tuple[str, ...] = ("standard", "fast")
#: AutoAttack's budget: ``"full"`` (its own iterations and queries) or ``"dry-run"`` (`DRY_RUN_AUTOATTACK`: every
#: attack of the version, at a tiny budget; what a dry-run profile passes, `s2o_lib.config.Profile.autoattack_budget`).
AutoAttackBudget = Literal["full", "dry-run"]
AUTOATTACK_BUDGETS: tuple[str, ...] = ("full", "dry-run")
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
    aa_eps: float | None = None,
) -> dict[str, str]:
    """Say in words what `robust_accuracy` runs for each attack name (for reports and notebooks).

    Args:
        attacks: attack names, as for `robust_accuracy`.
        eps: L∞ radius.
        alpha: PGD/CW step size (``None``: ``eps / 4``).
        restarts: random restarts of PGD/CW.
        autoattack_version: ``"standard"`` or ``"fast"``.
        aa_eps: AutoAttack's L∞ radius (``None``: ``eps``; the paper: 8/255 while PGD/CW use 0.031).

    Returns:
        ``{attack name: description}``, plus ``"worst_case"``.

    Example:
        >>> describe_protocol(("pgd20",), eps=0.031, alpha=0.003)["pgd20"]
        'PGD-20 on cross-entropy, L∞ eps=0.031, step 0.003, uniform random start, 1 restart(s)'
        >>> describe_protocol(("autoattack",), eps=0.031, aa_eps=8/255)["autoattack"][-16:]
        'L∞ eps=0.0313725'
    """
    check_eps(eps)
    aa_eps = _aa_radius(eps, aa_eps)
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
            out[spec.name] = (f"CW∞-{spec.steps}: PGD on the CW margin loss (margin {CW_MARGIN:g}), "
                              f"L∞ eps={eps:g}, step {step:g}, uniform random start, {restarts} restart(s)")
        else:
            out[spec.name] = AUTOATTACK_PROTOCOLS[autoattack_version] + f", L∞ eps={aa_eps:g}"
    out[WORST_CASE] = "correct on the clean input and under every attack above (per-sample minimum)"
    return out


def _aa_radius(eps: float, aa_eps: float | None) -> float:
    """AutoAttack's radius: ``aa_eps``, checked, or ``eps`` when it is ``None``."""
    if aa_eps is None:
        return eps
    check_eps(aa_eps, name="aa_eps (AutoAttack's radius)")
    return float(aa_eps)


# ============================================================================================ results
class EvalResult(dict):
    """Accuracies by attack name, as fractions in [0, 1]; a plain ``dict[str, float]`` with extras.

    Keys are the canonical attack names in the order given, then ``"worst_case"``. Every value counts a
    sample as correct only if it is correct on the clean input and under that attack (``counting="both"``), or,
    with ``counting="adversarial"``, correct on the adversarial input alone (FGSM, PGD-N, CW-N).

    Attributes:
        per_sample: ``{name: bool tensor (n,)}`` on the CPU (``None`` unless ``return_per_sample=True``).
        protocol: the settings used: ``eps``, ``aa_eps`` (AutoAttack's radius), ``alpha``, ``restarts``,
            ``seed``, ``n``, ``autoattack_version`` and ``attacks`` (`describe_protocol`'s words for each attack).
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
def attack_generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    """The random generator `robust_accuracy` gives the attack ``name``: seeded from ``seed`` and the name, so
    that one attack's result does not depend on which others ran."""
    generator = torch.Generator(device=device) if device.type != "cpu" else torch.Generator()
    generator.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1))
    return generator


def chunk_generator(seed: int, name: str, chunk: int, device: torch.device) -> torch.Generator:
    """The generator of chunk ``chunk`` (the chunk-th batch of clean-correct samples) of the attack ``name``.

    Chunk 0 uses `attack_generator` itself; later chunks mix their index into the seed. Seeding per chunk
    (rather than one generator running through every batch) makes each sample's random start depend only on
    (seed, attack, its chunk), so a run sharded over processes (`s2o_lib.processes.Shards`) draws the same
    starts, and forms the same batches, as one process: the same per-sample results.
    """
    generator = attack_generator(seed, name, device)
    if chunk:
        generator.manual_seed((generator.initial_seed() + 7_919 * chunk) % (2**63 - 1))
    return generator


def _cuda_devices(device: torch.device) -> list[int]:
    """CUDA devices whose generators pyautoattack may reseed (it calls ``torch.cuda.manual_seed``)."""
    devices = set()
    if device.type == "cuda":
        devices.add(device.index if device.index is not None else torch.cuda.current_device())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices.add(torch.cuda.current_device())
    return sorted(devices)


def correct_predictions(
    model: nn.Module, x: Tensor, y: Tensor, *, device: torch.device | None = None, batch_size: int
) -> Tensor:
    """Per-sample correctness of ``model`` on ``(x, y)`` (bool, CPU), in eval mode, ``batch_size`` at a time.

    Each batch is moved to ``device`` (``None``: the model's, `s2o_lib.models.device_of`); the result is on the CPU.
    """
    device = device_of(model) if device is None else device
    with eval_mode(model), torch.no_grad():
        return torch.cat([(model(x[s].to(device)).argmax(1) == y[s].to(device)).cpu()
                          for s in batch_slices(len(y), batch_size)])


def _white_box(
    model: nn.Module, spec: AttackSpec, x: Tensor, y: Tensor, *, eps: float, alpha: float, restarts: int,
    generator: torch.Generator,
) -> Tensor:
    if spec.kind == "fgsm":
        return fgsm(model, x, y, eps=eps)
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=spec.steps, loss="ce" if spec.kind == "pgd" else "cw",
               init="uniform", restarts=restarts, generator=generator)


class _CollectWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


#: AutoAttack's budget in a dry run (``autoattack_budget="dry-run"``, as ``run-notebooks --dry-run``'s profile passes it): every attack of the version
#: runs, with these iterations and Square queries. A dry-run model trained one epoch on stand-in data predicts
#: one class whatever the input, so no attack moves it and Square would spend its 5000 queries on every image.
DRY_RUN_AUTOATTACK = {"iterations": 5, "square_queries": 20}


def _dry_run_budget(attack: Any) -> None:
    """Cut a pyautoattack `AutoAttack`'s iterations and queries to `DRY_RUN_AUTOATTACK` (a dry run's code path)."""
    for part in (attack.apgd, attack.apgd_targeted, attack.fab):
        part.n_iter = DRY_RUN_AUTOATTACK["iterations"]
    attack.square.n_queries = DRY_RUN_AUTOATTACK["square_queries"]


def _run_autoattack(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, version: str, seed: int, batch_size: int,
    device: torch.device, num_classes: int, budget: str = "full",
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
    if budget == "dry-run":
        _dry_run_budget(attack)
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
@dataclass(frozen=True)
class _Protocol:
    """The settings every attack of one `robust_accuracy` call shares."""

    eps: float
    aa_eps: float
    step: float
    restarts: int
    autoattack_version: str
    seed: int
    batch_size: int
    device: torch.device
    shards: Shards
    counting: Counting = "both"
    autoattack_budget: str = "full"


def _check_eval_args(
    *, attacks: Sequence[str], eps: float, alpha: float | None, n: int | None, batch_size: int, restarts: int,
    autoattack_version: str, seed: int,
) -> list[AttackSpec]:
    check_linf_eps(eps)
    specs = _parse_attacks(attacks)
    if alpha is not None:
        steps = max((s.steps for s in specs if s.kind in ("pgd", "cw")), default=0)
        check_step_size(alpha, steps=steps if eps > 0 else 0)
    if autoattack_version not in AUTOATTACK_VERSIONS:
        raise unknown_name("AutoAttack version", autoattack_version, AUTOATTACK_VERSIONS)
    if n is not None:
        check_int(n, "n", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(restarts, "restarts", minimum=1)
    check_int(seed, "seed", minimum=0)
    return specs


def _robust_under(
    model: nn.Module, spec: AttackSpec, x_all: Tensor, y_all: Tensor, clean: Tensor, protocol: _Protocol,
    notes: list[str],
) -> Tensor:
    """Per-sample 'correct on the clean input and under ``spec``' (bool, CPU); attacks only clean-correct samples."""
    correct = torch.zeros(len(y_all), dtype=torch.bool)
    idx = clean.nonzero().flatten()
    device, batch_size = protocol.device, protocol.batch_size
    radius = protocol.aa_eps if spec.kind == "autoattack" else protocol.eps
    if radius == 0 or idx.numel() == 0:  # the ball is the clean point itself
        correct[idx] = True
    elif spec.kind == "autoattack":
        with torch.no_grad():
            num_classes = model(x_all[:1].to(device)).shape[1]
        for chunk, s in enumerate(batch_slices(idx.numel(), batch_size)):  # one call per chunk: see chunk_generator
            if not protocol.shards.mine(chunk):
                continue
            x_adv, messages = _run_autoattack(
                model, x_all[idx[s]], y_all[idx[s]], eps=protocol.aa_eps, version=protocol.autoattack_version,
                seed=protocol.seed, batch_size=batch_size, device=device, num_classes=num_classes,
                budget=protocol.autoattack_budget)
            notes += [f"AutoAttack: {m}" for m in messages if f"AutoAttack: {m}" not in notes]
            correct[idx[s]] = correct_predictions(model, x_adv, y_all[idx[s]], device=device, batch_size=batch_size)
    else:
        _white_box_correct(model, spec, x_all, y_all, idx, correct, protocol, name=spec.name)
    robust = protocol.shards.gather(correct) & clean
    if protocol.counting == "adversarial" and spec.kind != "autoattack":  # the released scripts: x' of every image
        wrong, on_wrong = (~clean).nonzero().flatten(), torch.zeros(len(y_all), dtype=torch.bool)
        if radius == 0:
            return robust
        _white_box_correct(model, spec, x_all, y_all, wrong, on_wrong, protocol, name=f"{spec.name}:misclassified")
        robust |= protocol.shards.gather(on_wrong) & ~clean
    return robust


def _white_box_correct(model: nn.Module, spec: AttackSpec, x_all: Tensor, y_all: Tensor, idx: Tensor,
                       correct: Tensor, protocol: _Protocol, *, name: str) -> None:
    """Fill ``correct[idx]`` with 'correct under ``spec``' (FGSM, PGD-N, CW-N), chunk by chunk, each with its own
    generator (`chunk_generator` of ``name``), this process's chunks only."""
    device = protocol.device
    for chunk, s in enumerate(batch_slices(idx.numel(), protocol.batch_size)):
        if not protocol.shards.mine(chunk):
            continue
        generator = chunk_generator(protocol.seed, name, chunk, device)
        x, y = x_all[idx[s]].to(device), y_all[idx[s]].to(device)
        x_adv = _white_box(model, spec, x, y, eps=protocol.eps, alpha=protocol.step, restarts=protocol.restarts,
                           generator=generator)
        with torch.no_grad():
            correct[idx[s]] = (model(x_adv).argmax(1) == y).cpu()


def _clean_correct(model: nn.Module, x_all: Tensor, y_all: Tensor, protocol: _Protocol) -> Tensor:
    """Per-sample clean correctness (bool, CPU), this process's chunks computed and every chunk gathered."""
    correct = torch.zeros(len(y_all), dtype=torch.bool)
    for chunk, s in enumerate(batch_slices(len(y_all), protocol.batch_size)):
        if protocol.shards.mine(chunk):
            correct[s] = correct_predictions(model, x_all[s], y_all[s], device=protocol.device,
                                             batch_size=protocol.batch_size)
    return protocol.shards.gather(correct)


def _check_data_fits(model: nn.Module, x: Tensor, y: Tensor, *, device: torch.device) -> None:
    """Images the model can take (channels, dtype) and labels below its number of classes (from one forward pass)."""
    check_model_input(x, in_channels=model_spec(model).get("in_channels"), dtype=dtype_of(model))
    with eval_mode(model), torch.no_grad():
        num_classes = model(x[:1].to(device)).shape[1]
    check_labels(y, num_classes=num_classes)


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
    aa_eps: float | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    return_per_sample: bool = False,
    shards: Shards | None = None,
    counting: Counting = "both",
    autoattack_budget: AutoAttackBudget = "full",
) -> EvalResult:
    """Accuracy under clean inputs and L∞ attacks, counted per sample (worst case over clean and attack).

    A sample counts as robust under an attack only if the model classifies it correctly on the clean input
    and on the attack's adversarial input; ``"worst_case"`` counts samples correct under every attack run.
    Attacks are only run on clean-correct samples (the others are not robust anyway). The released S²O code
    counts accuracy on x′ over every image instead: ``counting="adversarial"``. PGD-N and CW-N start
    from a uniform random point of the ball; CW-N is PGD on the CW margin loss with margin `CW_MARGIN` = 50 (CW∞).
    Work goes in chunks of ``batch_size`` samples, each with its own seeded starts (`chunk_generator`; AutoAttack:
    one call per chunk): results depend on ``batch_size`` and ``seed``, not on how ``shards`` splits the chunks.

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
        aa_eps: AutoAttack's L∞ radius (``None``: ``eps``). The paper reports AutoAttack at 8/255 (AutoAttack's
            own example default and the AWP evaluation script's), while PGD-20/CW-20 use ``eps`` = 0.031 (see
            `s2o_lib.config.Profile.autoattack_eps`).
        seed: seed of the random starts and of AutoAttack; torch's global generator is left untouched.
        device: where the data goes; ``None``: the device of the model's first parameter. The model is never
            moved, so a ``device`` other than the model's only works for a model that can run there.
        return_per_sample: also fill ``result.per_sample`` with a bool tensor (n,) per attack.
        shards: split the chunks over a ``torchrun`` launch's processes (``Shards.of_current()``,
            every process calling alike) and gather the per-sample results (``None``: one process).
        counting: ``"both"`` (default): an image counts under an attack only if it is right on the clean input and
            under the attack; ``"adversarial"``: FGSM, PGD-N and CW-N count an image right on its adversarial
            input whatever its clean prediction, as the released S²O, AWP and TRADES evaluation loops do
            (``correct += pred(x').eq(y)`` over every image): equal or higher, since the clean-correct images get
            the same attack as with ``"both"`` and the misclassified ones are attacked too (their own seeded
            starts). AutoAttack counts its own way (``"both"``) in either; ``worst_case`` always includes clean.
        autoattack_budget: ``"full"``, or ``"dry-run"``: the version's attacks at `DRY_RUN_AUTOATTACK` (a dry run
            checks the code path; its numbers mean nothing).

    Returns:
        An `EvalResult`: ``{attack name: accuracy in [0, 1]}`` (floats) plus ``"worst_case"``, with ``.protocol``
        (what was run, incl. ``autoattack_version``), ``.per_sample`` (CPU bool tensors) and ``.notes``.

    Example:
        >>> result = robust_accuracy(model, test_set, eps=0.031, alpha=0.003, n=1000)  # doctest: +SKIP
        >>> result["pgd20"], result["autoattack"], result["worst_case"]                  # doctest: +SKIP
    """
    specs = _check_eval_args(attacks=attacks, eps=eps, alpha=alpha, n=n, batch_size=batch_size, restarts=restarts,
                             autoattack_version=autoattack_version, seed=seed)
    if counting not in COUNTINGS:
        raise unknown_name("counting", counting, COUNTINGS)
    if autoattack_budget not in AUTOATTACK_BUDGETS:
        raise unknown_name("AutoAttack budget", autoattack_budget, AUTOATTACK_BUDGETS)
    step = eps / 4 if alpha is None else alpha
    aa_eps = _aa_radius(eps, aa_eps)
    protocol = _Protocol(eps=eps, aa_eps=aa_eps, step=step, restarts=restarts, autoattack_version=autoattack_version,
                         seed=seed, batch_size=batch_size,
                         device=device_of(model) if device is None else torch.device(device), shards=shards or Shards(),
                         counting=counting, autoattack_budget=autoattack_budget)
    x_all, y_all = tensors(data, n=n)
    _check_data_fits(model, x_all, y_all, device=protocol.device)
    per_sample: dict[str, Tensor] = {}
    notes: list[str] = []
    with eval_mode(model), frozen_parameters(model):
        clean = _clean_correct(model, x_all, y_all, protocol)
        for spec in specs:
            per_sample[spec.name] = (clean.clone() if spec.kind == "clean"
                                     else _robust_under(model, spec, x_all, y_all, clean, protocol, notes))
    return _eval_result(per_sample, clean, specs=specs, notes=notes, protocol=protocol,
                        return_per_sample=return_per_sample)


def _eval_result(per_sample: dict[str, Tensor], clean: Tensor, *, specs: Sequence[AttackSpec], notes: list[str],
                 protocol: _Protocol, return_per_sample: bool) -> EvalResult:
    """`robust_accuracy`'s result: the per-sample AND over every attack (``worst_case``), the accuracies, the
    protocol it ran and the notes it made (also raised as warnings)."""
    worst = clean.clone()
    for value in per_sample.values():
        worst &= value
    per_sample[WORST_CASE] = worst
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=3)
    description = describe_protocol([s.name for s in specs], eps=protocol.eps, alpha=protocol.step,
                                    restarts=protocol.restarts, autoattack_version=protocol.autoattack_version,
                                    aa_eps=protocol.aa_eps)
    settings = {"eps": protocol.eps, "aa_eps": protocol.aa_eps, "alpha": protocol.step, "restarts": protocol.restarts,
                "seed": protocol.seed, "n": len(clean), "norm": "linf", "counting": protocol.counting,
                "autoattack_version": protocol.autoattack_version, "attacks": description,
                **({"autoattack_budget": "dry-run"} if protocol.autoattack_budget == "dry-run" else {})}
    accuracies = {name: value.float().mean().item() for name, value in per_sample.items()}
    return EvalResult(accuracies, per_sample=per_sample if return_per_sample else None, protocol=settings,
                      notes=notes)
