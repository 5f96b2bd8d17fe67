"""`s2o_lib.suite.runner` and `s2o_lib.suite.report`: headless execution of the suite (also through ``python -m s2o_lib
run-notebooks``) and its HTML/JSON report.

Starting a kernel costs seconds, so the whole file executes exactly three tiny notebooks:
one good run through the command line, one failing run through the API, and one failing run through
the command line. Everything else (marker parsing, rendering, bad input) runs without a kernel.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from s2o_lib.errors import S2OError
from s2o_lib.suite.cli import main
from s2o_lib.suite.report import _render_output, report_caption
from s2o_lib.suite.runner import NotebookFailed, RunReport, discover_notebooks, run_notebooks


def main_run_notebooks(argv: list[str]) -> int:
    return main(["run-notebooks", *argv])

GOOD = [
    new_markdown_cell("# A tiny notebook"),
    new_code_cell('import os\nprint("not-in-report-sentinel", os.environ["S2O_PROFILE"])'),
    new_code_cell(
        'print("S2O_PROFILE=" + os.environ["S2O_PROFILE"])\n'
        'print(open("marker.txt").read())  # relative to the notebook folder\n'
        'print("<b>&escaped</b>")', metadata={"report": "profile seen by the kernel"}
    ),
    new_code_cell("print('headline-sentinel')",
                  metadata={"report": "the headline table", "tags": ["report-headline"]}),
    new_code_cell(
        "import io\n"
        "import matplotlib\n"
        'matplotlib.use("Agg")\n'
        "import matplotlib.pyplot as plt\n"
        "from IPython.display import HTML, Image, display\n"
        "fig, ax = plt.subplots(figsize=(2, 2))\n"
        "ax.plot([0, 1], [1, 0])\n"
        "buf = io.BytesIO()\n"
        'fig.savefig(buf, format="png")\n'
        "plt.close(fig)\n"
        "display(Image(buf.getvalue()))\n"
        "display(HTML('<table class=\"tiny-table\"><tr><th>method</th><th>robust</th></tr>"
        "<tr><td>S2O</td><td>0.42</td></tr></table>'))", metadata={"report": "key figure and table"}
    ),
]
BROKEN = [
    new_code_cell('print("before the error")'),
    new_markdown_cell("the next cell divides by zero"),
    new_code_cell("x = 1\ny = x / 0\nprint('never')"),
    new_code_cell("print('never reached')", metadata={"report": ""}),
]


def _write(path, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A notebooks folder: 00_a (good), 01_b (ZeroDivisionError), 02_c (good, after the broken one)."""
    folder = tmp_path_factory.mktemp("suite") / "notebooks"
    folder.mkdir()
    (folder / "marker.txt").write_text("marker-from-notebook-folder")
    _write(folder / "00_a.ipynb", GOOD)
    _write(folder / "01_b.ipynb", BROKEN)
    _write(folder / "02_c.ipynb", [new_code_cell("print('c')")])
    (folder / "scratch.ipynb").write_text("{}")  # not NN_*: never part of the suite
    return folder


@pytest.fixture(scope="module")
def good_run(suite, tmp_path_factory):
    """Kernel run 1: the command line on the good notebook, given by its number (module-scoped, so
    stdout/stderr are captured by hand: capsys is function-scoped)."""
    out = tmp_path_factory.mktemp("good") / "build"
    stdout, stderr = io.StringIO(), io.StringIO()
    old = os.environ.get("S2O_PROFILE")
    os.environ["S2O_PROFILE"] = "paper"  # the run must override it for the kernel, then restore it
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main_run_notebooks(
                ["00", "--profile", "smoke", "--out", str(out), "--notebook-dir", str(suite), "--no-progress"]
            )
        after = os.environ.get("S2O_PROFILE")
    finally:
        if old is None:
            os.environ.pop("S2O_PROFILE", None)
        else:
            os.environ["S2O_PROFILE"] = old
    return {"code": code, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "env_after": after}


# ---------------------------------------------------------------- the good run (kernel run 1)


def test_good_run_returns_0_and_prints_a_summary(good_run):
    assert good_run["code"] == 0, good_run["stderr"]
    assert "Traceback" not in good_run["stdout"] + good_run["stderr"]
    assert re.search(r"ok\s+00_a\.ipynb\s+\d+\.\d s", good_run["stdout"])
    assert str(good_run["out"] / "report.html") in good_run["stdout"]
    assert good_run["env_after"] == "paper", "S2O_PROFILE was not restored after the run"


def test_good_run_writes_the_executed_notebook(good_run):
    executed = nbformat.read(good_run["out"] / "00_a.ipynb", as_version=4)
    text = json.dumps(executed.cells[2].outputs)
    assert "S2O_PROFILE=smoke" in text  # the kernel saw the profile, not the caller's "paper"
    assert "marker-from-notebook-folder" in text  # cwd was the notebook's folder
    assert not (good_run["out"] / "01_b.ipynb").exists()  # only the requested subset ran


def test_good_run_html_report(good_run):
    page = (good_run["out"] / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "00_a.ipynb" in page
    assert "<b>smoke</b>" in page and "16x16 digits" in page  # profile and its notes
    for key in ("python", "torch", "torchvision", "numpy", "s2o_lib", "pyautoattack", "device"):
        assert f"<th>{key}</th>" in page
    assert "CPU" in page or "cuda" in page.lower() or "NVIDIA" in page
    assert re.search(r'<img alt="figure" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}">', page)
    assert '<table class="tiny-table">' in page and "<td>S2O</td><td>0.42</td>" in page  # HTML verbatim
    assert "S2O_PROFILE=smoke" in page and "marker-from-notebook-folder" in page  # text/plain in <pre>
    assert "&lt;b&gt;&amp;escaped&lt;/b&gt;" in page and "<b>&escaped</b>" not in page
    assert "not-in-report-sentinel" not in page  # unmarked cells stay out of the report
    assert "key figure and table" in page  # the caption after the marker
    assert re.search(r'status-ok">ok</span></td><td class="num">\d+\.\d s</td>', page)


def test_good_run_json_report_matches(good_run):
    data = json.loads((good_run["out"] / "report.json").read_text(encoding="utf-8"))
    assert data["status"] == "ok" and data["failed"] is None
    assert data["profile"]["name"] == "smoke" and "digits" in data["profile"]["notes"]
    assert set(data["versions"]) >= {"python", "torch", "torchvision", "numpy", "s2o_lib", "pyautoattack"}
    assert data["device"]
    [entry] = data["notebooks"]
    assert entry["name"] == "00_a.ipynb" and entry["status"] == "ok" and entry["error"] is None
    assert 0 < entry["seconds"] <= data["total_seconds"]
    assert entry["output_path"] == str(good_run["out"] / "00_a.ipynb")
    assert entry["report_cells"] == [2, 3, 4]
    assert entry["kernel_log"] == str(good_run["out"] / "logs" / "00_a.kernel.log")


# ---------------------------------------------------------------- failing runs (kernel runs 2 and 3)


def test_broken_notebook_raises_and_still_writes_everything(suite, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(NotebookFailed) as info:
        run_notebooks(["01_b", suite / "02_c.ipynb"], profile="smoke", out=out, notebook_dir=suite,
                      progress=False, timeout=60)
    exc = info.value
    message = str(exc)
    assert isinstance(exc, S2OError)
    assert "01_b.ipynb" in message and "ZeroDivisionError" in message and "division by zero" in message
    assert "cell 2" in message and "x = 1" in message  # index and first source line
    assert str(out / "01_b.ipynb") in message
    assert "Traceback" not in message and len(message.splitlines()) <= 5
    assert (exc.notebook, exc.cell_index, exc.ename) == ("01_b.ipynb", 2, "ZeroDivisionError")

    partial = nbformat.read(out / "01_b.ipynb", as_version=4)
    assert "before the error" in json.dumps(partial.cells[0].outputs)
    assert partial.cells[2].outputs[-1]["ename"] == "ZeroDivisionError"

    report = exc.report
    assert isinstance(report, RunReport) and not report.ok
    assert report.profile == "smoke" and report.report_path == out / "report.html"
    assert [(r.name, r.status) for r in report.results] == [("01_b.ipynb", "failed"), ("02_c.ipynb", "not run")]
    failed, not_run = report.results
    assert failed.seconds > 0 and failed.output_path == out / "01_b.ipynb" and "ZeroDivisionError" in failed.error
    assert not_run.seconds is None and not_run.output_path is None and not (out / "02_c.ipynb").exists()
    assert report.total_seconds >= failed.seconds

    page = report.report_path.read_text(encoding="utf-8")
    assert 'status-failed">failed</span>' in page and 'status-not-run">not run</span>' in page
    assert "ZeroDivisionError" in page and "01_b.ipynb" in page and "02_c.ipynb" in page
    assert "never reached" not in page
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert data["status"] == "failed" and "ZeroDivisionError" in data["failed"]
    assert [(n["name"], n["status"]) for n in data["notebooks"]] == [
        ("01_b.ipynb", "failed"),
        ("02_c.ipynb", "not run"),
    ]


def test_cli_on_broken_notebook_returns_1_without_traceback(suite, tmp_path, capsys):
    code = main_run_notebooks(
        [str(suite / "01_b.ipynb"), "-p", "smoke", "-o", str(tmp_path / "o"), "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err + captured.out
    assert "01_b.ipynb" in captured.err and "ZeroDivisionError: division by zero" in captured.err
    assert len(captured.err.strip().splitlines()) <= 5
    assert (tmp_path / "o" / "report.html").is_file()


# ---------------------------------------------------------------- bad input (no kernel)


def test_cli_unknown_profile_returns_2_with_one_line(suite, tmp_path, capsys):
    code = main_run_notebooks(["--profile", "bogus", "--notebook-dir", str(suite), "-o", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 2
    assert "bogus" in captured.err and "smoke" in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing ran, nothing was written


def test_cli_help_and_usage_errors(capsys):
    assert main_run_notebooks(["--help"]) == 0
    assert "--profile" in capsys.readouterr().out
    assert main_run_notebooks(["--timeout", "soon"]) == 2
    assert "invalid int value" in capsys.readouterr().err


def test_runner_imports_without_jupyter_and_says_how_to_install_it(suite, tmp_path):
    """The library installs without the notebooks extra: only running notebooks needs nbclient/nbformat."""
    code = (
        "import sys\n"
        "sys.modules['nbclient'] = sys.modules['nbformat'] = None  # as if they were not installed\n"
        "import s2o_lib.suite.runner, s2o_lib.suite.report\n"
        "from s2o_lib.suite.cli import main\n"
        f"sys.exit(main(['run-notebooks', '00', '-p', 'smoke', '-o', {str(tmp_path / 'o')!r}, "
        f"'--notebook-dir', {str(suite)!r}]))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                            check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: run-notebooks needs Jupyter's nbclient and nbformat (nbclient is "
                                     'missing): pip install "s2o-tutorials[notebooks]"')


def test_bad_input_raises_before_running(suite, tmp_path):
    with pytest.raises(S2OError, match="not found"):
        run_notebooks(["99_missing"], profile="smoke", out=tmp_path, notebook_dir=suite, progress=False)
    with pytest.raises(S2OError, match="timeout"):
        run_notebooks(["00"], profile="smoke", out=tmp_path, notebook_dir=suite, progress=False, timeout=0)
    with pytest.raises(S2OError, match="overwrite"):
        run_notebooks(["00"], profile="smoke", out=suite, notebook_dir=suite, progress=False)
    with pytest.raises(S2OError, match="no notebooks"):
        run_notebooks(profile="smoke", out=tmp_path / "o", notebook_dir=tmp_path / "empty", progress=False)


def test_discover_notebooks_is_sorted_and_skips_unnumbered(suite):
    assert [p.name for p in discover_notebooks(suite)] == ["00_a.ipynb", "01_b.ipynb", "02_c.ipynb"]


def test_report_marks_live_in_the_cell_metadata():
    assert report_caption({"report": "the table"}) == ("the table", False)
    assert report_caption({"report": " comparison ", "tags": ["report-headline"]}) == ("comparison", True)
    assert report_caption({"report": ""}) == ("", False)
    assert report_caption({"tags": ["report-headline"]}) is None  # the tag alone puts nothing in the report
    assert report_caption({}) is None


def test_render_output_prefers_rich_data_and_escapes_text():
    png = {"output_type": "display_data", "data": {"image/png": "iVBO\nRw0=", "text/plain": "<Figure>"}}
    assert _render_output(png) == '<img alt="figure" src="data:image/png;base64,iVBORw0=">'
    table = {"output_type": "execute_result", "data": {"text/html": ["<table>", "</table>"], "text/plain": "df"}}
    assert _render_output(table) == '<div class="html-output"><table></table></div>'
    text = {"output_type": "execute_result", "data": {"text/plain": "a < b & c"}}
    assert _render_output(text) == "<pre>a &lt; b &amp; c</pre>"
    assert _render_output({"output_type": "stream", "name": "stderr", "text": "warning"}) is None
    bar = {"output_type": "stream", "name": "stdout", "text": "\x1b[32m10%\r50%\r100%\ndone\n"}
    assert _render_output(bar) == "<pre>100%\ndone</pre>"
    widget = {"output_type": "display_data",
              "data": {"application/vnd.jupyter.widget-view+json": {}, "text/plain": "VBox()"}}
    assert _render_output(widget) is None


def test_headline_cells_open_the_report(good_run):
    page = (good_run["out"] / "report.html").read_text()
    top = page.index("<h2>Headline results</h2>")
    assert top < page.index("<h2>Profile</h2>"), "the headline section must come first"
    assert top < page.index("headline-sentinel") < page.index("<h2>Profile</h2>")
    assert page.count("headline-sentinel") == 1, "a headline cell is shown once, not again below"
    assert "00_a.ipynb, cell" in page and "the headline table" in page and "[headline]" not in page
