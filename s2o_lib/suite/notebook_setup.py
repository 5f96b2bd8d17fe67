"""`set_up`, what the first code cell of every notebook calls once ``s2o_lib`` can be imported.

The cell (written by ``tools/build_notebooks.py``) clones the repository on Colab and puts it on ``sys.path``;
`set_up` chooses the profile, and on Colab updates the clone, installs only what the runtime lacks
(`s2o_lib.suite.project.missing_requirements`) and mounts Google Drive when asked. Until the installs, this
module uses the standard library only (torch, which every runtime has, is imported inside `set_up`).

Example:
    >>> from s2o_lib.suite.notebook_setup import set_up                   # doctest: +SKIP
    >>> set_up(profile="", drive=False)
    profile: smoke
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from .project import ROOT, install_command, missing_requirements

__all__ = ["DRIVE_RUNS", "choose_profile", "mount_drive", "on_colab", "set_up", "update_clone"]

PROFILE_ENV = "S2O_PROFILE"
RUNS_ENV = "S2O_RUNS"  # the model cache, as `s2o_lib.zoo` reads it
DRIVE = "/content/drive"
DRIVE_RUNS = f"{DRIVE}/MyDrive/s2o-tutorials/runs"


def on_colab() -> bool:
    """Whether this kernel is Colab's (its kernel imports ``google.colab`` at start)."""
    return "google.colab" in sys.modules


def _gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def choose_profile(profile: str = "") -> str:
    """Set ``$S2O_PROFILE`` and return it: ``profile`` if given, else the environment's, else ``class`` on a GPU
    and ``smoke`` on a CPU (on Colab without a GPU it says how to attach one)."""
    if profile:
        os.environ[PROFILE_ENV] = profile
    elif not os.environ.get(PROFILE_ENV):
        gpu = _gpu()
        os.environ[PROFILE_ENV] = "class" if gpu else "smoke"
        if on_colab() and not gpu:
            print("No GPU, so this runs the small smoke profile. For class: Runtime → Change runtime type → T4 GPU.")
    return os.environ[PROFILE_ENV]


def update_clone(root: Path = ROOT) -> bool:
    """``git pull --ff-only`` in the clone at ``root``; when that brought new commits, the ``s2o_lib`` modules
    already imported are forgotten, so that the next ``import`` reads the new code (no restart).

    Returns:
        Whether the clone changed.
    """
    def head() -> str:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    before = head()
    if subprocess.run(["git", "-C", str(root), "pull", "-q", "--ff-only"], check=False).returncode:
        print(f"could not update {root}; using it as it is")
        return False
    if head() == before:
        return False
    for name in [name for name in sys.modules if name == "s2o_lib" or name.startswith("s2o_lib.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return True


def mount_drive() -> str:
    """Mount Google Drive (Colab) and point ``$S2O_RUNS`` at `DRIVE_RUNS`, so later notebooks reuse its models."""
    from google.colab import drive

    drive.mount(DRIVE)
    os.environ[RUNS_ENV] = DRIVE_RUNS
    print("trained models are kept in", DRIVE_RUNS)
    return DRIVE_RUNS


def set_up(*, profile: str = "", drive: bool = False) -> None:
    """What the first code cell of every notebook does once ``s2o_lib`` can be imported, with no restart.

    Chooses and announces the profile (`choose_profile`). On Colab it also updates the clone (`update_clone`),
    installs only the requirements the runtime cannot import (`missing_requirements`, `install_command`:
    never torch or the Jupyter packages) and, with ``drive``, mounts Google Drive and sets ``$S2O_RUNS``
    (`mount_drive`). Everywhere it lets `s2o_lib.zoo.trained_model` take a run missing from the cache from the
    profile's published bundle (`s2o_lib.suite.bundle.use_published_bundles`).

    Args:
        profile: ``"smoke"``, ``"class"``, ``"paper"``, or ``""`` for `choose_profile`'s default.
        drive: keep trained models in Google Drive (Colab only).

    Returns nothing, so that the set-up cell shows only what it prints; the profile is ``$S2O_PROFILE``.
    """
    name = choose_profile(profile)
    print("profile:", name)
    if on_colab():
        update_clone()
        missing = missing_requirements()
        print("installing:", ", ".join(missing) or "nothing")
        if missing:
            subprocess.run(install_command(missing), check=True)
        if drive:
            mount_drive()
    from .bundle import use_published_bundles  # imports torch and the library: after the update and the installs

    use_published_bundles()  # trained_model takes a run missing from the cache from the profile's published bundle
