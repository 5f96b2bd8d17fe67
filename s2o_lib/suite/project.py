"""The project's own metadata: its URLs and the packages the library needs (what the set-up cell installs).

``[project.urls]`` in ``pyproject.toml`` is the one home of the repository URL (the notebook build writes it
into the Colab badge and the set-up cell); ``S2O_REPO_URL`` overrides it (forks, tests). The notebooks' set-up
(`s2o_lib.suite.notebook_setup.set_up`) reads it before anything is installed: this module uses the standard
library only.

Example:
    >>> from s2o_lib.suite.project import missing_requirements, repo_url   # doctest: +SKIP
    >>> repo_url()
    'https://github.com/s2o-tutorials/s2o-tutorials'
    >>> missing_requirements()                                       # on Colab: what it lacks
    ['pyautoattack>=0.2']
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import S2OError

__all__ = [
    "DISTRIBUTION", "IMPORT_NAMES", "NEVER_INSTALL", "PYPROJECT", "REPO_URL_ENV", "ROOT", "install_command",
    "missing_requirements", "project_urls", "repo_url", "requirement_name", "requirements",
]


DISTRIBUTION = "s2o-tutorials"
REPO_URL_ENV = "S2O_REPO_URL"
ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"

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
