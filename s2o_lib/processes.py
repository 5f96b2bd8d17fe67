"""The processes a run is spread over, as training and evaluation see them: a seam, not a launcher.

`train`, `s2o` and `evaluate` ask this module how many processes there are (`world`), whether this one writes
files (`is_main`), and for three collectives: a sum (`sum_over_processes`, and `batch_sum` for a batch statistic
such as S²O's ``ZᵀZ``), every process's value (`gather_objects`) and the main process's value (`from_main`). In
one process, the notebooks' and the tests' case, each collective returns its input and nothing else happens.

Under ``torchrun`` the suite's launcher (`s2o_lib.suite.torchrun`) joins torch's process group and `install`\\ s an
implementation of `Processes` that runs the collectives with ``torch.distributed``; nothing in the subject
imports ``torch.distributed``. Why each quantity is per process or global is written there.

Example:
    >>> from s2o_lib.processes import batch_sum, world
    >>> world()                                   # one process: rank 0 of 1
    (0, 1)
    >>> import torch; batch_sum(torch.ones(2)).tolist()    # nothing to add up
    [1.0, 1.0]
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import S2OError

__all__ = [
    "Processes", "Shards", "batch_sum", "check_method", "current", "from_main", "gather_objects",
    "global_batch_statistics", "install", "is_main", "rank_seed", "reseed_new_rank", "resume_note", "set_epoch",
    "sum_over_processes", "unwrap", "world",
]


class Processes:
    """One process: rank 0 of 1, every collective the identity. The torchrun launcher installs a subclass."""

    rank: int = 0
    size: int = 1

    def sum(self, value: Tensor) -> Tensor:
        """``value`` summed over every process (a copy; the input is left as it is)."""
        return value

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value``, by rank."""
        return [value]

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value``, on every process."""
        return value

    def unwrap(self, model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
        """``(the module that is trained, its data-parallel wrapper or None)``."""
        return model, None

    def average_gradients(self, module: nn.Module) -> None:
        """Make ``module``'s gradients the mean over processes as backward computes them (AWP's proxy)."""


_CURRENT: list[Processes] = [Processes()]
_GLOBAL_STATISTICS: ContextVar[bool] = ContextVar("s2o_global_statistics", default=False)


def install(processes: Processes | None) -> None:
    """Make ``processes`` the current ones (``None``: back to one process). Called by the torchrun launcher."""
    _CURRENT[0] = processes if processes is not None else Processes()


def current() -> Processes:
    """The processes this run is spread over (one, unless a launcher installed others)."""
    return _CURRENT[0]


def world() -> tuple[int, int]:
    """``(rank, number of processes)``: ``(0, 1)`` in one process."""
    return current().rank, current().size


def is_main() -> bool:
    """Whether this process writes files: rank 0, or the only process."""
    return current().rank == 0


def sum_over_processes(*values: Tensor) -> list[Tensor]:
    """Each (scalar) tensor summed over processes, in one collective; the tensors themselves in one process."""
    if current().size == 1:
        return list(values)
    stacked = torch.stack([v.detach().float().to(values[0].device) for v in values])
    return list(current().sum(stacked).unbind())


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every process (``value`` itself in one process)."""
    return current().from_main(value)


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, by rank (``[value]`` in one process)."""
    return current().gather(value)


def unwrap(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """``(the module, its data-parallel wrapper)``; ``(model, None)`` for a plain model."""
    return current().unwrap(model)


@contextlib.contextmanager
def global_batch_statistics(enabled: bool = True) -> Iterator[None]:
    """Within the block `batch_sum` adds up over processes, so batch statistics cover the global batch."""
    token = _GLOBAL_STATISTICS.set(enabled and current().size > 1)
    try:
        yield
    finally:
        _GLOBAL_STATISTICS.reset(token)


def batch_sum(value: Tensor) -> Tensor:
    """``value`` (a sum over this process's batch) summed over every process inside `global_batch_statistics`
    (a training step under torchrun); ``value`` itself elsewhere (one process, evaluation, the notebooks)."""
    return current().sum(value) if _GLOBAL_STATISTICS.get() else value


def check_method(method_name: str, *, parallel: bool) -> None:
    """Refuse what data-parallel training cannot run: ``+s2o-kfac`` needs the last layer's inputs, which the
    wrapper hides."""
    if parallel and method_name.endswith("+s2o-kfac"):
        raise S2OError(f"{method_name} is not supported under torchrun yet (its penalty needs the model's "
                       "features, hidden by DistributedDataParallel); train it in one process")


def set_epoch(loader: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the loader's sampler when it has one (a `DistributedSampler`: the epoch's shuffle)."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random generators (its attack starts): ``seed`` for rank 0, distinct for others."""
    return seed + 1_000_003 * rank


def reseed_new_rank(base: int, rank: int) -> None:
    """Seed a rank that the checkpoint has no random state for (a resume with more processes)."""
    seed = rank_seed(base, rank)
    random.seed(seed)
    torch.manual_seed(seed)


def resume_note(*, saved_world: int, world_size: int, per_process_batch: int | None) -> str | None:
    """What a resume with a different number of processes keeps and what it changes (``None``: same number)."""
    if saved_world == world_size:
        return None
    batch = "" if per_process_batch is None else f" ({per_process_batch} images per process)"
    return (f"resuming a {saved_world}-process run with {world_size} process(es){batch}: weights, optimiser, "
            "schedule, epoch and history continue exactly; the shards and order of the data, the attacks' random "
            "starts and per-process BatchNorm statistics of later epochs follow the new number of processes, "
            "so the rest of the run is not bit-identical to an uninterrupted one")


@dataclass(frozen=True)
class Shards:
    """Which evaluation chunks this process runs, and how the per-sample results are put back together.

    Chunk j (of ``batch_size`` images) belongs to rank ``j mod world_size``; `gather` sums the disjoint
    per-sample results of all ranks, so every rank ends with every sample's result.

    Attributes:
        rank: this process's rank.
        world_size: number of processes.
    """

    rank: int = 0
    world_size: int = 1

    @classmethod
    def of_current(cls) -> Shards:
        """The shards of the current processes (one shard in one process)."""
        rank, size = world()
        return cls(rank=rank, world_size=size)

    def mine(self, chunk: int) -> bool:
        """Whether this process runs chunk ``chunk``."""
        return chunk % self.world_size == self.rank

    def gather(self, values: Tensor) -> Tensor:
        """The full per-sample bool tensor from each rank's part (``False`` outside its own chunks)."""
        if self.world_size == 1:
            return values
        return (current().sum(values.to(torch.int32)) > 0).cpu()
