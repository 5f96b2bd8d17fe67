"""``run-notebooks``: execute the tutorial notebooks headless, in order, and write one report.

Each notebook runs in a fresh Jupyter kernel (`nbclient.NotebookClient`), with its own folder as the working
directory (so relative paths behave as in Jupyter) and ``S2O_PROFILE`` set to the chosen profile in the
kernel's environment (the caller's environment is never changed). The executed notebooks go to
``out/<name>.ipynb``, and `s2o_lib.report` writes ``out/report.html`` and ``out/report.json``: the profile, the
versions, one row per notebook and the outputs of the cells marked for it (``"report"`` in their metadata).

The first failing notebook stops the run: its partial executed notebook and the report are still
written, and `NotebookFailed` says which notebook and cell failed and why, in a few lines.

Jupyter's ``nbclient`` and ``nbformat`` come with the ``notebooks`` extra; this module imports them only when
`run_notebooks` runs, and says how to install them if they are missing.

Example:
    >>> from s2o_lib.runner import run_notebooks
    >>> report = run_notebooks(profile="smoke", out=Path("build"))  # doctest: +SKIP
    >>> report.report_path  # doctest: +SKIP
    PosixPath('build/report.html')

From the command line (`s2o_lib.cli`, see ``--help``)::

    python -m s2o_lib run-notebooks --profile smoke --out build
    python -m s2o_lib run-notebooks 00 03 --profile class
"""

from __future__ import annotations

import os
import platform
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import S2OError
from .report import (
    REPORT_TITLE,
    NotebookResult,
    cell_text,
    clean_text,
    device_name,
    report_items,
    versions,
    write_report,
)

__all__ = ["NotebookFailed", "NotebookInterrupted", "NotebookResult", "RunReport", "discover_notebooks", "run_notebooks"]

PROFILE_ENV = "S2O_PROFILE"  # same name as s2o_lib.config.PROFILE_ENV (not imported: config pulls in torch)
NOTEBOOK_GLOB = "[0-9][0-9]*_*.ipynb"  # 06_s2o and 06b_s2o_training
INSTALL_HINT = 'pip install "s2o-tutorials[notebooks]"'



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


class NotebookInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped ``run-notebooks``; the partial notebook and the report were written first.

    Attributes:
        where: which notebook and cell were running, e.g. ``"03_x.ipynb at code cell 4 of 9"``.
        report: the `RunReport` written before raising (the notebook marked ``interrupted``).
    """

    def __init__(self, where: str, report: RunReport) -> None:
        super().__init__(f"interrupted in {where}; partial report: {report.report_path}")
        self.where, self.report = where, report


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
    """Every ``NN_*.ipynb`` (and ``NNb_*.ipynb``) in ``notebook_dir``, sorted (the suite's order)."""
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
# Running
# --------------------------------------------------------------------------------------------------


def _jupyter() -> Any:
    """nbformat (nbclient is checked too), or a one-line `S2OError` that says how to install them."""
    try:
        import nbclient  # noqa: F401 - imported here to fail early, used in _execute
        import nbformat
    except ImportError as err:
        raise S2OError(f"run-notebooks needs Jupyter's nbclient and nbformat ({err.name} is missing): "
                       f"{INSTALL_HINT}") from err
    return nbformat


def _kernel_env(profile: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: the caller's, with ``S2O_PROFILE`` set, this checkout's root first on
    ``PYTHONPATH`` (so the notebooks import the same `s2o_lib` as the runner, also in a clone that was never
    ``pip install``-ed) and progress bars off unless the caller set ``TQDM_DISABLE`` (no one watches them);
    then ``extra`` (the dry run's variables)."""
    root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.environ.get("PYTHONPATH", "")
    if root not in pythonpath.split(os.pathsep):
        pythonpath = os.pathsep.join(p for p in (root, pythonpath) if p)
    return {**os.environ, PROFILE_ENV: profile, "PYTHONPATH": pythonpath,
            "TQDM_DISABLE": os.environ.get("TQDM_DISABLE", "1"), **(extra or {})}


def _execute(nb: Any, path: Path, *, timeout: int, kernel_name: str, env: dict[str, str],
             log_path: Path, allow_errors: bool = False) -> tuple[BaseException | None, int | None]:
    """Run ``nb`` (read from ``path``) in a fresh kernel, in place; returns the error that stopped it (``None``
    if every cell ran) and the index of the last cell that started. With ``allow_errors`` a cell's error stays
    in its outputs and the next cells run (`_dry_run_error` reads them)."""
    from nbclient import NotebookClient

    current: dict[str, int] = {}

    def on_cell_start(cell: Any, cell_index: int) -> None:
        current["index"] = cell_index

    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, on_cell_start=on_cell_start,
                            allow_errors=allow_errors, resources={"metadata": {"path": str(path.resolve().parent)}})
    with _sigint_noted() as interrupted:
        try:
            # The kernel process's own output (e.g. ipykernel's start-up warnings, C++ warnings, a crash message)
            # goes to a log file instead of cutting through the progress bar.
            with open(log_path, "wb") as log:
                client.execute(stdout=log, stderr=log, env=env)
        # A cell that raised or timed out, a dead kernel, a kernel that never started (unknown name, ...): the
        # run stops the same way for each and says which notebook, so every exception is caught here. Ctrl-C
        # ends nbclient's run as some other error: nbclient's own SIGINT handler shuts the kernel down (and records
        # that in `_async_cleanup_kernel_future`), and the cell then fails with a DeadKernelError or an
        # AssertionError.
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001
            stopped = (interrupted or getattr(client, "_async_cleanup_kernel_future", None) is not None
                       or getattr(exc, "ename", None) == "KeyboardInterrupt")  # the kernel got the Ctrl-C too
            return (KeyboardInterrupt() if stopped else exc), current.get("index")
    return (KeyboardInterrupt() if interrupted else None), current.get("index")


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """While the block runs, SIGTERM (``timeout``, a CI job's limit, ``kill``) raises KeyboardInterrupt as Ctrl-C
    does, so the run ends with its report written (status ``interrupted``) instead of dying mid-way. nbclient
    handles both signals itself while a kernel runs and restores the default when it is done, so `run_notebooks`
    enters this again around every notebook; in other threads than the main one nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _sigint_noted() -> Iterator[list[bool]]:
    """While the block runs, Ctrl-C (SIGINT) and SIGTERM are noted in the yielded list (non-empty once one came)
    and raise KeyboardInterrupt; in other threads than the main one nothing changes."""
    noted: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def handler(signum: int, frame: Any) -> None:
        noted.append(True)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield noted
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cell_position(cells: Sequence[Any], index: int) -> str:
    """Where cell ``index`` (0-based, markdown cells counted) is as a reader counts: ``"code cell 2 of 3"``,
    or ``"cell 3 of 4, counting markdown"`` for a markdown cell."""
    if cells[index].cell_type != "code":
        return f"cell {index + 1} of {len(cells)}, counting markdown"
    code = [i for i, cell in enumerate(cells) if cell.cell_type == "code"]
    return f"code cell {code.index(index) + 1} of {len(code)}"


_FILE_FRAME = re.compile(r"^\s*File \S", re.MULTILINE)


def _dry_run_error(nb: Any) -> tuple[BaseException | None, int | None, int]:
    """The first error of a notebook run with ``allow_errors`` that a dry run must not pass, its cell, and how
    many result checks failed: an ``AssertionError`` raised by the notebook's own code (no library frame in
    its traceback) is a check of what a real run learns, which tiny stand-in runs cannot meet; every other
    error (a shape or device mismatch, a library assertion) fails the dry run."""
    from nbclient.exceptions import CellExecutionError

    unmet = 0
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") != "error":
                continue
            trace = [clean_text(line) for line in output.get("traceback", [])]
            if output.get("ename") == "AssertionError" and not any(_FILE_FRAME.search(t) for t in trace):
                unmet += 1
                continue
            error = CellExecutionError("\n".join(trace), output.get("ename", "Error"), output.get("evalue", ""))
            return error, index, unmet
    return None, None, unmet


def _first_line(source: str, limit: int = 80) -> str:
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return "(empty cell)"


def _short(text: str, *, lines: int = 2, limit: int = 300) -> str:
    text = clean_text(text).strip()
    kept = "\n".join(text.splitlines()[:lines])
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def _describe_error(exc: BaseException, timeout: int) -> tuple[str, str]:
    """(name, value) of an execution error, short: never the whole traceback."""
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    if isinstance(exc, CellExecutionError):
        return exc.ename or type(exc).__name__, _short(str(exc.evalue or ""))
    if isinstance(exc, CellTimeoutError):
        return "CellTimeoutError", f"the cell ran longer than {timeout} s (raise --timeout, or use a smaller profile)"
    if isinstance(exc, DeadKernelError):
        return "DeadKernelError", "the kernel died (often: out of memory; see the kernel log, try a smaller profile)"
    return type(exc).__name__, _short(str(exc))


def _failure(nb: Any, result: NotebookResult, error: BaseException, index: int | None, *, timeout: int,
             out: Path) -> NotebookFailed:
    """Mark ``result`` failed and build the few-line `NotebookFailed` that says where and why."""
    from nbclient.exceptions import CellControlSignal

    ename, evalue = _describe_error(error, timeout)
    if index is not None and index < len(nb.cells):
        where = (f"at {cell_position(nb.cells, index)} "
                 f"(first line: `{_first_line(cell_text(nb.cells[index].source))}`)")
    else:
        where = "before any cell ran"
    result.status, result.error = "failed", f"{ename}: {evalue}"
    message = (f"notebook {result.name} failed {where}\n  {ename}: {evalue}\n"
               f"  partial notebook: {result.output_path}\n  report: {out / 'report.html'}")
    if not isinstance(error, CellControlSignal):  # not a cell's own error: the kernel's output may say why
        message += f"\n  kernel log: {result.kernel_log}"
    return NotebookFailed(message, notebook=result.name, cell_index=index, ename=ename, evalue=evalue,
                          partial_path=result.output_path)


def _checked_paths(notebooks: Sequence[str | os.PathLike[str]] | None, *, notebook_dir: Path, out: Path,
                   timeout: int) -> list[Path]:
    """The notebooks to run, after checking every argument (nothing has run or been written yet)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise S2OError(f"timeout must be a positive number of seconds per cell, got {timeout!r}")
    paths = _resolve_notebooks(notebooks, notebook_dir)
    if out.exists() and not out.is_dir():
        raise S2OError(f"out={out} exists and is not a folder; choose another --out")
    for path in paths:
        if path.resolve().parent == out.resolve():
            raise S2OError(
                f"out={out} is the folder of {path}; the executed notebook would overwrite the source. "
                "Choose another --out (e.g. build)"
            )
    return paths


@dataclass
class _Suite:
    """One run of the suite: what the report shows, rewritten after every notebook."""

    out: Path
    meta: dict[str, Any]
    report: RunReport
    started: float = field(default_factory=time.perf_counter)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dry_run: bool = False

    def finish(self, status: str) -> None:
        """Write the report as it stands (a killed run still leaves a report of what finished)."""
        self.meta["status"] = status
        self.meta["total_seconds"] = self.report.total_seconds = round(time.perf_counter() - self.started, 3)
        self.report.report_path = write_report(self.out, self.meta, self.report.results, self.items)

    def run_one(self, path: Path, result: NotebookResult, *, nbformat: Any, timeout: int, kernel_name: str,
                env: dict[str, str]) -> NotebookFailed | None:
        """Execute one notebook and write it to ``out``; the failure, if it failed."""
        nb = nbformat.read(path, as_version=4)
        result.output_path = self.out / path.name
        result.kernel_log = self.out / "logs" / f"{path.stem}.kernel.log"
        result.kernel_log.parent.mkdir(exist_ok=True)
        tick = time.perf_counter()
        error, index = _execute(nb, path, timeout=timeout, kernel_name=kernel_name, env=env,
                                log_path=result.kernel_log, allow_errors=self.dry_run)
        if self.dry_run and error is None:
            error, index, unmet = _dry_run_error(nb)
            self.meta["dry_run"]["unmet_checks"][path.name] = unmet
        result.seconds = time.perf_counter() - tick
        nbformat.write(nb, result.output_path)
        self.items[path.name] = report_items(nb)
        if error is None:
            result.status = "ok"
            return None
        if isinstance(error, KeyboardInterrupt):
            result.status, result.error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
            where = result.name if index is None else f"{result.name} at {cell_position(nb.cells, index)}"
            self.meta["failed"] = f"interrupted in {where}"
            raise NotebookInterrupted(where, self.report)
        failure = _failure(nb, result, error, index, timeout=timeout, out=self.out)
        failure.report = self.report
        self.meta["failed"] = str(failure)
        return failure


def _dry_run_setup(profile: Any, *, out: Path, data: str | os.PathLike[str] | None) -> tuple[dict[str, str], str]:
    """The kernels' extra variables of a dry run (an emptied model cache under ``out``), and which data it uses."""
    import shutil

    from ..config import DRY_RUN_ENV
    from ..data import dataset_missing
    from ..zoo import DATA_ENV, RUNS_ENV

    folder = Path(data if data is not None else "data").expanduser().resolve()
    runs = out.resolve() / "runs"
    shutil.rmtree(runs / "dry-run", ignore_errors=True)  # only the dry run's own cache
    if dataset_missing(profile.dataset, root=folder):
        note = (f"stand-in data: torchvision FakeData in {profile.dataset}'s shape (random images; no "
                f"{profile.dataset} in {folder})")
    else:
        note = (f"{profile.dataset} from {folder} (a random {profile.train_subset} training and "
                f"{profile.test_subset} test images)")
    return {DRY_RUN_ENV: "1", DATA_ENV: str(folder), RUNS_ENV: str(runs)}, note


def _report_meta(profile: Any, *, kernel_name: str, timeout: int, dry_run_data: str | None) -> dict[str, Any]:
    """The report's header of a run that starts now: what runs, where, with which versions (status ``running``)."""
    meta: dict[str, Any] = {
        "title": REPORT_TITLE, "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "profile": {"name": profile.name, "notes": profile.notes, "eval_eps": profile.eval_eps,
                    "aa_eps": profile.autoattack_eps}, "versions": versions(), "device": device_name(),
        "platform": platform.platform(), "kernel": kernel_name, "timeout": timeout, "status": "running",
        "failed": None, "total_seconds": 0.0,
    }
    if dry_run_data is not None:
        meta["dry_run"] = {"data": dry_run_data, "unmet_checks": {}}
    return meta


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
    dry_run: bool = False,
    data: str | os.PathLike[str] | None = None,
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
        progress: show a tqdm bar over notebooks (``TQDM_DISABLE=1`` in the environment hides it too).
        notebook_dir: where the suite's notebooks live.
        on_result: called with each `NotebookResult` as soon as that notebook finishes.
        dry_run: run the profile's code path at tiny sizes (`s2o_lib.config.dry_run`, ``S2O_DRY_RUN=1`` in the
            kernels), with models cached in ``out/runs/dry-run`` (emptied first) and stand-in data when the
            dataset is missing from ``data``; result checks (a notebook's own ``assert``) that fail are counted
            in the report, every other error fails the run.
        data: dataset folder exported to the kernels as ``S2O_DATA`` (``None``: the kernels' default, or
            ``data`` under the current folder in a dry run).

    Returns:
        The `RunReport`.

    Raises:
        NotebookFailed: a cell raised, timed out or killed its kernel; the partial notebook and the
            report were written first, and ``.report`` holds the `RunReport`.
        NotebookInterrupted: Ctrl-C; the partial notebook and the report (status ``interrupted``) were written.
        S2OError: bad arguments (unknown profile, missing notebook, ...), before anything runs.
    """
    from ..config import dry_run as shrink  # imports torch: only when actually running
    from ..config import get_profile

    chosen = shrink(get_profile(profile)) if dry_run else get_profile(profile)
    out = Path(out)
    paths = _checked_paths(notebooks, notebook_dir=Path(notebook_dir), out=out, timeout=timeout)
    nbformat = _jupyter()
    out.mkdir(parents=True, exist_ok=True)
    extra, data_note = _dry_run_setup(chosen, out=out, data=data) if dry_run else ({}, None)
    if data is not None and not dry_run:
        extra["S2O_DATA"] = str(Path(data).expanduser().resolve())
    meta = _report_meta(chosen, kernel_name=kernel_name, timeout=timeout, dry_run_data=data_note)
    results = [NotebookResult(name=p.name, status="not run") for p in paths]
    suite = _Suite(out=out, meta=meta, report=RunReport(profile=chosen.name, results=results,
                                                        report_path=out / "report.html"), dry_run=dry_run)
    env = _kernel_env(chosen.name, extra)
    # tqdm reads TQDM_DISABLE from the environment only when `disable` is not passed.
    bar = tqdm(total=len(paths), desc="notebooks", unit="nb", dynamic_ncols=True,
               **({} if progress else {"disable": True}))
    try:
        for path, result in zip(paths, results, strict=True):
            bar.set_postfix_str(path.name)
            failure = _run_guarded(suite, path, result, nbformat=nbformat, timeout=timeout, kernel_name=kernel_name,
                                   env=env)
            if on_result is not None:
                on_result(result)
            if failure is not None:
                raise failure from None
            bar.update(1)
    finally:
        bar.close()
    with _sigterm_as_ctrl_c():
        suite.finish("ok")
    return suite.report


def _run_guarded(suite: _Suite, path: Path, result: NotebookResult, **options: Any) -> NotebookFailed | None:
    """`_Suite.run_one` and the report after it, with Ctrl-C and SIGTERM at any moment (also outside a cell:
    starting the kernel, writing the report) ending the run as `NotebookInterrupted`, the report written."""
    try:
        with _sigterm_as_ctrl_c():
            failure = suite.run_one(path, result, **options)
            suite.finish("running" if failure is None else "failed")
            return failure
    except NotebookInterrupted:
        suite.finish("interrupted")
        raise
    except KeyboardInterrupt:
        if result.status == "not run":
            result.status, result.error = "interrupted", "interrupted (Ctrl-C or SIGTERM)"
        suite.meta["failed"] = f"interrupted in {result.name}"
        suite.finish("interrupted")
        raise NotebookInterrupted(result.name, suite.report) from None
