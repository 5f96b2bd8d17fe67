"""``run-notebooks --profile class --dry-run``: the class code path at tiny sizes, on a CPU, with stand-in data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from s2o_lib.config import DRY_RUN_ENV, PROFILES, dry_run, get_profile
from s2o_lib.data import stand_in_dataset
from s2o_lib.zoo import RUNS_ENV, profile_data, runs_root

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_keeps_the_code_path_and_shrinks_the_sizes():
    real = PROFILES["class"]
    tiny = dry_run(real)
    same = ("name", "dataset", "arch", "eps", "alpha", "eval_eps", "eval_alpha", "autoattack", "lr", "schedule")
    assert all(getattr(tiny, f) == getattr(real, f) for f in same)
    assert tiny.dry_run and not real.dry_run
    assert (tiny.epochs, tiny.train_subset, tiny.test_subset, tiny.eval_n, tiny.attack_steps) == (1, 64, 40, 20, 1)
    assert tiny.awp_warmup <= tiny.epochs  # AWP runs within the one epoch
    assert tiny.notes.startswith("DRY RUN of class")


def test_the_environment_variable_asks_for_it(monkeypatch, tmp_path):
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    monkeypatch.delenv(DRY_RUN_ENV, raising=False)
    assert get_profile("class") == PROFILES["class"] and runs_root() == tmp_path
    for off in ("0", "false", ""):
        monkeypatch.setenv(DRY_RUN_ENV, off)
        assert not get_profile("class").dry_run
    monkeypatch.setenv(DRY_RUN_ENV, "1")
    assert get_profile("class") == dry_run(PROFILES["class"])
    assert runs_root() == tmp_path / "dry-run"  # never the real class models' cache


def test_dry_run_data_is_cifar_shaped_stand_in_data_when_cifar_is_missing(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("a dry run touched the network"))
    train, test = profile_data(dry_run(PROFILES["class"]), root=tmp_path)
    assert (len(train), len(test)) == (64, 40)
    x, y = train[0]
    assert tuple(x.shape) == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1 and 0 <= y < 10
    assert not (test[0][0] == x).all()  # the splits differ
    assert (stand_in_dataset("cifar10", "test", size=3)[1][0] == test[1][0]).all()  # the same image each time


def test_dry_run_of_notebooks_00_and_03(tmp_path):
    """The dry run of two notebooks through run_notebooks, as CI runs it (stand-in data, fresh kernels)."""
    pytest.importorskip("nbclient")
    from s2o_lib.suite.runner import run_notebooks

    out = tmp_path / "build"
    report = run_notebooks(["00", "03"], profile="class", out=out, notebook_dir=ROOT / "notebooks", progress=False,
                           dry_run=True, data=tmp_path / "no-data", timeout=600)
    assert report.ok and [r.status for r in report.results] == ["ok", "ok"]
    meta = json.loads(report.json_path.read_text())
    assert meta["profile"]["notes"].startswith("DRY RUN of class")
    assert meta["dry_run"]["data"].startswith("stand-in data: torchvision FakeData in cifar10's shape")
    assert "Dry run" in report.report_path.read_text()
    # The models were trained for the class architecture, in the dry run's own cache.
    cached = sorted(p.parent.name for p in (out / "runs" / "dry-run" / "class").glob("*/checkpoint.pt"))
    assert cached == ["at-seed0", "standard-seed0"]
    import torch

    meta_at = torch.load(out / "runs" / "dry-run" / "class" / "at-seed0" / "checkpoint.pt", weights_only=True)["meta"]
    assert meta_at["model"]["arch"] == "preact-resnet18-w32" and meta_at["settings"]["schedule"] == "onecycle"


def _notebook_with_errors(*errors):
    nbformat = pytest.importorskip("nbformat")
    cells = []
    for ename, traceback in errors:
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.v4.new_output("error", ename=ename, evalue="boom", traceback=traceback)]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("ok"), *cells])


def test_a_dry_run_counts_the_notebooks_own_failed_checks_and_fails_on_any_other_error():
    from s2o_lib.suite.runner import _dry_run_error

    own_check = ("AssertionError", ["\x1b[0;31mAssertionError\x1b[0m", "Cell \x1b[0;32mIn[3], line 2\x1b[0m\n assert acc > 0.5"])
    library = ("AssertionError", ["Cell In[4], line 1", "File \x1b[0;32m/x/s2o_lib/attacks.py:10\x1b[0m, in pgd\n assert x"])
    shape = ("RuntimeError", ["Cell In[5], line 1", "RuntimeError: mat1 and mat2 shapes cannot be multiplied"])
    assert _dry_run_error(_notebook_with_errors(own_check, own_check)) == (None, None, 2)
    error, index, unmet = _dry_run_error(_notebook_with_errors(own_check, library, shape))
    assert (type(error).__name__, error.ename, index, unmet) == ("CellExecutionError", "AssertionError", 2, 1)
    error, index, _ = _dry_run_error(_notebook_with_errors(shape))
    assert (error.ename, index) == ("RuntimeError", 1)
