"""What the Colab pass (`.ci/colab/run`) installs, read from the pinned copy of Colab's `pip freeze`.

`pip-freeze.gpu.txt` beside this file is Colab's GPU runtime as googlecolab/backend-info published it (its
commit and date: README.md beside this file). No version is written anywhere else: `requirements` lists the
packages by name and takes each one's version from the freeze, and `constraints` pins every other package pip
pulls in to Colab's version as well, so the venv holds Colab's builds of the library's dependencies and of the
kernel that runs the notebooks.

Standard library only (any Python 3.11+ runs it, before anything is installed):

    python .ci/colab/pins.py requirements    # name==version, one a line: what `pip install` is given
    python .ci/colab/pins.py constraints     # every other Colab pin, for `pip install -c`
    python .ci/colab/pins.py lacks           # the library's requirements Colab does not have
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FREEZE = HERE / "pip-freeze.gpu.txt"
PYPROJECT = HERE.parents[1] / "pyproject.toml"

# The kernel that runs the notebooks on Colab, beside the library's own requirements: IPython and ipykernel
# with what they talk through (jupyter_client, pyzmq, tornado, traitlets), the inline figures, the widgets'
# front-end halves, and the Jupyter packages of the `notebooks` extra that Colab has.
KERNEL = (
    "ipython", "ipykernel", "jupyter-client", "jupyter-core", "traitlets", "tornado", "pyzmq", "debugpy",
    "matplotlib-inline", "widgetsnbextension", "jupyterlab-widgets", "notebook", "nbformat", "nbclient",
    "jupytext",
)
# Left to PyPI's torch: its CUDA libraries. Colab's torch is PyTorch's own cu128 build (`torch==2.11.0+cu128`,
# from an index CI cannot reach); PyPI's torch of the same version is built for CUDA 13 and requires other
# CUDA wheels than Colab's. Neither is loaded on a CPU.
NOT_PINNED = re.compile(r"nvidia-.*|cuda-.*")


def normalise(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``"jupyter_client"`` -> ``"jupyter-client"``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def colab_versions(freeze: Path = FREEZE) -> dict[str, str]:
    """``{name: version}`` of every ``name==version`` line of the freeze, names normalised, local version
    labels dropped (``torch==2.11.0+cu128`` -> ``"2.11.0"``: PyPI has no ``+cu128``); comments and
    ``name @ URL`` lines (Colab's own builds) are left out."""
    versions = {}
    for line in freeze.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^+\s]+)(\+\S+)?", line.strip())
        if match:
            versions[normalise(match.group(1))] = match.group(2)
    return versions


def requirement_name(requirement: str) -> str:
    """The normalised name of a requirement string (``"ipywidgets>=7.7"`` -> ``"ipywidgets"``)."""
    return normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1))


def project(pyproject: Path = PYPROJECT) -> dict:
    """``[project]`` of ``pyproject.toml``."""
    import tomllib  # Python 3.11+

    with pyproject.open("rb") as f:
        return tomllib.load(f)["project"]


def declared(pyproject: Path = PYPROJECT) -> list[str]:
    """The library's requirements as ``pyproject.toml`` declares them (``[project] dependencies``)."""
    return list(project(pyproject)["dependencies"])


def packages(pyproject: Path = PYPROJECT, freeze: Path = FREEZE) -> list[str]:
    """The names to install: the library's requirements and the `notebooks` extra that Colab has, then `KERNEL`."""
    have = colab_versions(freeze)
    names = [requirement_name(req) for req in declared(pyproject)]
    names += [requirement_name(req) for req in project(pyproject)["optional-dependencies"]["notebooks"]]
    names += [normalise(name) for name in KERNEL]
    return [name for name in dict.fromkeys(names) if name in have]


def requirements(pyproject: Path = PYPROJECT, freeze: Path = FREEZE) -> list[str]:
    """``name==version`` for each of `packages`, the version Colab's."""
    have = colab_versions(freeze)
    return [f"{name}=={have[name]}" for name in packages(pyproject, freeze)]


def constraints(freeze: Path = FREEZE) -> list[str]:
    """``name==version`` for every package of the freeze except the CUDA wheels (`NOT_PINNED`)."""
    return [f"{name}=={version}" for name, version in colab_versions(freeze).items() if not NOT_PINNED.fullmatch(name)]


def lacks(pyproject: Path = PYPROJECT, freeze: Path = FREEZE) -> list[str]:
    """The library's requirements Colab does not have: what the set-up cell installs there."""
    have = colab_versions(freeze)
    return [req for req in declared(pyproject) if requirement_name(req) not in have]


def main(argv: list[str]) -> int:
    commands = {"requirements": requirements, "constraints": constraints, "lacks": lacks}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python {Path(__file__).name} {{{','.join(commands)}}}", file=sys.stderr)
        return 2
    print("\n".join(commands[argv[0]]()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
