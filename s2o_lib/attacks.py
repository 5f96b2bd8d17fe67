"""White-box attacks: FGSM, PGD (L∞ and L2, cross-entropy or CW margin loss) and the TRADES KL attack.

All attacks take images in [0, 1] and labels, return adversarial images (detached, same shape, inside the
ε-ball and inside [0, 1]), leave the model's mode and its parameters' ``.grad`` as they found them, and
run batched on the model's device: they move ``x`` and ``y`` there themselves (`s2o_lib.models.device_of`, as
torchattacks does) and return tensors on the model's device. Under fp16 autocast (``precision="fp16"``) the
objective is multiplied by `FP16_ATTACK_SCALE` before its input gradient is taken, as a loss scaler does, so
that small gradients do not underflow to zero (a zero gradient has no sign: the pixel would not move).

Example:
    >>> import torch
    >>> from s2o_lib.models import build_model
    >>> from s2o_lib.attacks import pgd
    >>> model = build_model("small-cnn", num_classes=10, in_channels=1)
    >>> x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))
    >>> x_adv = pgd(model, x, y, eps=0.1, alpha=0.02, steps=5)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
    True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_eps, check_images, check_int, check_labels, check_linf_eps, check_model_input, check_step_size
from .errors import S2OError, unknown_name
from .fast import fp16_active
from .models import device_of, dtype_of, model_spec

__all__ = [
    "CW_MARGIN", "FP16_ATTACK_SCALE", "INITS", "LOSSES", "NORMS", "AttackLoss", "Init", "Norm", "cw_margin_loss",
    "eval_mode", "fgsm", "frozen_parameters", "margins", "pgd", "project", "trades_kl_attack",
]


Norm = Literal["linf", "l2"]
AttackLoss = Literal["ce", "cw"]
Init = Literal["uniform", "gaussian", "none"]
NORMS: tuple[str, ...] = ("linf", "l2")
LOSSES: tuple[str, ...] = ("ce", "cw")
INITS: tuple[str, ...] = ("uniform", "gaussian", "none")
#: The attacks' loss scale under fp16 autocast. Measured on the CPU (small CNN on digits, 128 images): fp16 input
#: gradients of the summed CE were exactly 0 for 7.7 % of the pixels and had fp32's sign for 90.1 %; at 2**8,
#: 0.006 % and 99.7 %; at 2**12 and 2**16 no zeros and 99.7 %. Steps use only the sign (L∞) or the direction (L2).
FP16_ATTACK_SCALE = 2.0**10


# --------------------------------------------------------------------------------------------- checks
def _input_gradient(objective: Tensor, x_adv: Tensor) -> Tensor:
    """∂objective/∂x_adv; under fp16 autocast of the objective times `FP16_ATTACK_SCALE`, an overflow's NaN set to 0
    (that pixel does not move; an infinite entry keeps its sign)."""
    if not fp16_active(x_adv.device):
        return torch.autograd.grad(objective, x_adv)[0]
    (grad,) = torch.autograd.grad(objective * FP16_ATTACK_SCALE, x_adv)
    return torch.nan_to_num(grad, nan=0.0)


def _check_steps(steps: int, alpha: float, eps: float) -> None:
    """``steps`` ≥ 1 and ``alpha`` > 0 (any ``alpha`` ≥ 0 at ``eps`` = 0, where every step lands on x)."""
    check_int(steps, "steps", minimum=1)
    check_step_size(alpha, steps=steps if eps > 0 else 0)


def _check_pgd_args(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, norm: str,
                    loss: str, restarts: int, checked: bool) -> None:
    """`pgd`'s arguments, before any work (the labels' range is checked at the first forward pass); the images
    only when the caller has not (``checked``)."""
    if norm not in NORMS:
        raise unknown_name("norm", norm, NORMS)
    (check_linf_eps if norm == "linf" else check_eps)(eps)
    _check_steps(steps, alpha, eps)
    if not checked:
        check_images(x, y)
        check_model_input(x, in_channels=model_spec(model).get("in_channels"), dtype=dtype_of(model))
    if loss not in LOSSES:
        raise unknown_name("attack loss", loss, LOSSES)
    if not isinstance(restarts, int) or restarts < 1:
        raise S2OError(f"restarts must be an integer >= 1, got {restarts!r}")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for an attack and restore its previous mode afterwards.

    Attacks use eval mode so that BatchNorm uses running statistics and does not update them.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Switch off ``requires_grad`` of every parameter while attacking, and restore each flag afterwards.

    Attacks need gradients with respect to the input only: this is faster, and leaves the parameters' ``.grad``
    as they were.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# --------------------------------------------------------------------------------------------- losses
#: The confidence κ of the CW margin loss in the TRADES/MART/S²O evaluation code (CW∞ = PGD on that loss).
CW_MARGIN = 50.0


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """Classification margins ``z_y − max_{j≠y} z_j`` (positive exactly when the prediction is right, ties aside).

    Args:
        logits: (B, C) logits.
        y: (B,) labels.

    Returns:
        (B,) margins.
    """
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return true - other


def cw_margin_loss(logits: Tensor, y: Tensor, *, margin: float = CW_MARGIN) -> Tensor:
    """Carlini–Wagner margin loss as TRADES/MART/S²O evaluate CW∞ (one value per sample, to maximise).

    ``-max(z_y - max_{j≠y} z_j + margin, 0)``: it grows until the best wrong logit beats the true one by
    ``margin``.

    Args:
        logits: (B, K) logits.
        y: (B,) true labels.
        margin: the confidence κ (`CW_MARGIN`, 50, in the papers' evaluation code).
    """
    return -(margins(logits, y) + margin).clamp(min=0)


def _objective(logits: Tensor, y: Tensor, loss: str, targeted: bool) -> Tensor:
    """Per-sample quantity the attack ascends."""
    if loss == "ce":
        value = F.cross_entropy(logits, y, reduction="none")
        return -value if targeted else value
    if targeted:  # targeted CW: make the target logit beat every other one by the margin
        return -(CW_MARGIN - margins(logits, y)).clamp(min=0)
    return cw_margin_loss(logits, y)


# --------------------------------------------------------------------------------------------- geometry
def _flat_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def project(delta: Tensor, *, eps: float, norm: Norm) -> Tensor:
    """Project perturbations onto the ε-ball of the given norm (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale


def _resolve_init(init: str, init_std: float, random_start: bool | None) -> str:
    """Check the start options; return ``init``, or the deprecated ``random_start`` flag translated to it."""
    if init not in INITS:
        raise unknown_name("PGD start (init)", init, INITS)
    if not isinstance(init_std, (int, float)) or not math.isfinite(init_std) or init_std < 0:
        raise S2OError(f"init_std must be a finite number >= 0 (MART's start: 0.001), got {init_std!r}")
    if random_start is None:
        return init
    warnings.warn("pgd(random_start=...) is deprecated; pass init='uniform' or init='none'",
                  DeprecationWarning, stacklevel=3)
    if init != "uniform":
        raise S2OError("pass only init=...; random_start is its deprecated alias (True: 'uniform', False: 'none')")
    return "uniform" if random_start else "none"


def _start(
    x: Tensor, *, init: str, init_std: float, eps: float, norm: Norm, generator: torch.Generator | None
) -> Tensor:
    """The initial perturbation δ₀ (before clipping x + δ₀ to [0, 1])."""
    if init == "none":
        return torch.zeros_like(x)
    if init == "gaussian":
        return torch.empty_like(x).normal_(generator=generator) * init_std
    return _random_start(x, eps=eps, norm=norm, generator=generator)


def _random_start(x: Tensor, *, eps: float, norm: Norm, generator: torch.Generator | None) -> Tensor:
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    # Uniform in the L2 ball: a random direction times a radius with density ∝ r^(d-1).
    direction = torch.empty_like(x).normal_(generator=generator)
    direction = direction / _flat_norm(direction).clamp_min(1e-12)
    d = x[0].numel()
    u = torch.empty(x.shape[0], device=x.device, dtype=x.dtype).uniform_(generator=generator)
    radius = eps * u.pow(1.0 / d)
    return direction * radius.view(-1, *([1] * (x.ndim - 1)))


def _ascent_step(grad: Tensor, *, alpha: float, norm: Norm) -> Tensor:
    if norm == "linf":
        return alpha * grad.sign()
    return alpha * grad / _flat_norm(grad).clamp_min(1e-12)


# --------------------------------------------------------------------------------------------- attacks
def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, targeted: bool = False) -> Tensor:
    """Fast Gradient Sign Method (Goodfellow et al. 2015): one signed-gradient step of size ε.

    Args:
        model: classifier mapping (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: clean images, shape (B, C, H, W), values in [0, 1].
        y: labels, shape (B,); with ``targeted=True`` the target classes.
        eps: L∞ radius.
        targeted: move towards ``y`` instead of away from it.

    Returns:
        Adversarial images, shape (B, C, H, W), within ε of ``x`` in L∞ and inside [0, 1], on the model's device.
    """
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, init="none", targeted=targeted)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: Norm = "linf",
    loss: AttackLoss = "ce",
    init: Init = "uniform",
    init_std: float = 0.001,
    random_start: bool | None = None,
    restarts: int = 1,
    targeted: bool = False,
    generator: torch.Generator | None = None,
    checked: bool = False,
) -> Tensor:
    """Projected gradient descent (Madry et al. 2018) on the cross-entropy or the CW margin loss.

    Each step moves along the signed (L∞) or normalised (L2) input gradient, projects back onto the
    ε-ball around ``x`` and clips to [0, 1]. With several restarts, each sample keeps the first restart
    that fools the model (per-sample worst case), else the last one.

    Start points (``init``): ``"uniform"`` in the ε-ball (Madry et al.; the AT scripts ``CIFAR10_AT_S2O/train_S2O.py``
    and ``AT_AWP/train_cifar10.py``, AVMixup's ``pgd_attack.py``, every evaluation); ``"gaussian"``,
    x + init_std·N(0, I), MART's training attack (``YisenWang/MART`` ``mart.py`` line 20, S²O's
    ``CIFAR10_MART_S2O/mart_soso.py`` line 22; std 0.001); ``"none"``, x. The start is clipped to [0, 1] (the
    MART scripts take their first gradient unclipped: a difference only within ~0.001 of 0 or 1).

    Args:
        model: classifier mapping (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: clean images, shape (B, C, H, W), values in [0, 1].
        y: labels, shape (B,), any integer dtype, each in 0..K-1; with ``targeted=True`` the target classes.
        eps: radius of the threat model (≥ 0; at most 1 in L∞, the whole pixel range).
        alpha: step size (> 0).
        steps: number of gradient steps (≥ 1).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (cross-entropy) or ``"cw"`` (CW margin loss, margin 50: PGD on it is "CW∞").
        init: the start point, ``"uniform"`` (in the ball), ``"gaussian"`` (x + init_std·N(0, I)) or ``"none"``.
        init_std: standard deviation of the Gaussian start (0.001, as in MART).
        random_start: deprecated alias of ``init``: ``True`` is ``"uniform"``, ``False`` is ``"none"``.
        restarts: number of random restarts (≥ 1).
        targeted: move towards ``y`` instead of away from it.
        generator: optional random generator for the starts, for reproducible attacks.
        checked: the caller has checked ``x`` and ``y`` (as `s2o_lib.train.fit` does, once per run on a GPU): the
            image and label checks, each a host-device sync, are skipped; the other arguments are still checked.

    Returns:
        Adversarial images (detached), shape (B, C, H, W), on the model's device (``x`` and ``y`` are moved there).

    Example:
        >>> x_adv = pgd(model, x, y, eps=8/255, alpha=2/255, steps=10)  # doctest: +SKIP
    """
    _check_pgd_args(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, loss=loss, restarts=restarts,
                    checked=checked)
    init = _resolve_init(init, init_std, random_start)

    x, y = x.detach().to(device_of(model)), y.to(device_of(model)).long()
    best = x.clone()
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with eval_mode(model), torch.enable_grad():
        for restart in range(restarts):
            delta = _start(x, init=init, init_std=init_std, eps=eps, norm=norm, generator=generator)
            x_adv = (x + delta).clamp(0, 1)
            for step in range(steps):
                x_adv.requires_grad_(True)
                logits = model(x_adv)
                if restart == step == 0 and not checked:  # the first forward pass gives the number of classes
                    check_labels(y, num_classes=logits.shape[1])
                objective = _objective(logits, y, loss, targeted).sum()
                grad = _input_gradient(objective, x_adv)
                x_adv = x_adv.detach() + _ascent_step(grad, alpha=alpha, norm=norm)
                x_adv = (x + project(x_adv - x, eps=eps, norm=norm)).clamp(0, 1)
            with torch.no_grad():
                pred = model(x_adv).argmax(1)
                fooled = pred == y if targeted else pred != y
                # torch.where rather than boolean indexing: no host-device sync per restart.
                best = torch.where((~done).view(-1, *([1] * (x.ndim - 1))), x_adv, best)
                done |= fooled
    return best.detach()


def trades_kl_attack(
    model: nn.Module,
    x: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    logits_clean: Tensor | None = None,
    noise_std: float = 0.001,
    generator: torch.Generator | None = None,
    checked: bool = False,
) -> Tensor:
    """TRADES' inner maximisation (Zhang et al. 2019): L∞ PGD on KL(f(x) ‖ f(x′)), started at x + 0.001·N(0, I).

    Args:
        model: classifier mapping (B, C, H, W) images in [0, 1] to (B, K) logits.
        x: clean images, shape (B, C, H, W), values in [0, 1].
        eps: L∞ radius.
        alpha: step size.
        steps: number of steps.
        logits_clean: the model's eval-mode logits on ``x``, if already computed (saves a forward pass).
        noise_std: standard deviation of the Gaussian start (TRADES: 0.001).
        generator: optional random generator for the start.
        checked: the caller has checked ``x`` (as `s2o_lib.train.fit` does): the image check, a host-device sync,
            is skipped.

    Returns:
        Adversarial images (detached), shape (B, C, H, W), on the model's device (``x`` is moved there).
    """
    check_linf_eps(eps)
    _check_steps(steps, alpha, eps)
    if not checked:
        check_images(x)
    x = x.detach().to(device_of(model))
    with eval_mode(model), torch.enable_grad():
        if logits_clean is None:
            with torch.no_grad():
                logits_clean = model(x)
        p_clean = F.softmax(logits_clean.detach().to(x.device), dim=1)
        noise = torch.empty_like(x).normal_(generator=generator) * noise_std
        x_adv = (x + noise).clamp(0, 1)
        for _ in range(steps):
            x_adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
            grad = _input_gradient(kl, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()
