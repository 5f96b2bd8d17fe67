"""Issue 22's traps on the bundle path: one model cache, packs of complete runs only, a damaged ``best.pt`` rebuilt,
and the smaller one-line errors (seed, class count, images evaluated, a broken bundle, SIGTERM)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from s2o_lib import zoo
from s2o_lib.checkpoint import load_checkpoint, restore_best, save_checkpoint
from s2o_lib.config import get_profile
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import build_model, model_spec
from s2o_lib.suite import bundle
from s2o_lib.suite.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent
TINY = dataclasses.replace(get_profile("smoke"), epochs=2, train_subset=96, test_subset=32, eval_n=32)


@pytest.fixture(autouse=True)
def no_bundle(monkeypatch):
    monkeypatch.setattr(bundle, "_TRIED", {})
    monkeypatch.delenv(bundle.URL_ENV, raising=False)


# ---------------------------------------------------------------------------------------------- one cache
def test_the_cache_is_the_checkouts_notebooks_runs_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(zoo.RUNS_ENV, raising=False)
    home = ROOT / "notebooks" / "runs"
    monkeypatch.chdir(tmp_path)
    assert zoo.runs_root() == home  # elsewhere: absolute
    monkeypatch.chdir(ROOT / "notebooks")
    assert zoo.runs_root() == Path("runs")  # what notebook 03 prints, as before
    monkeypatch.chdir(ROOT)
    assert zoo.runs_root() == Path("notebooks/runs") and zoo.run_folder("at", profile=TINY).resolve().parent == (
        home / "smoke")
    monkeypatch.setenv(zoo.RUNS_ENV, str(tmp_path / "mine"))
    assert zoo.runs_root() == tmp_path / "mine"


def test_an_installed_library_uses_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(zoo.RUNS_ENV, raising=False)
    monkeypatch.setattr(zoo, "_checkout_root", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    assert zoo.runs_root() == tmp_path / "cache" / "s2o-tutorials" / "runs"


def _fake_run(folder: Path, *, done: int, planned: int) -> Path:
    save_checkpoint(folder / "checkpoint.pt", {"model": {"w": torch.zeros(1)},
                                               "history": {"epoch": list(range(1, done + 1))},
                                               "meta": {"settings": {"epochs": planned}}})
    return folder


def test_pack_of_an_empty_cache_names_the_folder_and_a_cache_that_holds_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(S2OError, match="no trained runs in .*empty/smoke .*run-notebooks --profile smoke") as err:
        bundle.pack("smoke", out=tmp_path / "b.tar", root=tmp_path / "empty")
    assert "\n" not in str(err.value)
    _fake_run(tmp_path / "runs" / "smoke" / "at-seed0", done=1, planned=1)
    with pytest.raises(S2OError, match=r"but .*runs holds some: pass --runs .*runs"):
        bundle.pack("smoke", out=tmp_path / "b.tar", root=tmp_path / "empty")


def test_pack_refuses_a_half_trained_run(tmp_path):
    _fake_run(tmp_path / "smoke" / "at-seed0", done=1, planned=6)
    with pytest.raises(S2OError, match=r"at-seed0 is incomplete \(1 of 6 epochs trained\)"):
        bundle.pack("smoke", out=tmp_path / "b.tar", root=tmp_path)
    assert not (tmp_path / "b.tar").exists()


HOLD = textwrap.dedent("""
    import sys, time
    from s2o_lib.lock import folder_lock
    with folder_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


def test_pack_refuses_a_run_another_process_is_writing(tmp_path):
    folder = _fake_run(tmp_path / "smoke" / "at-seed0", done=1, planned=1)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(S2OError, match=f"at-seed0 is being written by another process \\(pid {holder.pid}\\)"):
            bundle.pack("smoke", out=tmp_path / "b.tar", root=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert bundle.pack("smoke", out=tmp_path / "b.tar", root=tmp_path).is_file()


# ---------------------------------------------------------------------------------------------- best.pt
def _run_with_best(folder: Path, *, best: int, kept: tuple[int, ...], last: int = 3) -> None:
    history = {"epoch": list(range(1, last + 1)), "best_epoch": best, "eval_robust": [0.5, 0.3, 0.2][:last]}
    save_checkpoint(folder / "checkpoint.pt", {"model": {"w": torch.full((1,), float(last))}, "history": history,
                                               "meta": {"epoch": last}})
    for epoch in kept:
        save_checkpoint(folder / f"epoch_{epoch:03d}.pt", {"model": {"w": torch.full((1,), float(epoch))},
                                                           "history": history, "meta": {"epoch": epoch}})


@pytest.mark.parametrize(("best", "kept", "holds", "fallback"), [(3, (), 3, False), (2, (2,), 2, False),
                                                                 (1, (), 3, True), (1, (2,), 2, True)])
def test_restore_best_copies_the_best_epoch_or_the_best_one_left(tmp_path, best, kept, holds, fallback):
    _run_with_best(tmp_path, best=best, kept=kept)
    (tmp_path / "best.pt").write_bytes(b"")  # truncate -s 0
    assert restore_best(tmp_path) == tmp_path / "best.pt"
    state = load_checkpoint(tmp_path / "best.pt")
    assert state["model"]["w"].item() == holds and state["meta"]["epoch"] == holds
    assert ("best_fallback" in state["meta"]) == fallback
    assert restore_best(tmp_path) is None  # sound now: left alone


def test_a_damaged_best_pt_error_does_not_send_one_to_train_again(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"\0" * 10)
    with pytest.raises(S2OError, match="writes it again from the run") as err:
        load_checkpoint(tmp_path / "best.pt")
    assert "train again" not in str(err.value)


def test_trained_model_rebuilds_a_missing_or_truncated_best_pt(tmp_path, monkeypatch):
    zoo.trained_model("standard", profile=TINY, root=tmp_path, progress=False)
    folder = zoo.run_folder("standard", profile=TINY, root=tmp_path)
    before = load_checkpoint(folder / "best.pt")
    for damage in ("truncate", "delete"):
        if damage == "truncate":
            (folder / "best.pt").write_bytes(b"")
        else:
            (folder / "best.pt").unlink()
        monkeypatch.setattr("s2o_lib.train._Training.train_epoch", lambda *a: pytest.fail("trained again"))
        _, history = zoo.trained_model("standard", profile=TINY, root=tmp_path, progress=False)
        after = load_checkpoint(folder / "best.pt")
        if history.best_epoch == history.epoch[-1]:  # exact: the weights that were lost
            assert after["meta"]["epoch"] == before["meta"]["epoch"] and "best_fallback" not in after["meta"]
            assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])
        else:  # the best epoch's weights are gone: the last epoch, and best.pt says so
            assert after["meta"]["epoch"] == history.epoch[-1] and "best_fallback" in after["meta"]


def test_trained_model_rebuilds_best_pt_exactly_from_a_kept_epoch(tmp_path, monkeypatch):
    zoo.trained_model("standard", profile=TINY, root=tmp_path, progress=False, keep_every=1)
    folder = zoo.run_folder("standard", profile=TINY, root=tmp_path, keep_every=1)
    before = load_checkpoint(folder / "best.pt")
    (folder / "best.pt").write_bytes(b"")
    monkeypatch.setattr("s2o_lib.train._Training.train_epoch", lambda *a: pytest.fail("trained again"))
    zoo.trained_model("standard", profile=TINY, root=tmp_path, progress=False, keep_every=1)
    after = load_checkpoint(folder / "best.pt")
    assert after["meta"]["epoch"] == before["meta"]["epoch"] and "best_fallback" not in after["meta"]
    assert all(torch.equal(after["model"][k], before["model"][k]) for k in before["model"])


def test_train_out_into_the_same_folder_writes_best_pt_again(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "standard", "--profile", "smoke", "--epochs", "1", "--subset", "64", "--no-progress",
            "--out", str(out)]
    assert main(argv) == 0
    (out / "best.pt").unlink()
    assert main(argv) == 0, capsys.readouterr().err
    assert load_checkpoint(out / "best.pt")["meta"]["epoch"] == 1


# ---------------------------------------------------------------------------------------------- smaller ones
def test_a_negative_seed_is_refused_before_any_folder_is_made(tmp_path):
    with pytest.raises(S2OError, match="seed must be an integer >= 0"):
        zoo.trained_model("trades+awp+s2o", profile=TINY, seed=-1, root=tmp_path, progress=False)
    assert not any(tmp_path.rglob("*"))


def _checkpoint(tmp_path: Path, classes: int) -> Path:
    model = build_model("small-cnn", num_classes=classes, in_channels=1)
    return save_checkpoint(tmp_path / f"c{classes}.pt", {"model": model.state_dict(),
                                                         "meta": {"model": model_spec(model), "dataset": "x"}})


def test_evaluate_names_a_class_count_that_differs_from_the_datasets(tmp_path, capsys):
    path = _checkpoint(tmp_path, 100)
    assert main(["evaluate", str(path), "--dataset", "digits", "--attacks", "clean", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has 100 classes (trained on x) but digits has 10" in err and len(err.splitlines()) == 1


def test_evaluate_says_how_many_images_it_used(tmp_path, capsys):
    path = _checkpoint(tmp_path, 10)
    assert main(["evaluate", str(path), "--dataset", "digits", "--attacks", "clean", "--n", "5000",
                 "--profile", "smoke"]) == 0
    assert "evaluated 360 images: digits's test set has only 360 (--n 5000 asked for more)" in capsys.readouterr().out


def test_a_broken_bundle_says_that_s2o_zoo_url_none_trains_instead(tmp_path, monkeypatch, published_bundles):
    broken = tmp_path / "s2o-smoke.tar"
    broken.write_bytes(b"not a tar at all" * 64)
    digest = hashlib.sha256(broken.read_bytes()).hexdigest()
    monkeypatch.setenv(bundle.URL_ENV, f"{broken.as_uri()}#sha256={digest}")
    with pytest.raises(S2OError, match="cannot be used: .*Set S2O_ZOO_URL=none to train") as err:
        zoo.trained_model("standard", profile=TINY, root=tmp_path / "cache", progress=False)
    assert "\n" not in str(err.value)


class _Rough(torch.nn.Module):
    """A model whose prediction changes erratically within any ball: attacks on its misses land right at random."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x):
        return self.head(torch.sin(1000 * x).flatten(1))


@pytest.mark.parametrize("counting_attack", ["fgsm", "pgd5"])
def test_adversarial_counting_is_never_below_both(counting_attack):
    torch.manual_seed(0)
    model = _Rough().eval()
    x, y = torch.rand(256, 1, 16, 16), torch.randint(0, 10, (256,))
    kwargs = dict(attacks=("clean", counting_attack), eps=0.05, return_per_sample=True)
    both = robust_accuracy(model, (x, y), **kwargs)
    adversarial = robust_accuracy(model, (x, y), counting="adversarial", **kwargs)
    assert adversarial.protocol["counting"] == "adversarial" and both.protocol["counting"] == "both"
    assert bool((adversarial.per_sample[counting_attack] >= both.per_sample[counting_attack]).all())
    assert torch.equal(adversarial.per_sample[counting_attack] & both.per_sample["clean"],
                       both.per_sample[counting_attack])
    assert adversarial[counting_attack] > both[counting_attack]  # an untrained model: x' of a miss can be right
    with pytest.raises(S2OError, match="unknown counting 'all'"):
        robust_accuracy(model, (x, y), attacks=("clean",), eps=0.05, counting="all")


def test_sigterm_ends_run_notebooks_in_one_line_with_an_interrupted_report(start_slow_notebook_run):
    run, out = start_slow_notebook_run(new_session=True)
    os.killpg(run.pid, signal.SIGTERM)  # as `timeout` or a CI job's limit does: the runner and its kernel
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    assert "interrupted in 00_slow.ipynb at code cell 1 of 1" in stderr and len(stderr.splitlines()) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted" and report["notebooks"][0]["status"] == "interrupted"


def test_sigterm_outside_a_cell_still_writes_an_interrupted_report(tmp_path, monkeypatch):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from s2o_lib.suite import runner

    (tmp_path / "nbs").mkdir()
    for name in ("00_a", "01_b"):
        nbformat.write(new_notebook(cells=[new_code_cell("1")]), tmp_path / "nbs" / f"{name}.ipynb")

    def killed_while_starting(self, path, result, **options):  # SIGTERM while no kernel (nbclient) handles it
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the run")

    monkeypatch.setattr(runner._Suite, "run_one", killed_while_starting)
    with pytest.raises(runner.NotebookInterrupted, match="interrupted in 00_a.ipynb"):
        runner.run_notebooks(None, profile="smoke", out=tmp_path / "out", notebook_dir=tmp_path / "nbs",
                             progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "interrupted"
    assert [n["status"] for n in report["notebooks"]] == ["interrupted", "not run"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
