"""Adversarial weight perturbation (AWP, Wu, Xia & Wang, NeurIPS 2020): its settings per base method and `AWP`.

AWP trains at weights pushed, per layer, a relative distance γ up the loss: one ascent step on a proxy copy of the
model gives the direction, `AWP.perturbed` applies it around the training step's forward and backward, and the
original weights come back exactly. `AWP_DEFAULTS` holds γ, the warm-up and the proxy's learning rate of each
base method, read from the released scripts. Notebook 05 writes the perturbation by hand and checks it against
`AWP`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .errors import S2OError

__all__ = ["AWP", "AWP_DEFAULTS", "AWPSettings"]


class AWPSettings(NamedTuple):
    """AWP's hyper-parameters.

    Attributes:
        gamma: relative size γ of the weight perturbation (‖v_l‖ = γ‖w_l‖ per weight tensor).
        warmup: AWP is active from epoch ``warmup`` on, epochs counted from 1 (see `DefenseConfig.awp_active`).
        lr: learning rate of the proxy model's single ascent step (it cancels in the rescaling to γ‖w‖).
    """

    gamma: float
    warmup: int
    lr: float


#: AWP's settings per base method. ``at``: the AWP authors' ``AT_AWP/train_cifar10.py`` (``--awp-gamma
#: 0.01``, ``--awp-warmup 0``, lines 162-163; proxy ``SGD(lr=0.01)``, line 241). ``trades``:
#: ``trades_AWP/train_trades_cifar.py`` (``--awp-gamma 0.005``, ``--awp-warmup 10``, lines 60-63; proxy lr =
#: ``args.lr`` = 0.1, line 279), as in S²O's ``CIFAR10_AWP_S2O/train_S2O.py`` (lines 61-64, 338). ``mart``: no
#: MART-AWP script is released; the library takes TRADES-AWP's settings (MART, like TRADES, is a clean plus
#: adversarial two-term loss trained in the same WRN-34-10, 200-epoch setting). ``avmixup``: no script either;
#: AT-AWP's settings (AVMixup is PGD-AT with one loss on one, mixed, input).
AWP_DEFAULTS: dict[str, AWPSettings] = {
    "at": AWPSettings(gamma=1e-2, warmup=0, lr=0.01),
    "trades": AWPSettings(gamma=5e-3, warmup=10, lr=0.1),
    "mart": AWPSettings(gamma=5e-3, warmup=10, lr=0.1),
    "avmixup": AWPSettings(gamma=1e-2, warmup=0, lr=0.01),
}


class AWP:
    """Adversarial weight perturbation (Wu, Xia & Wang 2020) with a persistent proxy model.

    The perturbation comes from one ascent step of the plain base loss on a proxy copy of the model
    (so the real model's BatchNorm statistics are untouched), rescaled per weight tensor to
    ``γ·‖W‖·(v / ‖v‖)`` (``utils_awp.py`` ``diff_in_weights``). Only multi-dimensional weights (conv and
    linear kernels) are perturbed. The proxy's learning rate cancels in that rescaling (the proxy's SGD has no
    momentum or weight decay, so v = lr·∇); it is kept per script (0.01 AT-AWP, 0.1 TRADES-AWP, see
    `AWP_DEFAULTS`) and changes the perturbation only by rounding.

    The released AWP code steps the optimiser at the perturbed weights and then subtracts the
    perturbation; here the original weights are restored exactly first and the step uses the gradient
    taken at the perturbed point. The two differ only in where weight decay is evaluated.

    The AT-AWP script crafts its PGD with the model in **train** mode (``AT_AWP/train_cifar10.py``: the
    ``model.train()`` of line 338 is still in force at the next batch's ``attack_pgd``, line 329, except for
    the first batch of each later epoch, which follows the evaluation's ``model.eval()``, line 379), so its 11
    attack forwards use batch statistics and update BatchNorm's running statistics; it also forwards the
    clean batch in train mode after each step, for logging (line 365). The library does not copy this: its
    attacks run in eval mode and leave the statistics alone (as the S²O, TRADES, MART and TRADES-AWP scripts
    do), and it makes no logging forward, so AT-AWP's running statistics here see only x′.

    Args:
        model: the model being trained.
        gamma: γ (``None`` is refused: resolve it with `DefenseConfig.awp_settings`).
        lr: the proxy's learning rate (``None``: 0.1, the TRADES-AWP script's).
    """

    def __init__(self, model: nn.Module, *, gamma: float | None = 5e-3, lr: float | None = None) -> None:
        if gamma is None:
            raise S2OError("AWP needs gamma; take it from config.for_method(method).awp_gamma or AWP_DEFAULTS")
        if gamma < 0:
            raise S2OError(f"awp_gamma must be >= 0, got {gamma}")
        self.model = model
        self.gamma = gamma
        self.proxy = copy.deepcopy(model)
        lr = AWP_DEFAULTS["trades"].lr if lr is None else lr
        self.proxy_optimizer = torch.optim.SGD(self.proxy.parameters(), lr=lr)

    def perturbation(self, loss_fn: Callable[[nn.Module], Tensor]) -> dict[str, Tensor]:
        """Compute the weight perturbation that increases ``loss_fn`` (evaluated on the proxy)."""
        self.proxy.load_state_dict(self.model.state_dict())
        torch.clear_autocast_cache()  # the proxy's weights changed in place (see `perturbed`)
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
        """Within the block the model's weights are ``W + diff``; afterwards they are exactly ``W``.

        Autocast (bf16, fp16) keeps its low-precision copy of each weight until its outermost context ends, so a
        forward inside it would not see weights changed in place: the cache is cleared after each change.
        """
        params = dict(self.model.named_parameters())
        backup = {name: params[name].detach().clone() for name in diff}
        with torch.no_grad():
            for name, d in diff.items():
                params[name].add_(d)
        torch.clear_autocast_cache()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, w in backup.items():
                    params[name].copy_(w)
            torch.clear_autocast_cache()
