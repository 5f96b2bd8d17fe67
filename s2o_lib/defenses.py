"""Training methods as compositions: a base loss, an optional S²O term, an optional AWP wrapper.

Method names, as `fit` and the command line accept them::

    standard | at | trades | mart | avmixup   the base loss
    [+awp]                                    adversarial weight perturbation (Wu et al. 2020)
    [+s2o | +s2o-kfac | +ls]                  the released S²O regulariser, the library's KFAC-Laplace
                                              reading of the paper's objective (damping and weight are ours),
                                              or its label-smoothing control (ours)

e.g. ``at``, ``trades+awp``, ``at+s2o``, ``trades+awp+s2o``, ``avmixup+s2o``, ``mart+s2o-kfac``, ``at+ls``.

Every base loss is written as ``primary + β·robust``:

=========  ==================================================  =====================================
base       primary                                             robust (weighted by β)
=========  ==================================================  =====================================
standard   CE(f(x), y)                                         0
at         CE(f(x′), y), x′ = PGD on CE from a uniform start   0
trades     CE(f(x), y)                                         KL(f(x) ‖ f(x′)), x′ = PGD on that KL
mart       BCE(f(x′), y) = CE(f(x′), y) − log(1 − max_{k≠y}    mean_b KL(f(x) ‖ f(x′))·(1 − f(x)_y),
           f(x′)_k), x′ = PGD on CE from x + 0.001·N(0, I)     same x′
avmixup    soft CE(f(x̃), ỹ): x̃ = αx + (1−α)·clip(x + γδ),      0
           ỹ = α·s(y, λ₁) + (1−α)·s(y, λ₂), α ~ U(0, 1)
=========  ==================================================  =====================================

The released S²O code reweights the primary term: ``(1 − w)·primary + w·R + β·robust`` with w = 0.1 for
AT (and AVMixup, see below) and 0.3 for TRADES and MART (so AT+S²O = 0.9·CE_adv + 0.1·R). The control ``+ls``
is the same loss with R's soft targets replaced by label smoothing at the same label mass (`s2o_lib.s2o`,
`label_smoothing_regulariser`), forwarded exactly as ``+s2o`` is. The KFAC variant adds ``λ·penalty`` to the base
loss instead. AWP computes a weight perturbation on a proxy model with the
plain base loss and evaluates the full loss at the perturbed weights.

Which released script each setting follows (file names in the repositories named in the docstrings below):

- ``at``: PGD-10 on CE from a uniform start, crafted in eval mode; S²O's ``CIFAR10_AT_S2O/train_S2O.py``.
- ``trades``: the KL attack from x + 0.001·N(0, I) (`s2o_lib.attacks.trades_kl_attack`); the loss and the
  train-mode forward order x, x′, x of ``yaodongyu/TRADES`` ``trades.py`` (lines 79-83).
- ``mart``: PGD on CE from x + 0.001·N(0, I); ``YisenWang/MART`` ``mart.py`` (lines 17-56) and S²O's
  ``CIFAR10_MART_S2O/mart_soso.py`` (lines 19-56).
- ``avmixup``: Lee et al., CVPR 2020, ``Saehyung-Lee/cifar10_challenge`` ``pgd_attack.py`` (lines 64-95),
  ``config.json`` (γ = 2, λ₁ = 1.0, λ₂ = 0.1) and ``train.py`` (lines 150-194); see `avmixup_inputs`.
- ``+s2o``: S²O's four ``train_S2O.py`` / ``trades_s2o.py`` / ``mart_soso.py`` scripts (see `s2o_lib.s2o`).
- ``+awp``: `AWP_DEFAULTS`, per base method (the AWP authors' ``AT_AWP/train_cifar10.py`` and
  ``trades_AWP/train_trades_cifar.py``; S²O's ``CIFAR10_AWP_S2O/train_S2O.py`` for TRADES+AWP+S²O).

**BatchNorm's running statistics** follow the order in which a step forwards inputs in training mode
(`forward_order`). TRADES forwards x, x′, x (``trades.py`` lines 79-82) and TRADES-AWP x′, x, x
(``train_trades_cifar.py`` lines 187-192), so two of every three updates see clean images; the library
repeats that order (the third forward runs without gradient: its output equals the first clean forward's,
so loss and gradient are unchanged). The ``+s2o`` scripts forward x, x′ first and then the same inputs again
for the soft-target terms (TRADES+S²O: x, x′, x, x′, x′, x; AT+S²O and MART+S²O: x, x′, x, x′;
TRADES+AWP+S²O: x, x′): the library forwards x, x′ once each, the same share of clean updates.

**AVMixup with S²O.** The S²O paper reports S²O on top of AVMixup, but no released script combines them. In
every released composition the regulariser sees the clean input and the input the base loss trains on, with
the hard label: AT+S²O uses R(f(x), f(x′), y) beside CE(f(x′), y). The library does the same for AVMixup:
``avmixup+s2o = 0.9·softCE(f(x̃), ỹ) + 0.1·R(f(x), f(x̃), y)``, with x̃ the AVMixup mixture (w = 0.1 as for
AT, AVMixup being PGD-AT on mixed inputs). This is our composition, not the authors' code.

Method names are `s2o_lib.methods`'.

Example:
    >>> from s2o_lib.defenses import DefenseConfig
    >>> DefenseConfig().for_method("trades+awp+s2o").awp_gamma
    0.005
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks import pgd, trades_kl_attack
from .awp import AWP, AWP_DEFAULTS, AWPSettings
from .errors import S2OError
from .methods import BASE_INPUTS, BASES, SOFT_TARGET_VARIANTS, Method, parse_method
from .models import device_of
from .s2o import kfac_correlation_penalty, label_smoothing_regulariser, s2o_regulariser

__all__ = [
    "DefenseConfig", "StepInputs", "StepResult", "adversarial_examples", "avmixup_inputs", "avmixup_labels",
    "base_terms", "forward_order", "mart_terms", "method_loss", "smoothed_labels", "soft_cross_entropy",
    "trades_loss", "training_inputs", "training_step",
]


# The regularisers that reweight the primary term, (1 − w)·primary + w·R: the released S²O and its control.
_SOFT_TARGET_TERMS = {"official": s2o_regulariser, "ls": label_smoothing_regulariser}
assert set(_SOFT_TARGET_TERMS) == set(SOFT_TARGET_VARIANTS)


def forward_order(method: Method | str) -> tuple[str, ...]:
    """The inputs one step forwards through the model in training mode, in order.

    BatchNorm's running statistics are updated in this order. ``"clean"`` is x, ``"adv"`` the base loss's
    training input (x′; AVMixup: the mixture), ``"clean-bn"`` a gradient-free forward of x whose only effect
    is on the running statistics (its output equals the first clean forward's). See the module docstring for
    the scripts and lines each order follows.

    Args:
        method: the method (name or parsed).

    Example:
        >>> forward_order("trades"), forward_order("trades+awp"), forward_order("at")
        (('clean', 'adv', 'clean-bn'), ('adv', 'clean', 'clean-bn'), ('adv',))
    """
    method = parse_method(method)
    if method.base == "trades" and method.s2o not in _SOFT_TARGET_TERMS:
        return ("adv", "clean", "clean-bn") if method.awp else ("clean", "adv", "clean-bn")
    order = ("clean",) if method.needs_clean_logits else ()
    return order + (("adv",) if method.adversarial else ())


# --------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class DefenseConfig:
    """Hyper-parameters of the training methods, defaulting to the published ones.

    The AWP fields default to ``None``: the base method's value from `AWP_DEFAULTS`. `for_method` returns a
    copy with every ``None`` replaced for one method (what `fit` records in its checkpoints).

    Attributes:
        eps: L∞ radius of the training attack (8/255).
        alpha: step size of the training attack (2/255).
        steps: steps of the training attack (PGD-10).
        beta: weight of the robust term for TRADES and MART (6.0 in both papers and in S²O's code).
        s2o_weight: w in ``(1 − w)·primary + w·R`` (``+s2o`` and its control ``+ls``); ``None`` picks 0.1 for AT
            and AVMixup, 0.3 for TRADES/MART.
        off_diagonal_mass: m of the soft targets (0.8 for 10 classes, 0.98 for CIFAR-100).
        kfac_weight: λ of the KFAC variant's penalty (ours).
        kfac_damping: relative damping of the KFAC factors (ours).
        awp_gamma: AWP's relative perturbation size γ (``None``: the base's, 1e-2 AT, 5e-3 TRADES).
        awp_warmup: AWP is active from this epoch on, counted from 1 (``None``: the base's, 0 AT, 10 TRADES).
        awp_lr: learning rate of the proxy's ascent step (``None``: the base's, 0.01 AT, 0.1 TRADES).
        avmixup_gamma: AVMixup's γ: the adversarial vertex is x + γ·δ (2.0, ``config.json``).
        avmixup_lambda1: label-smoothing factor λ₁ of the clean end (1.0: the one-hot label).
        avmixup_lambda2: label-smoothing factor λ₂ of the vertex (0.1: uniform over 10 classes).
    """

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    beta: float = 6.0
    s2o_weight: float | None = None
    off_diagonal_mass: float = 0.8
    kfac_weight: float = 0.1
    kfac_damping: float = 0.1
    awp_gamma: float | None = None
    awp_warmup: int | None = None
    awp_lr: float | None = None
    avmixup_gamma: float = 2.0
    avmixup_lambda1: float = 1.0
    avmixup_lambda2: float = 0.1

    def __post_init__(self) -> None:
        if self.awp_gamma is not None and not self.awp_gamma >= 0:
            raise S2OError(f"awp_gamma must be >= 0 (AT-AWP: 0.01, TRADES-AWP: 0.005), got {self.awp_gamma!r}")
        if self.awp_warmup is not None and (isinstance(self.awp_warmup, bool) or not isinstance(self.awp_warmup, int)
                                            or self.awp_warmup < 0):
            raise S2OError(f"awp_warmup must be an integer >= 0 (AT-AWP: 0, TRADES-AWP: 10), got {self.awp_warmup!r}")
        if self.awp_lr is not None and not self.awp_lr > 0:
            raise S2OError(f"awp_lr must be > 0 (AT-AWP: 0.01, TRADES-AWP: 0.1), got {self.awp_lr!r}")
        if not self.avmixup_gamma >= 0:
            raise S2OError(f"avmixup_gamma must be >= 0 (AVMixup: 2.0), got {self.avmixup_gamma!r}")
        for name in ("avmixup_lambda1", "avmixup_lambda2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise S2OError(f"{name} must be in [0, 1] (AVMixup: λ₁ = 1.0, λ₂ = 0.1), got {getattr(self, name)!r}")

    def s2o_weight_for(self, base: str) -> float:
        """w of the released S²O loss for a base method (0.1 for AT and AVMixup, 0.3 for TRADES and MART)."""
        if self.s2o_weight is not None:
            return self.s2o_weight
        return 0.1 if base in ("at", "avmixup") else 0.3

    def label_mass(self, method: Method | str) -> float:
        """The probability on the label that the primary term's input is trained towards.

        ``+s2o`` and ``+ls`` mix the primary term's one-hot target (weight 1 − w) with soft targets that put
        1 − m on the label (weight w): ``(1 − w) + w·(1 − m)``, e.g. 0.9 + 0.1·0.2 = 0.92 for AT+S²O and
        0.7 + 0.3·0.2 = 0.76 for TRADES+S²O and MART+S²O. Other methods train towards the label alone (1.0;
        AVMixup's own smoothed labels aside).

        Args:
            method: the method (name or parsed).
        """
        method = parse_method(method)
        if method.s2o not in _SOFT_TARGET_TERMS:
            return 1.0
        w = self.s2o_weight_for(method.base)
        return (1.0 - w) + w * (1.0 - self.off_diagonal_mass)

    def awp_settings(self, base: str) -> AWPSettings:
        """AWP's (γ, warm-up, proxy lr) for a base method: the fields set here, else `AWP_DEFAULTS[base]`."""
        if base not in AWP_DEFAULTS:
            raise S2OError(f"AWP needs an adversarial base method ({', '.join(AWP_DEFAULTS)}), got {base!r}")
        default = AWP_DEFAULTS[base]
        return AWPSettings(
            gamma=default.gamma if self.awp_gamma is None else self.awp_gamma,
            warmup=default.warmup if self.awp_warmup is None else self.awp_warmup,
            lr=default.lr if self.awp_lr is None else self.awp_lr,
        )

    def for_method(self, method: Method | str) -> DefenseConfig:
        """A copy with ``s2o_weight`` (methods with S²O) and the AWP fields (``+awp``) resolved for ``method``.

        Args:
            method: the method (name or parsed).
        """
        method = parse_method(method)
        config = self
        if method.s2o in _SOFT_TARGET_TERMS:
            config = replace(config, s2o_weight=self.s2o_weight_for(method.base))
        if method.awp:
            awp = self.awp_settings(method.base)
            config = replace(config, awp_gamma=awp.gamma, awp_warmup=awp.warmup, awp_lr=awp.lr)
        return config

    def awp_active(self, epoch: int) -> bool:
        """Whether AWP perturbs the weights in ``epoch`` (counted from 1): ``epoch >= awp_warmup``.

        This is the TRADES-AWP scripts' rule (``if epoch >= args.awp_warmup`` with epochs from 1,
        ``train_trades_cifar.py`` line 179, S²O's ``CIFAR10_AWP_S2O/train_S2O.py`` line 183): warm-up 10
        starts AWP at epoch 10. The AT-AWP script counts epochs from 0 with the same test (``train_cifar10.py``
        lines 307 and 340): its warm-up 0 starts AWP at the first epoch, as ``awp_warmup=0`` does here (its
        warm-up w > 0 would start at our epoch w + 1).

        Args:
            epoch: the epoch, counted from 1.
        """
        if self.awp_warmup is None:
            raise S2OError("awp_warmup is unresolved (None); call config.for_method(method) first")
        return epoch >= self.awp_warmup


# --------------------------------------------------------------------------------------------- base losses
def mart_terms(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """MART's two terms (Wang et al. 2020), written as in the authors' code (``mart.py`` lines 42-55).

    Returns:
        ``(adversarial term, robust term)``: the boosted CE on x′ and the misclassification-weighted KL.
    """
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = adv_probs.argsort(dim=1)[:, -2:]
    # The most likely wrong class: the top class, unless that is the label.
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    adv_term = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), wrong)
    nat_probs = F.softmax(logits_clean, dim=1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(1)
    robust = (kl * (1.0000001 - true_probs)).mean()
    return adv_term, robust


def smoothed_labels(y: Tensor, *, num_classes: int, factor: float) -> Tensor:
    """AVMixup's label smoothing: ``factor`` on the label, ``(1 − factor)/(C − 1)`` on every other class.

    ``pgd_attack.py`` line 65: ``one_hot * factor + (one_hot - 1) * ((factor - 1) / (C - 1))``.

    Args:
        y: (B,) labels.
        num_classes: C.
        factor: λ (1.0 is the one-hot label; 1/C the uniform distribution).

    Returns:
        (B, C) probability vectors.
    """
    one_hot = F.one_hot(y, num_classes).to(torch.get_default_dtype())
    return one_hot * factor + (1.0 - one_hot) * ((1.0 - factor) / (num_classes - 1))


def avmixup_labels(y: Tensor, mix: Tensor, *, num_classes: int, lambda1: float, lambda2: float) -> Tensor:
    """AVMixup's soft labels ``α·s(y, λ₁) + (1 − α)·s(y, λ₂)`` (``pgd_attack.py`` lines 89-94).

    Args:
        y: (B,) labels.
        mix: (B,) mixing weights α of the clean end.
        num_classes: C.
        lambda1: smoothing factor of the clean end.
        lambda2: smoothing factor of the adversarial vertex.

    Returns:
        (B, C) probability vectors.
    """
    alpha = mix.to(torch.get_default_dtype())[:, None]
    return (alpha * smoothed_labels(y, num_classes=num_classes, factor=lambda1)
            + (1 - alpha) * smoothed_labels(y, num_classes=num_classes, factor=lambda2))


def soft_cross_entropy(logits: Tensor, soft: Tensor) -> Tensor:
    """Batch-mean cross-entropy against soft labels, ``−mean_b Σ_c q_bc log softmax(z_b)_c``."""
    return -(soft.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1).mean()


def base_terms(
    base: str, logits_clean: Tensor | None, logits_adv: Tensor | None, y: Tensor, soft_labels: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """``(primary, robust)`` of a base loss; ``robust`` is ``None`` where the base has none.

    Args:
        base: the base method.
        logits_clean: (B, C) training-mode logits on x, where the base uses them.
        logits_adv: (B, C) training-mode logits on x′ (AVMixup: on the mixture), where the base uses them.
        y: (B,) labels.
        soft_labels: (B, C) AVMixup's mixed soft labels (``avmixup`` only).
    """
    if base == "standard":
        return F.cross_entropy(logits_clean, y), None
    if base == "at":
        return F.cross_entropy(logits_adv, y), None
    if base == "trades":
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
        return F.cross_entropy(logits_clean, y), robust
    if base == "mart":
        return mart_terms(logits_clean, logits_adv, y)
    if base == "avmixup":
        if soft_labels is None:
            raise S2OError("avmixup needs its soft labels; compute them with avmixup_labels(y, mix, ...)")
        return soft_cross_entropy(logits_adv, soft_labels), None
    raise S2OError(f"unknown base method {base!r}; choose one of {', '.join(BASES)}")


def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float = 6.0) -> Tensor:
    """TRADES' loss (Zhang et al. 2019, ``trades.py`` lines 79-86): CE(f(x), y) + β·KL(f(x) ‖ f(x′)), batch means.

    The ``trades`` case of `method_loss`, one call for notebook 04's check.

    Args:
        logits_clean: (B, C) logits on x.
        logits_adv: (B, C) logits on x′ (the KL attack's, `s2o_lib.attacks.trades_kl_attack`).
        y: (B,) labels.
        beta: the weight β of the robust term (6, the paper's).
    """
    primary, robust = base_terms("trades", logits_clean, logits_adv, y)
    return primary + beta * robust


def method_loss(
    method: Method,
    config: DefenseConfig,
    y: Tensor,
    *,
    logits_clean: Tensor | None,
    logits_adv: Tensor | None,
    features: Tensor | None = None,
    soft_labels: Tensor | None = None,
) -> Tensor:
    """The full training loss of a method from logits already computed.

    Args:
        method: the parsed method.
        config: hyper-parameters.
        y: (B,) labels.
        logits_clean: (B, C) training-mode logits on x, where the method needs them.
        logits_adv: (B, C) training-mode logits on x′ (AVMixup: on the mixture), where the method needs them.
        features: (n·B, D) last-layer inputs of the inputs the base loss uses, clean before adversarial
            (``+s2o-kfac`` only: x′ for AT, the mixture for AVMixup, x then x′ for TRADES and MART).
        soft_labels: (B, C) AVMixup's mixed soft labels (``avmixup`` only).
    """
    primary, robust = base_terms(method.base, logits_clean, logits_adv, y, soft_labels)
    loss = primary
    if method.s2o in _SOFT_TARGET_TERMS:
        w = config.s2o_weight_for(method.base)
        reg = _SOFT_TARGET_TERMS[method.s2o](logits_clean, logits_adv, y, off_diagonal_mass=config.off_diagonal_mass)
        loss = (1.0 - w) * primary + w * reg
    if robust is not None:
        loss = loss + config.beta * robust
    if method.s2o == "kfac":
        if features is None:
            raise S2OError("+s2o-kfac needs the last-layer features; use a model from s2o_lib.models")
        named = {"clean": logits_clean, "adv": logits_adv}
        logits = torch.cat([named[name] for name in BASE_INPUTS[method.base]])
        with torch.autocast(features.device.type, enabled=False):  # its Gram matrices and inverses in fp32
            penalty = kfac_correlation_penalty(features.float(), logits.float(), damping=config.kfac_damping)
        loss = loss + config.kfac_weight * penalty
    return loss


# --------------------------------------------------------------------------------------------- one step
@dataclass
class StepResult:
    """What one training step returns (all detached, on the model's device)."""

    loss: Tensor
    logits_clean: Tensor | None
    logits_adv: Tensor | None
    skipped: bool = False  # an fp16 step whose gradients were not finite: the loss scaler skipped it


@dataclass(frozen=True)
class StepInputs:
    """The inputs of one training step, drawn once and shared by the AWP proxy and the model.

    Attributes:
        x: (B, C, H, W) clean images.
        y: (B,) labels.
        x_adv: (B, C, H, W) the base loss's training input: x′ (AVMixup: the mixture x̃); ``None`` for standard.
        mix: (B,) AVMixup's mixing weights α of the clean end (``None`` for the other bases).
    """

    x: Tensor
    y: Tensor
    x_adv: Tensor | None = None
    mix: Tensor | None = None


def adversarial_examples(
    model: nn.Module, x: Tensor, y: Tensor, *, method: Method, config: DefenseConfig, checked: bool = False
) -> Tensor | None:
    """The training attack of a method (eval mode, see `s2o_lib.attacks`).

    AT and AVMixup: PGD on CE from a uniform start in the ε-ball (``CIFAR10_AT_S2O/train_S2O.py`` lines
    88-90; AVMixup's ``pgd_attack.py`` lines 70-72). MART: PGD on CE from x + 0.001·N(0, I) (``mart.py``
    line 20, ``mart_soso.py`` line 22). TRADES: PGD on KL(f(x) ‖ f(x′)) from x + 0.001·N(0, I). The AT-AWP
    and AVMixup scripts craft in train mode (batch statistics); the library does not (see `AWP`). ``x`` and ``y``
    are moved to the model's device; so are the returned (B, C, H, W) examples (``None`` for standard training).
    ``checked``: the caller has checked the inputs (`pgd`'s ``checked``).
    """
    if not method.adversarial:
        return None
    x, y = x.to(device_of(model)), y.to(device_of(model))
    if method.base == "trades":
        return trades_kl_attack(model, x, eps=config.eps, alpha=config.alpha, steps=config.steps, checked=checked)
    init = "gaussian" if method.base == "mart" else "uniform"
    return pgd(model, x, y, eps=config.eps, alpha=config.alpha, steps=config.steps, init=init, checked=checked)


def avmixup_inputs(
    x: Tensor, x_adv: Tensor, *, gamma: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """AVMixup's training inputs: ``α·x + (1 − α)·clip(x + γ·(x′ − x), 0, 1)`` with α ~ U(0, 1) per sample.

    ``pgd_attack.py`` lines 86-93 (``np.random.beta(1.0, 1.0, [B, 1, 1, 1])``: one α per sample, the same for
    the image and its label). The vertex lies up to γε from x, outside the ε-ball.

    Args:
        x: (B, C, H, W) clean images in [0, 1].
        x_adv: (B, C, H, W) PGD examples (δ = x′ − x).
        gamma: γ (2.0 in the authors' ``config.json``).
        generator: optional random generator for α.

    Returns:
        ``(x̃, α)``: (B, C, H, W) mixed images in [0, 1] and the (B,) weights of the clean end, on ``x``'s device.
    """
    vertex = (x + gamma * (x_adv - x)).clamp(0, 1)
    mix = torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=generator)
    weight = mix.view(-1, *([1] * (x.ndim - 1)))
    return weight * x + (1 - weight) * vertex, mix


def training_inputs(model: nn.Module, x: Tensor, y: Tensor, *, method: Method, config: DefenseConfig,
                    checked: bool = False) -> StepInputs:
    """Attack (and, for AVMixup, mix) once: the `StepInputs` of one step.

    Args:
        model: the model being trained.
        x: (B, C, H, W) clean images in [0, 1].
        y: (B,) labels.
        method: the parsed method.
        config: hyper-parameters.
        checked: the caller has checked ``x`` and ``y`` (`s2o_lib.attacks.pgd`'s ``checked``).

    Returns:
        The `StepInputs`, every tensor on the model's device (``x`` and ``y`` are moved there).
    """
    x, y = x.to(device_of(model)), y.to(device_of(model))
    x_adv = adversarial_examples(model, x, y, method=method, config=config, checked=checked)
    if method.base != "avmixup":
        return StepInputs(x, y, x_adv)
    x_mix, mix = avmixup_inputs(x, x_adv, gamma=config.avmixup_gamma)
    return StepInputs(x, y, x_mix, mix)


def _forward(model: nn.Module, x: Tensor, want_features: bool) -> tuple[Tensor, Tensor | None]:
    if want_features and hasattr(model, "features") and hasattr(model, "head"):
        features = model.features(x)
        return model.head(features), features
    return model(x), None


def _loss_on(
    model: nn.Module, method: Method, config: DefenseConfig, inputs: StepInputs, *, statistics_forwards: bool = True
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Forward the inputs in `forward_order` and return (loss, logits_clean, logits_adv).

    ``statistics_forwards=False`` skips the ``"clean-bn"`` forwards (for the AWP proxy, whose statistics are
    thrown away).
    """
    want_features = method.s2o == "kfac"
    logits: dict[str, Tensor] = {}
    features: dict[str, Tensor | None] = {}
    for name in forward_order(method):
        if name == "clean-bn":
            if statistics_forwards:
                with torch.no_grad():
                    model(inputs.x)
            continue
        logits[name], features[name] = _forward(model, inputs.x if name == "clean" else inputs.x_adv, want_features)
    logits_clean, logits_adv = logits.get("clean"), logits.get("adv")
    soft = None
    if inputs.mix is not None:
        soft = avmixup_labels(inputs.y, inputs.mix, num_classes=logits_adv.shape[1],
                              lambda1=config.avmixup_lambda1, lambda2=config.avmixup_lambda2)
    used = [features.get(name) for name in BASE_INPUTS[method.base]]
    feats = torch.cat(used) if want_features and all(f is not None for f in used) else None
    loss = method_loss(method, config, inputs.y, logits_clean=logits_clean, logits_adv=logits_adv,
                       features=feats, soft_labels=soft)
    return loss, logits_clean, logits_adv


def training_step(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    method: Method | str,
    config: DefenseConfig,
    optimizer: torch.optim.Optimizer,
    awp: AWP | None = None,
    scaler: torch.amp.GradScaler | None = None,
    checked: bool = False,
) -> StepResult:
    """One optimisation step of any method: attack, (AWP), loss, backward, optimiser step.

    With an active loss scaler (fp16, `s2o_lib.fast.grad_scaler`) the loss's backward goes through it: the
    scaled loss is backpropagated, the scaler unscales the gradients, skips the optimiser's step when they are
    not finite (``StepResult.skipped``) and updates its scale. AWP's ascent on its proxy then runs in **fp32**
    (autocast off): the perturbation is rescaled to γ‖W‖ per tensor, so it needs only the gradient's direction,
    which fp16 could lose to underflow or overflow, and it does not go through the scaler, whose skip-and-rescale
    bookkeeping belongs to the model's own step.

    Args:
        model: the model being trained (left in training mode).
        x: (B, C, H, W) clean images in [0, 1].
        y: (B,) labels.
        method: the method (name or parsed).
        config: hyper-parameters.
        optimizer: the model's optimiser.
        awp: an `AWP` helper when weight perturbation is active this step (`DefenseConfig.awp_active`),
            else ``None``.
        scaler: a `torch.amp.GradScaler` (``None`` or disabled: the plain fp32/bf16 step).
        checked: the caller has checked ``x`` and ``y`` (`s2o_lib.train.fit` checks its batches itself): the
            training attack skips its image and label checks (`s2o_lib.attacks.pgd`'s ``checked``).

    Returns:
        The `StepResult` (detached, on the model's device; ``x`` and ``y`` are moved there).
    """
    method = parse_method(method)
    x, y = x.to(device_of(model)), y.to(device_of(model))
    scaling = scaler is not None and scaler.is_enabled()
    torch.clear_autocast_cache()  # inside a longer autocast context: no low-precision copy of the last step's weights
    model.train()
    inputs = training_inputs(model, x, y, method=method, config=config, checked=checked)
    if awp is not None and method.awp:
        plain = Method(method.base)
        with torch.autocast(x.device.type, enabled=False) if scaling else contextlib.nullcontext():
            diff = awp.perturbation(lambda m: _loss_on(m, plain, config, inputs, statistics_forwards=False)[0])
        with awp.perturbed(diff):
            loss, logits_clean, logits_adv = _loss_on(model, method, config, inputs)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaling else loss).backward()
    else:
        loss, logits_clean, logits_adv = _loss_on(model, method, config, inputs)
        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaling else loss).backward()
    skipped = False
    if scaling:
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped = scaler.get_scale() < before  # the scaler backs off only after a step it skipped
    else:
        optimizer.step()
    detach = lambda t: None if t is None else t.detach()
    return StepResult(loss.detach(), detach(logits_clean), detach(logits_adv), skipped)
