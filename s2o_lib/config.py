"""Profiles, seeding and device selection: the one place that maps ``S2O_PROFILE`` to sizes.

The same code runs in every profile; only the numbers below change.

- ``smoke``: CPU, seconds, scikit-learn's bundled digits (what the tests run).
- ``class``: one Colab GPU, CIFAR-10, minutes to an hour.
- ``paper``: the paper's settings (CIFAR-10, 200 epochs, PGD-10 training, PGD-20/CW-20/AutoAttack).

Example:
    >>> from s2o_lib.config import get_profile
    >>> get_profile("smoke").dataset
    'digits'
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from .checks import check_int
from .errors import S2OError, unknown_name
from .methods import COMPARISON_METHODS

__all__ = [
    "DRY_RUN_ENV", "PROFILES", "PROFILE_ENV", "SMALL_COMPARISON", "Profile", "dry_run", "dry_run_requested",
    "get_device", "get_profile", "seed_everything",
]


PROFILE_ENV = "S2O_PROFILE"
#: Set to 1 (``run-notebooks --dry-run`` does) to get every profile at `dry_run` sizes from `get_profile`.
DRY_RUN_ENV = "S2O_DRY_RUN"


@dataclass(frozen=True)
class Profile:
    """Every size that differs between profiles.

    Attributes:
        name: ``smoke``, ``class`` or ``paper``.
        dataset: dataset name for `s2o_lib.data.load_dataset`.
        arch: architecture name for `s2o_lib.models.build_model`.
        epochs: training epochs.
        batch_size: training batch size.
        train_subset: number of training images used (``None``: all).
        test_subset: number of test images used (``None``: all).
        eps: L∞ radius of the threat model, for training and evaluation.
        alpha: step size of the training attack.
        attack_steps: steps of the training attack (the paper: PGD-10).
        eval_eps: L∞ radius used for evaluation (the paper: 0.031).
        eval_alpha: step size of the evaluation attacks (the paper: 0.003).
        eval_steps: steps of the evaluation attacks (the paper: 20).
        eval_n: number of test images that attacks are evaluated on.
        autoattack: ``"standard"`` (the four attacks) or ``"fast"`` (a declared cheaper subset).
        lr: initial learning rate.
        milestones: epochs at which the learning rate is multiplied by 0.1.
        awp_warmup: the epoch (from 1) at which AWP starts perturbing weights (``None``: the base method's
            default from `s2o_lib.awp.AWP_DEFAULTS`, as the AWP scripts: AT 0, TRADES 10).
        aa_eps: L∞ radius of AutoAttack (``None``: ``eval_eps``; see `autoattack_eps`). The paper reports AutoAttack
            at 8/255 (the default of AutoAttack's own example and of the AWP evaluation script; the S²O repository
            has no AutoAttack script), while its PGD-20/CW-20 use ``eval_eps`` = 0.031.
        notes: what this profile shrinks compared to the paper, said plainly.
        schedule: the learning-rate schedule of `s2o_lib.train.make_scheduler`: ``"piecewise"`` (×0.1 at each
            milestone, the paper's) or ``"onecycle"`` (``lr`` is the peak; for short runs).
        compare_methods: the methods notebook 09 trains and compares (``None``: every method of
            `s2o_lib.compare.COMPARISON_METHODS`); the others are compared too when their models are already
            cached, e.g. from a pretrained bundle (`s2o_lib.compare.comparison_methods`).
        dry_run: the profile's code path at tiny sizes (`dry_run`): stand-in data when the real set is
            missing, models cached apart from real ones.
        autoattack_budget: ``"full"``, or ``"dry-run"`` in a dry run: the notebooks pass it to
            `s2o_lib.evaluate.robust_accuracy`, so AutoAttack runs its attacks at a tiny budget.
        precision: the training precision (`s2o_lib.train.SpeedConfig`): ``"fp32"``, or ``"auto"`` for
            `s2o_lib.fast.preferred_precision` of the device (``class``: bf16 on Ampere and later GPUs, fp16 with
            a loss scaler on a T4, fp32 on a CPU). A speed setting: a bundle or a resumed run may differ in it.
    """

    name: str
    dataset: str
    arch: str
    epochs: int
    batch_size: int
    train_subset: int | None
    test_subset: int | None
    eps: float
    alpha: float
    attack_steps: int
    eval_eps: float
    eval_alpha: float
    eval_steps: int
    eval_n: int
    autoattack: Literal["standard", "fast"]
    lr: float
    milestones: tuple[int, ...]
    awp_warmup: int | None
    aa_eps: float | None = None
    notes: str = ""
    schedule: Literal["piecewise", "constant", "onecycle"] = "piecewise"
    compare_methods: tuple[str, ...] | None = None
    dry_run: bool = False
    autoattack_budget: Literal["full", "dry-run"] = "full"
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"

    @property
    def autoattack_eps(self) -> float:
        """AutoAttack's L∞ radius: ``aa_eps``, or ``eval_eps`` when it is ``None``."""
        return self.eval_eps if self.aa_eps is None else self.aa_eps

    def as_dict(self) -> dict[str, Any]:
        """The profile as a plain dictionary (for metrics files and reports)."""
        return asdict(self)

    def with_(self, **changes: Any) -> Profile:
        """A copy with some fields changed (``profile.with_(epochs=3)``).

        Args:
            changes: field names and their new values.
        """
        unknown = sorted(set(changes) - set(asdict(self)))
        if unknown:
            raise S2OError(f"not Profile fields: {', '.join(unknown)}; choose from {', '.join(asdict(self))}")
        return replace(self, **changes)


#: The methods notebook 09 trains in `smoke` and `class`: 11 of the 13 (not AVMixup and AVMixup+S²O), to fit the
#: time budgets (benchmarks/RESULTS.md); cached or bundled models of the other two join the table.
SMALL_COMPARISON: tuple[str, ...] = tuple(m for m in COMPARISON_METHODS if not m.startswith("avmixup"))

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        dataset="digits",
        arch="small-cnn-w24",
        epochs=6,
        batch_size=64,
        train_subset=None,
        test_subset=None,
        eps=0.15,
        alpha=0.05,
        attack_steps=5,
        eval_eps=0.15,
        eval_alpha=0.02,
        eval_steps=20,
        eval_n=200,
        autoattack="fast",
        lr=0.05,
        milestones=(4,),
        awp_warmup=2,
        compare_methods=SMALL_COMPARISON,
        notes=(
            "smoke shrinks everything to run in seconds on a CPU: 16x16 digits, a small CNN (width 24), "
            "eps=0.15 (digits need a larger radius than 8/255 to show a gap), PGD-5 training, "
            "6 epochs, and AutoAttack's cheaper 'fast' subset (APGD-CE, APGD-T) on 200 images."
        ),
    ),
    # Sized for a 90-minute lab on one free-Colab T4: benchmarks/RESULTS.md, "Class budget".
    "class": Profile(
        name="class",
        dataset="cifar10",
        arch="preact-resnet18-w32",
        epochs=8,
        batch_size=128,
        train_subset=20_000,
        test_subset=None,
        eps=8 / 255,
        alpha=2 / 255,
        attack_steps=5,
        eval_eps=8 / 255,
        eval_alpha=2 / 255,
        eval_steps=20,
        eval_n=200,
        autoattack="fast",  # APGD-CE + APGD-T: the lab from an empty cache fits 45 T4-minutes (RESULTS.md)
        lr=0.2,  # the one-cycle peak (the fast-AT code's --lr-max 0.2)
        milestones=(5, 7),  # "piecewise" only: x0.1 at 1/2 and 3/4 of the run, the paper's 100/150 of 200
        awp_warmup=2,
        schedule="onecycle",
        compare_methods=SMALL_COMPARISON,
        precision="auto",  # fp16 on a T4 (no bf16 tensor cores), bf16 on Ampere and later: s2o_lib.fast
        notes=(
            "class fits a 90-minute lab on one free-Colab T4 by shrinking the paper's setup: PreAct ResNet-18 "
            "at half width (32-64-128-256 channels, 2.8 M parameters, a quarter of the FLOPs; the paper: "
            "64-512, 11.2 M), trained on a fixed random 20,000 of CIFAR-10's 50,000 training images for 8 "
            "epochs with a one-cycle learning rate peaking at 0.2 (the paper: all 50,000, 200 epochs, "
            "piecewise from 0.1), a PGD-5 training attack (the paper: PGD-10) and AWP from epoch 2 (the "
            "AWP scripts: AT from the first epoch, TRADES from the 10th); every attack, AutoAttack's fast subset "
            "included (APGD-CE and APGD-T, 3 target classes: the paper profile runs the standard four), runs on "
            "the first 200 test images (the paper: 10,000) at eps = 8/255, step 2/255 (the "
            "paper evaluates at 0.031, step 0.003). Expect accuracies well below the paper's; on 200 images "
            "each accuracy is uncertain by about ±7 points (95 %), so small differences between methods, "
            "S²O's gain included, are not resolved here. Notebook 09 trains 11 of its 13 methods (not AVMixup "
            "and AVMixup+S²O; compared too when a bundle holds them). Use the paper profile to compare with "
            "the authors' numbers."
        ),
    ),
    "paper": Profile(
        name="paper",
        dataset="cifar10",
        arch="preact-resnet18",
        epochs=200,
        batch_size=128,
        train_subset=None,
        test_subset=None,
        eps=8 / 255,
        alpha=2 / 255,
        attack_steps=10,
        eval_eps=0.031,
        eval_alpha=0.003,
        eval_steps=20,
        eval_n=10000,
        autoattack="standard",
        lr=0.1,
        milestones=(100, 150),
        awp_warmup=None,
        aa_eps=8 / 255,
        notes=("paper: the authors' settings (CIFAR-10, 200 epochs, PGD-10 training, full test set; PGD-20/CW-20 "
               "at eps 0.031, AutoAttack at 8/255 as AutoAttack's example and the AWP evaluation script)."),
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """Return the active profile (at `dry_run` sizes when ``S2O_DRY_RUN=1``).

    Args:
        name: ``smoke``, ``class`` or ``paper``; ``None`` reads ``S2O_PROFILE`` and falls back to
            ``class`` when a CUDA GPU is present and ``smoke`` otherwise.
    """
    if name is None:
        name = os.environ.get(PROFILE_ENV) or ("class" if torch.cuda.is_available() else "smoke")
    name = name.strip().lower()
    if name not in PROFILES:
        raise unknown_name("profile (S2O_PROFILE)", name, PROFILES)
    return dry_run(PROFILES[name]) if dry_run_requested() else PROFILES[name]


def dry_run_requested() -> bool:
    """Whether ``S2O_DRY_RUN`` asks for dry-run sizes (any value but empty, ``0``, ``false`` or ``no``)."""
    return os.environ.get(DRY_RUN_ENV, "").strip().lower() not in ("", "0", "false", "no")


def dry_run(profile: Profile) -> Profile:
    """``profile``'s code path at tiny sizes, to check every notebook on a CPU in minutes (not to learn from).

    The same dataset (CIFAR-10-shaped stand-in data when it is missing: `s2o_lib.zoo.profile_data`), the same
    architecture, schedule, threat model and AutoAttack version; 64 training and 40 test images, batches of
    16, one epoch, a one-step training attack, attacks on 20 images, AWP from the first epoch, and AutoAttack's
    attacks at a tiny budget (`s2o_lib.evaluate.DRY_RUN_AUTOATTACK`). The name stays
    (notebooks branch on it); ``dry_run=True`` keeps its cached models apart (`s2o_lib.zoo.runs_root`).

    Args:
        profile: the profile to shrink.
    """
    return profile.with_(
        epochs=1, batch_size=16, train_subset=64, test_subset=40, attack_steps=1, eval_steps=2, eval_n=20,
        awp_warmup=1, dry_run=True, autoattack_budget="dry-run",
        notes=f"DRY RUN of {profile.name}: its code path at tiny sizes (64 training and 40 test images, one "
              "epoch, PGD-1 training, attacks on 20 images, AutoAttack at 5 iterations and 20 Square queries); the "
              "numbers mean nothing. " + profile.notes,
    )


def seed_everything(seed: int, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch, and make CPU runs repeatable.

    Args:
        seed: the seed.
        deterministic: ask torch for deterministic kernels (warn-only where none exists).

    Returns:
        A `torch.Generator` seeded with ``seed``, for data loaders.
    """
    check_int(seed, "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # = torch.use_deterministic_algorithms(True, warn_only=True) without torch.compile's option, which imports
        # the compiler (2 s in every notebook's kernel); s2o_lib.fast.prepare_model sets it where a run compiles.
        torch.set_deterministic_debug_mode("warn")
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def get_device(prefer: str | None = None) -> torch.device:
    """Pick the fastest available device, or the one asked for.

    Args:
        prefer: ``"cuda"``, ``"mps"``, ``"cpu"`` or ``None`` (the first available of that order).
    """
    if prefer is not None:
        kind = prefer.split(":")[0]
        if kind not in ("cuda", "mps", "cpu"):
            raise unknown_name("device", prefer, ("cuda", "mps", "cpu"))
        if kind == "cuda" and not torch.cuda.is_available():
            raise S2OError("device 'cuda' was asked for but no CUDA GPU is visible; use 'cpu'")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise S2OError("device 'mps' was asked for but MPS is not available; use 'cpu'")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
