"""Command line: train writes a checkpoint and metrics, evaluate writes JSON, errors are one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from s2o_lib.suite.cli import main


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--method", "at+s2o", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "2",
                 "--seed", "0", "--out", str(out), "--subset", "512", "--attack-steps", "2", "--no-progress",
                 "--profile", "smoke"])
    assert code == 0
    assert (out / "checkpoint.pt").is_file() and (out / "best.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "at+s2o" and len(metrics["history"]["epoch"]) == 2
    assert 0 <= metrics["final"]["eval_robust"] <= metrics["final"]["eval_clean"] <= 1

    report = tmp_path / "eval.json"
    code = main(["evaluate", str(out / "checkpoint.pt"), "--attacks", "clean,fgsm,pgd20,cw20", "--n", "100",
                 "--json", str(report), "--profile", "smoke"])
    assert code == 0
    acc = json.loads(report.read_text())["accuracy"]
    assert acc["pgd20"] <= acc["clean"] and acc["cw20"] <= acc["clean"] and acc["worst_case"] <= acc["pgd20"]
    assert "pgd20" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--method", "fgsm-at", "--dataset", "digits", "--epochs", "1", "--out", "{tmp}"], "unknown training method"),
        (["train", "--arch", "resnet50", "--dataset", "digits", "--epochs", "1", "--out", "{tmp}"], "unknown architecture"),
        (["train", "--dataset", "cifar10", "--epochs", "1", "--out", "{tmp}", "--data", "{tmp}"], "put torchvision's cifar10 files in"),
        (["train", "--preset", "paper-foo", "--out", "{tmp}"], "unknown preset"),
        (["train", "--method", "at", "--dataset", "digits", "--eps", "-0.1", "--epochs", "1", "--out", "{tmp}"], "eps must be"),
        (["evaluate", "{tmp}/missing.pt"], "no checkpoint at"),
        # a paper preset cut to a few epochs: its selection window says what to do, before any data is loaded
        (["train", "--preset", "paper-at-prn18", "--epochs", "2", "--out", "{tmp}", "--data", "{tmp}"],
         "eval_window (100, 110) starts after the run's last epoch (2)"),
        (["train", "--method", "at", "--dataset", "digits", "--eval-window", "100", "--out", "{tmp}"],
         "--eval-window takes FIRST-LAST"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--profile", "smoke"] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_help_and_presets(capsys):
    assert main(["presets"]) == 0
    assert "paper-at-prn18" in capsys.readouterr().out
    result = subprocess.run([sys.executable, "-m", "s2o_lib", "train", "--help"], capture_output=True, text=True, check=True)
    assert "--method" in result.stdout and "--preset" in result.stdout
