"""``run-notebooks``: execute the tutorial notebooks headless and write one HTML report.

Each notebook runs in order in a fresh Jupyter kernel (`nbclient.NotebookClient`), with its own folder
as the working directory (so relative paths behave as in Jupyter) and ``S2O_PROFILE`` set to the chosen
profile. The executed notebooks go to ``out/<name>.ipynb``; ``out/report.html`` (self-contained) and
``out/report.json`` hold the profile, the versions used, the device, one row per notebook (status and
seconds) and the *key figures and tables*: the outputs of every cell whose source has a line starting
with ``# REPORT`` (text after the marker, e.g. ``# REPORT: comparison table``, becomes the caption).
Notebooks without such a cell contribute nothing to that section. A caption that starts with ``[headline]``
(``# REPORT: [headline] comparison table``) puts the cell's outputs in a *Headline results* section at the
top of the page instead, for the one or two results a reader opens the report for.

The first failing notebook stops the run: its partial executed notebook and the report are still
written, and `NotebookFailed` says which notebook and cell failed and why, in a few lines.

Example:
    >>> from s2o_lib.runner import run_notebooks
    >>> report = run_notebooks(profile="smoke", out=Path("build"))  # doctest: +SKIP
    >>> report.report_path  # doctest: +SKIP
    PosixPath('build/report.html')

From the command line (see ``--help``)::

    s2o run-notebooks --profile smoke --out build
    s2o run-notebooks 00 03_attacks --profile class
"""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellControlSignal, CellExecutionError, CellTimeoutError, DeadKernelError
from tqdm.auto import tqdm

from .errors import S2OError

__all__ = [
    "NotebookFailed",
    "NotebookResult",
    "RunReport",
    "discover_notebooks",
    "main_run_notebooks",
    "run_notebooks",
]

PROFILE_ENV = "S2O_PROFILE"  # same name as s2o_lib.config.PROFILE_ENV (not imported: config pulls in torch)
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
REPORT_TITLE = "S²O tutorials: run report"
_REPORT_MARKER = re.compile(r"^\s*#\s*REPORT\b[:\s-]*(?P<caption>.*)$")
_HEADLINE_TAG = re.compile(r"^\[headline\]\s*", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

Status = Literal["ok", "failed", "not run"]


class NotebookFailed(S2OError):
    """A notebook raised (or timed out, or its kernel died) while ``run-notebooks`` executed it.

    Attributes:
        notebook: the notebook's file name.
        cell_index: index of the failing cell in the notebook (0-based, markdown cells counted),
            ``None`` if it failed before any cell started.
        ename: the error's name, e.g. ``"ZeroDivisionError"``.
        evalue: the error's value (its message), shortened.
        partial_path: where the partially executed notebook was written.
        report: the `RunReport` written before raising (the failed notebook marked ``failed``).
    """

    def __init__(
        self,
        message: str,
        *,
        notebook: str,
        cell_index: int | None,
        ename: str,
        evalue: str,
        partial_path: Path | None,
        report: RunReport | None = None,
    ) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.partial_path = partial_path
        self.report = report


@dataclass
class NotebookResult:
    """How one notebook went.

    Attributes:
        name: file name, e.g. ``"03_attacks.ipynb"``.
        status: ``"ok"``, ``"failed"`` or ``"not run"`` (after an earlier failure).
        seconds: wall-clock seconds of its execution (kernel start included); ``None`` if not run.
        output_path: the executed (or partially executed) notebook; ``None`` if not run.
        error: the short failure message; ``None`` unless failed.
        kernel_log: the kernel process's own stdout/stderr (not the cells' outputs, which are in the
            notebook): library warnings, crash messages; ``None`` if not run.
    """

    name: str
    status: Status
    seconds: float | None = None
    output_path: Path | None = None
    error: str | None = None
    kernel_log: Path | None = None


@dataclass
class RunReport:
    """What `run_notebooks` did.

    Attributes:
        profile: the profile name the notebooks ran under.
        results: one `NotebookResult` per requested notebook, in run order.
        report_path: the HTML report (``report.json`` sits beside it).
        total_seconds: wall-clock seconds of the whole run.
    """

    profile: str
    results: list[NotebookResult] = field(default_factory=list)
    report_path: Path = Path("build/report.html")
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every notebook ran without error."""
        return all(r.status == "ok" for r in self.results)

    @property
    def json_path(self) -> Path:
        """The JSON twin of the HTML report."""
        return self.report_path.with_suffix(".json")


# --------------------------------------------------------------------------------------------------
# Finding notebooks
# --------------------------------------------------------------------------------------------------


def discover_notebooks(notebook_dir: Path = Path("notebooks")) -> list[Path]:
    """Every ``NN_*.ipynb`` in ``notebook_dir``, sorted (the suite's order)."""
    return sorted(Path(notebook_dir).glob(NOTEBOOK_GLOB))


def _resolve_notebook(spec: str | os.PathLike[str], notebook_dir: Path) -> Path:
    """A notebook given as a path, a name in ``notebook_dir`` (with or without ``.ipynb``) or its number."""
    path = Path(spec)
    if path.is_file():
        return path
    text = str(spec)
    candidates = [notebook_dir / text, notebook_dir / f"{text}.ipynb"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    prefix = sorted(notebook_dir.glob(f"{text}_*.ipynb")) if re.fullmatch(r"[\w-]+", text) else []
    if len(prefix) == 1:
        return prefix[0]
    available = ", ".join(p.name for p in discover_notebooks(notebook_dir)) or f"none in {notebook_dir}/"
    if len(prefix) > 1:
        names = ", ".join(p.name for p in prefix)
        raise S2OError(f"notebook {text!r} is ambiguous ({names}); give the full name")
    raise S2OError(f"notebook {text!r} not found (as a path or in {notebook_dir}/); available: {available}")


def _resolve_notebooks(notebooks: Sequence[str | os.PathLike[str]] | None, notebook_dir: Path) -> list[Path]:
    if notebooks is None:
        paths = discover_notebooks(notebook_dir)
        if not paths:
            raise S2OError(
                f"no notebooks matching {NOTEBOOK_GLOB} in {notebook_dir}/; run from the repository root "
                "or pass notebook_dir / the notebooks to run"
            )
        return paths
    if isinstance(notebooks, (str, os.PathLike)):
        raise S2OError("notebooks must be a list of paths, not a single path; wrap it: [path]")
    paths = [_resolve_notebook(spec, notebook_dir) for spec in notebooks]
    if not paths:
        raise S2OError("the list of notebooks to run is empty; pass None to run the whole suite")
    seen: dict[str, Path] = {}
    for path in paths:
        if path.name in seen:
            raise S2OError(
                f"two notebooks would be written to the same out/{path.name} ({seen[path.name]} and {path}); "
                "run them separately with different --out folders"
            )
        seen[path.name] = path
    return paths


# --------------------------------------------------------------------------------------------------
# Environment facts for the report
# --------------------------------------------------------------------------------------------------


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _versions() -> dict[str, str]:
    try:
        import s2o_lib

        s2o_version = str(getattr(s2o_lib, "__version__", "unknown"))
    except Exception:  # pragma: no cover - the package is importable whenever this module is
        s2o_version = "unknown"
    return {
        "python": platform.python_version(),
        "torch": _dist_version("torch"),
        "torchvision": _dist_version("torchvision"),
        "numpy": _dist_version("numpy"),
        "s2o_lib": s2o_version,
        "pyautoattack": _dist_version("pyautoattack"),
    }


def _device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "Apple MPS"
    except Exception:  # torch missing or broken: the notebooks will say so themselves
        pass
    return "CPU"


# --------------------------------------------------------------------------------------------------
# Collecting the `# REPORT` outputs
# --------------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """nbformat stores multi-line strings either as str or as a list of lines."""
    return "".join(value) if isinstance(value, list) else str(value)


def _clean_text(text: str) -> str:
    """Drop ANSI colours and keep only what a terminal would show after carriage returns (progress bars)."""
    text = _ANSI.sub("", text)
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def report_caption(source: str) -> str | None:
    """The caption of a ``# REPORT`` cell (``""`` if the marker has none), or ``None`` if unmarked."""
    for line in source.splitlines():
        match = _REPORT_MARKER.match(line)
        if match:
            return match.group("caption").strip()
    return None


def _render_output(output: dict[str, Any]) -> str | None:
    """One output as an HTML fragment, or ``None`` for outputs that do not belong in a report."""
    kind = output.get("output_type")
    if kind == "stream":
        if output.get("name") != "stdout":  # stderr is warnings and progress bars
            return None
        text = _clean_text(_text(output.get("text", ""))).strip("\n")
        return f"<pre>{html.escape(text)}</pre>" if text.strip() else None
    if kind == "error":
        ename, evalue = output.get("ename", "Error"), _clean_text(str(output.get("evalue", "")))
        return f'<pre class="error">{html.escape(f"{ename}: {evalue}")}</pre>'
    if kind not in ("display_data", "execute_result"):
        return None
    data = output.get("data", {})
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            b64 = re.sub(r"\s+", "", _text(data[mime]))
            return f'<img alt="figure" src="data:{mime};base64,{b64}">'
    if "image/svg+xml" in data:
        return f'<div class="svg">{_text(data["image/svg+xml"])}</div>'
    if "text/html" in data:
        return f'<div class="html-output">{_text(data["text/html"])}</div>'
    if "application/vnd.jupyter.widget-view+json" in data:  # a widget's text/plain is just its repr
        return None
    if "text/plain" in data:
        return f"<pre>{html.escape(_clean_text(_text(data['text/plain'])))}</pre>"
    return None


def _report_items(nb: Any) -> list[dict[str, Any]]:
    """The rendered outputs of a notebook's ``# REPORT`` code cells: ``[{cell, caption, html: [...]}]``."""
    items = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        caption = report_caption(_text(cell.get("source", "")))
        if caption is None:
            continue
        fragments = [frag for out in cell.get("outputs", []) if (frag := _render_output(out)) is not None]
        if fragments:
            headline = bool(_HEADLINE_TAG.match(caption))
            items.append({"cell": index, "caption": _HEADLINE_TAG.sub("", caption), "headline": headline,
                          "html": fragments})
    return items


# --------------------------------------------------------------------------------------------------
# Writing the report
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       background: #f6f7f9; margin: 0; }
main { max-width: 1050px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; min-height: 100vh; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 2px solid #e3e6ea; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin-top: 1.5em; }
.meta { color: #5b6472; margin-top: 0; }
table.grid { border-collapse: collapse; margin: 8px 0; font-size: 0.95em; }
table.grid th, table.grid td { border: 1px solid #dde1e6; padding: 4px 10px; text-align: left;
                               vertical-align: top; }
table.grid th { background: #eef1f4; }
table.grid td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.status { font-weight: 600; padding: 1px 8px; border-radius: 9px; white-space: nowrap; }
.status-ok { background: #dff3e4; color: #1b6b32; }
.status-failed { background: #fbe0e0; color: #a12020; }
.status-not-run { background: #eceef1; color: #5b6472; }
.banner { background: #fbe0e0; border-left: 5px solid #c0392b; padding: 8px 14px; white-space: pre-wrap;
          font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em; }
figure { margin: 12px 0 24px; }
figcaption { color: #5b6472; font-size: 0.9em; margin-bottom: 6px; }
figure img { max-width: 100%; height: auto; display: block; margin: 6px 0; }
pre { background: #f4f5f7; padding: 8px 12px; overflow-x: auto; font-size: 0.88em; border-radius: 4px; }
pre.error { background: #fbe0e0; }
.html-output { overflow-x: auto; margin: 6px 0; }
.html-output table { border-collapse: collapse; font-size: 0.92em; }
.html-output th, .html-output td { border: 1px solid #dde1e6; padding: 3px 8px; text-align: right; }
.html-output thead th { background: #eef1f4; }
a.log { color: #5b6472; font-size: 0.85em; margin-left: 6px; }
.empty { color: #5b6472; font-style: italic; }
"""


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(seconds, 60)
    return f"{seconds:.1f} s ({int(minutes)} min {secs:02.0f} s)"


def _render_html(meta: dict[str, Any], results: list[NotebookResult], items: dict[str, list[dict[str, Any]]],
                 out: Path) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(REPORT_TITLE)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(REPORT_TITLE)}</h1>",
        f'<p class="meta">{esc(meta["date"])} · profile <b>{esc(meta["profile"]["name"])}</b> · '
        f'{esc(meta["device"])} · total {esc(_fmt_seconds(meta["total_seconds"]))}</p>',
    ]
    if meta["failed"]:
        parts.append(f'<div class="banner">{esc(meta["failed"])}</div>')

    def figure(item: dict[str, Any], where: str) -> None:
        caption = f"{where}cell {item['cell']}" + (f": {item['caption']}" if item["caption"] else "")
        parts.append(f"<figure><figcaption>{esc(caption)}</figcaption>")
        parts.extend(item["html"])
        parts.append("</figure>")

    headlines = [(r.name, item) for r in results for item in items.get(r.name, []) if item.get("headline")]
    if headlines:
        parts.append("<h2>Headline results</h2>")
        for name, item in headlines:
            figure(item, f"{name}, ")

    parts.append("<h2>Profile</h2>")
    parts.append(f'<p><b>{esc(meta["profile"]["name"])}</b>: {esc(meta["profile"]["notes"] or "(no notes)")}</p>')

    parts.append('<h2>Environment</h2><table class="grid"><tbody>')
    for key, value in meta["versions"].items():
        parts.append(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>")
    parts.append(f'<tr><th>device</th><td>{esc(meta["device"])}</td></tr>')
    parts.append(f'<tr><th>platform</th><td>{esc(meta["platform"])}</td></tr>')
    parts.append("</tbody></table>")

    parts.append('<h2>Notebooks</h2><table class="grid"><thead><tr><th>#</th><th>notebook</th><th>status</th>'
                 "<th>seconds</th><th>executed notebook</th><th>error</th></tr></thead><tbody>")
    for number, result in enumerate(results, 1):
        css = "status-" + result.status.replace(" ", "-")
        link = ""
        if result.output_path is not None:
            href = result.output_path.name if result.output_path.parent == out else result.output_path.as_posix()
            link = f'<a href="{esc(href, quote=True)}">{esc(result.output_path.name)}</a>'
        if result.kernel_log is not None and result.kernel_log.is_file() and result.kernel_log.stat().st_size:
            log_href = result.kernel_log.relative_to(out).as_posix() if out in result.kernel_log.parents else \
                result.kernel_log.as_posix()
            link += f' <a class="log" href="{esc(log_href, quote=True)}">kernel log</a>'
        error = f"<pre>{esc(result.error)}</pre>" if result.error else ""
        parts.append(
            f"<tr><td class=\"num\">{number}</td><td>{esc(result.name)}</td>"
            f'<td><span class="status {css}">{esc(result.status)}</span></td>'
            f'<td class="num">{esc(_fmt_seconds(result.seconds))}</td><td>{link}</td><td>{error}</td></tr>'
        )
    parts.append("</tbody></table>")

    parts.append("<h2>Key figures and tables</h2>")
    rest = {r.name: [item for item in items.get(r.name, []) if not item.get("headline")] for r in results}
    shown = [r for r in results if rest[r.name]]
    if not shown and not headlines:
        parts.append('<p class="empty">No executed notebook has a cell marked <code># REPORT</code>.</p>')
    for result in shown:
        parts.append(f"<section><h3>{esc(result.name)}</h3>")
        for item in rest[result.name]:
            figure(item, "")
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _write_report(out: Path, meta: dict[str, Any], results: list[NotebookResult],
                  items: dict[str, list[dict[str, Any]]]) -> Path:
    """Write ``report.html`` and ``report.json`` (atomically, so a killed run never leaves half a file)."""
    report_path = out / "report.html"
    payload = {
        **meta,
        "notebooks": [
            {
                "name": r.name,
                "status": r.status,
                "seconds": None if r.seconds is None else round(r.seconds, 3),
                "output_path": None if r.output_path is None else str(r.output_path),
                "error": r.error,
                "kernel_log": None if r.kernel_log is None else str(r.kernel_log),
                "report_cells": [item["cell"] for item in items.get(r.name, [])],
            }
            for r in results
        ],
    }
    for path, text in (
        (report_path, _render_html(meta, results, items, out)),
        (out / "report.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n"),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return report_path


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def _first_line(source: str, limit: int = 80) -> str:
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return "(empty cell)"


def _short(text: str, *, lines: int = 2, limit: int = 300) -> str:
    text = _clean_text(text).strip()
    kept = "\n".join(text.splitlines()[:lines])
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def _describe_error(exc: BaseException, timeout: int) -> tuple[str, str]:
    """(name, value) of an execution error, short: never the whole traceback."""
    if isinstance(exc, CellExecutionError):
        return exc.ename or type(exc).__name__, _short(str(exc.evalue or ""))
    if isinstance(exc, CellTimeoutError):
        return "CellTimeoutError", f"the cell ran longer than {timeout} s (raise --timeout, or use a smaller profile)"
    if isinstance(exc, DeadKernelError):
        return "DeadKernelError", "the kernel died (often: out of memory; see the kernel log, try a smaller profile)"
    return type(exc).__name__, _short(str(exc))


class _Env:
    """Set environment variables for the kernel to inherit, and restore them exactly afterwards."""

    def __init__(self, changes: dict[str, str]) -> None:
        self.changes = changes
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> _Env:
        for key, value in self.changes.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value
        return self

    def __exit__(self, *exc: object) -> None:
        for key, old in self.saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _kernel_env(profile: str) -> dict[str, str]:
    """``S2O_PROFILE`` for the kernel, and this checkout's root first on ``PYTHONPATH`` so the notebooks
    import the same `s2o_lib` as the runner (and work in a clone that was never ``pip install``-ed)."""
    root = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.environ.get("PYTHONPATH", "")
    if root not in pythonpath.split(os.pathsep):
        pythonpath = os.pathsep.join(p for p in (root, pythonpath) if p)
    return {PROFILE_ENV: profile, "PYTHONPATH": pythonpath}


def run_notebooks(
    notebooks: Sequence[str | os.PathLike[str]] | None = None,
    *,
    profile: str | None = None,
    out: Path = Path("build"),
    timeout: int = 900,
    kernel_name: str = "python3",
    progress: bool = True,
    notebook_dir: Path = Path("notebooks"),
    on_result: Callable[[NotebookResult], None] | None = None,
) -> RunReport:
    """Execute notebooks headless, in order, and write ``out/report.html`` and ``out/report.json``.

    Args:
        notebooks: paths, names in ``notebook_dir`` (``"03_attacks"``, ``"03_attacks.ipynb"``) or numbers
            (``"03"``); ``None``: every ``NN_*.ipynb`` in ``notebook_dir``, sorted.
        profile: ``smoke``, ``class`` or ``paper``, exported to the kernels as ``S2O_PROFILE``; ``None``:
            whatever `s2o_lib.config.get_profile` picks (``S2O_PROFILE``, else by device).
        out: folder for the executed notebooks and the report (created if needed).
        timeout: seconds one cell may run before the run is stopped.
        kernel_name: the Jupyter kernel to run them in.
        progress: show a tqdm bar over notebooks (never shown when ``CI`` is set).
        notebook_dir: where the suite's notebooks live.
        on_result: called with each `NotebookResult` as soon as that notebook finishes.

    Returns:
        The `RunReport`.

    Raises:
        NotebookFailed: a cell raised, timed out or killed its kernel; the partial notebook and the
            report were written first, and ``.report`` holds the `RunReport`.
        S2OError: bad arguments (unknown profile, missing notebook, ...), before anything runs.
    """
    from .config import get_profile  # imports torch: only when actually running

    started = time.perf_counter()
    chosen = get_profile(profile)
    notebook_dir = Path(notebook_dir)
    out = Path(out)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise S2OError(f"timeout must be a positive number of seconds per cell, got {timeout!r}")
    paths = _resolve_notebooks(notebooks, notebook_dir)
    if out.exists() and not out.is_dir():
        raise S2OError(f"out={out} exists and is not a folder; choose another --out")
    out_resolved = out.resolve()
    for path in paths:
        if path.resolve().parent == out_resolved:
            raise S2OError(
                f"out={out} is the folder of {path}; the executed notebook would overwrite the source. "
                "Choose another --out (e.g. build)"
            )
    out.mkdir(parents=True, exist_ok=True)

    meta: dict[str, Any] = {
        "title": REPORT_TITLE,
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "profile": {"name": chosen.name, "notes": chosen.notes},
        "versions": _versions(),
        "device": _device_name(),
        "platform": platform.platform(),
        "kernel": kernel_name,
        "timeout": timeout,
        "status": "running",
        "failed": None,
        "total_seconds": 0.0,
    }
    results = [NotebookResult(name=p.name, status="not run") for p in paths]
    items: dict[str, list[dict[str, Any]]] = {}
    report = RunReport(profile=chosen.name, results=results, report_path=out / "report.html")

    def finish(status: str) -> None:
        meta["status"] = status
        meta["total_seconds"] = round(time.perf_counter() - started, 3)
        report.total_seconds = meta["total_seconds"]
        report.report_path = _write_report(out, meta, results, items)

    show = progress and not os.environ.get("CI")
    bar = tqdm(total=len(paths), desc="notebooks", unit="nb", disable=not show, dynamic_ncols=True)
    try:
        with _Env(_kernel_env(chosen.name)):
            for path, result in zip(paths, results):
                bar.set_postfix_str(path.name)
                nb = nbformat.read(path, as_version=4)
                current: dict[str, int] = {}

                def on_cell_start(cell: Any, cell_index: int, _current: dict[str, int] = current) -> None:
                    _current["index"] = cell_index

                client = NotebookClient(
                    nb,
                    timeout=timeout,
                    kernel_name=kernel_name,
                    resources={"metadata": {"path": str(path.resolve().parent)}},
                    on_cell_start=on_cell_start,
                )
                output_path = out / path.name
                result.kernel_log = out / "logs" / f"{path.stem}.kernel.log"
                result.kernel_log.parent.mkdir(exist_ok=True)
                tick = time.perf_counter()
                error: BaseException | None = None
                try:
                    # The kernel process's own output (e.g. ipykernel's start-up warnings, C++ warnings,
                    # a crash message) goes to a log file instead of cutting through the progress bar.
                    with open(result.kernel_log, "wb") as log:
                        client.execute(stdout=log, stderr=log)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                    error = exc
                except Exception as exc:  # the kernel failed to start, an unknown kernel name, ...
                    error = exc  # reported the same way: the run stops and says which notebook
                result.seconds = time.perf_counter() - tick
                result.output_path = output_path
                nbformat.write(nb, output_path)
                items[path.name] = _report_items(nb)

                if error is None:
                    result.status = "ok"
                    bar.update(1)
                    finish("running")  # a killed run still leaves a report of what finished
                    if on_result is not None:
                        on_result(result)
                    continue

                ename, evalue = _describe_error(error, timeout)
                index = current.get("index")
                if index is not None and index < len(nb.cells):
                    where = f"at cell {index} (first line: `{_first_line(_text(nb.cells[index].source))}`)"
                else:
                    where = "before any cell ran"
                result.status = "failed"
                result.error = f"{ename}: {evalue}"
                message = (
                    f"notebook {path.name} failed {where}\n"
                    f"  {ename}: {evalue}\n"
                    f"  partial notebook: {output_path}\n"
                    f"  report: {out / 'report.html'}"
                )
                if isinstance(error, DeadKernelError) or not isinstance(error, CellControlSignal):
                    message += f"\n  kernel log: {result.kernel_log}"
                meta["failed"] = message
                finish("failed")
                if on_result is not None:
                    on_result(result)
                raise NotebookFailed(
                    message,
                    notebook=path.name,
                    cell_index=index,
                    ename=ename,
                    evalue=evalue,
                    partial_path=output_path,
                    report=report,
                ) from None
    finally:
        bar.close()
    finish("ok")
    return report


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Execute the tutorial notebooks headless, in order, each in a fresh Jupyter kernel with "
            "S2O_PROFILE set, and write the executed notebooks plus one self-contained HTML report "
            "(report.html, with report.json beside it) to --out. Stops at the first failing notebook."
        ),
        epilog=(
            "examples:\n"
            "  %(prog)s --profile smoke                 # the whole suite on a CPU in minutes\n"
            "  %(prog)s 00 03 --profile class --out build/class\n"
            "  %(prog)s notebooks/08_robustness_comparison.ipynb --timeout 3600\n"
            "Cells whose source has a line starting with '# REPORT' put their outputs in the report."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "notebooks", nargs="*", metavar="NOTEBOOK",
        help="notebooks to run: paths, names in --notebook-dir, or numbers like 03 (default: all NN_*.ipynb)",
    )
    parser.add_argument(
        "--profile", "-p", default=None,
        help="smoke, class or paper (default: $S2O_PROFILE, else class with a GPU and smoke without)",
    )
    parser.add_argument("--out", "-o", type=Path, default=Path("build"), metavar="DIR",
                        help="folder for executed notebooks and the report (default: build)")
    parser.add_argument("--timeout", type=int, default=900, metavar="S",
                        help="seconds one cell may run before the run stops (default: 900)")
    parser.add_argument("--kernel", default="python3", metavar="NAME",
                        help="Jupyter kernel to use (default: python3)")
    parser.add_argument("--notebook-dir", type=Path, default=Path("notebooks"), metavar="DIR",
                        help="where the suite's notebooks live (default: notebooks)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (also off when CI is set)")
    return parser


def main_run_notebooks(argv: list[str] | None = None, *, prog: str = "s2o run-notebooks") -> int:
    """``run-notebooks`` on the command line: returns 0 on success, 1 if a notebook failed, 2 on bad input.

    Args:
        argv: the arguments after ``run-notebooks`` (``None``: ``sys.argv[1:]``).
        prog: the program name shown in ``--help`` and error messages.
    """
    parser = _build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): argparse already printed why
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)

    def line(result: NotebookResult) -> None:
        seconds = "" if result.seconds is None else f"  {result.seconds:7.1f} s"
        tqdm.write(f"{result.status:>7}  {result.name}{seconds}", file=sys.stdout)

    try:
        report = run_notebooks(
            args.notebooks or None,
            profile=args.profile,
            out=args.out,
            timeout=args.timeout,
            kernel_name=args.kernel,
            progress=not args.no_progress,
            notebook_dir=args.notebook_dir,
            on_result=line,
        )
    except NotebookFailed as exc:
        if exc.report is not None:
            for result in exc.report.results:
                if result.status == "not run":
                    line(result)
        sys.stdout.flush()
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except S2OError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the report lists the notebooks that finished", file=sys.stderr)
        return 130
    print(f"all {len(report.results)} notebook(s) ok in {_fmt_seconds(report.total_seconds)}; "
          f"report: {report.report_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main_run_notebooks(sys.argv[1:], prog="python -m s2o_lib.runner"))
