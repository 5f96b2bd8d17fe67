"""The HTML and JSON report of ``run-notebooks``: the profile, the versions, one row per notebook, and the
outputs of every cell marked for the report.

A code cell whose metadata has ``"report": "caption"`` puts its outputs in the report under that caption; with
the tag ``report-headline`` as well they go to the *Headline results* section at the top of the page instead.
The marks live in the cell's metadata, out of the student's view (a notebook source writes them on its cell
line: ``# %% tags=["report-headline"] report="comparison table"``). `s2o_lib.runner` executes the notebooks and
calls `report_items` and `write_report`.

Example:
    >>> report_caption({"report": "the table", "tags": ["report-headline"]})
    ('the table', True)
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "HEADLINE_TAG", "REPORT_TITLE", "NotebookResult", "Status", "cell_text", "clean_text", "device_name",
    "format_seconds", "report_caption", "report_items", "versions", "write_report",
]


Status = Literal["ok", "failed", "interrupted", "not run"]


@dataclass
class NotebookResult:
    """How one notebook went.

    Attributes:
        name: file name, e.g. ``"03_attacks.ipynb"``.
        status: ``"ok"``, ``"failed"``, ``"interrupted"`` (Ctrl-C) or ``"not run"`` (after an earlier failure).
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



REPORT_TITLE = "S²O tutorials: run report"
#: The cell tag that puts a report cell's outputs among the headline results.
HEADLINE_TAG = "report-headline"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# --------------------------------------------------------------------------------------------------
# Environment facts
# --------------------------------------------------------------------------------------------------


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """The versions of Python and of the packages the suite's numbers depend on."""
    try:
        import s2o_lib

        s2o_version = str(getattr(s2o_lib, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - the package is importable whenever this module is
        s2o_version = "unknown"
    return {
        "python": platform.python_version(),
        "torch": _dist_version("torch"),
        "torchvision": _dist_version("torchvision"),
        "numpy": _dist_version("numpy"),
        "s2o_lib": s2o_version,
        "pyautoattack": _dist_version("pyautoattack"),
    }


def device_name() -> str:
    """The GPU's name, ``"Apple MPS"`` or ``"CPU"``."""
    try:
        import torch
    except ImportError:  # torch missing: the notebooks will say so themselves
        return "CPU"
    if torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    mps = getattr(torch.backends, "mps", None)
    return "Apple MPS" if mps is not None and mps.is_available() else "CPU"


# --------------------------------------------------------------------------------------------------
# Collecting the outputs of report cells
# --------------------------------------------------------------------------------------------------


def cell_text(value: Any) -> str:
    """nbformat stores multi-line strings either as str or as a list of lines."""
    return "".join(value) if isinstance(value, list) else str(value)


def clean_text(text: str) -> str:
    """Drop ANSI colours and keep only what a terminal would show after carriage returns (progress bars)."""
    text = _ANSI.sub("", text)
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def report_caption(metadata: dict[str, Any]) -> tuple[str, bool] | None:
    """``(caption, headline)`` of a report cell from its metadata, or ``None`` for a cell not in the report."""
    caption = metadata.get("report")
    if caption is None:
        return None
    return str(caption).strip(), HEADLINE_TAG in (metadata.get("tags") or [])


def _render_output(output: dict[str, Any]) -> str | None:
    """One output as an HTML fragment, or ``None`` for outputs that do not belong in a report."""
    kind = output.get("output_type")
    if kind == "stream":
        if output.get("name") != "stdout":  # stderr is warnings and progress bars
            return None
        text = clean_text(cell_text(output.get("text", ""))).strip("\n")
        return f"<pre>{html.escape(text)}</pre>" if text.strip() else None
    if kind == "error":
        ename, evalue = output.get("ename", "Error"), clean_text(str(output.get("evalue", "")))
        return f'<pre class="error">{html.escape(f"{ename}: {evalue}")}</pre>'
    if kind not in ("display_data", "execute_result"):
        return None
    data = output.get("data", {})
    for mime in ("image/png", "image/jpeg"):
        if mime in data:
            b64 = re.sub(r"\s+", "", cell_text(data[mime]))
            return f'<img alt="figure" src="data:{mime};base64,{b64}">'
    if "image/svg+xml" in data:
        return f'<div class="svg">{cell_text(data["image/svg+xml"])}</div>'
    if "text/html" in data:
        return f'<div class="html-output">{cell_text(data["text/html"])}</div>'
    if "application/vnd.jupyter.widget-view+json" in data:  # a widget's text/plain is just its repr
        return None
    if "text/plain" in data:
        return f"<pre>{html.escape(clean_text(cell_text(data['text/plain'])))}</pre>"
    return None


def report_items(nb: Any) -> list[dict[str, Any]]:
    """The rendered outputs of a notebook's report cells: ``[{cell, caption, headline, html: [...]}]``."""
    items = []
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        marked = report_caption(cell.get("metadata", {}))
        if marked is None:
            continue
        fragments = [frag for out in cell.get("outputs", []) if (frag := _render_output(out)) is not None]
        if fragments:
            caption, headline = marked
            items.append({"cell": index, "caption": caption, "headline": headline, "html": fragments})
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
.status-interrupted { background: #fff1d6; color: #8a5a00; }
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


def format_seconds(seconds: float | None) -> str:
    """Seconds as ``"12.3 s"``, with minutes added from 2 minutes on; ``"–"`` for ``None``."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(seconds, 60)
    return f"{seconds:.1f} s ({int(minutes)} min {secs:02.0f} s)"


def _figure(item: dict[str, Any], where: str) -> list[str]:
    caption = f"{where}cell {item['cell']}" + (f": {item['caption']}" if item["caption"] else "")
    return [f"<figure><figcaption>{html.escape(caption)}</figcaption>", *item["html"], "</figure>"]


def _environment_table(meta: dict[str, Any]) -> list[str]:
    esc = html.escape
    rows = [f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>" for key, value in meta["versions"].items()]
    rows += [f'<tr><th>device</th><td>{esc(meta["device"])}</td></tr>',
             f'<tr><th>platform</th><td>{esc(meta["platform"])}</td></tr>']
    return ['<h2>Environment</h2><table class="grid"><tbody>', *rows, "</tbody></table>"]


def _notebook_row(number: int, result: NotebookResult, out: Path) -> str:
    esc = html.escape
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
    return (f"<tr><td class=\"num\">{number}</td><td>{esc(result.name)}</td>"
            f'<td><span class="status {css}">{esc(result.status)}</span></td>'
            f'<td class="num">{esc(format_seconds(result.seconds))}</td><td>{link}</td><td>{error}</td></tr>')


def _dry_run_note(dry: dict[str, Any]) -> str:
    """The dry run's data and the notebooks' own checks it did not meet (expected on tiny random runs)."""
    unmet = ", ".join(f"{name}: {count}" for name, count in dry.get("unmet_checks", {}).items() if count)
    return (f'<p class="meta"><b>Dry run</b> (the code path at tiny sizes; the numbers mean nothing) · data: '
            f'{html.escape(str(dry.get("data")))} · result checks not met: {html.escape(unmet or "none")}</p>')


def _radii(profile: dict[str, Any]) -> list[str]:
    """The profile's evaluation radii (FGSM/PGD/CW and AutoAttack), when the metadata records them."""
    if "eval_eps" not in profile:
        return []
    aa_eps = profile.get("aa_eps", profile["eval_eps"])
    return [(f'<p class="meta">evaluation radius L∞ ε = {profile["eval_eps"]:.4g} (FGSM/PGD/CW), '
             f'AutoAttack ε = {aa_eps:.4g}</p>')]


def _render_html(meta: dict[str, Any], results: list[NotebookResult], items: dict[str, list[dict[str, Any]]],
                 out: Path) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(REPORT_TITLE)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{esc(REPORT_TITLE)}</h1>",
        (f'<p class="meta">{esc(meta["date"])} · profile <b>{esc(meta["profile"]["name"])}</b> · '
         f'{esc(meta["device"])} · total {esc(format_seconds(meta["total_seconds"]))}</p>'),
    ]
    if meta.get("dry_run"):
        parts.append(_dry_run_note(meta["dry_run"]))
    if meta["failed"]:
        parts.append(f'<div class="banner">{esc(meta["failed"])}</div>')
    headlines = [(r.name, item) for r in results for item in items.get(r.name, []) if item.get("headline")]
    if headlines:
        parts.append("<h2>Headline results</h2>")
        for name, item in headlines:
            parts += _figure(item, f"{name}, ")
    parts.append("<h2>Profile</h2>")
    parts.append(f'<p><b>{esc(meta["profile"]["name"])}</b>: {esc(meta["profile"]["notes"] or "(no notes)")}</p>')
    parts += _radii(meta["profile"])
    parts += _environment_table(meta)
    parts.append('<h2>Notebooks</h2><table class="grid"><thead><tr><th>#</th><th>notebook</th><th>status</th>'
                 "<th>seconds</th><th>executed notebook</th><th>error</th></tr></thead><tbody>")
    parts += [_notebook_row(number, result, out) for number, result in enumerate(results, 1)]
    parts.append("</tbody></table>")
    parts.append("<h2>Key figures and tables</h2>")
    rest = {r.name: [item for item in items.get(r.name, []) if not item.get("headline")] for r in results}
    shown = [r for r in results if rest[r.name]]
    if not shown and not headlines:
        parts.append('<p class="empty">No executed notebook has a cell marked for the report.</p>')
    for result in shown:
        parts.append(f"<section><h3>{esc(result.name)}</h3>")
        for item in rest[result.name]:
            parts += _figure(item, "")
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def write_report(out: Path, meta: dict[str, Any], results: list[NotebookResult],
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
