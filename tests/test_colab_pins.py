"""The Colab pass of CI (``.ci/colab/run``): its versions come from the pinned copy of Colab's ``pip freeze``, and
the library's declared requirements admit them.

Reads files only (well under a second): the pass itself, a venv with Colab's packages that executes the
notebooks, runs in ``.ci/run``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import types
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytest.importorskip("tomllib")  # Python 3.11+: pins.py reads pyproject.toml with it

ROOT = Path(__file__).resolve().parents[1]
COLAB = ROOT / ".ci" / "colab"


def _load_pins() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("colab_pins", COLAB / "pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pins = _load_pins()


def _freeze_lines() -> dict[str, str]:
    """``{normalised name: the version as the freeze writes it}``, read here independently of pins.py."""
    found = {}
    for line in pins.FREEZE.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            found[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return found


def test_the_pinned_freeze_is_the_copy_its_readme_names():
    readme = (COLAB / "README.md").read_text()
    assert re.search(r"commit\s+`[0-9a-f]{40}`", readme), "README.md must name the source commit"
    assert re.search(r"\(\d{4}-\d\d-\d\d\b", readme), "README.md must give the commit's date"
    digest = hashlib.sha256(pins.FREEZE.read_bytes()).hexdigest()
    assert f"`{digest}`" in readme.replace("\n", ""), "pip-freeze.gpu.txt changed: update its commit, date and sha256"


def test_colabs_versions_satisfy_the_librarys_declared_requirements():
    colab = pins.colab_versions()
    checked = []
    for text in pins.declared():
        requirement = Requirement(text)
        name = pins.normalise(requirement.name)
        if name in colab:
            assert requirement.specifier.contains(Version(colab[name]), prereleases=True), (
                f"pyproject.toml declares {text!r}, Colab has {name} {colab[name]}")
            checked.append(name)
    assert {"torch", "numpy", "pandas", "ipywidgets", "scikit-learn"} <= set(checked)


def test_what_colab_lacks_is_what_the_set_up_cell_installs():
    assert [pins.requirement_name(req) for req in pins.lacks()] == ["pyautoattack"]


def test_every_version_installed_is_read_from_the_freeze():
    freeze = _freeze_lines()
    requirements = pins.requirements()
    names = [pins.requirement_name(req) for req in requirements]
    for requirement in requirements:
        name, version = requirement.split("==")
        assert freeze[name].split("+")[0] == version, requirement  # torch==2.11.0+cu128 -> torch==2.11.0
    assert {"torch", "torchvision", "ipython", "ipykernel", "ipywidgets", "pandas", "notebook"} <= set(names)
    assert all(pins.normalise(name) in freeze for name in pins.KERNEL), "a KERNEL package Colab does not have"
    constraints = dict(line.split("==") for line in pins.constraints())
    assert constraints["torch"] == freeze["torch"].split("+")[0]
    assert not [name for name in constraints if name.startswith(("nvidia-", "cuda-"))]
    assert set(constraints) == {name for name in freeze if not pins.NOT_PINNED.fullmatch(name)}


def test_the_colab_step_writes_no_version_by_hand():
    for script in (COLAB / "run", ROOT / ".ci" / "run"):
        assert not re.search(r"[A-Za-z0-9]==\s*\d", script.read_text()), f"{script}: versions belong in the freeze"
    assert "bash .ci/colab/run" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_names_the_colab_runtime_last_tested():
    readme = (ROOT / "README.md").read_text()
    tested = readme[readme.index("**Last tested Colab runtime**"):].split("\n\n")[0]
    commit = re.search(r"commit\s+`([0-9a-f]{40})`", (COLAB / "README.md").read_text()).group(1)
    assert f"`{commit[:7]}`" in tested
    colab = pins.colab_versions()
    for name in ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "ipython", "ipykernel", "ipywidgets"):
        assert re.search(rf"{name} {re.escape(colab[name])}\b", tested, flags=re.IGNORECASE), name
