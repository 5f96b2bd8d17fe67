"""benchmarks/gpu_check.py --cpu: the prepared GPU check's own code path, run on the CPU, and its one JSON file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_on_the_cpu_writes_one_sane_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    env.pop("S2O_CPU_FP16", None)  # the script sets it itself in --cpu mode
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu", "--out", str(tmp_path)],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_check.json"]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["schema"] == 1 and report["mode"] == "cpu" and report["ok"] is True
    device = report["device"]
    assert device["type"] == "cpu" and device["torch"] and device["chosen_precision"] == "fp32"
    assert set(report["throughput"]) == {"fp32", "bf16", "fp16"}
    for precision, figures in report["throughput"].items():
        assert figures["steps_timed"] == report["sizes"]["steps"], precision
        assert figures["seconds_per_step"] > 0 and figures["images_per_s"] > 0 and figures["tflops"] > 0, precision
        assert math.isclose(figures["images_per_s"] * figures["seconds_per_step"], report["sizes"]["batch"])
        assert math.isfinite(figures["loss"]) and figures["steps_skipped_by_scaler"] == 0
    agreement = report["agreement"]
    assert agreement["relative_difference"] <= agreement["tolerance"] and agreement["ok"]
    assert math.isclose(agreement["loss_fp16"], agreement["loss_fp32"], rel_tol=agreement["tolerance"])
    fit = report["fit"]
    assert fit["precision"] == "fp32" and fit["scaler_saved"] is False and math.isfinite(fit["train_loss"])
    assert "fp16" in done.stdout and "ok" in done.stdout
