"""Nothing silent (issue 14): changed settings on resume, non-finite training, bad tensors, one writer per folder,
step sizes, early one-line errors, Ctrl-C in run-notebooks and honest records."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import s2o_lib.train
from s2o_lib.attacks import pgd
from s2o_lib.checkpoint import load_checkpoint, save_checkpoint
from s2o_lib.config import get_profile, seed_everything
from s2o_lib.data import make_loader, tensors
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.lock import FolderBusy, folder_lock
from s2o_lib.models import build_model
from s2o_lib.settings import SettingsChanged, fit_options
from s2o_lib.suite.cli import main
from s2o_lib.suite.runner import cell_position
from s2o_lib.train import fit
from s2o_lib.zoo import overrides_key, run_folder, trained_model

pytestmark = pytest.mark.usefixtures("one_thread")
SMOKE = get_profile("smoke")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small(digits):
    """256 training digits as a TensorDataset."""
    return torch.utils.data.TensorDataset(*tensors(digits[0], n=256))


def _fit(train, folder, *, epochs=1, method="standard", **settings):
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    options = dict(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=1)
    options.update(settings)
    history = fit(model, make_loader(train, batch_size=64, shuffle=True, seed=0), method=method, epochs=epochs,
                  checkpoint_dir=folder, progress=False, **fit_options(**options))
    return model, history


def _cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err.strip()


def _train_argv(out, *extra, subset="128"):
    return ["train", "--method", "standard", "--profile", "smoke", "--epochs", "1", "--subset", subset,
            "--no-progress", "--out", str(out), *extra]


# ---------------------------------------------------------------------------------------------- 1. resume
def test_fit_refuses_to_resume_with_other_settings(tmp_path, small):
    _fit(small, tmp_path, lr=0.05)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(SettingsChanged, match=r"lr 0\.05 -> 0\.1.*resume=False") as info:
        _fit(small, tmp_path, epochs=2, lr=0.1)
    assert "eps" not in str(info.value)  # only what differs is named
    with pytest.raises(SettingsChanged, match=r"steps 1 -> 2"):
        _fit(small, tmp_path, epochs=2, attack_steps=2)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    _, history = _fit(small, tmp_path, epochs=2, lr=0.05)  # the same settings resume, and may train on
    assert history.epoch == [1, 2]
    with pytest.raises(SettingsChanged, match="epochs: 2 trained already, 1 asked for"):
        _fit(small, tmp_path, epochs=1, lr=0.05)
    _fit(small, tmp_path, epochs=1, lr=0.1, resume=False)  # the way out the message names


def test_cli_refuses_to_resume_with_another_seed_or_subset(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_train_argv(out), capsys)[0] == 0
    metrics = (out / "metrics.json").read_text()
    recorded = json.loads(metrics)
    assert recorded["subset"] == 128 and recorded["seed"] == 0 and recorded["batch_size"] == SMOKE.batch_size
    assert recorded["settings"]["lr"] == SMOKE.lr and recorded["settings"]["eps"] == SMOKE.eps
    for argv, said in ((_train_argv(out, "--seed", "1"), "seed 0 -> 1"),
                       (_train_argv(out, subset="64"), "subset 128 -> 64"),
                       (_train_argv(out, "--lr", "0.2"), "lr 0.05 -> 0.2"),
                       (_train_argv(out, "--eps", "0.1"), "eps 0.15 -> 0.1")):
        code, err = _cli(argv, capsys)
        assert code == 2 and said in err and "--no-resume" in err and "resume=False" not in err, err
        assert len(err.splitlines()) == 1
    assert (out / "metrics.json").read_text() == metrics  # not rewritten with the new seed


def test_cli_method_mismatch_says_no_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_train_argv(out), capsys)[0] == 0
    argv = _train_argv(out)
    argv[2] = "at"
    code, err = _cli(argv, capsys)
    assert code == 2 and "trained with method 'standard', not 'at'" in err and "--no-resume" in err


def test_zoo_gives_overrides_their_own_folder(tmp_path):
    assert overrides_key(SMOKE) == "" and overrides_key(SMOKE, eps=SMOKE.eps, lr=SMOKE.lr) == ""
    default = run_folder("at", profile=SMOKE, root=tmp_path)
    wider = run_folder("at", profile=SMOKE, root=tmp_path, eps=0.3, attack_steps=7)
    assert default.name == "at-seed0" and wider != default and wider.name.startswith("at-")
    assert wider == run_folder("at", profile=SMOKE, root=tmp_path, attack_steps=7, eps=0.3)  # stable
    assert run_folder("at", profile=SMOKE, root=tmp_path, eps=0.2) != wider
    assert run_folder("at", profile=SMOKE, root=tmp_path, tag="wide", eps=0.3).name == "at-wide-seed0"


def test_zoo_trains_overrides_instead_of_returning_the_cached_model(tmp_path):
    quick = dict(profile="smoke", root=tmp_path, progress=False, epochs=1, eval_n=32, eval_steps=1)
    _, first = trained_model("standard", **quick)
    _, second = trained_model("standard", lr=0.01, **quick)
    assert first.lr[0] == SMOKE.lr and second.lr[0] == 0.01  # its own run, not the cached one
    trained_model("standard", tag="mine", lr=0.01, **quick)
    with pytest.raises(S2OError, match=r"lr 0\.01 -> 0\.02; give these settings their own tag="):
        trained_model("standard", tag="mine", lr=0.02, **quick)


def test_zoo_names_a_cached_run_of_another_architecture_and_the_way_out(tmp_path):
    sizes = dict(epochs=1, eval_n=32, eval_steps=1)
    trained_model("standard", profile=SMOKE.with_(arch="small-cnn"), root=tmp_path, progress=False, **sizes)
    folder = run_folder("standard", profile=SMOKE, root=tmp_path, **sizes)  # the cache of an older smoke, say
    with pytest.raises(S2OError, match=rf"holds a small-cnn model \(arch='small-cnn'\) but the model given is "
                                       rf"small-cnn-w24 .*; .*delete {re.escape(str(folder))}"):
        trained_model("standard", profile=SMOKE, root=tmp_path, progress=False, **sizes)


# ---------------------------------------------------------------------------------------------- 2. non-finite
@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 0.0, -0.1])
def test_bad_learning_rates_are_refused(small, lr):
    with pytest.raises(S2OError, match="lr must be > 0"):
        _fit(small, None, lr=lr)


def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tmp_path, small, monkeypatch):
    _fit(small, tmp_path, epochs=1)
    files = {name: (tmp_path / name).read_bytes() for name in ("checkpoint.pt",)}
    train_epoch = s2o_lib.train._Training.train_epoch

    def diverging(self, epoch):
        _, acc = train_epoch(self, epoch)
        return float("nan"), acc

    monkeypatch.setattr(s2o_lib.train._Training, "train_epoch", diverging)
    with pytest.raises(S2OError, match=r"diverged: the mean loss of epoch 2 is nan.*still holds epoch 1"):
        _fit(small, tmp_path, epochs=3)
    for name, content in files.items():
        assert (tmp_path / name).read_bytes() == content, name
    assert load_checkpoint(tmp_path / "checkpoint.pt")["meta"]["epoch"] == 1


def test_a_huge_learning_rate_ends_in_an_error_not_a_nan_model(tmp_path, small):
    with pytest.raises(S2OError, match="training diverged.*nothing was saved.*Lower the learning rate"):
        _fit(small, tmp_path, lr=1e6)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "best.pt").exists()


def test_cli_a_diverging_lr_ends_in_an_error_with_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _cli(_train_argv(out, "--lr", "1e6", subset="1024"), capsys)
    assert code == 2 and "training diverged" in err and not (out / "checkpoint.pt").exists(), err


# ---------------------------------------------------------------------------------------------- 3. images, labels
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("small-cnn", num_classes=10, in_channels=1).eval()


@pytest.fixture(scope="module")
def xy(digits_test_tensors):
    x, y = digits_test_tensors
    return x[:16], y[:16]


def test_nan_images_are_refused(model, xy):
    x, y = xy
    nan = torch.full_like(x, float("nan"))
    with pytest.raises(S2OError, match="images contain NaN"):
        pgd(model, nan, y, eps=0.1, alpha=0.02, steps=2)
    with pytest.raises(S2OError, match="images contain NaN"):
        robust_accuracy(model, (nan, y), attacks=("clean",), eps=0.1)
    part = x.clone()
    part[3, 0, 2, 2] = float("nan")
    with pytest.raises(S2OError, match="images contain NaN"):
        robust_accuracy(model, (part, y), attacks=("clean",), eps=0.1)


@pytest.mark.parametrize("shift", [10, 1])
def test_labels_outside_the_classes_are_refused(model, xy, shift):
    x, y = xy
    y = y.clone()
    y[0] = 9
    bad = y + shift
    with pytest.raises(S2OError, match=r"labels must lie in 0\.\.9"):
        robust_accuracy(model, (x, bad), attacks=("clean",), eps=0.1)
    with pytest.raises(S2OError, match=r"labels must lie in 0\.\.9"):
        pgd(model, x, bad, eps=0.1, alpha=0.02, steps=1)
    with pytest.raises(S2OError, match="labels must lie in"):
        robust_accuracy(model, (x, y - 20), attacks=("clean",), eps=0.1)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_any_integer_label_dtype_is_accepted(model, xy, dtype):
    x, y = xy
    g = torch.Generator().manual_seed(0)
    expected = pgd(model, x, y, eps=0.1, alpha=0.02, steps=2, generator=g)
    got = pgd(model, x, y.to(dtype), eps=0.1, alpha=0.02, steps=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, expected)
    assert robust_accuracy(model, (x, y.to(dtype)), attacks=("clean",), eps=0.1) == \
        robust_accuracy(model, (x, y), attacks=("clean",), eps=0.1)


def test_float_labels_are_refused(model, xy):
    x, y = xy
    with pytest.raises(S2OError, match="labels must be integer class indices"):
        robust_accuracy(model, (x, y.float() + 0.5), attacks=("clean",), eps=0.1)


def test_fit_refuses_nan_images_and_bad_labels_before_training(tmp_path, small):
    x, y = small.tensors
    nan = x.clone()
    nan[5] = float("nan")
    for data, message in (((nan, y), "images contain NaN"), ((x, y + 1), r"labels must lie in 0\.\.9"),
                          ((x, y.float()), "labels must be integer")):
        with pytest.raises(S2OError, match=message):
            _fit(torch.utils.data.TensorDataset(*data), tmp_path / message[:6])
        assert not (tmp_path / message[:6] / "checkpoint.pt").exists()
    _fit(torch.utils.data.TensorDataset(x, y.to(torch.int32)), None)  # any integer dtype trains


# ---------------------------------------------------------------------------------------------- 4. one writer
HOLD = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode()); print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _hold(folder: Path, seconds: float) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder / ".lock"), str(seconds)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_the_cli_fails_fast_naming_the_process_that_holds_the_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    holder = _hold(out, 60)
    try:
        tick = time.perf_counter()
        code, err = _cli(_train_argv(out), capsys)
        assert code == 2 and f"pid {holder.pid}" in err and "--out" in err and len(err.splitlines()) == 1, err
        assert time.perf_counter() - tick < 30 and not (out / "checkpoint.pt").exists()
        with pytest.raises(FolderBusy, match=f"pid {holder.pid}"), folder_lock(out):
            pass
        with monkeypatch.context() as patch:  # a torchrun rank other than 0 writes nothing, so takes no lock
            patch.setenv("RANK", "1")
            with folder_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert _cli(_train_argv(out), capsys)[0] == 0  # released when its process ends (here: killed)


def test_the_lock_is_reentrant_and_removes_stale_temporaries(tmp_path, small):
    stale = tmp_path / ".checkpoint.pt.k1ll3d.tmp"
    tmp_path.mkdir(exist_ok=True)
    stale.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.tmp"
    other.write_text("not ours")
    with folder_lock(tmp_path):
        _fit(small, tmp_path)  # fit takes the same lock again inside
    assert not stale.exists() and other.exists()
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


def test_the_zoo_waits_for_the_other_process_then_loads_its_model(tmp_path, monkeypatch):
    code = ("import sys; from s2o_lib.zoo import trained_model; "
            "trained_model('standard', profile='smoke', root=sys.argv[1], progress=False, epochs=1, eval_n=32)")
    other = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                             env={**os.environ, "S2O_PROFILE": "smoke"})
    lock = run_folder("standard", profile=SMOKE, root=tmp_path, epochs=1, eval_n=32) / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().strip() == str(other.pid)) and time.time() < deadline:
        time.sleep(0.05)

    def no_training(self, epoch):
        raise AssertionError("trained again instead of loading the other process's model")

    monkeypatch.setattr(s2o_lib.train._Training, "train_epoch", no_training)
    _, history = trained_model("standard", profile="smoke", root=tmp_path, progress=False, epochs=1, eval_n=32)
    assert other.wait(timeout=120) == 0
    assert history.epoch == [1]


# ---------------------------------------------------------------------------------------------- 5. step, eps
def test_alpha_zero_and_eps_above_one_are_refused(model, xy, small, tmp_path, capsys):
    x, y = xy
    with pytest.raises(S2OError, match=r"alpha \(step size\) must be > 0 with 10 step"):
        pgd(model, x, y, eps=0.1, alpha=0.0, steps=10)
    with pytest.raises(S2OError, match="alpha.*must be > 0"):
        robust_accuracy(model, (x, y), attacks=("clean", "pgd10"), eps=0.1, alpha=0.0)
    with pytest.raises(S2OError, match="alpha.*must be > 0"):
        _fit(small, None, alpha=0.0)
    with pytest.raises(S2OError, match="eval_alpha.*must be > 0"):
        _fit(small, None, eval_alpha=0.0)
    assert pgd(model, x, y, eps=0.0, alpha=0.0, steps=1).equal(x)  # at eps = 0 there is nowhere to go
    for call in (lambda: pgd(model, x, y, eps=8, alpha=2 / 255, steps=1),
                 lambda: robust_accuracy(model, (x, y), attacks=("clean",), eps=8),
                 lambda: _fit(small, None, eps=8.0)):
        with pytest.raises(S2OError, match="8 meant as 8/255\\? pass 8/255 ≈ 0.031"):
            call()
    code, err = _cli(_train_argv(tmp_path / "a", "--alpha", "0"), capsys)
    assert code == 2 and "must be > 0" in err
    code, err = _cli(_train_argv(tmp_path / "b", "--eps", "8"), capsys)
    assert code == 2 and "8 meant as 8/255" in err


# ---------------------------------------------------------------------------------------------- 6. early errors
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["--workers", "-1"], "--workers must be an integer >= 0, got -1"),
        (["--lr", "nan"], "lr must be > 0"),
        (["--epochs", "-1"], "epochs must be an integer >= 0"),
    ],
)
def test_cli_train_checks_flags_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr("s2o_lib.data.load_dataset", lambda *a, **k: pytest.fail("loaded data before checking"))
    code, err = _cli(_train_argv(tmp_path / "run", *extra), capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_cli_train_checks_the_output_folder_first(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("s2o_lib.data.load_dataset", lambda *a, **k: pytest.fail("loaded data before checking"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, err = _cli(_train_argv(a_file), capsys)
    assert code == 2 and "is a file, not a folder" in err
    code, err = _cli(_train_argv(Path("/proc/s2o-no/run")), capsys)
    assert code == 2 and "cannot create --out /proc/s2o-no/run" in err
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    code, err = _cli(_train_argv(tmp_path / "ro"), capsys)
    assert code == 2 and "is not writable" in err


def test_the_cli_turns_os_errors_into_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_train_argv(out), capsys)[0] == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _cli(["evaluate", str(out / "checkpoint.pt"), "--attacks", "clean", "--n", "10", "--profile",
                      "smoke", "--json", str(blocker / "eval.json")], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: x.permute(0, 2, 3, 1).expand(-1, -1, -1, 3), r"looks like \(B, H, W, C\)"),
        (lambda x: x[0], r"one image \(C, H, W\)\? add the batch dimension"),
        (lambda x: x.double(), "images are torch.float64 but the model computes in torch.float32"),
        (lambda x: x[:0], "empty"),
        (lambda x: x.expand(-1, 3, -1, -1), "takes 1-channel images but the data has 3 channel"),
        (lambda x: (x * 255).to(torch.uint8), "floating-point"),
    ],
)
def test_image_shape_and_dtype_mistakes_are_one_line(model, xy, make, message):
    x, y = xy
    bad = make(x)
    labels = y[: len(bad)] if bad.ndim == 4 else y[:1]
    with pytest.raises(S2OError, match=message):
        pgd(model, bad, labels, eps=0.1, alpha=0.02, steps=1)
    if bad.ndim == 4 and len(bad):  # (an empty or unbatched tuple fails earlier, in tensors(), as its own error)
        with pytest.raises(S2OError, match=message):
            robust_accuracy(model, (bad, labels), attacks=("clean",), eps=0.1)


def test_a_three_channel_checkpoint_on_one_channel_data(tmp_path, capsys):
    rgb = build_model("small-cnn", num_classes=10, in_channels=3)
    save_checkpoint(tmp_path / "rgb.pt", {"model": rgb.state_dict(), "meta": {"model": rgb.spec, "dataset": "digits"}})
    code, err = _cli(["evaluate", str(tmp_path / "rgb.pt"), "--attacks", "clean", "--n", "10", "--profile", "smoke"],
                     capsys)
    assert code == 2 and "takes 3-channel images but the data has 1 channel" in err


def test_fewer_classes_than_the_labels(xy):
    x, y = xy
    five = build_model("small-cnn", num_classes=5, in_channels=1).eval()
    with pytest.raises(S2OError, match=r"labels must lie in 0\.\.4 for a model with 5 classes"):
        robust_accuracy(five, (x, y), attacks=("clean",), eps=0.1)


@pytest.mark.parametrize(("setting", "message"), [({"eval_steps": 0}, "eval_steps must be an integer >= 1"),
                                                   ({"eval_n": 0}, "eval_n must be an integer >= 1")])
def test_empty_per_epoch_evaluations_are_refused(small, setting, message):
    with pytest.raises(S2OError, match=message):
        _fit(small, None, **setting)


# ---------------------------------------------------------------------------------------------- 7. run-notebooks
def test_cell_positions_count_code_cells_as_a_reader_does():
    from nbformat.v4 import new_code_cell, new_markdown_cell

    cells = [new_markdown_cell("# t"), new_code_cell("a"), new_markdown_cell("b"), new_code_cell("c")]
    assert cell_position(cells, 3) == "code cell 2 of 2"
    assert cell_position(cells, 1) == "code cell 1 of 2"
    assert cell_position(cells, 2) == "cell 3 of 4, counting markdown"


def test_ctrl_c_in_run_notebooks_is_reported_as_interrupted(start_slow_notebook_run):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell

    run, out = start_slow_notebook_run([new_markdown_cell("# slow"), new_code_cell("print('first')")])
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, (stdout, stderr)
    assert "interrupted in 00_slow.ipynb at code cell 2 of 2" in stderr and "AssertionError" not in stderr
    assert "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "interrupted" and report["notebooks"][0]["status"] == "interrupted"
    partial = nbformat.read(out / "00_slow.ipynb", as_version=4)
    assert "first" in json.dumps(partial.cells[1].outputs)


# ---------------------------------------------------------------------------------------------- 8. records
def test_eval_json_records_the_number_evaluated(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(_train_argv(out), capsys)[0] == 0
    report = tmp_path / "eval.json"
    assert _cli(["evaluate", str(out / "checkpoint.pt"), "--attacks", "clean", "--n", "100000", "--profile", "smoke",
                 "--json", str(report)], capsys)[0] == 0
    data = json.loads(report.read_text())
    assert data["n"] == 360 and data["n_requested"] == 100000


def test_checkpoints_honour_the_umask_and_sync_the_folder(tmp_path, monkeypatch):
    synced = []
    fsync = os.fsync

    def recording(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.pt", {"model": {}})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        path = save_checkpoint(tmp_path / "n.pt", {"model": {}})
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    assert synced == [False, True, False, True]  # the file, then its folder after the rename
