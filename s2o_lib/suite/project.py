"""The project's own metadata (its URLs, the packages the library needs) and `set_up`, the notebooks' set-up.

``[project.urls]`` in ``pyproject.toml`` is the one home of the repository URL (the notebook build writes it
into the Colab badge and the set-up cell); ``S2O_REPO_URL`` overrides it (forks, tests). The set-up cell at the
top of every notebook clones the repository on Colab, puts it on ``sys.path`` and calls `set_up`, before
anything is installed: this module uses the standard library only (torch, which every runtime has, is imported
inside `set_up`).

Example:
    >>> from s2o_lib.project import missing_requirements, repo_url   # doctest: +SKIP
    >>> repo_url()
    'https://github.com/s2o-tutorials/s2o-tutorials'
    >>> missing_requirements()                                       # on Colab: what it lacks
    ['pyautoattack>=0.2']
    >>> set_up(profile="", drive=False)                              # doctest: +SKIP
    profile: smoke
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import S2OError

DISTRIBUTION = "s2o-tutorials"
REPO_URL_ENV = "S2O_REPO_URL"
ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PROFILE_ENV = "S2O_PROFILE"
RUNS_ENV = "S2O_RUNS"  # the model cache, as `s2o_lib.zoo` reads it
DRIVE = "/content/drive"
DRIVE_RUNS = f"{DRIVE}/MyDrive/s2o-tutorials/runs"

# Never installed by the set-up cell: a runtime's torch is built for its GPU, and its Jupyter packages
# (Colab pins its own ipywidgets) belong to the kernel that is running.
NEVER_INSTALL = frozenset({
    "torch", "torchvision", "torchaudio", "jupyter", "jupyterlab", "notebook", "ipykernel", "ipython",
    "ipywidgets", "jupyter-client", "jupyter-core", "nbclient", "nbformat", "traitlets",
})
# Distributions whose import name is not their name with "-" turned into "_".
IMPORT_NAMES = {"scikit-learn": "sklearn"}


def _pyproject() -> dict[str, Any] | None:
    """``[project]`` of the ``pyproject.toml`` beside the package (a checkout), or ``None``."""
    if not PYPROJECT.is_file() or sys.version_info < (3, 11):
        return None
    import tomllib

    with PYPROJECT.open("rb") as f:
        return tomllib.load(f).get("project")


def _installed(field: str) -> list[str]:
    """Every value of ``field`` in the installed distribution's metadata (none when it is not installed)."""
    try:
        return metadata.metadata(DISTRIBUTION).get_all(field) or []
    except metadata.PackageNotFoundError:
        return []


def project_urls() -> dict[str, str]:
    """``[project.urls]``: from the ``pyproject.toml`` of a checkout, else from the installed metadata.

    The checkout comes first: an editable install's metadata is only refreshed by reinstalling.
    """
    project = _pyproject()
    if project is not None:
        return dict(project.get("urls", {}))
    pairs = (entry.split(",", 1) for entry in _installed("Project-URL"))
    return {label.strip(): url.strip() for label, url in pairs}


def repo_url() -> str:
    """The git repository: ``$S2O_REPO_URL``, else ``Repository`` in ``[project.urls]``."""
    url = os.environ.get(REPO_URL_ENV) or project_urls().get("Repository")
    if not url:
        raise S2OError(f"no repository URL: set {REPO_URL_ENV} or 'Repository' under [project.urls] in pyproject.toml")
    return url


def requirements() -> list[str]:
    """The library's requirements (``[project] dependencies``, no extras), e.g. ``["torch>=2.2", ...]``."""
    project = _pyproject()
    if project is not None:
        return list(project.get("dependencies", []))
    return [entry for entry in _installed("Requires-Dist") if "extra ==" not in entry]


def requirement_name(requirement: str) -> str:
    """The normalised distribution name of a requirement (``"PyAutoAttack>=0.2"`` -> ``"pyautoattack"``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise S2OError(f"cannot read the requirement {requirement!r}: expected e.g. 'pyautoattack>=0.2'")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def missing_requirements(
    reqs: Iterable[str] | None = None, *, find_spec: Callable[[str], object] = importlib.util.find_spec
) -> list[str]:
    """The requirements this Python cannot import, leaving out `NEVER_INSTALL` (torch and the Jupyter packages).

    Only presence is checked, never versions: what a runtime such as Colab already has is kept as it is.

    Args:
        reqs: requirement strings; ``None``: `requirements`.
        find_spec: looks up an import name (``None`` when it is missing); `importlib.util.find_spec` by default.

    Returns:
        The missing requirements, as written (e.g. ``["pyautoattack>=0.2"]``).
    """
    missing = []
    for requirement in requirements() if reqs is None else reqs:
        name = requirement_name(requirement)
        if name not in NEVER_INSTALL and find_spec(IMPORT_NAMES.get(name, name.replace("-", "_"))) is None:
            missing.append(requirement.split(";")[0].strip())
    return missing


def install_command(reqs: list[str]) -> list[str]:
    """``pip install`` of ``reqs`` alone: ``--no-deps``, so that nothing (torch above all) is pulled in or upgraded.

    Args:
        reqs: requirement strings, e.g. from `missing_requirements`.
    """
    return [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *reqs]


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
