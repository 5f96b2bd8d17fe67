"""torchrun data parallelism (`s2o_lib.distributed`): on CPUs with gloo, two processes against one.

Two processes are started either with ``torch.multiprocessing.spawn`` (library calls) or with
``python -m torch.distributed.run`` (the command line, as a user launches it).

The equivalence test compares weights after a few steps. Two things that are legitimately per process are
pinned so that what is compared is DDP itself (gradient averaging, global S²O targets, AWP's global proxy step):
- BatchNorm normalises per process, so the model is small-cnn with its BatchNorm layers removed (torch's
  SyncBatchNorm, the option that makes BN global, runs only on GPUs);
- each process draws its attacks' random starts from its own generator, so the attacks are wrapped to seed each
  sample's start from its pixels (identical in one process and in two).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import s2o_lib.defenses as defenses
from s2o_lib import distributed
from s2o_lib.checkpoint import load_checkpoint
from s2o_lib.config import get_profile
from s2o_lib.data import load_dataset
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import build_model
from s2o_lib.train import fit, fit_options

SMOKE = get_profile("smoke")
ROOT = Path(__file__).resolve().parents[1]
METHODS = ("at", "trades+s2o", "trades+awp+s2o")
GLOBAL_BATCH = 32
SUBSET = 128  # 4 steps of 32
#: Weights of one process and of two agree to this (float32; sums over the batch are split differently).
ATOL = 1e-4


# --------------------------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _model_without_bn() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, nn.Identity())
    return model


def _per_sample_starts(attack):
    """``attack`` run sample by sample, each with a generator seeded from its pixels."""

    def run(model, x, *args, **kwargs):
        out = []
        for i in range(len(x)):
            generator = torch.Generator().manual_seed(zlib.crc32(x[i].numpy().tobytes()))
            rest = [a[i:i + 1] if torch.is_tensor(a) else a for a in args]
            out.append(attack(model, x[i:i + 1], *rest, generator=generator, **kwargs))
        return torch.cat(out)

    return run


def _train(method: str, *, world: int, rank: int) -> dict[str, torch.Tensor]:
    """A few steps of ``method`` on digits: global batch 32, as one of ``world`` processes."""
    train = load_dataset("digits", "train", subset=SUBSET, seed=0)
    loader = distributed.distributed_loader(train, batch_size=GLOBAL_BATCH, seed=0, rank=rank, world_size=world)
    model = _model_without_bn()
    if world > 1:
        launch = distributed.Launch(rank=rank, world_size=world, local_rank=rank, backend="gloo",
                                    device=torch.device("cpu"))
        model = distributed.wrap_model(model, launch=launch)
    settings = fit_options(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=3, awp_warmup=0)
    fit(model, loader, method=method, epochs=1, progress=False, **settings)
    return {k: v.detach().clone() for k, v in distributed.unwrap(model)[0].state_dict().items()}


def _equivalence_worker(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    defenses.pgd = _per_sample_starts(defenses.pgd)
    defenses.trades_kl_attack = _per_sample_starts(defenses.trades_kl_attack)
    for method in METHODS:
        weights = _train(method, world=world, rank=rank)
        torch.save(weights, Path(out) / f"{method}-rank{rank}.pt")
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------- training
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, monkeypatch):
    mp.spawn(_equivalence_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    monkeypatch.setattr(defenses, "pgd", _per_sample_starts(defenses.pgd))
    monkeypatch.setattr(defenses, "trades_kl_attack", _per_sample_starts(defenses.trades_kl_attack))
    for method in METHODS:
        single = _train(method, world=1, rank=0)
        initial = _model_without_bn().state_dict()
        ranks = [torch.load(tmp_path / f"{method}-rank{r}.pt", weights_only=True) for r in range(2)]
        assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in single), f"{method}: the ranks differ"
        gap = max((ranks[0][k] - v).abs().max().item() for k, v in single.items())
        moved = max((v - initial[k]).abs().max().item() for k, v in single.items())
        print(f"{method}: max |2 processes - 1 process| = {gap:.2e}, max weight change {moved:.2e}")
        assert gap <= ATOL, (method, gap, moved)
        assert moved > 20 * ATOL, (method, moved)  # the steps did move the weights
