"""Data-parallel training throughput (images/s) for 1, 2, ... processes, and the scaling efficiency.

    python benchmarks/bench_ddp.py                                    # CPU, gloo: 1 and 2 processes, small-cnn
    python benchmarks/bench_ddp.py --device cuda --processes 1,2,4,8 --arch wrn-34-10 --batch 128
    python benchmarks/bench_ddp.py --json benchmarks/ddp_cpu.json

Every run trains the same model with `s2o_lib.defenses.training_step` (PGD-``steps`` training attack) on
random 3×32×32 images at the same **global** batch: one process runs the plain single-process step (no process
group, as without torchrun); N > 1 processes are started with ``torch.multiprocessing`` and each runs
B / N images through `torch.nn.parallel.DistributedDataParallel` (`s2o_lib.torchrun.wrap_model`: gloo on
CPUs, nccl on GPUs). After warm-up, the steps are timed between two barriers and the median of ``repeats``
timings is kept.

Scaling efficiency of N processes = (images/s with N) / (N × images/s with 1). On CPUs each process gets
``threads`` intra-op threads (default: cores / max N), and the 1-process baseline gets the same number, so
the efficiency measures DDP rather than threading; the 1-process run with every core is printed for contrast.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2o_lib import processes
from s2o_lib.awp import AWP
from s2o_lib.defenses import DefenseConfig, training_step
from s2o_lib.methods import parse_method
from s2o_lib.models import build_model
from s2o_lib.suite import torchrun


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _worker(rank: int, world: int, port: int, options: dict, out: str) -> None:
    """One process: build, wrap in DDP (world > 1), warm up, time ``repeats`` × ``timed`` steps."""
    torch.set_num_threads(options["threads"])
    cuda = options["device"] == "cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
        torchrun.use_process_group(device)
    torch.manual_seed(0)
    model = build_model(options["arch"], num_classes=10, in_channels=3).to(device)
    raw = model
    if world > 1:
        launch = torchrun.Launch(rank=rank, world_size=world, local_rank=rank, backend="", device=device)
        model = torchrun.wrap_model(model, launch=launch)
    method = parse_method(options["method"])
    optimizer = torch.optim.SGD(raw.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    awp = AWP(raw, gamma=5e-3, lr=0.1) if method.awp else None
    if awp is not None:
        processes.current().average_gradients(awp.proxy)
    per_process = options["batch"] // world
    generator = torch.Generator().manual_seed(rank)
    x = torch.rand(per_process, 3, 32, 32, generator=generator).to(device)
    y = torch.randint(0, 10, (per_process,), generator=generator).to(device)
    config = DefenseConfig(steps=options["steps"])

    def step() -> None:
        with processes.global_batch_statistics(world > 1):
            training_step(model, x, y, method=method, config=config, optimizer=optimizer, awp=awp)

    for _ in range(options["warmup"]):
        step()
    seconds = []
    for _ in range(options["repeats"]):
        _sync(device)
        torchrun.barrier()
        start = time.perf_counter()
        for _ in range(options["timed"]):
            step()
        _sync(device)
        torchrun.barrier()
        seconds.append(time.perf_counter() - start)
    if rank == 0:
        Path(out).write_text(json.dumps(seconds))
    if world > 1:
        dist.destroy_process_group()


def measure(world: int, options: dict) -> float:
    """Global images per second of ``world`` processes (median over repeats)."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "seconds.json")
        if world == 1:
            _worker(0, 1, 0, options, out)
        else:
            mp.spawn(_worker, args=(world, _free_port(), options, out), nprocs=world, join=True)
        seconds = statistics.median(json.loads(Path(out).read_text()))
    return options["batch"] * options["timed"] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default: 1,2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--method", default="trades+s2o")
    parser.add_argument("--batch", type=int, default=128, help="global batch size (default: 128)")
    parser.add_argument("--steps", type=int, default=10, help="training-attack steps (default: PGD-10)")
    parser.add_argument("--threads", type=int, help="intra-op threads per process on CPUs (default: cores / max N)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--timed", type=int, default=3, help="steps per timing (default: 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timings, median kept (default: 3)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(counts))
    options = {k: getattr(args, k) for k in ("device", "arch", "method", "batch", "steps", "warmup", "timed", "repeats")}
    options["threads"] = threads
    rows = {n: measure(n, options) for n in counts}
    all_cores = measure(1, {**options, "threads": os.cpu_count() or 1}) if args.device == "cpu" else None
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"{args.method}, {args.arch}, global batch {args.batch}, PGD-{args.steps}, {args.device} ({card}), "
          f"torch {torch.__version__}, {threads} thread(s) per process")
    print("| processes | images/s | speed-up | scaling efficiency |\n|---|---|---|---|")
    for n, ips in rows.items():
        print(f"| {n} | {ips:.1f} | {ips / rows[counts[0]]:.2f}x | {ips / (n * rows[counts[0]]) * counts[0]:.0%} |")
    if all_cores is not None:
        print(f"(1 process with all {os.cpu_count()} threads: {all_cores:.1f} images/s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"options": options, "card": card, "images_per_s": rows,
                                               "one_process_all_threads": all_cores}, indent=2))


if __name__ == "__main__":
    main()
