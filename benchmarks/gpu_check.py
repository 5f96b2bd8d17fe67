"""The prepared GPU check: one call on a lent GPU, its figures in one JSON file.

    python benchmarks/gpu_check.py --out results/gpu            # on a GPU: a few minutes
    python benchmarks/gpu_check.py --cpu --out /tmp/gpu-check   # the same code path on the CPU, tiny sizes, < 1 min

What it measures, with the `class` profile's model (`preact-resnet18-w32`, CIFAR-shaped random images):

- the device: name, compute capability, torch / CUDA / cuDNN versions, and the precision that
  `s2o_lib.fast.preferred_precision` chooses there (what ``precision="auto"``, the ``class`` profile, trains in);
- per precision (fp32, bf16, fp16; each where the device runs it): seconds per `training_step` of PGD-AT
  (the class profile's PGD-5 on a GPU), images/s, the sustained TFLOP/s of benchmarks/class_budget.py's FLOP
  count (pass it as ``class_budget.py --tflops`` / ``--tflops-fp16``) and the peak GPU memory;
- agreement: one AT+AWP+S²O step from the same weights and batch in fp32 and in fp16 (fp16 with its loss
  scaler): the two losses and their relative difference, against `LOSS_TOLERANCE`;
- a `fit` of one epoch at ``precision="auto"`` with a checkpoint, whose ``scaler`` entry must exist exactly when
  the run trained in fp16.

``--cpu`` runs the same code on the CPU at tiny sizes (the small CNN on 16×16 images, batch 8, PGD-1, two timed
steps), with ``S2O_CPU_FP16=1`` so that fp16 (refused on a CPU for training) runs its code path there; its
timings say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from class_budget import count_unit, step_passes  # benchmarks/ is on sys.path when this script runs

from s2o_lib import fast
from s2o_lib.awp import AWP
from s2o_lib.checkpoint import load_checkpoint
from s2o_lib.config import get_profile, seed_everything
from s2o_lib.defenses import DefenseConfig, training_step
from s2o_lib.fast import DeviceLoader, autocast, grad_scaler, preferred_precision
from s2o_lib.models import build_model
from s2o_lib.settings import fit_options
from s2o_lib.train import CHECKPOINT_NAME, fit

SCHEMA = 1
#: fp16 and fp32 losses of one step from the same weights and batch may differ by this fraction of the fp32 one.
LOSS_TOLERANCE = 0.02
SIZES = {"gpu": {"arch": get_profile("class").arch, "image": 32, "batch": 128, "steps": 10, "warmup": 3,
                 "attack_steps": 5, "fit_images": 1024},
         "cpu": {"arch": "small-cnn", "image": 16, "batch": 8, "steps": 2, "warmup": 1, "attack_steps": 1,
                 "fit_images": 16}}


def device_facts(device: torch.device) -> dict[str, Any]:
    """What the card is and which precision ``"auto"`` picks on it."""
    facts: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
                             "cudnn": torch.backends.cudnn.version(), "python": platform.python_version()}
    if device.type == "cuda":
        facts.update(name=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                     bf16_supported=torch.cuda.is_bf16_supported(),
                     memory_gb=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    else:
        facts.update(name=platform.processor() or platform.machine(), capability=None, bf16_supported=True)
    facts["chosen_precision"] = preferred_precision(device)
    return facts


def precisions(device: torch.device) -> dict[str, str | None]:
    """Each precision and why it is skipped here (``None``: it runs)."""
    out: dict[str, str | None] = {"fp32": None, "bf16": None, "fp16": None}
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        out["bf16"] = "torch.cuda.is_bf16_supported() is False"
    return out


def _model(device: torch.device, sizes: dict[str, Any]) -> torch.nn.Module:
    seed_everything(0)
    return build_model(sizes["arch"], num_classes=10, in_channels=3).to(device)


def _batch(device: torch.device, sizes: dict[str, Any], n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, sizes["image"], sizes["image"], generator=g)
    return x.to(device), torch.randint(0, 10, (n,), generator=g).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(device: torch.device, precision: str, sizes: dict[str, int]) -> dict[str, Any]:
    """Seconds per PGD-AT training step at ``precision``, images/s, TFLOP/s of class_budget's count, peak memory."""
    model = _model(device, sizes)
    x, y = _batch(device, sizes, sizes["batch"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    config = DefenseConfig(eps=8 / 255, alpha=2 / 255, steps=sizes["attack_steps"]).for_method("at")
    scaler = grad_scaler(device, precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, skipped = [], 0
    for i in range(sizes["warmup"] + sizes["steps"]):
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, precision):
            result = training_step(model, x, y, method="at", config=config, optimizer=opt, scaler=scaler)
        _sync(device)
        if i >= sizes["warmup"]:
            times.append(time.perf_counter() - t0)
            skipped += result.skipped
    seconds = sorted(times)[len(times) // 2]
    unit = count_unit(build_model(sizes["arch"], num_classes=10), shape=(3, sizes["image"], sizes["image"]))
    flops = step_passes("at", sizes["attack_steps"]).flops(unit) * len(y)
    return {"seconds_per_step": seconds, "images_per_s": len(y) / seconds, "tflops": flops / seconds / 1e12,
            "steps_timed": len(times), "steps_skipped_by_scaler": skipped, "loss": float(result.loss),
            "peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def agreement(device: torch.device, sizes: dict[str, int]) -> dict[str, Any]:
    """One AT+AWP+S²O step from the same weights and batch in fp32 and in fp16 (with the scaler): the losses."""
    x, y = _batch(device, sizes, sizes["batch"])
    config = DefenseConfig(eps=8 / 255, alpha=2 / 255, steps=sizes["attack_steps"], awp_warmup=0)
    config = config.for_method("at+awp+s2o")
    losses = {}
    for precision in ("fp32", "fp16"):
        model = _model(device, sizes)
        awp = AWP(model, gamma=config.awp_gamma, lr=config.awp_lr)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        torch.manual_seed(1)  # the same random start of the attack
        with autocast(device, precision):
            result = training_step(model, x, y, method="at+awp+s2o", config=config, optimizer=opt, awp=awp,
                                   scaler=grad_scaler(device, precision))
        losses[precision] = float(result.loss)
    relative = abs(losses["fp16"] - losses["fp32"]) / abs(losses["fp32"])
    return {"method": "at+awp+s2o", "loss_fp32": losses["fp32"], "loss_fp16": losses["fp16"],
            "relative_difference": relative, "tolerance": LOSS_TOLERANCE, "ok": relative <= LOSS_TOLERANCE}


def fit_check(device: torch.device, sizes: dict[str, int]) -> dict[str, Any]:
    """One epoch of `fit` at ``precision="auto"`` with a checkpoint: its precision and the scaler's saved state."""
    x, y = _batch(device, sizes, sizes["fit_images"])
    loader = DeviceLoader((x * 255).round().to(torch.uint8), y, batch_size=sizes["batch"], shuffle=True,
                          augment=True, device=device)
    model = _model(device, sizes)
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        history = fit(model, loader, method="at+s2o", epochs=1, checkpoint_dir=folder, progress=False,
                      **fit_options(lr=0.05, attack_steps=sizes["attack_steps"], schedule="onecycle",
                                    precision="auto"))
        seconds = time.perf_counter() - t0
        state = load_checkpoint(Path(folder) / CHECKPOINT_NAME)
    precision = state["meta"]["settings"]["precision"]
    scaler = state.get("scaler")
    return {"precision": precision, "seconds": seconds, "train_loss": history.train_loss[-1],
            "scaler_saved": scaler is not None, "scaler": scaler,
            "ok": (scaler is not None) == (precision == "fp16") and math.isfinite(history.train_loss[-1])}


def run(cpu: bool) -> dict[str, Any]:
    if cpu:
        os.environ[fast.CPU_FP16_ENV] = "1"  # fp16's code path on the CPU (refused for training there otherwise)
        torch.set_num_threads(min(2, torch.get_num_threads()))
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible; run with --cpu for the CPU dry run")
    device = torch.device("cpu" if cpu else "cuda")
    mode = "cpu" if cpu else "gpu"
    sizes = SIZES[mode]
    t0 = time.perf_counter()
    report: dict[str, Any] = {"schema": SCHEMA, "mode": mode, "sizes": sizes,
                              "device": device_facts(device), "throughput": {}}
    for precision, skip in precisions(device).items():
        report["throughput"][precision] = {"skipped": skip} if skip else time_steps(device, precision, sizes)
    fp32 = report["throughput"]["fp32"]["seconds_per_step"]
    for figures in report["throughput"].values():
        if "seconds_per_step" in figures:
            figures["speedup_over_fp32"] = fp32 / figures["seconds_per_step"]
    report["agreement"] = agreement(device, sizes)
    report["fit"] = fit_check(device, sizes)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["seconds"] = time.perf_counter() - t0
    report["ok"] = report["agreement"]["ok"] and report["fit"]["ok"]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="the same code path on the CPU at tiny sizes (< 1 min)")
    parser.add_argument("--out", required=True, help="folder for the one JSON file (gpu_check.json)")
    args = parser.parse_args(argv)
    report = run(args.cpu)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    summary = {p: round(f["images_per_s"], 1) for p, f in report["throughput"].items() if "images_per_s" in f}
    print(f"{report['device']['name']}: chosen {report['device']['chosen_precision']}, images/s {summary}, "
          f"fp16/fp32 loss difference {report['agreement']['relative_difference']:.2e}, "
          f"{'ok' if report['ok'] else 'NOT OK'}; {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
