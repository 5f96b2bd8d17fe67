"""torchrun data parallelism (`s2o_lib.suite.torchrun`): on CPUs with gloo, two processes against one.

Two processes are started either with ``torch.multiprocessing.spawn`` (library calls) or with
``python -m torch.distributed.run`` (the command line, as a user launches it).

The equivalence test compares weights after a few steps. Two things that are legitimately per process are
pinned so that what is compared is DDP itself (gradient averaging, global S²O targets, AWP's global proxy step):
- BatchNorm normalises per process, so the model is small-cnn with its BatchNorm layers removed (torch's
  SyncBatchNorm, the option that makes BN global, runs only on GPUs);
- each process draws its attacks' random starts from its own generator, so the attacks are wrapped to seed each
  sample's start from its pixels (identical in one process and in two).
With both pinned, AT agrees to ~1e-8 and the TRADES methods to ~1e-5 (TRADES' attack takes the sign of tiny
KL gradients, which float rounding can flip); the tolerance is 1e-4. An AWP proxy stepping on its shard's
gradient misses it by ~1e-3. Per-shard S²O targets stay within the tolerance over these few steps from
initialisation, so the global targets are checked directly (test_soft_targets_and_awp_proxy_step_...).
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
import torch.nn.functional as F
from torch import nn

from s2o_lib import defenses, processes
from s2o_lib.awp import AWP
from s2o_lib.checkpoint import load_checkpoint, load_model, save_checkpoint
from s2o_lib.config import get_profile
from s2o_lib.data import load_dataset
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import build_model, model_spec
from s2o_lib.s2o import soft_target_matrix
from s2o_lib.settings import fit_options
from s2o_lib.suite import torchrun
from s2o_lib.train import fit

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
    torchrun.use_process_group()


def _leave() -> None:
    """Leave the process group and end the spawned worker at once: torch's teardown at interpreter exit sometimes
    aborts ("terminate called without an active exception", SIGABRT) after the work is done and saved, about one
    run in six here, which `mp.spawn` reports as a failed process."""
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
    loader = torchrun.distributed_loader(train, batch_size=GLOBAL_BATCH, seed=0, rank=rank, world_size=world)
    model = _model_without_bn()
    if world > 1:
        launch = torchrun.Launch(rank=rank, world_size=world, local_rank=rank, backend="gloo",
                                    device=torch.device("cpu"))
        model = torchrun.wrap_model(model, launch=launch)
    settings = fit_options(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=3, awp_warmup=0)
    fit(model, loader, method=method, epochs=1, progress=False, **settings)
    return {k: v.detach().clone() for k, v in processes.unwrap(model)[0].state_dict().items()}


def _equivalence_worker(rank: int, world: int, port: int, out: str) -> None:
    _join(rank, world, port)
    defenses.pgd = _per_sample_starts(defenses.pgd)
    defenses.trades_kl_attack = _per_sample_starts(defenses.trades_kl_attack)
    for method in METHODS:
        weights = _train(method, world=world, rank=rank)
        torch.save(weights, Path(out) / f"{method}-rank{rank}.pt")
    _leave()


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


# --------------------------------------------------------------------------------------------- command line
TRAIN = ["train", "--method", "at", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "2", "--subset", "192",
         "--batch-size", "32", "--attack-steps", "2", "--no-progress"]
STEPS_PER_EPOCH = 192 // 32


def _launch(args: list[str], *, processes: int = 2, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=processes tests/ddp_launch.py ARGS`` (one process: plain python), on CPUs."""
    runner = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
              "--master_port", str(_free_port())] if processes > 1 else [sys.executable]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "S2O_PROFILE": "smoke", "CUDA_VISIBLE_DEVICES": "",
                   "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([*runner, str(ROOT / "tests" / "ddp_launch.py"), *args], cwd=ROOT, env=environment, check=False,
                          capture_output=True, text=True, timeout=240)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "checkpoint.pt")["model"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """An uninterrupted two-process AT run on digits (2 epochs of 6 steps of 2 × 16 images)."""
    out = tmp_path_factory.mktemp("ddp") / "uninterrupted"
    done = _launch([*TRAIN, "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_two_process_cli_run_writes_one_checkpoint_and_metrics(two_process_run):
    metrics = json.loads((two_process_run / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["backend"] == "gloo"
    assert metrics["history"]["epoch"] == [1, 2]
    state = load_checkpoint(two_process_run / "checkpoint.pt")
    assert state["meta"]["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])  # ranks seeded apart


def test_killed_rank_relaunch_resumes_and_equals_an_uninterrupted_run(two_process_run, tmp_path):
    out = tmp_path / "killed"
    crashed = _launch([*TRAIN, "--out", str(out)], env={"S2O_TEST_KILL_AT": str(STEPS_PER_EPOCH + 3)})
    assert crashed.returncode != 0
    assert load_checkpoint(out / "checkpoint.pt")["meta"]["epoch"] == 1  # died mid-way through epoch 2
    (tmp_path / "after-epoch-1").mkdir()
    (tmp_path / "after-epoch-1" / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    resumed = _launch([*TRAIN, "--out", str(out)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _weights(two_process_run), _weights(out)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history == json.loads((two_process_run / "metrics.json").read_text())["history"] | {
        "seconds": history["seconds"]}

    # The same epoch-1 checkpoint resumed by one process (no torchrun): completes and says what changed.
    single = tmp_path / "after-epoch-1"
    one = _launch([*TRAIN, "--out", str(single)], processes=1)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "resuming a 2-process run with 1 process(es) (32 images per process)" in one.stdout
    assert load_checkpoint(single / "checkpoint.pt")["meta"]["epoch"] == 2


def test_bad_launches_get_one_line_errors(tmp_path):
    not_divisible = _launch([*TRAIN, "--batch-size", "33", "--out", str(tmp_path / "a")])
    assert not_divisible.returncode != 0
    assert "error: the global batch size 33 does not divide over 2 processes; pass --batch-size 32 or 34" in (
        not_divisible.stderr)
    disagree = _launch([*TRAIN, "--out", str(tmp_path / "b")], env={"S2O_TEST_OUT_PER_RANK": "1"})
    assert disagree.returncode != 0
    assert "error: the processes disagree about --out (rank 0: " in disagree.stderr
    assert not (tmp_path / "b-rank0" / "checkpoint.pt").exists()


def test_nccl_on_a_cpu_and_other_bad_settings_are_refused():
    environ = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    with pytest.raises(S2OError, match="backend nccl needs one CUDA GPU per process and this process has none"):
        torchrun.start(backend="nccl", device="cpu", environ=environ)
    with pytest.raises(S2OError, match="unknown distributed backend 'mpi'"):
        torchrun.start(backend="mpi", environ=environ)  # type: ignore[arg-type]
    assert torchrun.start(environ={}) is None  # no torchrun: nothing happens
    assert torchrun.per_process_batch(128, 8) == 16
    with pytest.raises(S2OError, match="batch size 128 does not divide over 3 processes; pass --batch-size 126 or 129"):
        torchrun.per_process_batch(128, 3)
    launch = torchrun.Launch(rank=0, world_size=2, local_rank=0, backend="gloo", device=torch.device("cpu"))
    with pytest.raises(S2OError, match="--sync-bn needs CUDA GPUs"):
        torchrun.wrap_model(nn.Linear(2, 2), launch=launch, sync_bn=True)


# --------------------------------------------------------------------------------------------- global statistics
def _global_statistics_worker(rank: int, world: int, port: int) -> None:
    """S²O's soft targets and AWP's perturbation, computed on a shard under DDP, equal the whole batch's."""
    _join(rank, world, port)
    logits = torch.randn(32, 10, generator=torch.Generator().manual_seed(0)) * 3
    shard = slice(16 * rank, 16 * rank + 16)
    with processes.global_batch_statistics():
        targets = soft_target_matrix(logits[shard])
    assert (targets - soft_target_matrix(logits)).abs().max() < 1e-6
    assert (soft_target_matrix(logits[shard]) - soft_target_matrix(logits)).abs().max() > 1e-2  # outside: per shard

    images = torch.stack([load_dataset("digits", "test")[i][0] for i in range(32)])
    labels = torch.tensor([load_dataset("digits", "test")[i][1] for i in range(32)])

    def perturbation(xs: torch.Tensor, ys: torch.Tensor, *, averaged: bool) -> dict[str, torch.Tensor]:
        awp = AWP(_model_without_bn(), gamma=5e-3, lr=0.1)
        if averaged:
            processes.current().average_gradients(awp.proxy)
        return awp.perturbation(lambda m: F.cross_entropy(m(xs), ys))

    mine = perturbation(images[shard], labels[shard], averaged=True)
    whole = perturbation(images, labels, averaged=False)
    local = perturbation(images[shard], labels[shard], averaged=False)
    assert max((mine[k] - whole[k]).abs().max().item() for k in whole) < 1e-6
    assert max((local[k] - whole[k]).abs().max().item() for k in whole) > 1e-5
    _leave()


def test_soft_targets_and_awp_proxy_step_cover_the_global_batch():
    mp.spawn(_global_statistics_worker, args=(2, _free_port()), nprocs=2, join=True)


# --------------------------------------------------------------------------------------------- evaluation
#: White-box attacks whose results depend on their random starts (2 steps at ε = 0.1, 7 chunks of clean-correct
#: samples), and AutoAttack (one call per chunk) on fewer samples: it is the slow one.
EVALS = (
    {"attacks": ("clean", "fgsm", "pgd2", "cw2"), "n": 200, "batch_size": 32, "eps": 0.1, "alpha": 0.05},
    {"attacks": ("clean", "autoattack"), "autoattack_version": "fast", "n": 48, "batch_size": 16, "eps": 0.05},
)


def _evaluate(model: nn.Module, settings: dict, *, seed: int = 3, **extra) -> dict[str, torch.Tensor]:
    return robust_accuracy(model, load_dataset("digits", "test"), seed=seed, return_per_sample=True, **settings,
                           **extra).per_sample


def _evaluation_worker(rank: int, world: int, port: int, checkpoint: str, out: str) -> None:
    _join(rank, world, port)
    model, _ = load_model(checkpoint)
    for i, settings in enumerate(EVALS):
        torch.save(_evaluate(model, settings, shards=processes.Shards.of_current()),
                   Path(out) / f"eval{i}-rank{rank}.pt")
    _leave()


def test_sharded_evaluation_equals_one_process_per_sample(standard_model, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "standard.pt", {"model": standard_model.state_dict(),
                                                           "meta": {"model": model_spec(standard_model)}})
    mp.spawn(_evaluation_worker, args=(2, _free_port(), str(checkpoint), str(tmp_path)), nprocs=2, join=True)
    model, _ = load_model(checkpoint)
    singles = [_evaluate(model, settings) for settings in EVALS]
    for i, (single, settings) in enumerate(zip(singles, EVALS, strict=True)):
        for rank in range(2):
            sharded = torch.load(tmp_path / f"eval{i}-rank{rank}.pt", weights_only=True)
            assert sharded.keys() == single.keys()
            for name, correct in single.items():
                assert torch.equal(sharded[name], correct), (settings["attacks"], rank, name)
        assert 0 < single["worst_case"].sum() < single["clean"].sum()
        assert single["clean"].sum() > 2 * settings["batch_size"]  # 3 chunks or more: both ranks attack
    # Not trivially equal: another seed changes some samples' results under PGD and CW.
    other = _evaluate(model, EVALS[0], seed=4)
    assert not torch.equal(other["pgd2"], singles[0]["pgd2"]) and not torch.equal(other["cw2"], singles[0]["cw2"])
