"""`fit`: one training loop for every method, with checkpoints that resume exactly.

Example:
    >>> from s2o_lib.train import fit                                       # doctest: +SKIP
    >>> history = fit(model, train_loader, method="at+s2o", epochs=200, eval_loader=test_loader,
    ...               checkpoint_dir="runs/at_s2o")
    >>> history.best_epoch, history.best_robust
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .attacks import check_eps, pgd
from .checkpoint import load_checkpoint, save_checkpoint
from .defenses import AWP, DefenseConfig, Method, parse_method, training_step
from .errors import S2OError, unknown_name
from .fast import Precision, autocast, prepare_model
from .models import model_spec
from .s2o import default_off_diagonal_mass

Schedule = Literal["piecewise", "constant"]
SCHEDULES = ("piecewise", "constant")
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"


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
    """SGD with momentum and weight decay, as in every released script of the paper."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, *, schedule: Schedule, milestones: tuple[int, ...]
) -> torch.optim.lr_scheduler.LRScheduler:
    """The paper's piecewise schedule: ×0.1 from each milestone epoch on (epochs counted from 1).

    The released code sets lr = 0.1, 0.01 from epoch 100 and 0.001 from epoch 150, i.e. milestones
    (100, 150). The scheduler steps once per epoch.
    """
    if schedule not in SCHEDULES:
        raise unknown_name("learning-rate schedule", schedule, SCHEDULES)
    if schedule == "constant":
        milestones = ()
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[m - 1 for m in milestones], gamma=0.1)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate_clean_and_pgd(
    model: nn.Module, loader: DataLoader, *, eps: float, alpha: float, steps: int, n: int | None
) -> tuple[float, float]:
    """Clean and PGD accuracy on the first ``n`` samples of ``loader`` (used for model selection)."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    correct_clean = correct_robust = torch.zeros((), device=device)
    seen = 0
    for x, y in loader:
        if n is not None and seen >= n:
            break
        if n is not None:
            x, y = x[: n - seen], y[: n - seen]
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            clean_ok = model(x).argmax(1) == y
        x_adv = pgd(model, x, y, eps=eps, alpha=alpha, steps=steps)
        with torch.no_grad():
            # Robust means correct on x and on x_adv, as in s2o_lib.evaluate (per-sample worst case).
            robust_ok = clean_ok & (model(x_adv).argmax(1) == y)
        correct_clean = correct_clean + clean_ok.float().sum()
        correct_robust = correct_robust + robust_ok.float().sum()
        seen += len(y)
    model.train(was_training)
    return (correct_clean / seen).item(), (correct_robust / seen).item()


def _progress_enabled(progress: bool) -> bool:
    return progress and not os.environ.get("CI")


# --------------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    train_loader: DataLoader,
    *,
    method: str | Method = "standard",
    epochs: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: Schedule = "piecewise",
    milestones: tuple[int, ...] = (100, 150),
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    attack_steps: int = 10,
    beta: float = 6.0,
    s2o_weight: float | None = None,
    off_diagonal_mass: float | None = None,
    kfac_weight: float = 0.1,
    awp_gamma: float = 5e-3,
    awp_warmup: int = 10,
    eval_loader: DataLoader | None = None,
    eval_eps: float | None = None,
    eval_alpha: float | None = None,
    eval_steps: int = 10,
    eval_n: int | None = 500,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    keep_every: int = 0,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    precision: Precision = "fp32",
    channels_last: bool = False,
    compile: bool = False,
) -> History:
    """Train ``model`` with any method of `s2o_lib.defenses` and return its `History`.

    The model trains on the device its parameters live on. Every epoch ends with an atomic checkpoint
    (``checkpoint_dir/checkpoint.pt``: weights, optimiser, scheduler, RNG states, history) and, when an
    evaluation loader is given, the best-robust model is kept as ``best.pt``. With ``resume=True`` a run
    that finds a checkpoint continues after its last epoch and ends with the same weights as a run that
    was never interrupted (bitwise on CPU).

    Args:
        model: the model to train (e.g. from `s2o_lib.models.build_model`).
        train_loader: batches of (images in [0, 1], labels).
        method: ``standard``, ``at``, ``trades``, ``mart``, optionally ``+awp`` and ``+s2o``/``+s2o-kfac``.
        epochs: total number of epochs (counted from 1; a resumed run stops at the same total).
        lr: initial learning rate (paper: 0.1).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: SGD weight decay (paper: 5e-4).
        schedule: ``piecewise`` (×0.1 at each milestone) or ``constant``.
        milestones: epochs from which the rate is multiplied by 0.1 (paper: 100 and 150).
        eps: L∞ radius of the training attack (paper: 8/255).
        alpha: step size of the training attack (paper: 2/255).
        attack_steps: steps of the training attack (paper: 10).
        beta: weight of the robust term of TRADES and MART (6).
        s2o_weight: weight w of the S²O regulariser (default: 0.1 for AT, 0.3 for TRADES/MART).
        off_diagonal_mass: m of S²O's soft targets (default: 0.8, or 0.98 with 100 classes).
        kfac_weight: λ of the ``+s2o-kfac`` penalty.
        awp_gamma: AWP's relative weight perturbation γ (5e-3).
        awp_warmup: epochs before AWP starts (10 in the paper's TRADES-AWP runs).
        eval_loader: optional test data for per-epoch clean/PGD accuracy and best-robust selection.
        eval_eps: radius of the evaluation attack (default: ``eps``).
        eval_alpha: step size of the evaluation attack (default: ``eps / 4``).
        eval_steps: steps of the evaluation attack.
        eval_n: number of evaluation samples per epoch (``None``: all).
        checkpoint_dir: folder for ``checkpoint.pt`` and ``best.pt`` (``None``: no checkpoints).
        resume: continue from ``checkpoint_dir/checkpoint.pt`` if it exists.
        keep_every: also keep the weights after every ``keep_every``-th epoch as ``epoch_NNN.pt`` (0: none), e.g.
            to follow a quantity over training (robust overfitting, the bound of notebook 07).
        progress: show a tqdm progress bar (never under ``CI``).
        metadata: extra facts stored in the checkpoint (e.g. ``{"dataset": "cifar10"}``).
        precision: ``"fp32"`` or ``"bf16"`` (autocast for the attack and the training step; GPUs).
        channels_last: use the channels-last memory format (faster convolutions on GPUs).
        compile: run the model through ``torch.compile`` (opt-in; the first epoch pays for compilation).
    """
    parsed = parse_method(method)
    if not isinstance(epochs, int) or epochs < 0:
        raise S2OError(f"epochs must be a non-negative integer, got {epochs!r}")
    check_eps(eps)
    check_eps(alpha, name="alpha (step size)")
    if lr <= 0:
        raise S2OError(f"lr must be > 0, got {lr}")
    if isinstance(keep_every, bool) or not isinstance(keep_every, int) or keep_every < 0:
        raise S2OError(f"keep_every must be a non-negative integer (0: keep no per-epoch weights), got {keep_every!r}")
    if keep_every and checkpoint_dir is None:
        raise S2OError("keep_every needs a checkpoint_dir to write the per-epoch weights into")
    eval_eps = eps if eval_eps is None else eval_eps
    eval_alpha = eval_eps / 4 if eval_alpha is None else eval_alpha
    num_classes = getattr(getattr(model, "head", None), "out_features", 10)
    config = DefenseConfig(
        eps=eps, alpha=alpha, steps=attack_steps, beta=beta, s2o_weight=s2o_weight,
        off_diagonal_mass=default_off_diagonal_mass(num_classes) if off_diagonal_mass is None else off_diagonal_mass,
        kfac_weight=kfac_weight, awp_gamma=awp_gamma, awp_warmup=awp_warmup,
    )
    device = _device_of(model)
    model = prepare_model(model, channels_last=channels_last)
    step_model = prepare_model(model, compile=compile)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    optimizer = make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, schedule=schedule, milestones=tuple(milestones))
    awp = AWP(model, gamma=config.awp_gamma, lr=config.awp_lr) if parsed.awp else None
    history = History(method=parsed.name)
    settings = {
        "epochs": epochs, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "schedule": schedule,
        "milestones": list(milestones), **asdict(config), "eval_eps": eval_eps, "eval_alpha": eval_alpha,
        "eval_steps": eval_steps, "eval_n": eval_n,
    }
    meta = {"model": model_spec(model), "method": parsed.name, "settings": settings, **(metadata or {})}

    ckpt_path = best_path = None
    if checkpoint_dir is not None:
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
        best_path = Path(checkpoint_dir) / BEST_NAME
        if resume and ckpt_path.exists():
            state = load_checkpoint(ckpt_path, model=model, map_location=device)
            saved_method = state["meta"].get("method")
            if saved_method != parsed.name:
                raise S2OError(
                    f"{ckpt_path} was trained with method {saved_method!r}, not {parsed.name!r}; "
                    "choose another checkpoint folder or pass resume=False to start over"
                )
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if awp is not None and state.get("awp_optimizer"):
                awp.proxy_optimizer.load_state_dict(state["awp_optimizer"])
            history = History.from_dict(state["history"])
            _set_rng_state(state["rng"], train_loader)

    start = len(history.epoch)
    bar = None
    if _progress_enabled(progress) and start < epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start, desc=parsed.name, unit="epoch")
    model.train()
    for epoch in range(start + 1, epochs + 1):
        t0 = time.perf_counter()
        current_lr = optimizer.param_groups[0]["lr"]
        use_awp = awp if (awp is not None and epoch > config.awp_warmup) else None
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        for x, y in train_loader:
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with autocast(device, precision):
                result = training_step(step_model, x, y, method=parsed, config=config, optimizer=optimizer, awp=use_awp)
            logits = result.logits_adv if result.logits_adv is not None and parsed.base != "trades" else result.logits_clean
            loss_sum += result.loss * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
        scheduler.step()
        if seen == 0:
            raise S2OError("the training loader yielded no batches; check the dataset and batch size")
        clean = robust = None
        if eval_loader is not None:
            with autocast(device, precision):
                clean, robust = evaluate_clean_and_pgd(
                    step_model, eval_loader, eps=eval_eps, alpha=eval_alpha, steps=eval_steps, n=eval_n
                )
        history.epoch.append(epoch)
        history.lr.append(current_lr)
        history.train_loss.append((loss_sum / seen).item())
        history.train_acc.append((correct / seen).item())
        history.eval_clean.append(clean)
        history.eval_robust.append(robust)
        history.seconds.append(time.perf_counter() - t0)
        improved = robust is not None and (history.best_robust is None or robust > history.best_robust)
        if improved:
            history.best_epoch, history.best_robust = epoch, robust
        if ckpt_path is not None:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "awp_optimizer": awp.proxy_optimizer.state_dict() if awp is not None else None,
                "history": history.as_dict(),
                "rng": _rng_state(train_loader),
                "meta": {**meta, "epoch": epoch},
            }
            weights = {"model": state["model"], "meta": state["meta"], "history": state["history"]}
            if improved:
                save_checkpoint(best_path, weights)
            if keep_every and epoch % keep_every == 0:
                save_checkpoint(ckpt_path.with_name(epoch_checkpoint_name(epoch)), weights)
            save_checkpoint(ckpt_path, state)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", acc=f"{history.train_acc[-1]:.2f}",
                            **({"pgd": f"{robust:.2f}"} if robust is not None else {}))
    if bar is not None:
        bar.close()
    return history
