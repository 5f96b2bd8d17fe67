"""A training run's settings: one home for what `s2o_lib.train.fit` is told, and for the diff of two runs' settings.

They come in small groups, each with the paper's defaults: `OptimConfig` (SGD and the schedule), `AttackConfig`
(the training attack), `LossConfig` (the weights of the method's terms), `AWPConfig`, `EvalConfig` (the per-epoch
evaluation that picks ``best.pt``) and `SpeedConfig` (the GPU fast path). `fit_options` puts flat settings such as
``lr=0.05, attack_steps=5, beta=3.0`` into them (`FLAT_SETTINGS` names each one's group). `check_fit_options`
refuses what `fit` would refuse, before any work; `settings_changes` says how a checkpoint's recorded settings
differ from a run asked for (resume, the zoo and bundles all compare through it).

Example:
    >>> from s2o_lib.settings import fit_options
    >>> fit_options(lr=0.05, attack_steps=5, epochs=3)["attack"]
    AttackConfig(eps=0.03137254901960784, alpha=0.00784313725490196, steps=5)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .checks import check_int, check_linf_eps, check_positive, check_step_size
from .errors import S2OError, unknown_name
from .evaluate import COUNTINGS, Counting
from .fast import PRECISION_CHOICES, PrecisionChoice
from .methods import Method, parse_method

__all__ = [
    "CONFIGS", "FIT_WAY_OUT", "FLAT_SETTINGS", "PER_BATCH_SCHEDULES", "SCHEDULES", "AWPConfig", "AttackConfig",
    "EvalConfig", "LossConfig", "OptimConfig", "Schedule", "SettingsChanged", "SpeedConfig", "check_fit_options",
    "fit_options", "resolved_configs", "settings_changes", "settings_diff",
]

Schedule = Literal["piecewise", "constant", "onecycle"]
SCHEDULES = ("piecewise", "constant", "onecycle")
#: Schedules whose scheduler steps after every batch (the others step once per epoch).
PER_BATCH_SCHEDULES = ("onecycle",)


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class OptimConfig:
    """SGD with momentum and weight decay, and the learning-rate schedule (the paper's values).

    Attributes:
        lr: initial learning rate (0.1).
        momentum: SGD momentum (0.9).
        weight_decay: SGD weight decay (5e-4).
        schedule: ``"piecewise"`` (×0.1 from each milestone on), ``"constant"`` or ``"onecycle"`` (``lr`` is the
            peak; see `make_scheduler`).
        milestones: epochs from which the rate is multiplied by 0.1 (100 and 150; ``"piecewise"`` only).
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "piecewise"
    milestones: tuple[int, ...] = (100, 150)


@dataclass(frozen=True)
class AttackConfig:
    """The training attack: L∞ PGD on cross-entropy (AT, MART) or on TRADES' KL (the paper: PGD-10 at 8/255).

    Attributes:
        eps: L∞ radius (8/255).
        alpha: step size (2/255).
        steps: steps (10).
    """

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10


@dataclass(frozen=True)
class LossConfig:
    """The weights of a method's loss terms (see `s2o_lib.defenses`).

    Attributes:
        beta: weight of the robust term of TRADES and MART (6).
        s2o_weight: weight w of the S²O regulariser (``None``: 0.1 for AT, 0.3 for TRADES/MART).
        off_diagonal_mass: m of S²O's soft targets (``None``: 0.8, or 0.98 with 100 classes).
        kfac_weight: λ of the ``+s2o-kfac`` penalty (0.1).
    """

    beta: float = 6.0
    s2o_weight: float | None = None
    off_diagonal_mass: float | None = None
    kfac_weight: float = 0.1


@dataclass(frozen=True)
class AWPConfig:
    """Adversarial weight perturbation, for methods with ``+awp``.

    Attributes:
        gamma: relative weight perturbation γ (``None``: the base method's default).
        warmup: AWP is active from this epoch on, counted from 1 (``None``: the base method's default: 0 for AT,
            10 for TRADES, as in the AWP scripts; 0 and 1 both start at the first epoch).
    """

    gamma: float | None = None
    warmup: int | None = None


@dataclass(frozen=True)
class EvalConfig:
    """The PGD evaluation after every epoch (with an ``eval_loader``), which picks ``best.pt``.

    By default ``best.pt`` is the epoch with the best PGD-10 accuracy on the first 500 images, over every epoch,
    counting an image only when it is right on the clean input and under attack. The S²O authors select their way:
    the best PGD-20 on the full test set among epochs 100–110 (AT, TRADES) or 100–200 (AWP, MART), counted on x′
    over all images: ``steps=20, n=None, window=(100, 110), counting="adversarial"``, what the `s2o_lib.presets`
    runs use. (Picking on the test set is their protocol, not a held-out validation.)

    Attributes:
        eps: L∞ radius (``None``: the training attack's).
        alpha: step size (``None``: ``eps / 4``).
        steps: PGD steps (10).
        n: samples evaluated, the first ``n`` of the loader (``None``: all; 500).
        window: ``(first, last)``, the epochs (counted from 1, as `History.epoch` and the released scripts do,
            both included) among which ``best.pt`` is picked; every epoch is still evaluated (``None``: any epoch).
        counting: how `s2o_lib.evaluate.robust_accuracy` counts (``"both"`` or ``"adversarial"``).
    """

    eps: float | None = None
    alpha: float | None = None
    steps: int = 10
    n: int | None = 500
    window: tuple[int, int] | None = None
    counting: Counting = "both"


@dataclass(frozen=True)
class SpeedConfig:
    """The fast path for GPUs (`s2o_lib.fast`); the defaults compute exactly the plain fp32 path.

    Attributes:
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` (autocast for the attacks and the training step; fp16 with a
            loss scaler, `s2o_lib.fast.grad_scaler`, on CUDA only) or ``"auto"`` (`s2o_lib.fast.preferred_precision`
            of the training device: bf16 on Ampere and later, fp16 on older GPUs such as a T4, fp32 on a CPU).
        channels_last: the channels-last memory format (faster convolutions on GPUs).
        compile: run the model through ``torch.compile`` (the first epoch pays for compilation).
    """

    precision: PrecisionChoice = "fp32"
    channels_last: bool = False
    compile: bool = False


#: `fit`'s keyword for each group of settings, and its config class.
CONFIGS: dict[str, type] = {"optim": OptimConfig, "attack": AttackConfig, "loss": LossConfig, "awp": AWPConfig,
                            "evaluation": EvalConfig, "speed": SpeedConfig}
#: Each flat setting name: the `fit` keyword of its group, and its field there.
FLAT_SETTINGS: dict[str, tuple[str, str]] = {
    **{name: ("optim", name) for name in ("lr", "momentum", "weight_decay", "schedule", "milestones")},
    "eps": ("attack", "eps"), "alpha": ("attack", "alpha"), "attack_steps": ("attack", "steps"),
    **{name: ("loss", name) for name in ("beta", "s2o_weight", "off_diagonal_mass", "kfac_weight")},
    "awp_gamma": ("awp", "gamma"), "awp_warmup": ("awp", "warmup"),
    **{f"eval_{name}": ("evaluation", name) for name in ("eps", "alpha", "steps", "n", "window", "counting")},
    **{name: ("speed", name) for name in ("precision", "channels_last", "compile")},
}
_FIT_KEYWORDS = ("method", "epochs", "eval_loader", "checkpoint_dir", "resume", "keep_every", "progress", "metadata")


def fit_options(**settings: Any) -> dict[str, Any]:
    """`fit`'s keyword arguments from flat settings, each put into the config that holds it.

    ``lr``, ``momentum``, ``weight_decay``, ``schedule``, ``milestones`` go to ``optim``; ``eps``, ``alpha``,
    ``attack_steps`` to ``attack``; ``beta``, ``s2o_weight``, ``off_diagonal_mass``, ``kfac_weight`` to
    ``loss``; ``awp_gamma``, ``awp_warmup`` to ``awp``; ``eval_eps``, ``eval_alpha``, ``eval_steps``, ``eval_n``,
    ``eval_window``, ``eval_counting`` to ``evaluation``; ``precision``, ``channels_last``, ``compile`` to
    ``speed``. `fit`'s other keywords (``epochs``, ``checkpoint_dir``, ...) and whole configs
    (``optim=OptimConfig(...)``) pass through; flat settings then replace fields of a config given whole.

    Args:
        settings: flat settings and `fit` keywords.

    Example:
        >>> fit_options(lr=0.05, attack_steps=5, epochs=3)["attack"]
        AttackConfig(eps=0.03137254901960784, alpha=0.00784313725490196, steps=5)
    """
    out: dict[str, Any] = {}
    flat: dict[str, dict[str, Any]] = {}
    for name, value in settings.items():
        if name in FLAT_SETTINGS:
            group, attribute = FLAT_SETTINGS[name]
            flat.setdefault(group, {})[attribute] = value
        elif name in CONFIGS or name in _FIT_KEYWORDS:
            out[name] = value
        else:
            raise unknown_name("fit setting", name, [*FLAT_SETTINGS, *CONFIGS, *_FIT_KEYWORDS])
    for group, changes in flat.items():
        out[group] = dataclasses.replace(out.get(group) or CONFIGS[group](), **changes)
    return out


# --------------------------------------------------------------------------------------------- checks
def _check_window(window: Any, *, epochs: int) -> None:
    """``eval_window``: ``None`` or two epochs ``1 <= first <= last``, with ``first`` inside the run."""
    if window is None:
        return
    if (not isinstance(window, (tuple, list)) or len(window) != 2
            or any(isinstance(e, bool) or not isinstance(e, int) for e in window) or not 1 <= window[0] <= window[1]):
        raise S2OError(f"eval_window must be two epochs (first, last) with 1 <= first <= last, e.g. (100, 110); "
                       f"got {window!r}")
    if window[0] > epochs:
        raise S2OError(f"eval_window {tuple(window)} starts after the run's last epoch ({epochs}): no epoch could "
                       "become best.pt; train that long or leave eval_window out (any epoch)")


def _check_fit_args(*, epochs: int, configs: dict[str, Any], keep_every: int, checkpoint_dir: Any) -> None:
    for name, config in configs.items():
        if not isinstance(config, CONFIGS[name]):
            raise S2OError(f"{name} must be {CONFIGS[name].__name__}(...) (or None for the defaults), "
                           f"got {type(config).__name__}; flat settings go through fit_options(...)")
    check_int(epochs, "epochs", minimum=0)
    attack = configs["attack"]
    check_linf_eps(attack.eps)
    check_int(attack.steps, "attack_steps", minimum=1)
    check_step_size(attack.alpha, steps=attack.steps if attack.eps > 0 else 0)
    check_positive(configs["optim"].lr, "lr", example="0.1")
    check_int(keep_every, "keep_every", minimum=0)
    if configs["speed"].precision not in PRECISION_CHOICES:
        raise unknown_name("precision", configs["speed"].precision, PRECISION_CHOICES)
    if keep_every and checkpoint_dir is None:
        raise S2OError("keep_every needs a checkpoint_dir to write the per-epoch weights into")
    _check_window(configs["evaluation"].window, epochs=epochs)
    if configs["evaluation"].counting not in COUNTINGS:
        raise unknown_name("eval_counting", configs["evaluation"].counting, COUNTINGS)


def _check_evaluation(evaluation: EvalConfig) -> None:
    """The per-epoch evaluation, its ``None`` fields resolved: PGD with ≥ 1 step of size > 0 on ≥ 1 image."""
    check_linf_eps(evaluation.eps, name="eval_eps")
    check_int(evaluation.steps, "eval_steps", minimum=1)
    check_step_size(evaluation.alpha, steps=evaluation.steps if evaluation.eps > 0 else 0, name="eval_alpha")
    if evaluation.n is not None:
        check_int(evaluation.n, "eval_n", minimum=1)


#: Stored facts that name a run rather than set it: a resumed run may differ in these. world_size: a run may go on
#: with more or fewer processes (DDP); precision: on another GPU (fp16 on a T4, bf16 on an A100, see `fit`).
_LABELS = ("epoch", "epochs", "model", "profile", "preset", "tag", "world_size", "precision")


class SettingsChanged(S2OError):
    """A checkpoint folder holds a run with other settings than the ones asked for.

    Attributes:
        folder: the checkpoint folder.
        what: what differs, e.g. ``"lr 0.05 -> 0.1, seed 0 -> 1"``.
    """

    def __init__(self, folder: Path, what: str, *, way_out: str) -> None:
        self.folder, self.what = folder, what
        super().__init__(f"{what}; {way_out}")

    def retold(self, way_out: str) -> S2OError:
        """The same error with another way out (e.g. the command line's ``--no-resume``)."""
        return S2OError(f"{self.what}; {way_out}")


#: How `fit`'s callers in Python get out of a `SettingsChanged`.
FIT_WAY_OUT = "pass resume=False to start over there, or another checkpoint_dir"


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _same(old: Any, new: Any) -> bool:
    """Equal settings: numbers to float rounding (a value read back from JSON), sequences as lists."""
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-12)
    return _plain(old) == _plain(new)


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for every setting both record and in which they differ, in ``new``'s order.

    The one comparison of two runs' settings: `settings_changes` (resume, the zoo) and the suite's bundles use it.

    Args:
        old: recorded settings (a checkpoint's ``meta["settings"]``).
        new: the settings asked for.
    """
    return [(key, old[key], value) for key, value in new.items() if key in old and not _same(old[key], value)]


def settings_changes(saved: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's ``meta`` and the ``meta`` of a run asked for, as ``"key old -> new"``.

    Compared: the method, every resolved `fit` setting (``meta["settings"]``) and every fact of ``metadata``
    (dataset, seed, subset, ...), where both record it; not the names in `_LABELS`. ``epochs`` may grow (a
    resumed run trains on to the new total), not shrink below the epochs already trained.

    Args:
        saved: the checkpoint's ``meta``.
        asked: the new run's ``meta``.
    """
    changes = []
    if saved.get("epoch") is not None and asked["settings"].get("epochs", math.inf) < saved["epoch"]:
        changes.append(f"epochs: {saved['epoch']} trained already, {asked['settings']['epochs']} asked for")
    facts = {key: value for key, value in asked.items() if key != "settings"}
    differing = settings_diff(saved, facts) + settings_diff(saved.get("settings", {}), asked["settings"])
    return changes + [f"{key} {old!r} -> {new!r}" for key, old, new in differing if key not in _LABELS]


def resolved_configs(given: dict[str, Any], *, epochs: int, keep_every: int, checkpoint_dir: Any) -> dict[str, Any]:
    """`fit`'s configs, checked, with ``None`` for the defaults and the evaluation's ε and step resolved."""
    configs = {name: CONFIGS[name]() if value is None else value for name, value in given.items()}
    _check_fit_args(epochs=epochs, configs=configs, keep_every=keep_every, checkpoint_dir=checkpoint_dir)
    evaluation = configs["evaluation"]
    eval_eps = configs["attack"].eps if evaluation.eps is None else evaluation.eps
    configs["evaluation"] = dataclasses.replace(
        evaluation, eps=eval_eps, alpha=eval_eps / 4 if evaluation.alpha is None else evaluation.alpha)
    _check_evaluation(configs["evaluation"])
    return configs


def check_fit_options(*, method: str | Method, **options: Any) -> None:
    """Check `fit`'s settings before any work (loading data, building the model): what `fit` would refuse.

    Args:
        method: the training method.
        options: `fit`'s keyword arguments (``epochs`` and the configs, e.g. from `fit_options`); the others
            are ignored.
    """
    parse_method(method)
    given = {name: options.get(name) for name in CONFIGS}
    resolved_configs(given, epochs=options.get("epochs", 0), keep_every=options.get("keep_every", 0),
                      checkpoint_dir=options.get("checkpoint_dir"))
