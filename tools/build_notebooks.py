"""Build the notebooks from their sources and execute them in the smoke profile.

Each notebook is written as ``notebooks/src/NN_name.py`` in the "percent" format (``# %%`` starts a
code cell, ``# %% [markdown]`` a markdown cell whose lines start with ``# ``), which reviews well in
diffs. This script turns a source into ``notebooks/NN_name.ipynb`` and, with ``--execute``, runs it
headless with ``S2O_PROFILE=smoke`` so that the committed outputs are what ``pytest --nbval`` checks.

    python tools/build_notebooks.py notebooks/src/01_adversarial_examples.py --execute
    python tools/build_notebooks.py --all --execute
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
REPO_URL = "https://github.com/s2o-tutorials/s2o-tutorials"


def colab_badge(name: str) -> str:
    url = f"https://colab.research.google.com/github/s2o-tutorials/s2o-tutorials/blob/main/notebooks/{name}.ipynb"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


SETUP_CELL = '''# NBVAL_IGNORE_OUTPUT
# Set-up: on Colab, install the suite from its repository; locally, use the checkout.
import os
import subprocess
import sys
from pathlib import Path

if "google.colab" in sys.modules:
    if not Path("s2o-tutorials").exists():
        subprocess.run(["git", "clone", "-q", "%s"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "s2o-tutorials"], check=True)
    os.chdir("s2o-tutorials/notebooks")
elif (Path.cwd().parent / "s2o_lib").exists():
    sys.path.insert(0, str(Path.cwd().parent))  # a local checkout works even without `pip install -e .`
''' % REPO_URL


def parse_source(text: str) -> list[tuple[str, str]]:
    """Split a percent-format source into (kind, source) cells."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        marker = re.match(r"^# %%( \[markdown\])?\s*$", line)
        if marker:
            cells.append(("markdown" if marker.group(1) else "code", []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        out.append((kind, "\n".join(lines)))
    return out


def build(source: Path) -> Path:
    """Write ``notebooks/<name>.ipynb`` from ``source`` (badge and set-up cell first)."""
    name = source.stem
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    cells = parse_source(source.read_text())
    if not cells or cells[0][0] != "markdown":
        raise SystemExit(f"{source}: the first cell must be the markdown title")
    kind, title = cells[0]
    nb.cells.append(nbformat.v4.new_markdown_cell(colab_badge(name) + "\n\n" + title))
    nb.cells.append(nbformat.v4.new_code_cell(SETUP_CELL.strip()))
    for kind, text in cells[1:]:
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name[:2]}-{i:03d}"
    target = NOTEBOOKS / f"{name}.ipynb"
    nbformat.write(nb, target)
    return target


def execute(path: Path, *, profile: str = "smoke", timeout: int = 600) -> float:
    """Execute a notebook in place with ``S2O_PROFILE=profile`` and return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    old = os.environ.get("S2O_PROFILE")
    os.environ["S2O_PROFILE"] = profile
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        if old is None:
            os.environ.pop("S2O_PROFILE", None)
        else:
            os.environ["S2O_PROFILE"] = old
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every notebooks/src/*.py")
    parser.add_argument("--execute", action="store_true", help="execute in the smoke profile after building")
    args = parser.parse_args(argv)
    sources = sorted((NOTEBOOKS / "src").glob("[0-9][0-9]_*.py")) if args.all else args.sources
    for source in sources:
        target = build(source)
        if args.execute:
            print(f"{target.name}: {execute(target):.1f} s", flush=True)
        else:
            print(f"built {target.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
