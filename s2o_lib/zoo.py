"""Trained models shared between notebooks: train once per profile, then load from the cache.

Notebook 03 trains PGD-AT, notebook 06 reuses it, notebook 09 compares every method: all of them ask
`trained_model`, which trains only when the checkpoint is missing (and resumes a run that was cut off,
since `fit` resumes from its checkpoint folder).

Example:
    >>> from s2o_lib.zoo import trained_model                    # doctest: +SKIP
    >>> model, history = trained_model("at+s2o")                 # trains in the active profile, or loads
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .config import Profile, get_device, get_profile, seed_everything
from .data import dataset_info, load_dataset, make_loader
from .defenses import parse_method
from .fast import training_loader
from .models import build_model
from .train import History, fit, fit_options

RUNS_ENV = "S2O_RUNS"


def runs_root() -> Path:
    """Where cached checkpoints live: ``$S2O_RUNS``, else ``runs/`` under the current folder (git-ignored)."""
    return Path(os.environ.get(RUNS_ENV, "runs"))


def fit_settings(profile: Profile, **overrides: Any) -> dict[str, Any]:
    """`fit`'s keyword arguments for a profile, with flat overrides (``beta=3``, ``attack_steps=1``, ...).

    The one mapping from a profile to training settings: `trained_model` (the notebooks) and
    ``python -m s2o_lib train`` both use it, so they train the same model for the same profile. The per-epoch
    evaluation that picks ``best.pt`` runs PGD with at most 10 steps on at most 500 test images (model
    selection, not the evaluation a notebook reports).

    Args:
        profile: the profile.
        overrides: flat settings or `fit` keywords that replace the profile's (see `s2o_lib.train.fit_options`).
    """
    flat = {
        "epochs": profile.epochs, "lr": profile.lr, "milestones": profile.milestones, "eps": profile.eps,
        "alpha": profile.alpha, "attack_steps": profile.train_steps, "awp_warmup": profile.awp_warmup,
        "eval_eps": profile.eval_eps, "eval_alpha": profile.eval_alpha, "eval_steps": min(profile.eval_steps, 10),
        "eval_n": min(profile.eval_n, 500),
    }
    return fit_options(**{**flat, **overrides})


def profile_data(profile: Profile, *, root: str | Path = "data", download: bool = False):
    """``(train, test)`` datasets of a profile."""
    train = load_dataset(profile.dataset, "train", root=root, download=download, subset=profile.train_subset)
    test = load_dataset(profile.dataset, "test", root=root, download=download, subset=profile.test_subset)
    return train, test


def trained_model(
    method: str,
    *,
    profile: Profile | str | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    data_root: str | Path = "data",
    download: bool = False,
    progress: bool = True,
    tag: str = "",
    device_loader: bool | None = None,
    **overrides: Any,
) -> tuple[nn.Module, History]:
    """A model trained with ``method`` in a profile, loaded from the cache when it is there.

    Args:
        method: any method name of `s2o_lib.defenses` (e.g. ``"at+s2o"``).
        profile: a `Profile`, its name, or ``None`` for the active one.
        seed: random seed of the run.
        root: cache folder (default: `runs_root`).
        data_root: dataset folder.
        download: download the dataset if missing.
        progress: show a progress bar while training.
        tag: extra name for runs whose settings differ from the profile's (e.g. ``"beta1"``).
        device_loader: keep the training set on the device (`s2o_lib.fast.training_loader`; ``None``: where it
            pays, CIFAR-style data on a CUDA GPU).
        **overrides: flat settings such as ``beta=3``, ``attack_steps=1``, ``awp_gamma=0.02``, or `fit`
            keywords, that replace the profile's (`fit_settings`; use a ``tag`` with them).

    Returns:
        ``(model, history)`` with the model in eval mode on the profile's device.
    """
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    name = parse_method(method).name
    folder = Path(root or runs_root()) / profile.name / f"{name}{'-' + tag if tag else ''}-seed{seed}"
    train, test = profile_data(profile, root=data_root, download=download)
    info = dataset_info(profile.dataset)
    seed_everything(seed)
    model = build_model(profile.arch, num_classes=info.num_classes, in_channels=info.in_channels)
    device = get_device()
    model = model.to(device)
    history = fit(
        model,
        training_loader(train, batch_size=profile.batch_size, seed=seed, device=device, on_device=device_loader),
        method=name,
        eval_loader=make_loader(test, batch_size=256, shuffle=False),
        checkpoint_dir=folder,
        progress=progress,
        metadata={"dataset": profile.dataset, "profile": profile.name, "seed": seed, "tag": tag},
        **fit_settings(profile, **overrides),
    )
    return model.eval(), history
