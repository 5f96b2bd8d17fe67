"""Trained models shared between notebooks: train once per profile, then load from the cache.

Notebook 03 trains PGD-AT, notebook 06 reuses it, notebook 09 compares every method: all of them ask
`trained_model`, which trains only when the checkpoint is missing (and resumes a run that was cut off,
since `fit` resumes from its checkpoint folder). A run missing from the cache is first asked of `RUN_SOURCES`: the
suite's published bundles (`s2o_lib.suite.bundle`, ``S2O_ZOO_URL``) once the notebooks' set-up or the command line
has added them.

Example:
    >>> from s2o_lib.zoo import trained_model                    # doctest: +SKIP
    >>> model, history = trained_model("at+s2o")                 # trains in the active profile, or loads
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .checks import check_int
from .config import Profile, dry_run_requested, get_device, get_profile, seed_everything
from .data import dataset_info, dataset_missing, download_reachable, load_dataset, make_loader, stand_in_dataset
from .fast import training_loader
from .lock import folder_lock
from .methods import parse_method
from .models import build_model, device_of
from .settings import FLAT_SETTINGS, SettingsChanged, fit_options
from .train import History, fit

__all__ = [
    "CHECKOUT_RUNS", "DATA_ENV", "RUNS_ENV", "RUN_SOURCES", "cache_home", "fit_settings", "overrides_key",
    "profile_data", "run_folder", "runs_root", "train_run", "trained_model",
]


#: Where `trained_model` looks for a run missing from the cache before training it, in order: each source is
#: called as ``source(model, folder, profile=..., settings=...)`` and returns the run's `History` once it has put
#: the run into ``folder`` and its weights into ``model``, else ``None``. Empty here; the suite adds the profile's
#: published bundle (`s2o_lib.suite.bundle.use_published_bundles`, called by the set-up cell and the CLI).
RUN_SOURCES: list[Callable[..., History | None]] = []

RUNS_ENV = "S2O_RUNS"
#: The dataset folder `profile_data` and `trained_model` read when none is given (default ``data``).
DATA_ENV = "S2O_DATA"


#: The model cache of a checkout: the notebooks' own ``notebooks/runs`` (git-ignored), wherever Python runs.
CHECKOUT_RUNS = ("notebooks", "runs")


def _checkout_root() -> Path | None:
    """The repository this library was imported from (``pyproject.toml`` and ``notebooks/`` beside the
    package), ``None`` for an installed library."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def _user_cache() -> Path:
    """The model cache of an installed library: ``$XDG_CACHE_HOME/s2o-tutorials/runs`` (``~/.cache/...``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "s2o-tutorials" / "runs"


def cache_home() -> Path:
    """The one model cache, found the same way from every folder: ``$S2O_RUNS``; else, when the library is
    imported from a checkout, that checkout's ``notebooks/runs`` (where the notebooks, which run in
    ``notebooks/``, always kept their models); else the user cache folder (``~/.cache/s2o-tutorials/runs``).

    A home inside the current folder is given relative to it (``runs`` in ``notebooks/``, ``notebooks/runs``
    at the root), as the notebooks have always printed it; elsewhere it is absolute.
    """
    given = os.environ.get(RUNS_ENV)
    if given:
        return Path(given)
    checkout = _checkout_root()
    home = checkout.joinpath(*CHECKOUT_RUNS) if checkout is not None else _user_cache()
    try:
        return home.relative_to(Path.cwd().resolve())
    except ValueError:
        return home


def runs_root() -> Path:
    """Where cached checkpoints live: `cache_home` (``$S2O_RUNS``, else the checkout's ``notebooks/runs``, else
    ``~/.cache/s2o-tutorials/runs``), the same for `trained_model`, ``zoo pack``/``fetch`` and ``run-notebooks``
    wherever they are called; in a dry run (``S2O_DRY_RUN=1``) its ``dry-run/`` sub-folder, so tiny models
    never mix with real ones."""
    root = cache_home()
    return root / "dry-run" if dry_run_requested() else root


def fit_settings(profile: Profile, **overrides: Any) -> dict[str, Any]:
    """`fit`'s keyword arguments for a profile, with flat overrides (``beta=3``, ``attack_steps=1``, ...).

    The one mapping from a profile to training settings: `trained_model` (the notebooks) and
    ``python -m s2o_lib train`` both use it, so they train the same model for the same profile. The per-epoch
    evaluation that picks ``best.pt`` runs PGD with at most 10 steps on at most 500 test images over every epoch
    (model selection, not the evaluation a notebook reports; the authors pick the best PGD-20 on the full test
    set among epochs 100–109, see `s2o_lib.train.EvalConfig`).

    Args:
        profile: the profile.
        overrides: flat settings or `fit` keywords that replace the profile's (see `s2o_lib.settings.fit_options`).
    """
    flat = {
        "epochs": profile.epochs, "lr": profile.lr, "schedule": profile.schedule, "milestones": profile.milestones,
        "eps": profile.eps,
        "alpha": profile.alpha, "attack_steps": profile.attack_steps, "awp_warmup": profile.awp_warmup,
        "eval_eps": profile.eval_eps, "eval_alpha": profile.eval_alpha, "eval_steps": min(profile.eval_steps, 10),
        "eval_n": min(profile.eval_n, 500), "precision": profile.precision,
    }
    return fit_options(**{**flat, **overrides})


def overrides_key(profile: Profile, **overrides: Any) -> str:
    """A short hash of the overrides that differ from the profile's settings ("" when none does).

    `trained_model` puts it into the cache folder's name, so that ``trained_model("at", eps=0.3)`` trains and
    caches its own model instead of returning the profile's.

    Args:
        profile: the profile.
        overrides: flat settings or `fit` keywords (as `trained_model` takes them).
    """
    base = fit_settings(profile)
    changed = {}
    for name, value in overrides.items():
        if name in FLAT_SETTINGS:
            group, attribute = FLAT_SETTINGS[name]
            default = getattr(base[group], attribute)
        else:
            default = base.get(name)
        if value != default and not (isinstance(value, (list, tuple)) and list(value) == list(default or [])):
            changed[name] = value
    if not changed:
        return ""
    text = json.dumps(changed, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_folder(method: str, *, profile: Profile, seed: int = 0, root: str | Path | None = None, tag: str = "",
               **overrides: Any) -> Path:
    """The cache folder of `trained_model`: ``root/profile/method[-tag or -hash]-seedN``.

    Args:
        method: the canonical method name.
        profile: the profile.
        seed: random seed of the run.
        root: cache folder (default: `runs_root`).
        tag: the run's name for its overrides; without one, `overrides_key` of the overrides names them.
        overrides: the overrides of the profile's settings.
    """
    label = tag or overrides_key(profile, **overrides)
    return Path(root or runs_root()) / profile.name / f"{method}{'-' + label if label else ''}-seed{seed}"


def profile_data(profile: Profile, *, root: str | Path | None = None, download: bool | None = None):
    """``(train, test)`` datasets of a profile.

    A dry-run profile (`s2o_lib.config.dry_run`) never downloads: it loads the dataset when its files are in
    ``root`` and otherwise uses `s2o_lib.data.stand_in_dataset` (`FakeData` in the dataset's shape).

    Args:
        profile: the profile (its dataset and subsets).
        root: dataset folder (``None``: ``$S2O_DATA``, else ``data``).
        download: ``None``: fetch a missing torchvision dataset when its server is reachable (`class` and
            `paper` load CIFAR-10 on the first run with no flag to find; offline the missing-files error says
            where to put them; the bundled digits of `smoke` never touch the network); ``True``/``False``: as
            `s2o_lib.data.load_dataset`.
    """
    root = root if root is not None else os.environ.get(DATA_ENV) or "data"
    if profile.dry_run:
        if dataset_missing(profile.dataset, root=root):
            return tuple(stand_in_dataset(profile.dataset, split, size=size or 64)
                         for split, size in (("train", profile.train_subset), ("test", profile.test_subset)))
        download = False
    if download is None:
        download = dataset_missing(profile.dataset, root=root) and download_reachable(profile.dataset)
    train = load_dataset(profile.dataset, "train", root=root, download=download, subset=profile.train_subset)
    test = load_dataset(profile.dataset, "test", root=root, download=download, subset=profile.test_subset)
    return train, test


def trained_model(
    method: str,
    *,
    profile: Profile | str | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    data_root: str | Path | None = None,
    download: bool | None = None,
    progress: bool = True,
    tag: str = "",
    device_loader: bool | None = None,
    **overrides: Any,
) -> tuple[nn.Module, History]:
    """A model trained with ``method`` in a profile, loaded from the cache when it is there.

    A run missing from the cache (`runs_root`, the same from every folder) comes from the first of `RUN_SOURCES`
    that holds it (the suite's verified bundles, ``S2O_ZOO_URL=none`` turning them off), else it is trained; a
    bundle reached but broken stops with an `S2OError` that says so. A cached run's ``best.pt`` that is
    missing or does not load is written again from the run (`s2o_lib.checkpoint.restore_best`), without training.
    The seed is checked before the run's folder is made or locked.

    Args:
        method: any method name of `s2o_lib.defenses` (e.g. ``"at+s2o"``).
        profile: a `Profile`, its name, or ``None`` for the active one.
        seed: random seed of the run.
        root: cache folder (default: `runs_root`).
        data_root: dataset folder (``None``: ``$S2O_DATA``, else ``data``).
        download: download the dataset if missing (``None``: when its server is reachable, `profile_data`).
        progress: show a progress bar while training.
        tag: the cache name of runs whose settings differ from the profile's (e.g. ``"beta1"``); without one,
            a short hash of the overrides names them (`overrides_key`).
        device_loader: keep the training set on the device (`s2o_lib.fast.training_loader`; ``None``: where it
            pays, CIFAR-style data on a CUDA GPU).
        **overrides: flat settings such as ``beta=3``, ``attack_steps=1``, ``awp_gamma=0.02``, or `fit`
            keywords, that replace the profile's (`fit_settings`).

    Returns:
        ``(model, history)`` with the model in eval mode on the profile's device.
    """
    check_int(seed, "seed", minimum=0)  # before the folder (and its lock) is made
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    name = parse_method(method).name
    folder = run_folder(name, profile=profile, seed=seed, root=root, tag=tag, **overrides)
    settings = fit_settings(profile, **overrides)
    with folder_lock(folder, wait=True):  # another process training the same model: wait, then load its result
        try:
            return _train_or_load(name, folder=folder, profile=profile, seed=seed, data_root=data_root,
                                  download=download, progress=progress, tag=tag, device_loader=device_loader,
                                  settings=settings)
        except SettingsChanged as err:
            raise err.retold(f"give these settings their own tag=..., or delete {folder} to train again") from None


def _train_or_load(name: str, *, folder: Path, profile: Profile, seed: int, data_root: str | Path | None,
                   download: bool | None, progress: bool, tag: str, device_loader: bool | None,
                   settings: dict[str, Any]) -> tuple[nn.Module, History]:
    """`trained_model` once its folder is held: train into it, or load what it holds."""
    train, test = profile_data(profile, root=data_root, download=download)
    info = dataset_info(profile.dataset)
    seed_everything(seed)
    model = build_model(profile.arch, num_classes=info.num_classes, in_channels=info.in_channels)
    device = get_device()
    model = model.to(device)
    for source in RUN_SOURCES:  # the run is missing here: a published copy before training
        if (history := source(model, folder, profile=profile, settings=settings)) is not None:
            return model.eval(), history
    history = train_run(model, train, test, method=name, folder=folder, settings=settings, seed=seed,
                        batch_size=profile.batch_size, device_loader=device_loader, progress=progress,
                        metadata={"dataset": profile.dataset, "profile": profile.name, "tag": tag,
                                  "subset": profile.train_subset})
    return model.eval(), history


def train_run(
    model: nn.Module, train: Any, test: Any, *, method: str, folder: str | Path, settings: dict[str, Any], seed: int,
    batch_size: int, metadata: dict[str, Any], loader: Any = None, device_loader: bool | None = None,
    num_workers: int = 0, resume: bool = True, progress: bool = True,
) -> History:
    """Train one run into its folder: the one way `trained_model` and ``python -m s2o_lib train`` both train.

    `fit` with checkpoints in ``folder`` (resumed when they are there), the per-epoch evaluation on ``test`` and
    ``metadata`` recorded beside ``seed`` and ``batch_size``.

    Args:
        model: the model, on its device.
        train: the training set (ignored when ``loader`` is given).
        test: the evaluation set of the per-epoch evaluation that picks ``best.pt``.
        method: the training method.
        folder: the run's checkpoint folder.
        settings: `fit`'s settings (`fit_settings`).
        seed: the run's seed (the data order).
        batch_size: the batch size.
        metadata: facts of the run recorded in its checkpoint (dataset, profile, tag, subset, ...).
        loader: a ready training loader (the torchrun launcher's sharded one); ``None``: `training_loader`.
        device_loader: keep the training set on the device (`s2o_lib.fast.training_loader`).
        num_workers: DataLoader worker processes.
        resume: continue a run found in ``folder``.
        progress: show a progress bar.
    """
    if loader is None:
        loader = training_loader(train, batch_size=batch_size, seed=seed, device=device_of(model),
                                 on_device=device_loader, num_workers=num_workers)
    return fit(model, loader, method=method, eval_loader=make_loader(test, batch_size=256, shuffle=False),
               checkpoint_dir=folder, resume=resume, progress=progress,
               metadata={"seed": seed, "batch_size": batch_size, **metadata}, **settings)
