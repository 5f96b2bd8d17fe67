"""Build the notebooks from their sources and execute them in the smoke profile.

Each notebook is written as ``notebooks/src/NN_name.py`` in jupytext's "percent" format (``# %%`` starts a
code cell, ``# %% [markdown]`` a markdown cell whose lines start with ``# ``), which reviews well in
diffs. This script turns a source into ``notebooks/NN_name.ipynb`` (a Colab badge on the title, then the
set-up cell: at most 12 lines, the rest is `s2o_lib.suite.notebook_setup.set_up`) and, with ``--execute``, runs it headless with ``S2O_PROFILE=smoke`` so that
the committed outputs are what ``pytest --nbval`` checks.

    python tools/build_notebooks.py notebooks/src/01_adversarial_examples.py --execute
    python tools/build_notebooks.py --all --execute

The repository URL in the badge and the set-up cell is ``Repository`` under ``[project.urls]`` in
``pyproject.toml`` (``S2O_REPO_URL`` overrides it): a fork edits that line and rebuilds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT))  # this checkout's s2o_lib, not another installed copy

from s2o_lib.suite.project import repo_url

SETUP_CELL = '''\
S2O_PROFILE = ""  # "smoke" (CPU, seconds), "class" (a Colab GPU) or "paper"; empty: $S2O_PROFILE, else by device
USE_DRIVE = False  # Colab: True keeps trained models in your Google Drive, for the later notebooks
import os, subprocess, sys
from pathlib import Path
REPO_URL = os.environ.get("S2O_REPO_URL", %(url)s)
if "google.colab" in sys.modules and not (Path.cwd().parent / "s2o_lib").is_dir():  # Colab: clone, once
    if not Path("s2o-tutorials").exists():
        subprocess.run(["git", "clone", "-q", "--depth", "1", REPO_URL, "s2o-tutorials"], check=True)
    os.chdir("s2o-tutorials/notebooks")
sys.path.insert(0, str(Path.cwd().parent))  # the checkout's (or the clone's) s2o_lib, with no restart
from s2o_lib.suite.notebook_setup import set_up
set_up(profile=S2O_PROFILE, drive=USE_DRIVE)  # the profile; on Colab also: update the clone, install what it lacks'''
MAX_SETUP_LINES = 12  # lines of code a student sees above the lecture


def code_lines(source: str) -> int:
    """The lines of ``source`` that are neither blank nor only a comment."""
    return sum(1 for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def colab_url(repo: str, name: str) -> str | None:
    """Colab's link to ``notebooks/<name>.ipynb`` on the ``main`` branch of a GitHub ``repo`` (else ``None``)."""
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?/?", repo)
    return match and f"https://colab.research.google.com/github/{match.group(1)}/blob/main/notebooks/{name}.ipynb"


def colab_badge(repo: str, name: str) -> str:
    """The "Open in Colab" badge in markdown (empty for a repository outside GitHub, which Colab cannot open)."""
    url = colab_url(repo, name)
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})\n\n" if url else ""


def setup_cell(repo: str) -> str:
    """The set-up cell, with ``repo`` as the repository to clone; the rest of the set-up is
    `s2o_lib.suite.notebook_setup.set_up`."""
    cell = SETUP_CELL % {"url": json.dumps(repo)}
    assert code_lines(cell) <= MAX_SETUP_LINES, cell
    return cell


def read_cells(source: Path) -> list[tuple[str, str, dict]]:
    """``(cell_type, source, metadata)`` of each cell of a percent-format source, as jupytext reads it.

    The metadata is what the source writes on a cell's line, e.g. ``# %% tags=["nbval-ignore-output"]`` (nbval
    does not compare the outputs), ``report="caption"`` (the outputs go into the run report, the tag
    ``report-headline`` puts them at its top) and ``jupyter={"source_hidden": true}`` (a check that the prose
    agrees with the outputs, collapsed so that a student reads the lecture first).
    """
    # jupytext adds layout hints of its own (lines_to_next_cell, ...): only these keys are the cell's.
    keep = ("tags", "report", "jupyter")
    return [(cell.cell_type, cell.source, {k: v for k, v in cell.metadata.items() if k in keep})
            for cell in jupytext.read(source, fmt="py:percent").cells]


def build(source: Path, *, out_dir: Path = NOTEBOOKS) -> Path:
    """Write ``<out_dir>/<name>.ipynb`` from ``source``: the title with a Colab badge, the set-up cell (the
    profile choice and ``import s2o_lib``), then the source's cells; ids are ``NN-000`` (the title), ``NN-001``
    (the set-up cell), ``NN-002``, ... (the source's cells after its title, in order).

    Args:
        source: ``notebooks/src/NN_name.py``; its first cell must be the markdown title.
        out_dir: folder of the built notebook.
    """
    name, repo = source.stem, repo_url()
    cells = read_cells(source)
    if not cells or cells[0][0] != "markdown":
        raise SystemExit(f"{source}: the first cell must be the markdown title")
    setup = setup_cell(repo)
    v4 = nbformat.v4
    new = {"markdown": v4.new_markdown_cell, "code": v4.new_code_cell, "raw": v4.new_raw_cell}
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [new["markdown"](colab_badge(repo, name) + cells[0][1], id=f"{name[:2]}-000"),
                new["code"](setup, id=f"{name[:2]}-001")]
    nb.cells += [new[kind](text, id=f"{name[:2]}-{i:03d}", metadata=meta)
                 for i, (kind, text, meta) in enumerate(cells[1:], start=2)]
    target = Path(out_dir) / f"{name}.ipynb"
    nbformat.write(nb, target)
    return target


def execute(path: Path, *, profile: str = "smoke", timeout: int = 600) -> float:
    """Execute a notebook in place, its kernel given ``S2O_PROFILE=profile`` and ``TQDM_DISABLE=1``.

    Args:
        path: the ``.ipynb`` file; it runs with its folder as the working directory.
        profile: ``smoke``, ``class`` or ``paper``.
        timeout: seconds allowed per cell.

    Returns:
        The seconds it took.
    """
    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"path": str(path.parent)}}  # the working directory
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources)
    start = time.perf_counter()
    client.execute(env={**os.environ, "S2O_PROFILE": profile, "TQDM_DISABLE": "1"})
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every notebooks/src/*.py")
    parser.add_argument("--execute", action="store_true", help="execute in the smoke profile after building")
    args = parser.parse_args(argv)
    sources = sorted((NOTEBOOKS / "src").glob("[0-9][0-9]*_*.py")) if args.all else args.sources
    for source in sources:
        target = build(source)
        if args.execute:
            print(f"{target.name}: {execute(target):.1f} s", flush=True)
        else:
            print(f"built {target.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
