"""The cell every notebook starts with, as students get it: built by ``tools/build_notebooks.py``, then run.

It is at most 12 lines (the profile and Drive knobs, the Colab clone, ``s2o_lib.suite.notebook_setup.set_up``). It runs in a fresh Python process that looks like Colab (a stub ``google.colab`` is imported
first) and clones a local clone of this repository (``S2O_REPO_URL=file://...``): no network, no GPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from s2o_lib.suite import bundle, notebook_setup, project

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]*_*.py"))
COLAB_HAS = {  # import names a Colab runtime has before the set-up cell runs (pyautoattack is not among them)
    "torch", "torchvision", "numpy", "pandas", "matplotlib", "seaborn", "ipywidgets", "sklearn", "tqdm", "scipy",
    "jupyter", "notebook", "ipykernel", "IPython", "nbclient", "nbformat", "traitlets",
}
STUB_COLAB = (ROOT / ".ci" / "colab" / "google" / "colab" / "__init__.py").read_text()  # also the Colab pass's
REPORT = '''
import json, os, sys, google.colab, s2o_lib
print("REPORT", json.dumps({"s2o_lib": s2o_lib.__file__, "cwd": os.getcwd(), "runs": os.environ.get("S2O_RUNS"),
                            "mounts": google.colab.drive.calls, "profile": os.environ.get("S2O_PROFILE")}))
'''


def _load_build_tool() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_tool = _load_build_tool()


def _git(*args: str, cwd: Path) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.org"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> dict[str, str]:
    """The code cells of notebook 00 built into a temporary folder, by id."""
    nb = nbformat.read(build_tool.build(SOURCES[0], out_dir=tmp_path_factory.mktemp("built")), as_version=4)
    return {cell.id: cell.source for cell in nb.cells if cell.cell_type == "code"}


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> Path:
    """A clone of this repository at HEAD, standing in for GitHub."""
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, check=False).returncode:
        pytest.skip("not a git checkout: nothing to clone")
    target = tmp_path_factory.mktemp("origin") / "s2o-tutorials"
    _git("clone", "-q", str(ROOT), str(target), cwd=ROOT)
    return target


def run_colab(code: str, *, cwd: Path, origin: Path, colab: bool = True) -> tuple[dict, str]:
    """Run ``code`` then `REPORT` in a fresh Python process, as on Colab when ``colab``; return the report and
    the whole output."""
    stubs = cwd.parent / "stubs"
    (stubs / "google" / "colab").mkdir(parents=True, exist_ok=True)  # no google/__init__.py: a namespace package
    (stubs / "google" / "colab" / "__init__.py").write_text(STUB_COLAB)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "S2O_RUNS")}
    env.setdefault("S2O_PROFILE", "smoke")  # as nbval and run-notebooks give it (else set_up imports torch)
    env.update(PYTHONPATH=str(stubs), S2O_REPO_URL=origin.as_uri(), PIP_NO_INDEX="1", GIT_TERMINAL_PROMPT="0")
    script = ("import google.colab  # Colab's kernel imports it at start\n" if colab else "") + code + REPORT
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return json.loads(output.split("REPORT ", 1)[1].splitlines()[0]), output


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


# --- the set-up cell -------------------------------------------------------------------------------------------


def test_setup_cell_on_colab_clones_and_imports_s2o_lib_in_the_same_process(cells, origin, tmp_path):
    work = tmp_path / "content"
    work.mkdir()
    setup = cells["00-001"]
    # Twice in one process, as a student re-running the cell: the second run must not clone again inside the clone.
    report, output = run_colab(f"exec({setup!r})\nexec({setup!r})", cwd=work, origin=origin)
    clone = work / "s2o-tutorials"
    assert _inside(report["s2o_lib"], clone), report  # the clone's s2o_lib, not the installed one
    assert Path(report["cwd"]) == (clone / "notebooks").resolve()
    assert _git("rev-parse", "HEAD", cwd=clone) == _git("rev-parse", "HEAD", cwd=origin)
    assert not (clone / "notebooks" / "s2o-tutorials").exists()
    assert "installing: nothing" in output  # this environment has every requirement
    assert report["mounts"] == [] and report["runs"] is None


def test_setup_cell_updates_an_existing_clone(cells, origin, tmp_path):
    work = tmp_path / "content"
    work.mkdir()
    run_colab(cells["00-001"], cwd=work, origin=origin)
    (origin / "NEWS.md").write_text("a commit after the first clone\n")
    _git("add", "NEWS.md", cwd=origin)
    _git("commit", "-q", "-m", "news", cwd=origin)
    try:
        run_colab(cells["00-001"], cwd=work, origin=origin)  # a fresh kernel on the same machine
        assert (work / "s2o-tutorials" / "NEWS.md").exists()
    finally:
        _git("reset", "-q", "--hard", "HEAD~1", cwd=origin)


def test_setup_cell_run_again_reads_the_updated_library_with_no_restart(cells, origin, tmp_path):
    work = tmp_path / "content"
    work.mkdir()
    commit = (f"import subprocess\nopen({str(origin / 's2o_lib' / '__init__.py')!r}, 'a').write('UPDATED = 1\\n')\n"
              f"subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@e', '-C', {str(origin)!r}, 'commit',"
              f" '-qam', 'update'], check=True)\n")
    check = "import s2o_lib\nassert s2o_lib.UPDATED == 1, 'the kernel still has the old s2o_lib'\n"
    try:
        run_colab(f"exec({cells['00-001']!r})\n{commit}exec({cells['00-001']!r})\n{check}", cwd=work, origin=origin)
    finally:
        _git("reset", "-q", "--hard", "HEAD~1", cwd=origin)


def test_setup_cell_knobs_choose_the_profile_mount_drive_and_point_s2o_runs_there(cells, origin, tmp_path):
    work = tmp_path / "content"
    work.mkdir()
    edited, count = re.subn(r"^USE_DRIVE = False\b", "USE_DRIVE = True", cells["00-001"], flags=re.MULTILINE)
    assert count == 1, "the set-up cell must have one line `USE_DRIVE = False` for a student to edit"
    edited, count = re.subn(r'^S2O_PROFILE = ""', 'S2O_PROFILE = "paper"', edited, flags=re.MULTILINE)
    assert count == 1, 'the set-up cell must have one line `S2O_PROFILE = ""` for a student to edit'
    report, output = run_colab(edited, cwd=work, origin=origin)
    assert report["mounts"] == ["/content/drive"]
    assert report["runs"] == notebook_setup.DRIVE_RUNS and report["runs"].startswith("/content/drive/")
    assert report["profile"] == "paper" and "profile: paper" in output  # the student's line wins over $S2O_PROFILE


def test_setup_cell_in_a_checkout_uses_the_checkout(cells, origin, tmp_path):
    report, output = run_colab(cells["00-001"], cwd=origin / "notebooks", origin=origin, colab=False)
    assert _inside(report["s2o_lib"], origin), report
    assert "installing" not in output and not (origin / "notebooks" / "s2o-tutorials").exists()


# --- what the set-up cell installs --------------------------------------------------------------------------------


def test_nothing_of_torch_or_jupyter_is_ever_installed():
    protected = ["torch>=2.2", "torchvision", "torchaudio", "ipykernel>=6", "jupyterlab>=4", "notebook>=7",
                 "jupyter", "ipywidgets>=8", "nbclient", "nbformat", "IPython", "jupyter_client"]
    missing = project.missing_requirements(project.requirements() + protected, find_spec=lambda name: None)
    names = {project.requirement_name(req) for req in missing}
    assert "pyautoattack" in names and "numpy" in names  # on an empty runtime everything else is missing
    assert not names & {project.requirement_name(req) for req in protected}, names
    command = project.install_command(missing)
    assert command[:4] == [sys.executable, "-m", "pip", "install"] and "--no-deps" in command


def test_on_colab_only_what_it_lacks_is_installed():
    missing = project.missing_requirements(find_spec=lambda name: object() if name in COLAB_HAS else None)
    assert [project.requirement_name(req) for req in missing] == ["pyautoattack"]
    assert project.missing_requirements(find_spec=lambda name: object()) == []


# --- the profile: set_up's choice ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "env", "gpu", "colab", "expected"),
    [
        ("", "paper", True, True, "paper"),  # $S2O_PROFILE (CI, run-notebooks, nbval) wins over the empty default
        ("", None, True, True, "class"),
        ("", None, False, True, "smoke"),
        ("", None, False, False, "smoke"),
        ("class", "smoke", False, False, "class"),  # the student's own line wins
    ],
)
def test_set_up_chooses_the_profile(monkeypatch, capsys, line, env, gpu, colab, expected):
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: gpu)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(notebook_setup, "update_clone", lambda: False)  # no git pull in this checkout
    monkeypatch.setattr(notebook_setup, "missing_requirements", list)
    registered = []  # the bundle source is added on every runtime, after any install
    monkeypatch.setattr(bundle, "use_published_bundles", lambda: registered.append(True))
    if colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if env is None:
        monkeypatch.delenv("S2O_PROFILE", raising=False)
    else:
        monkeypatch.setenv("S2O_PROFILE", env)
    assert notebook_setup.set_up(profile=line) is None  # the cell shows what it prints, no return value
    assert os.environ["S2O_PROFILE"] == expected and registered == [True]
    out = capsys.readouterr().out
    assert f"profile: {expected}" in out
    assert ("Change runtime type" in out) == (colab and not gpu and not line and env is None)
    assert ("installing: nothing" in out) == colab


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_setup_cell_is_the_first_code_cell_and_at_most_12_lines(source, tmp_path):
    nb = nbformat.read(build_tool.build(source, out_dir=tmp_path), as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    number = source.stem[:2]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[1] is code[0]
    assert [cell.id for cell in nb.cells[:3]] == [f"{number}-000", f"{number}-001", f"{number}-002"]
    setup = code[0].source
    assert len(setup.splitlines()) <= 12, setup  # every line, comments and blanks included
    assert build_tool.code_lines(setup) <= build_tool.MAX_SETUP_LINES == 12
    assert "set_up(profile=S2O_PROFILE, drive=USE_DRIVE)" in setup


# --- the build: one repository URL, jupytext reading the sources -------------------------------------------------


def test_repository_url_has_one_home_and_s2o_repo_url_overrides_it(monkeypatch, tmp_path):
    url = re.search(r'^Repository = "(.+)"$', (ROOT / "pyproject.toml").read_text(), flags=re.MULTILINE).group(1)
    monkeypatch.delenv(project.REPO_URL_ENV, raising=False)
    assert project.repo_url() == url
    fork = "https://github.com/a-teacher/s2o-fork"
    monkeypatch.setenv(project.REPO_URL_ENV, fork)
    nb = nbformat.read(build_tool.build(SOURCES[0], out_dir=tmp_path), as_version=4)
    badge = "https://colab.research.google.com/github/a-teacher/s2o-fork/blob/main/notebooks/00_setup.ipynb"
    assert badge in nb.cells[0].source
    assert f'"{fork}"' in nb.cells[1].source and url not in json.dumps(nb)
    assert build_tool.colab_badge("file:///srv/s2o-tutorials", "00_setup") == ""  # Colab opens GitHub only


def _cells_by_hand(text: str) -> list[tuple[str, str, dict]]:
    """The parser the build tool had before jupytext (a reference: the sources are written for it), with the
    cell metadata read off the cell line as ``key=<JSON>`` pairs."""
    cells: list[tuple[str, list[str], dict]] = []
    for line in text.splitlines():
        marker = re.match(r"^# %%( \[markdown\])?(?P<meta>( \w+=(\[[^]]*\]|\{[^}]*\}|\"[^\"]*\"))*)\s*$", line)
        if marker:
            meta = {key: json.loads(value)
                    for key, value in re.findall(r"(\w+)=(\[[^]]*\]|\{[^}]*\}|\"[^\"]*\")", marker.group("meta"))}
            cells.append(("markdown" if marker.group(1) else "code", [], meta))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines, meta in cells:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            lines = [re.sub(r"^# ?", "", line) for line in lines]
        out.append((kind, "\n".join(lines), meta))
    return out


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_jupytext_reads_each_source_cell_for_cell_as_before(source):
    assert build_tool.read_cells(source) == _cells_by_hand(source.read_text())


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_each_committed_notebook_holds_its_source_cell_for_cell(source):
    """An edit to a source reaches its .ipynb (the build writes both): cell types, sources and tags agree."""
    nb = nbformat.read(source.parents[1] / f"{source.stem}.ipynb", as_version=4)
    cells = build_tool.read_cells(source)
    assert nb.cells[0].source.endswith(cells[0][1]) and len(nb.cells) == len(cells) + 1
    for i, ((kind, text, meta), cell) in enumerate(zip(cells[1:], nb.cells[2:], strict=True), start=2):
        assert (cell.cell_type, cell.source) == (kind, text), f"{source.name}: cell {i}"
        assert {k: cell.metadata.get(k) for k in meta} == meta, f"{source.name}: cell {i}"
