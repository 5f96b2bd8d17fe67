"""Training-step speed of the library's methods against the released-code steps, as ratios in one run.

    python benchmarks/bench_training.py                                  # CPU: small-cnn, 3×32×32, batch 64
    python benchmarks/bench_training.py --arch preact-resnet18 --batch 128 --device cuda
    python benchmarks/bench_training.py --json benchmarks/cpu.json

Every step runs on the same model and the same batch. Steps are interleaved round-robin (so drift in
machine speed hits every method alike) after warm-up, and the median is reported. Ratios, not seconds,
are the result: seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from released_steps import RELEASED

from s2o_lib.awp import AWP
from s2o_lib.defenses import DefenseConfig, training_step
from s2o_lib.fast import autocast, prepare_model
from s2o_lib.methods import parse_method
from s2o_lib.models import build_model

METHODS = ("at", "at+s2o", "trades", "trades+s2o", "trades+awp+s2o")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_steps(arch: str, device: torch.device, x: torch.Tensor, y: torch.Tensor, steps: int, *,
               precision: str = "fp32", channels_last: bool = False, compile: bool = False):
    """One closure per (implementation, method), each with its own model copy and optimiser.

    The fast options apply to the library's steps only; the released-code steps stay fp32 and plain.
    """
    x_fast = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    base = build_model(arch, num_classes=10, in_channels=x.shape[1]).to(device)
    config = DefenseConfig(steps=steps)
    closures = {}
    for method in METHODS:
        model = prepare_model(copy.deepcopy(base), channels_last=channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        awp = AWP(model) if parse_method(method).awp else None
        step_model = prepare_model(model, compile=compile)

        def library_step(m=step_model, o=opt, a=awp, meth=method):
            with autocast(device, precision):
                training_step(m, x_fast, y, method=meth, config=config, optimizer=o, awp=a)

        closures[f"library {method}"] = library_step
        model_r = copy.deepcopy(base)
        opt_r = torch.optim.SGD(model_r.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        proxy = copy.deepcopy(base)
        proxy_opt = torch.optim.SGD(proxy.parameters(), lr=0.01)
        closures[f"released {method}"] = (
            lambda m=model_r, o=opt_r, p=proxy, po=proxy_opt, f=RELEASED[method]: f(
                m, o, x, y, eps=config.eps, alpha=config.alpha, steps=config.steps, proxy=p, proxy_opt=po
            )
        )
    return closures


def measure(closures, device: torch.device, *, warmup: int, repeats: int) -> dict[str, float]:
    for fn in closures.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in closures}
    for _ in range(repeats):
        for name, fn in closures.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="image side (3 channels)")
    parser.add_argument("--steps", type=int, default=10, help="attack steps (the paper: 10)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="library steps only")
    parser.add_argument("--channels-last", action="store_true", help="library steps only")
    parser.add_argument("--compile", action="store_true", help="torch.compile the library's model")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    medians = measure(make_steps(args.arch, device, x, y, args.steps, precision=args.precision,
                                  channels_last=args.channels_last, compile=args.compile), device, warmup=args.warmup, repeats=args.repeats)

    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# training step, {args.arch}, batch {args.batch}, 3x{args.size}x{args.size}, PGD-{args.steps}, "
          f"{device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, library: "
          f"{args.precision}{', channels-last' if args.channels_last else ''}{', compiled' if args.compile else ''}")
    print("| method | library (ms) | released (ms) | library img/s | released img/s | released / library | library / library AT |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for method in METHODS:
        lib, rel = medians[f"library {method}"], medians[f"released {method}"]
        ratio_at = lib / medians["library at"]
        rows.append({"method": method, "library_s": lib, "released_s": rel, "speedup": rel / lib, "vs_at": ratio_at})
        print(f"| {method} | {1000 * lib:.1f} | {1000 * rel:.1f} | {args.batch / lib:.0f} | {args.batch / rel:.0f} | "
              f"{rel / lib:.2f}x | {ratio_at:.3f} |")
    for base in ("at", "trades"):
        overhead = medians[f"library {base}+s2o"] / medians[f"library {base}"] - 1
        print(f"S²O overhead over its base: {base}+s2o vs {base}: {100 * overhead:+.1f}%")
    # The paper-at-prn18 preset: 50 000 images / batch 128 = 391 steps per epoch, 200 epochs (training only).
    steps_total = -(-50_000 // args.batch) * 200
    lib_h, rel_h = (medians[f"{k} at+s2o"] * steps_total / 3600 for k in ("library", "released"))
    print(f"estimated paper-at-prn18 training time at this step ({args.arch}, batch {args.batch}): "
          f"library {lib_h:.2f} h, released-code {rel_h:.2f} h (training steps only; per-epoch PGD evaluation extra)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "device": name,
                                         "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
