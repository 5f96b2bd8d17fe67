"""The torchrun launcher: data-parallel training and sharded evaluation with PyTorch's own DDP.

`start` joins torch's process group and installs `TorchrunProcesses` into the subject's seam,
`s2o_lib.processes`, which is all that training and evaluation ever see of it.

Nothing here is home-made: processes are started by ``torchrun`` (``python -m torch.distributed.run``), the
process group is torch's (``gloo`` on CPUs, ``nccl`` on CUDA GPUs), the model is wrapped in
`torch.nn.parallel.DistributedDataParallel` (gradients averaged over processes in its buckets) and the data
is split by `torch.utils.data.DistributedSampler` (``set_epoch`` at every epoch). Without ``torchrun`` (no
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) none of this runs: one process, no process group,
exactly the single-process code.

What is per process and what is global (global batch B, N processes, B/N images per process):

- **Gradients**: global. DDP averages the per-process gradients of the per-shard mean losses; with equal
  shards that is the gradient of the mean loss over the global batch, as in a single-process run with batch B.
- **The training attack** (PGD, TRADES' KL-PGD): per process, on its shard, with that process's random
  generator. Each sample's attack depends only on that sample (the attack runs in eval mode), so this is the
  single-process attack up to which random start each sample draws.
- **BatchNorm**: per process by default: statistics over the B/N images of the shard, with the running
  statistics of rank 0 sent to every process at each forward (DDP's ``broadcast_buffers``). That is what
  the released scripts do on several GPUs (they wrap the model in ``nn.DataParallel``, whose replicas also
  normalise per GPU), but not what they do on one GPU (statistics over all B). ``sync_bn=True``
  (``--sync-bn``) converts every BatchNorm to `torch.nn.SyncBatchNorm`: statistics over the global batch, the
  single-GPU behaviour; torch runs it on GPUs only.
- **S²O's soft targets** (`s2o_lib.s2o.soft_target_matrix`): global. They are built from ``M = ZᵀZ``, the
  sum over the batch of the logits' outer products; under DDP each process sums its shard and the C × C
  matrices are all-reduced (`s2o_lib.processes.batch_sum` inside `global_batch_statistics`), so every process
  uses the targets of the whole batch B. This is faithful: the released scripts compute the regulariser on the whole batch (on one GPU, and on
  several under ``nn.DataParallel``, which gathers the logits before the loss), and per-shard targets would
  change with the number of processes (M from B/N samples is noisier). The cost is one C × C all-reduce.
- **AWP's proxy step**: global. The proxy (a copy of the model, not wrapped in DDP) would otherwise take
  its ascent step on its shard's gradient only, and each process would perturb the weights differently;
  `TorchrunProcesses.average_gradients` makes its gradients the all-reduced mean, so the perturbation is the
  one a single process computes from the whole batch (the released AWP scripts wrap the proxy in
  ``nn.DataParallel``, which does the same). The proxy's own forwards normalise per process (as above).
- **The +s2o-kfac penalty** needs the last layer's inputs, which the DDP wrapper does not expose: refused.

Only rank 0 evaluates during training and writes checkpoints and ``metrics.json``; the checkpoint holds
every rank's random state. A run resumed with as many processes continues exactly. A run resumed with a
different number of processes keeps the weights, optimiser, schedule, epoch, history and the global batch
exactly; the split of later epochs over processes, the random starts of the attacks, and (per-process
BatchNorm) the statistics depend on the number of processes, so the rest of the run is a different, equally
valid, draw (`resume_note` says so at resume).

Sharded evaluation (`s2o_lib.processes.Shards`): `s2o_lib.evaluate.robust_accuracy` splits its work into chunks of
``batch_size`` images (the same chunks in every run), gives chunk j to rank ``j mod N``, seeds each chunk's
random starts from (seed, attack, j) and all-reduces the per-sample correctness, so the per-sample results
(and the worst case over attacks) equal a single-process run on the same images, seed and batch size.

Example (one machine, 8 GPUs; several machines: see the README)::

    torchrun --nproc_per_node=8 -m s2o_lib train --preset paper-trades-wrn --out runs/trades
    torchrun --nproc_per_node=8 -m s2o_lib evaluate runs/trades/best.pt --attacks clean,pgd20,cw20,autoattack --n 10000
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..checks import check_int
from ..errors import S2OError, unknown_name
from ..processes import Processes, install, world

__all__ = [
    "BACKENDS", "TORCHRUN_VARIABLES", "Backend", "Launch", "TorchrunProcesses", "agree", "barrier",
    "check_shared_output_folder", "distributed_loader", "launched_by_torchrun", "per_process_batch", "start",
    "stop", "use_process_group", "wrap_model",
]


Backend = Literal["auto", "gloo", "nccl"]
BACKENDS: tuple[str, ...] = ("auto", "gloo", "nccl")
#: The environment variables ``torchrun`` sets in every process it starts.
TORCHRUN_VARIABLES: tuple[str, ...] = ("RANK", "WORLD_SIZE", "LOCAL_RANK")



# --------------------------------------------------------------------------------------------- the launch
@dataclass(frozen=True)
class Launch:
    """This process's place in a ``torchrun`` launch.

    Attributes:
        rank: global rank (0 … world_size − 1); rank 0 writes files.
        world_size: number of processes.
        local_rank: rank on this machine (the GPU index).
        backend: ``"gloo"`` or ``"nccl"``.
        device: this process's device (``cuda:local_rank`` or ``cpu``).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the process that evaluates during training and writes files)."""
        return self.rank == 0


class TorchrunProcesses(Processes):
    """`s2o_lib.processes.Processes` over torch's process group (gloo on CPUs, nccl on GPUs).

    Args:
        device: where the collectives run: this process's GPU with nccl, the CPU with gloo.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(device)

    def sum(self, value: Tensor) -> Tensor:
        total = value.clone().to(self.device)  # nccl: on this process's GPU
        dist.all_reduce(total)
        return total.to(value.device)

    def gather(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def from_main(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def unwrap(self, model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
        return (model.module, model) if isinstance(model, DistributedDataParallel) else (model, None)

    def average_gradients(self, module: nn.Module) -> None:
        size = self.size

        def mean(grad: Tensor) -> Tensor:
            grad = grad.clone()
            dist.all_reduce(grad)
            return grad / size

        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.register_hook(mean)


def use_process_group(device: torch.device | str = "cpu") -> None:
    """Install the joined process group into `s2o_lib.processes` (`start` does; tests that join it themselves
    call this). A no-op without a process group."""
    if dist.is_available() and dist.is_initialized():
        install(TorchrunProcesses(device))


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``torchrun`` started this process (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are set).

    Args:
        environ: the environment (``None``: ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    return all(name in environ for name in TORCHRUN_VARIABLES)


def _torchrun_ranks(environ: Mapping[str, str]) -> tuple[int, int, int]:
    try:
        rank, world, local = (int(environ[name]) for name in TORCHRUN_VARIABLES)
    except ValueError as err:
        raise S2OError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({err}); launch with torchrun") from err
    if not 0 <= rank < world:
        raise S2OError(f"RANK={rank} is not in [0, WORLD_SIZE={world}); launch with torchrun")
    return rank, world, local


def start(*, backend: Backend = "auto", device: str | None = None,
          environ: Mapping[str, str] | None = None) -> Launch | None:
    """Join the process group when ``torchrun`` started this process; ``None`` (and nothing done) otherwise.

    Args:
        backend: ``"auto"`` (``nccl`` with CUDA GPUs, else ``gloo``), ``"gloo"`` or ``"nccl"``.
        device: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available); each process takes GPU ``LOCAL_RANK``.
        environ: the environment (``None``: ``os.environ``).
    """
    environ = os.environ if environ is None else environ
    if not launched_by_torchrun(environ):
        return None
    if backend not in BACKENDS:
        raise unknown_name("distributed backend", backend, BACKENDS)
    rank, world, local = _torchrun_ranks(environ)
    kind = (device or ("cuda" if torch.cuda.is_available() else "cpu")).split(":")[0]
    if kind not in ("cuda", "cpu"):
        raise S2OError(f"torchrun training runs on CUDA GPUs or CPUs, not {kind!r}; pass --device cuda or cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise S2OError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu (gloo)")
    if backend == "nccl" and kind != "cuda":
        raise S2OError("backend nccl needs one CUDA GPU per process and this process has none; "
                       "use --backend gloo (or auto) on CPUs")
    if kind == "cuda" and local >= torch.cuda.device_count():
        raise S2OError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} GPU(s) are visible; "
                       "start at most that many processes per machine (--nproc_per_node)")
    chosen = ("nccl" if kind == "cuda" else "gloo") if backend == "auto" else backend
    place = torch.device("cuda", local) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(place)
    if not dist.is_initialized():
        dist.init_process_group(chosen, rank=rank, world_size=world)
    use_process_group(place)
    return Launch(rank=rank, world_size=world, local_rank=local, backend=chosen, device=place)


def stop() -> None:
    """Leave the process group (nothing to do without one)."""
    install(None)
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------- checks
def per_process_batch(global_batch: int, world_size: int) -> int:
    """The batch each process takes so that the global batch stays ``global_batch``.

    Args:
        global_batch: the batch size of the preset / ``--batch-size`` (summed over processes).
        world_size: number of processes.
    """
    check_int(global_batch, "batch_size", minimum=1)
    if global_batch % world_size:
        lower = global_batch // world_size * world_size
        raise S2OError(
            f"the global batch size {global_batch} does not divide over {world_size} processes; pass "
            f"--batch-size {lower or world_size} or {lower + world_size}, or start a number of processes that divides "
            f"{global_batch}")
    return global_batch // world_size


def agree(value: Any, *, what: str, hint: str) -> None:
    """Check that every rank holds the same ``value`` (a no-op without a process group).

    Args:
        value: this rank's value (picklable, comparable).
        what: what it is, for the message (e.g. ``"--out"``).
        hint: what to do when they differ.
    """
    size = world()[1]
    if size == 1:
        return
    values: list[Any] = [None] * size
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        listed = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
        raise S2OError(f"the processes disagree about {what} ({listed}); {hint}")


def check_shared_output_folder(folder: str | Path) -> Path:
    """The absolute output folder, after checking that every rank names the same one and sees rank 0's files.

    Rank 0 writes the checkpoints, and every rank reads ``checkpoint.pt`` to resume, so the folder must be the
    same path on a file system all processes share (one machine, or a network file system across machines).

    Args:
        folder: this rank's ``--out``.
    """
    path = Path(folder).expanduser().absolute()
    hint = "pass the same absolute --out to every process, on a file system they all share"
    agree(str(path), what="--out", hint=hint)
    rank, size = world()
    if size == 1:
        return path
    token = [uuid.uuid4().hex if rank == 0 else ""]
    dist.broadcast_object_list(token, src=0)
    probe = path / f".ddp-probe-{token[0]}"
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        probe.touch()
    dist.barrier()
    agree(True if rank == 0 else probe.exists(), what=f"whether {path} is shared (can every rank see rank 0's files)",
          hint=hint)
    dist.barrier()
    if rank == 0:
        probe.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------------------------- training
def wrap_model(model: nn.Module, *, launch: Launch, sync_bn: bool = False) -> DistributedDataParallel:
    """``model`` on this process's device in `DistributedDataParallel`, optionally with `SyncBatchNorm`.

    Args:
        model: the model (its weights are broadcast from rank 0 when wrapped).
        launch: this process's `Launch`.
        sync_bn: convert every BatchNorm to SyncBatchNorm (statistics over the global batch; GPUs only).
    """
    if sync_bn:
        if launch.device.type != "cuda":
            raise S2OError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm does not run on CPUs); "
                           "leave it off for per-process BatchNorm")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(launch.device)
    device_ids = [launch.device.index] if launch.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)  # buffers: rank 0's, sent at every forward


def distributed_loader(dataset: Dataset, *, batch_size: int, seed: int = 0, num_workers: int = 0,
                       rank: int | None = None, world_size: int | None = None) -> DataLoader:
    """A training DataLoader over this process's shard: a `DistributedSampler` (shuffled, seeded) and B/N images.

    `fit` calls ``sampler.set_epoch(epoch)`` before each epoch, so the shuffle depends on the epoch number only
    and resumes exactly. Every process gets ``ceil(len / N)`` indices (the sampler repeats a few to even the
    shards). With ``world_size=1`` (and no process group) it is the same order in one process, which is how
    the tests compare one process with batch B to N processes with B/N.

    Args:
        dataset: the training set.
        batch_size: the global batch size (split over processes).
        seed: seed of the shuffle.
        num_workers: DataLoader worker processes per training process.
        rank: this process's rank (``None``: from the process group).
        world_size: number of processes (``None``: from the process group).
    """
    group_rank, group_size = world()
    rank = group_rank if rank is None else rank
    size = group_size if world_size is None else world_size
    per_process = per_process_batch(batch_size, size)
    sampler = DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed, drop_last=False)
    return DataLoader(dataset, batch_size=per_process, sampler=sampler, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), pin_memory=torch.cuda.is_available())


def barrier() -> None:
    """Wait for every process (a no-op without a process group)."""
    if world()[1] > 1:
        dist.barrier()


# --------------------------------------------------------------------------------------------- evaluation
