"""`fit`: one training loop for every method, with checkpoints that resume exactly.

Its settings are `s2o_lib.settings`' small groups (`OptimConfig`, `AttackConfig`, `LossConfig`, `AWPConfig`,
`EvalConfig`, `SpeedConfig`), each with the paper's defaults; `s2o_lib.settings.fit_options` groups flat settings
such as ``lr=0.05, attack_steps=5, beta=3.0`` into them.

Example:
    >>> from s2o_lib.settings import fit_options                             # doctest: +SKIP
    >>> from s2o_lib.train import fit
    >>> history = fit(model, train_loader, method="at+s2o", epochs=200, eval_loader=test_loader,
    ...               checkpoint_dir="runs/at_s2o")
    >>> history.best_epoch, history.best_robust
    >>> fit(model, train_loader, method="trades", epochs=10, **fit_options(lr=0.05, beta=3.0, eval_n=200))
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from . import processes
from .awp import AWP
from .checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    architecture_mismatch,
    load_checkpoint,
    load_weights,
    remove_stale_temporaries,
    restore_best,
    save_checkpoint,
)
from .checks import (
    check_images,
    check_labels,
    check_model_input,
)
from .defenses import DefenseConfig, training_step
from .errors import S2OError, unknown_name
from .evaluate import robust_accuracy
from .fast import autocast, grad_scaler, prepare_model, resolve_precision
from .lock import folder_lock, writes_here
from .methods import Method, parse_method
from .models import device_of, dtype_of, model_spec
from .s2o import default_off_diagonal_mass
from .settings import (
    FIT_WAY_OUT,
    PER_BATCH_SCHEDULES,
    SCHEDULES,
    AttackConfig,
    AWPConfig,
    EvalConfig,
    LossConfig,
    OptimConfig,
    Schedule,
    SettingsChanged,
    SpeedConfig,
    resolved_configs,
    settings_changes,
)

__all__ = [
    "History", "epoch_checkpoint_name", "fit", "make_optimizer", "make_scheduler",
]



def epoch_checkpoint_name(epoch: int) -> str:
    """The file name of the weights kept after ``epoch`` (see ``fit(..., keep_every=k)``)."""
    return f"epoch_{epoch:03d}.pt"


@dataclass
class History:
    """Per-epoch record of a training run (epochs counted from 1).

    Attributes:
        method: canonical method name.
        epoch: epoch numbers.
        lr: learning rate used in each epoch.
        train_loss: mean training loss.
        train_acc: accuracy on the inputs the loss was computed on (adversarial ones for AT and MART).
        eval_clean: clean accuracy on the evaluation subset (``None`` without an evaluation loader).
        eval_robust: PGD accuracy on the evaluation subset.
        seconds: wall time of each epoch.
        best_epoch: the epoch with the highest ``eval_robust`` (robust-overfitting-aware model selection).
        best_robust: that accuracy.
    """

    method: str
    epoch: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    eval_clean: list[float | None] = field(default_factory=list)
    eval_robust: list[float | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_robust: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def last(self) -> dict[str, Any]:
        """The last epoch's record as a flat dictionary."""
        return {k: v[-1] for k, v in self.as_dict().items() if isinstance(v, list) and v}


# --------------------------------------------------------------------------------------------- RNG state
def _rng_state(loader: DataLoader) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = getattr(loader, "generator", None)
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def _set_rng_state(state: dict[str, Any], loader: DataLoader) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator = getattr(loader, "generator", None)
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------------------------- helpers
def make_optimizer(model: nn.Module, *, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every parameter, as in every released script of the paper.

    AVMixup's official code (``Saehyung-Lee/cifar10_challenge``) decays the kernels only (no biases, no batch-norm
    parameters); the ``avmixup-wrn`` preset decays every parameter, as here."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, schedule: Schedule, milestones: tuple[int, ...], total_steps: int = 0
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule; ``"piecewise"`` is the paper's: ×0.1 from each milestone epoch on.

    The released code sets lr = 0.1, 0.01 from epoch 100 and 0.001 from epoch 150, i.e. milestones
    (100, 150); ``"piecewise"`` and ``"constant"`` step once per epoch. ``"onecycle"`` (for short runs, the
    ``class`` profile) is `torch.optim.lr_scheduler.OneCycleLR` stepped after every batch: linear from
    lr/1e4 up to the optimiser's lr over the first 40 % of the steps, then linear down to lr/1e4, momentum
    fixed. That is the "cyclic" schedule of the fast-AT and robust-overfitting code (0 → lr_max at 2/5 → 0);
    the paper itself trains 200 epochs piecewise. The AT-AWP script (``AT_AWP/train_cifar10.py``) instead
    lowers its rate per iteration, reaching 0.01 at the last batch of epoch 100; ``"piecewise"`` drops it to
    0.01 from the first batch of epoch 100.

    Args:
        optimizer: the optimiser; its lr is the initial (piecewise, constant) or peak (onecycle) rate.
        schedule: ``"piecewise"``, ``"constant"`` or ``"onecycle"``.
        milestones: epochs (from 1) from which ``"piecewise"`` multiplies the rate by 0.1.
        total_steps: optimiser steps of the whole run, epochs × batches per epoch (``"onecycle"`` only).
    """
    if schedule not in SCHEDULES:
        raise unknown_name("learning-rate schedule", schedule, SCHEDULES)
    if schedule == "onecycle":
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise S2OError(f"the one-cycle schedule needs total_steps >= 1 (epochs × batches), got {total_steps!r}")
        peak = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak, total_steps=total_steps, pct_start=0.4, anneal_strategy="linear",
            cycle_momentum=False, div_factor=1e4, final_div_factor=1.0)
    if schedule == "constant":
        milestones = ()
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[m - 1 for m in milestones], gamma=0.1)


# --------------------------------------------------------------------------------------------- one run
def _defense_config(model: nn.Module, method: Method, attack: AttackConfig, loss: LossConfig,
                    awp: AWPConfig) -> DefenseConfig:
    """The `DefenseConfig` of a run, resolved for ``method``: AWP's ``None`` fields take the base method's
    values from `s2o_lib.awp.AWP_DEFAULTS` (AT: γ 1e-2, no warm-up; TRADES: γ 5e-3, warm-up 10)."""
    num_classes = getattr(getattr(model, "head", None), "out_features", 10)
    mass = default_off_diagonal_mass(num_classes) if loss.off_diagonal_mass is None else loss.off_diagonal_mass
    return DefenseConfig(eps=attack.eps, alpha=attack.alpha, steps=attack.steps, beta=loss.beta,
                         s2o_weight=loss.s2o_weight, off_diagonal_mass=mass, kfac_weight=loss.kfac_weight,
                         awp_gamma=awp.gamma, awp_warmup=awp.warmup).for_method(method)


@dataclass
class _Training:
    """The state of one `fit` call; each step of its loop is a method."""

    model: nn.Module
    step_model: nn.Module  # the model, compiled if asked
    loader: DataLoader
    method: Method
    config: DefenseConfig
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    per_batch: bool  # the scheduler steps after every batch (onecycle), else once per epoch
    awp: AWP | None
    speed: SpeedConfig
    history: History
    meta: dict[str, Any]
    num_classes: int | None = None
    checked: bool = False
    parallel: nn.Module | None = None  # the DistributedDataParallel wrapper under torchrun (s2o_lib.suite.torchrun)
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaler (s2o_lib.fast.grad_scaler); disabled otherwise

    @property
    def device(self) -> torch.device:
        return device_of(self.model)

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint of the same method and settings (else `SettingsChanged`): weights,
        optimiser, schedule, loss scaler (fp16, when the checkpoint has one), history, RNG states."""
        state = load_checkpoint(path, map_location=self.device)
        saved = state.get("meta") or {}
        if saved.get("method") != self.method.name:
            raise SettingsChanged(path.parent, f"{path} was trained with method {saved.get('method')!r}, "
                                  f"not {self.method.name!r}", way_out=FIT_WAY_OUT)
        mismatch = architecture_mismatch(self.model, state)  # e.g. a cache from before a profile changed its model
        if mismatch:
            raise SettingsChanged(path.parent, f"{path.parent} {mismatch}", way_out=FIT_WAY_OUT)
        changes = settings_changes(saved, self.meta)
        if changes:
            raise SettingsChanged(path.parent, f"{path.parent} holds a run with other settings: {', '.join(changes)}",
                                  way_out=FIT_WAY_OUT)
        self._check_schedule(path, state)
        load_weights(self.model, state, source=str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.awp is not None and state.get("awp_optimizer"):
            self.awp.proxy_optimizer.load_state_dict(state["awp_optimizer"])
        if self.scaler is not None and self.scaler.is_enabled() and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.history = History.from_dict(state["history"])
        self._resume_rng(state)

    def _resume_rng(self, state: dict[str, Any]) -> None:
        """Each rank's random state from the checkpoint (rank 0's, then a rank seed, for ranks it lacks)."""
        rank, size = processes.world()
        saved = state.get("rng_ranks") or [state["rng"]]
        _set_rng_state(saved[rank] if rank < len(saved) else saved[0], self.loader)
        if rank >= len(saved):
            processes.reseed_new_rank(int(torch.randint(2**31, (1,))), rank)
        note = processes.resume_note(saved_world=state["meta"].get("world_size", 1), world_size=size,
                                       per_process_batch=getattr(self.loader, "batch_size", None))
        if note and rank == 0:
            print(note, flush=True)

    def _check_schedule(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse a one-cycle checkpoint for another schedule or another number of steps (and the reverse)."""
        saved = state["meta"].get("settings", {}).get("schedule", "piecewise")
        ours = self.meta["settings"]["schedule"]
        saved_steps, steps = state["scheduler"].get("total_steps"), getattr(self.scheduler, "total_steps", None)
        if "onecycle" in (saved, ours) and (saved != ours or saved_steps != steps):
            raise S2OError(
                f"{path} follows the {saved!r} schedule{f' over {saved_steps} steps' if saved_steps else ''}, this "
                f"run the {ours!r} schedule{f' over {steps} steps (epochs × batches)' if steps else ''}; resume "
                "with the same schedule, epochs, data and batch size, or pass resume=False to start over"
            )

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training data with its scheduler steps (after every batch or once at the end);
        the mean loss and the accuracy on the inputs the loss was computed on (adversarial ones for AT, MART)."""
        device, method = self.device, self.method
        use_awp = self.awp if (self.awp is not None and self.config.awp_active(epoch)) else None
        memory_format = torch.channels_last if self.speed.channels_last else torch.contiguous_format
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = skipped = 0
        for x, y in self.loader:
            if not self.checked or x.device.type == "cpu":  # every CPU batch, the first one anywhere
                self.check_batch(x, y)
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True).long()
            with autocast(device, self.speed.precision):
                result = training_step(self.step_model, x, y, method=method, config=self.config,  # checked above
                                       optimizer=self.optimizer, awp=use_awp, scaler=self.scaler, checked=True)
            if result.skipped:  # fp16: the loss scaler skipped this step (gradients not finite); it is not counted
                skipped += 1
            else:
                adversarial = result.logits_adv is not None and method.base != "trades"
                logits = result.logits_adv if adversarial else result.logits_clean
                loss_sum += result.loss * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
            if self.per_batch:
                self.scheduler.step()
        if not self.per_batch:
            self.scheduler.step()
        loss_sum, correct, total = processes.sum_over_processes(loss_sum, correct, torch.tensor(float(seen)))
        if total == 0 and skipped:
            raise S2OError(f"training diverged: every step of epoch {epoch} had non-finite fp16 gradients and the "
                           "loss scaler skipped them all; train with precision='fp32' or a lower learning rate")
        if total == 0:
            raise S2OError("the training loader yielded no batches; check the dataset and batch size")
        return (loss_sum / total).item(), (correct / total).item()

    def check_batch(self, x: Tensor, y: Tensor) -> None:
        """Images finite, in [0, 1] and fitting the model; labels integers below the model's class count."""
        check_images(x, y)
        check_model_input(x, in_channels=model_spec(self.model).get("in_channels"), dtype=dtype_of(self.model))
        if self.num_classes is None:
            with torch.no_grad():
                was_training = self.model.training
                self.model.eval()
                self.num_classes = self.model(x[:1].to(self.device)).shape[1]
                self.model.train(was_training)
        check_labels(y, num_classes=self.num_classes)
        self.checked = True

    def evaluate(self, loader: DataLoader | None, evaluation: EvalConfig) -> tuple[float | None, float | None]:
        """Clean and PGD accuracy on the evaluation subset (``(None, None)`` without a loader), counted as
        `s2o_lib.evaluate.robust_accuracy` counts them (robust: correct on the clean input and under PGD), with
        its own seeded random starts: the evaluation draws nothing from torch's global generator."""
        if loader is None:
            return None, None
        if self.parallel is not None:  # rank 0 evaluates the unwrapped model; every rank records its numbers
            return processes.from_main(self._evaluate_unwrapped(loader, evaluation) if processes.is_main() else None)
        return self._evaluate_unwrapped(loader, evaluation)

    def _evaluate_unwrapped(self, loader: DataLoader, evaluation: EvalConfig) -> tuple[float, float]:
        model = self.model if self.parallel is not None else self.step_model
        attack = f"pgd{evaluation.steps}"
        with autocast(self.device, self.speed.precision):
            result = robust_accuracy(model, loader, attacks=("clean", attack), eps=evaluation.eps,
                                     alpha=evaluation.alpha, n=evaluation.n, device=self.device,
                                     counting=evaluation.counting,
                                     batch_size=getattr(loader, "batch_size", None) or 256)
        return result["clean"], result[attack]

    def record(self, epoch: int, *, lr: float, train: tuple[float, float], evaluated: tuple[float | None, float | None],
               seconds: float, window: tuple[int, int] | None = None) -> bool:
        """Append one epoch to the history; whether it is the best so far under PGD (within ``window``)."""
        h = self.history
        h.epoch.append(epoch)
        h.lr.append(lr)
        h.train_loss.append(train[0])
        h.train_acc.append(train[1])
        h.eval_clean.append(evaluated[0])
        h.eval_robust.append(evaluated[1])
        h.seconds.append(seconds)
        robust = evaluated[1]
        eligible = window is None or window[0] <= epoch <= window[1]
        improved = robust is not None and eligible and (h.best_robust is None or robust > h.best_robust)
        if improved:
            h.best_epoch, h.best_robust = epoch, robust
        return improved

    def save(self, folder: Path, epoch: int, *, improved: bool, keep_every: int) -> None:
        """The resumable checkpoint (atomic), ``best.pt`` when PGD accuracy improved, and the kept epochs."""
        rng = processes.gather_objects(_rng_state(self.loader))  # every rank's, for an exact resume
        if not processes.is_main():
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "awp_optimizer": self.awp.proxy_optimizer.state_dict() if self.awp is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None and self.scaler.is_enabled() else None,
            "history": self.history.as_dict(),
            "rng": rng[0],
            **({"rng_ranks": rng} if len(rng) > 1 else {}),
            "meta": {**self.meta, "epoch": epoch},
        }
        weights = {"model": state["model"], "meta": state["meta"], "history": state["history"]}
        if improved:
            save_checkpoint(folder / BEST_NAME, weights)
        if keep_every and epoch % keep_every == 0:
            save_checkpoint(folder / epoch_checkpoint_name(epoch), weights)
        save_checkpoint(folder / CHECKPOINT_NAME, state)


def _start(model: nn.Module, loader: DataLoader, *, method: Method, configs: dict[str, Any], epochs: int,
           metadata: dict[str, Any] | None) -> _Training:
    """Everything a run needs before its first epoch: the model prepared, optimiser, schedule, AWP, metadata."""
    optim, speed, evaluation = configs["optim"], configs["speed"], configs["evaluation"]
    config = _defense_config(model, method, configs["attack"], configs["loss"], configs["awp"])
    model = prepare_model(model, channels_last=speed.channels_last)
    optimizer = make_optimizer(model, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    per_batch = optim.schedule in PER_BATCH_SCHEDULES
    total_steps = max(1, epochs * len(loader)) if per_batch else 0
    scheduler = make_scheduler(optimizer, schedule=optim.schedule, milestones=tuple(optim.milestones),
                               total_steps=total_steps)
    settings = {"epochs": epochs, **asdict(optim), "milestones": list(optim.milestones), **asdict(config),
                **{f"eval_{k}": v for k, v in asdict(evaluation).items()}, "precision": speed.precision}
    return _Training(
        scaler=grad_scaler(device_of(model), speed.precision),
        model=model, step_model=prepare_model(model, compile=speed.compile), loader=loader, method=method,
        config=config, optimizer=optimizer, scheduler=scheduler, per_batch=per_batch,
        awp=AWP(model, gamma=config.awp_gamma, lr=config.awp_lr) if method.awp else None, speed=speed,
        history=History(method=method.name),
        meta={"model": model_spec(model), "method": method.name, "settings": settings, **(metadata or {})},
    )


# --------------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module, train_loader: DataLoader, *, method: str | Method = "standard", epochs: int,
    optim: OptimConfig | None = None, attack: AttackConfig | None = None, loss: LossConfig | None = None,
    awp: AWPConfig | None = None, eval_loader: DataLoader | None = None, evaluation: EvalConfig | None = None,
    speed: SpeedConfig | None = None, checkpoint_dir: str | Path | None = None, resume: bool = True,
    keep_every: int = 0, progress: bool = True, metadata: dict[str, Any] | None = None,
) -> History:
    """Train ``model`` with any method of `s2o_lib.defenses` and return its `History`.

    The model trains on the device its parameters live on. Every epoch ends with an atomic checkpoint
    (``checkpoint_dir/checkpoint.pt``: weights, optimiser, scheduler, RNG states, history) and, when an
    evaluation loader is given, the best-robust model is kept as ``best.pt`` (a missing or damaged one is
    written again at the end of every call, `s2o_lib.checkpoint.restore_best`). With ``resume=True`` a run that
    finds a checkpoint continues after its last epoch and ends with the same weights as a run that was never
    interrupted (bitwise on CPU). While it runs, the run holds ``checkpoint_dir`` (`s2o_lib.lock.folder_lock`):
    another process training into it fails at once. An epoch whose mean loss is NaN or infinite stops the run
    with an `S2OError` before anything of it is saved. Settings left ``None`` take the paper's values;
    `fit_options` builds the configs from flat settings.

    Args:
        model: the model to train (e.g. from `s2o_lib.models.build_model`); a `DistributedDataParallel` model
            (`s2o_lib.suite.torchrun.wrap_model`, under torchrun, with a `DistributedSampler` loader) trains
            data-parallel: rank 0 evaluates and writes the checkpoints (``speed.compile`` is then not applied).
        train_loader: batches of (images in [0, 1], labels): a DataLoader or a `s2o_lib.fast.DeviceLoader`.
        method: ``standard``, ``at``, ``trades``, ``mart``, optionally ``+awp`` and ``+s2o``/``+s2o-kfac``.
        epochs: total number of epochs (counted from 1; a resumed run stops at the same total).
        optim: SGD and the learning-rate schedule (`OptimConfig`).
        attack: the training attack (`AttackConfig`).
        loss: the weights of the method's terms: β, the S²O weight and mass, the KFAC weight (`LossConfig`).
        awp: AWP's γ and warm-up (`AWPConfig`; used by ``+awp`` methods).
        eval_loader: optional test data for per-epoch clean/PGD accuracy and best-robust selection.
        evaluation: that per-epoch evaluation (`EvalConfig`).
        speed: bf16 or fp16, channels-last and ``torch.compile`` for GPUs (`SpeedConfig`). fp16 trains with a loss
            scaler, whose state the checkpoint keeps; a step with non-finite gradients is skipped (not counted in
            the epoch's loss), an epoch whose steps were all skipped stops the run as a diverged one does. A
            resumed run may change precision (e.g. a cache trained in fp16 on a T4 goes on in bf16 on an A100):
            it then resumes exactly only up to rounding, and a scaler starts afresh.
        checkpoint_dir: folder for ``checkpoint.pt`` and ``best.pt`` (``None``: no checkpoints).
        resume: continue from ``checkpoint_dir/checkpoint.pt`` if it exists; one of another method or other
            settings (`settings_changes`) raises `SettingsChanged` instead (``resume=False`` starts over).
        keep_every: also keep the weights after every ``keep_every``-th epoch as ``epoch_NNN.pt`` (0: none), e.g.
            to follow a quantity over training (robust overfitting, the bound of notebook 08).
        progress: show a tqdm progress bar (``TQDM_DISABLE=1`` in the environment hides it too).
        metadata: extra facts stored in the checkpoint (e.g. ``{"dataset": "cifar10"}``).
    """
    parsed = parse_method(method)
    model, parallel = processes.unwrap(model)  # a DistributedDataParallel model trains data-parallel
    processes.check_method(parsed.name, parallel=parallel is not None)
    given = {"optim": optim, "attack": attack, "loss": loss, "awp": awp, "evaluation": evaluation, "speed": speed}
    configs = resolved_configs(given, epochs=epochs, keep_every=keep_every, checkpoint_dir=checkpoint_dir)
    speed = configs["speed"]  # "auto" resolved for the model's device; fp16 on a CPU refused before any work
    configs["speed"] = dataclasses.replace(speed, precision=resolve_precision(speed.precision, device_of(model)))
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if folder is None:
        run = _start_parallel(model, train_loader, parallel, method=parsed, configs=configs, epochs=epochs,
                              metadata=metadata)
        return _train(run, epochs=epochs, eval_loader=eval_loader, evaluation=configs["evaluation"], folder=None,
                      keep_every=keep_every, progress=progress)
    with folder_lock(folder):
        if writes_here():
            remove_stale_temporaries(folder)
        run = _start_parallel(model, train_loader, parallel, method=parsed, configs=configs, epochs=epochs,
                              metadata=metadata)
        if resume and (folder / CHECKPOINT_NAME).exists():
            run.resume(folder / CHECKPOINT_NAME)
        history = _train(run, epochs=epochs, eval_loader=eval_loader, evaluation=configs["evaluation"],
                         folder=folder, keep_every=keep_every, progress=progress)
        if writes_here():
            restore_best(folder)  # a best.pt deleted or damaged after its run: written again (its docstring)
        return history


def _start_parallel(model: nn.Module, loader: DataLoader, parallel: nn.Module | None, *, method: Method,
                    configs: dict[str, Any], epochs: int, metadata: dict[str, Any] | None) -> _Training:
    """`_start`, then under torchrun the DistributedDataParallel wrapper as the model that steps (AWP's proxy
    averages its gradients over the processes, `s2o_lib.processes.Processes.average_gradients`)."""
    run = _start(model, loader, method=method, configs=configs, epochs=epochs, metadata=metadata)
    if parallel is not None:
        run.step_model, run.parallel, run.meta["world_size"] = parallel, parallel, processes.world()[1]
        if run.awp is not None:
            processes.current().average_gradients(run.awp.proxy)
    return run


def _train(run: _Training, *, epochs: int, eval_loader: DataLoader | None, evaluation: EvalConfig,
           folder: Path | None, keep_every: int, progress: bool) -> History:
    """`fit`'s loop from the run's next epoch to ``epochs``; stops at an epoch whose mean loss is not finite,
    before saving it."""
    start = len(run.history.epoch)
    bar = None
    if progress and start < epochs and processes.is_main():
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start, desc=run.method.name, unit="epoch")
    run.model.train()
    try:
        for epoch in range(start + 1, epochs + 1):
            t0, lr = time.perf_counter(), run.optimizer.param_groups[0]["lr"]
            processes.set_epoch(run.loader, epoch)
            with processes.global_batch_statistics(run.parallel is not None):
                train = run.train_epoch(epoch)
            _check_finite_loss(train[0], run.model, epoch=epoch, lr=lr, folder=folder)
            evaluated = run.evaluate(eval_loader, evaluation)
            improved = run.record(epoch, lr=lr, train=train, evaluated=evaluated, seconds=time.perf_counter() - t0,
                                  window=evaluation.window)
            if folder is not None:
                run.save(folder, epoch, improved=improved, keep_every=keep_every)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train[0]:.3f}", acc=f"{train[1]:.2f}",
                                **({"pgd": f"{evaluated[1]:.2f}"} if evaluated[1] is not None else {}))
    finally:
        if bar is not None:
            bar.close()
    return run.history


def _check_finite_loss(loss: float, model: nn.Module, *, epoch: int, lr: float, folder: Path | None) -> None:
    """Stop a run whose epoch ended with a NaN or infinite mean loss or weights (it diverged); nothing of it is
    saved."""
    weights_finite = bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())
    if math.isfinite(loss) and weights_finite:
        return
    shown = "finite but the weights are not" if math.isfinite(loss) else loss
    kept = "" if folder is None else (
        f"; {folder / CHECKPOINT_NAME} still holds epoch {epoch - 1}" if epoch > 1 else "; nothing was saved")
    raise S2OError(f"training diverged: the mean loss of epoch {epoch} is {shown} (learning rate {lr:g}){kept}. "
                   "Lower the learning rate (e.g. 0.1 or 0.05) and train again")
