"""Training methods as compositions: a base loss, an optional S²O term, an optional AWP wrapper.

Method names, as `fit` and the command line accept them::

    standard | at | trades | mart           the base loss
    [+awp]                                  adversarial weight perturbation (Wu et al. 2020)
    [+s2o | +s2o-kfac]                      the released S²O regulariser, or the theory's KFAC objective

e.g. ``at``, ``trades+awp``, ``at+s2o``, ``trades+awp+s2o``, ``mart+s2o-kfac``.

Every base loss is written as ``primary + β·robust``:

=========  ==================================================  =====================================
base       primary                                             robust (weighted by β)
=========  ==================================================  =====================================
standard   CE(f(x), y)                                         0
at         CE(f(x′), y), x′ = PGD on CE                        0
trades     CE(f(x), y)                                         KL(f(x) ‖ f(x′)), x′ = PGD on that KL
mart       BCE(f(x′), y) = CE(f(x′), y) − log(1 − max_{k≠y}    mean_b KL(f(x) ‖ f(x′))·(1 − f(x)_y)
           f(x′)_k)
=========  ==================================================  =====================================

The released S²O code reweights the primary term: ``(1 − w)·primary + w·R + β·robust`` with w = 0.1 for
AT and 0.3 for TRADES and MART (so AT+S²O = 0.9·CE_adv + 0.1·R). The KFAC variant adds
``λ·penalty`` to the base loss instead. AWP computes a weight perturbation on a proxy model with the plain
base loss and evaluates the full loss at the perturbed weights.

Example:
    >>> from s2o_lib.defenses import parse_method
    >>> parse_method("trades+awp+s2o")
    Method(base='trades', awp=True, s2o='official')
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks import pgd, trades_kl_attack
from .errors import S2OError
from .s2o import kfac_correlation_penalty, s2o_regulariser

Base = Literal["standard", "at", "trades", "mart"]
S2OVariant = Literal["official", "kfac"]
BASES: tuple[str, ...] = ("standard", "at", "trades", "mart")
_SUFFIX = {"s2o": "official", "s2o-kfac": "kfac"}


@dataclass(frozen=True)
class Method:
    """A parsed training method.

    Attributes:
        base: ``standard``, ``at``, ``trades`` or ``mart``.
        awp: whether adversarial weight perturbation wraps the step.
        s2o: ``None``, ``"official"`` (the released regulariser) or ``"kfac"`` (the theory's objective).
    """

    base: str
    awp: bool = False
    s2o: str | None = None

    @property
    def name(self) -> str:
        """The canonical name, e.g. ``trades+awp+s2o``."""
        parts = [self.base] + (["awp"] if self.awp else [])
        if self.s2o is not None:
            parts.append("s2o" if self.s2o == "official" else "s2o-kfac")
        return "+".join(parts)

    @property
    def adversarial(self) -> bool:
        """Whether the step needs adversarial examples."""
        return self.base != "standard"

    @property
    def needs_clean_logits(self) -> bool:
        return self.base in ("standard", "trades", "mart") or self.s2o is not None


def _all_method_names() -> tuple[str, ...]:
    names = ["standard"]
    for base, awp, s2o in itertools.product(("at", "trades", "mart"), (False, True), (None, "official", "kfac")):
        names.append(Method(base, awp, s2o).name)
    return tuple(names)


METHODS: tuple[str, ...] = _all_method_names()


def parse_method(name: str | Method) -> Method:
    """Parse a method name such as ``"trades+awp+s2o"`` (order of suffixes does not matter).

    Args:
        name: the method name, or an already parsed `Method`.
    """
    if isinstance(name, Method):
        return name
    parts = [p.strip().lower() for p in str(name).split("+") if p.strip()]
    error = S2OError(
        f"unknown training method {name!r}; valid methods are: {', '.join(METHODS)} "
        "(a base method, then optionally +awp and +s2o or +s2o-kfac)"
    )
    if not parts or parts[0] not in BASES:
        raise error
    base, suffixes = parts[0], parts[1:]
    if len(set(suffixes)) != len(suffixes) or any(s not in ("awp", *_SUFFIX) for s in suffixes):
        raise error
    variants = [_SUFFIX[s] for s in suffixes if s in _SUFFIX]
    if len(variants) > 1 or (base == "standard" and suffixes):
        raise error
    return Method(base=base, awp="awp" in suffixes, s2o=variants[0] if variants else None)


@dataclass(frozen=True)
class DefenseConfig:
    """Hyper-parameters of the training methods, defaulting to the published ones.

    Attributes:
        eps: L∞ radius of the training attack (8/255).
        alpha: step size of the training attack (2/255).
        steps: steps of the training attack (PGD-10).
        beta: weight of the robust term for TRADES and MART (6.0 in both papers and in S²O's code).
        s2o_weight: w in ``(1 − w)·primary + w·R``; ``None`` picks 0.1 for AT and 0.3 for TRADES/MART.
        off_diagonal_mass: m of the soft targets (0.8 for 10 classes, 0.98 for CIFAR-100).
        kfac_weight: λ of the KFAC variant's penalty.
        kfac_damping: relative damping of the KFAC factors.
        awp_gamma: AWP's relative perturbation size γ (5e-3).
        awp_warmup: epochs of plain training before AWP starts (10).
        awp_lr: learning rate of the proxy model's single ascent step (0.01, as in AWP's code).
    """

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 10
    beta: float = 6.0
    s2o_weight: float | None = None
    off_diagonal_mass: float = 0.8
    kfac_weight: float = 0.1
    kfac_damping: float = 0.1
    awp_gamma: float = 5e-3
    awp_warmup: int = 10
    awp_lr: float = 0.01

    def s2o_weight_for(self, base: str) -> float:
        if self.s2o_weight is not None:
            return self.s2o_weight
        return 0.1 if base == "at" else 0.3


# --------------------------------------------------------------------------------------------- base losses
def mart_terms(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """MART's two terms (Wang et al. 2020), written as in the authors' code.

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


def base_terms(base: str, logits_clean: Tensor | None, logits_adv: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(primary, robust)`` of a base loss; ``robust`` is ``None`` where the base has none."""
    if base == "standard":
        return F.cross_entropy(logits_clean, y), None
    if base == "at":
        return F.cross_entropy(logits_adv, y), None
    if base == "trades":
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
        return F.cross_entropy(logits_clean, y), robust
    if base == "mart":
        return mart_terms(logits_clean, logits_adv, y)
    raise S2OError(f"unknown base method {base!r}; choose one of {', '.join(BASES)}")


def method_loss(
    method: Method,
    config: DefenseConfig,
    y: Tensor,
    *,
    logits_clean: Tensor | None,
    logits_adv: Tensor | None,
    features_clean: Tensor | None = None,
) -> Tensor:
    """The full training loss of a method from logits already computed.

    Args:
        method: the parsed method.
        config: hyper-parameters.
        y: (B,) labels.
        logits_clean: (B, C) training-mode logits on x, where the method needs them.
        logits_adv: (B, C) training-mode logits on x′, where the method needs them.
        features_clean: (B, D) last-layer inputs on x (``+s2o-kfac`` only).
    """
    primary, robust = base_terms(method.base, logits_clean, logits_adv, y)
    loss = primary
    if method.s2o == "official":
        w = config.s2o_weight_for(method.base)
        reg = s2o_regulariser(logits_clean, logits_adv, y, off_diagonal_mass=config.off_diagonal_mass)
        loss = (1.0 - w) * primary + w * reg
    if robust is not None:
        loss = loss + config.beta * robust
    if method.s2o == "kfac":
        if features_clean is None:
            raise S2OError("+s2o-kfac needs the clean last-layer features; use a model from s2o_lib.models")
        loss = loss + config.kfac_weight * kfac_correlation_penalty(
            features_clean, logits_clean, damping=config.kfac_damping
        )
    return loss


# --------------------------------------------------------------------------------------------- AWP
class AWP:
    """Adversarial weight perturbation (Wu, Xia & Wang 2020) with a persistent proxy model.

    The perturbation comes from one ascent step of the plain base loss on a proxy copy of the model
    (so the real model's BatchNorm statistics are untouched), rescaled per weight tensor to
    ``γ·‖W‖·(v / ‖v‖)``. Only multi-dimensional weights (conv and linear kernels) are perturbed.

    The released AWP code steps the optimiser at the perturbed weights and then subtracts the
    perturbation; here the original weights are restored exactly first and the step uses the gradient
    taken at the perturbed point. The two differ only in where weight decay is evaluated.
    """

    def __init__(self, model: nn.Module, *, gamma: float = 5e-3, lr: float = 0.01) -> None:
        if gamma < 0:
            raise S2OError(f"awp_gamma must be >= 0, got {gamma}")
        self.model = model
        self.gamma = gamma
        self.proxy = copy.deepcopy(model)
        self.proxy_optimizer = torch.optim.SGD(self.proxy.parameters(), lr=lr)

    def perturbation(self, loss_fn: Callable[[nn.Module], Tensor]) -> dict[str, Tensor]:
        """Compute the weight perturbation that increases ``loss_fn`` (evaluated on the proxy)."""
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        loss = -loss_fn(self.proxy)
        self.proxy_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.proxy_optimizer.step()
        proxy_params = dict(self.proxy.named_parameters())
        diff = {}
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if p.ndim <= 1:
                    continue
                d = proxy_params[name] - p
                diff[name] = self.gamma * p.norm() / (d.norm() + 1e-20) * d
        return diff

    @contextmanager
    def perturbed(self, diff: dict[str, Tensor]) -> Iterator[None]:
        """Within the block the model's weights are ``W + diff``; afterwards they are exactly ``W``."""
        params = dict(self.model.named_parameters())
        backup = {name: params[name].detach().clone() for name in diff}
        with torch.no_grad():
            for name, d in diff.items():
                params[name].add_(d)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, w in backup.items():
                    params[name].copy_(w)


# --------------------------------------------------------------------------------------------- one step
@dataclass
class StepResult:
    """What one training step returns (all detached)."""

    loss: Tensor
    logits_clean: Tensor | None
    logits_adv: Tensor | None


def adversarial_examples(
    model: nn.Module, x: Tensor, y: Tensor, *, method: Method, config: DefenseConfig
) -> Tensor | None:
    """The training attack of a method: PGD on CE for AT and MART, the KL attack for TRADES."""
    if not method.adversarial:
        return None
    if method.base == "trades":
        return trades_kl_attack(model, x, eps=config.eps, alpha=config.alpha, steps=config.steps)
    return pgd(model, x, y, eps=config.eps, alpha=config.alpha, steps=config.steps, random_start=True)


def _forward(model: nn.Module, x: Tensor, want_features: bool) -> tuple[Tensor, Tensor | None]:
    if want_features and hasattr(model, "features") and hasattr(model, "head"):
        features = model.features(x)
        return model.head(features), features
    return model(x), None


def _loss_on(model: nn.Module, method: Method, config: DefenseConfig, x: Tensor, x_adv: Tensor | None, y: Tensor):
    """Forward the inputs the method needs, once each, and return (loss, logits_clean, logits_adv)."""
    want_features = method.s2o == "kfac"
    logits_clean = features = logits_adv = None
    if method.needs_clean_logits:
        logits_clean, features = _forward(model, x, want_features)
    if x_adv is not None:
        logits_adv = model(x_adv)
    loss = method_loss(
        method, config, y, logits_clean=logits_clean, logits_adv=logits_adv, features_clean=features
    )
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
) -> StepResult:
    """One optimisation step of any method: attack, (AWP), loss, backward, optimiser step.

    Args:
        model: the model being trained (left in training mode).
        x: (B, C, H, W) clean images in [0, 1].
        y: (B,) labels.
        method: the method (name or parsed).
        config: hyper-parameters.
        optimizer: the model's optimiser.
        awp: an `AWP` helper when weight perturbation is active this step, else ``None``.
    """
    method = parse_method(method)
    model.train()
    x_adv = adversarial_examples(model, x, y, method=method, config=config)
    if awp is not None and method.awp:
        plain = Method(method.base)
        diff = awp.perturbation(lambda m: _loss_on(m, plain, config, x, x_adv, y)[0])
        with awp.perturbed(diff):
            loss, logits_clean, logits_adv = _loss_on(model, method, config, x, x_adv, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
    else:
        loss, logits_clean, logits_adv = _loss_on(model, method, config, x, x_adv, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    detach = lambda t: None if t is None else t.detach()
    return StepResult(loss.detach(), detach(logits_clean), detach(logits_adv))
