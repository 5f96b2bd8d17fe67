"""How much Gaussian noise on the last layer's weights a model tolerates: `noisy_accuracy` and `sigma_search`.

The PAC-Bayesian bound (`s2o_lib.bounds`) needs the largest σ at which the model's accuracy on fixed inputs drops
by at most a given amount, for isotropic noise ``N(0, σ²I)`` and for noise correlated as the last layer's Laplace
posterior ``N(0, σ² R)`` (`s2o_lib.laplace.last_layer_laplace`). `sigma_search` bisects for it; `noisy_accuracy`
is one point of that search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attacks import eval_mode
from .checks import check_eps, check_fraction, check_int
from .data import batch_slices
from .errors import S2OError, unknown_name
from .models import device_of, dtype_of, last_linear

__all__ = [
    "NOISE_KINDS", "SIGMA_RANGE", "ForwardOutputs", "NoiseKind", "NoisyHeadAccuracy", "check_search_args",
    "forward_pass", "noisy_accuracy", "sigma_search",
]

NoiseKind = Literal["isotropic", "correlated"]
NOISE_KINDS: tuple[str, ...] = ("isotropic", "correlated")
#: Default σ range of the bisection, relative to the weights' RMS (see `sigma_search`).
SIGMA_RANGE: tuple[float, float] = (1e-4, 1e2)


@dataclass
class ForwardOutputs:
    """What one eval-mode pass over a set of inputs gives the bound (CPU tensors)."""

    logits: Tensor  # (m, C) model outputs
    features: Tensor  # (m, D) inputs of the last linear layer
    head_out: Tensor  # (m, C) outputs of the last linear layer
    head_is_output: bool  # the head ran once per forward and its output is the model's output


def forward_pass(model: nn.Module, x: Tensor, *, batch_size: int) -> ForwardOutputs:
    """Eval-mode logits, last-layer inputs and last-layer outputs of ``x`` (CPU tensors), batch by batch."""
    head = last_linear(model)
    device, dtype = device_of(model), dtype_of(model)
    calls: list[tuple[Tensor, Tensor]] = []

    def hook(_module: nn.Module, inputs: tuple, output: Tensor) -> None:
        calls.append((inputs[0].detach(), output.detach()))

    logits, feats, outs = [], [], []
    handle = head.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            for part in batch_slices(x.shape[0], batch_size):
                calls.clear()
                out = model(x[part].to(device, dtype))
                if len(calls) != 1 or calls[0][0].ndim != 2:
                    raise S2OError(
                        "the last nn.Linear must run exactly once per forward pass on a (B, D) input "
                        "(models from s2o_lib.models do); its inputs are the Laplace posterior's features"
                    )
                logits.append(out.detach().cpu())
                feats.append(calls[0][0].cpu())
                outs.append(calls[0][1].cpu())
    finally:
        handle.remove()
    logits_t, head_out_t = torch.cat(logits), torch.cat(outs)
    is_output = head_out_t.shape == logits_t.shape and bool(torch.equal(head_out_t, logits_t))
    return ForwardOutputs(logits=logits_t, features=torch.cat(feats), head_out=head_out_t, head_is_output=is_output)


# ============================================================================================ σ search
class NoisyHeadAccuracy:
    """Accuracy of a model on fixed inputs when Gaussian noise is added to its last layer's weight.

    Fast path (models whose output is the last layer's output, as every `s2o_lib.models` model): the last
    layer's inputs are computed once and the perturbed weight is applied to them, so the model's weights are
    never touched. Otherwise every draw writes ``W + noise`` into the weight, runs the model and writes the saved
    weight back (bitwise), also on error.
    """

    def __init__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int, forward: ForwardOutputs | None = None
    ) -> None:
        self.model, self.x, self.y, self.batch_size = model, x, y.cpu(), batch_size
        self.head = last_linear(model)
        self.device, self.dtype = device_of(model), dtype_of(model)
        self.forward = forward if forward is not None else forward_pass(model, x, batch_size=batch_size)
        weight = self.head.weight.detach()
        # The weights' root-mean-square: σ is relative to it.
        self.rms = float(weight.double().norm() / math.sqrt(weight.numel()))
        self.clean_accuracy = self.accuracy(None)

    def _correct(self, weight: Tensor | None) -> Tensor:
        if self.forward.head_is_output:
            w = self.head.weight.detach().cpu() if weight is None else weight.cpu()
            b = None if self.head.bias is None else self.head.bias.detach().cpu()
            logits = F.linear(self.forward.features.to(w.dtype), w, b)
            return (logits.argmax(1) == self.y).double()
        if weight is None:
            return (self.forward.logits.argmax(1) == self.y).double()
        param = self.head.weight
        saved = param.detach().clone()
        correct = []
        try:
            with eval_mode(self.model), torch.no_grad():
                param.copy_(weight.to(param.device, param.dtype))
                for part in batch_slices(self.x.shape[0], self.batch_size):
                    out = self.model(self.x[part].to(self.device, self.dtype))
                    correct.append((out.argmax(1).cpu() == self.y[part]).double())
        finally:
            with torch.no_grad():
                param.copy_(saved)  # bitwise restore
        return torch.cat(correct)

    def accuracy(self, weight: Tensor | None) -> float:
        return float(self._correct(weight).mean())

    def directions(
        self, noise: str, correlation: tuple[Tensor, Tensor] | None, draws: int, seed: int, *,
        project_shift: bool = True,
    ) -> Tensor:
        """``draws`` unit-scale noise matrices (draws, C, D): E, or L_G E L_Aᵀ for correlated noise.

        With ``project_shift`` each draw is multiplied by P = I − 11ᵀ/C on the class side and rescaled by
        ``sqrt(C / tr(P R_G))`` (R_G = I for isotropic noise), so that every kind keeps a mean variance of 1 per
        weight, all of it in the directions that change the prediction.
        """
        c, d = self.head.weight.shape
        if noise not in NOISE_KINDS:
            raise unknown_name("noise kind", noise, NOISE_KINDS)
        if project_shift and c < 2:
            raise S2OError("project_shift needs a last layer with at least 2 outputs; pass project_shift=False")
        chol, shift_scale = None, math.sqrt(c / (c - 1)) if c > 1 else 1.0
        if noise == "correlated":
            if correlation is None:
                raise S2OError("correlated noise needs correlation=(R_A, R_G), e.g. from last_layer_laplace")
            R_A, R_G = correlation
            if tuple(R_A.shape) != (d, d) or tuple(R_G.shape) != (c, c):
                raise S2OError(
                    f"correlation must be (R_A, R_G) of shapes ({d}, {d}) and ({c}, {c}) for a {c}×{d} last layer; "
                    f"got {tuple(R_A.shape)} and {tuple(R_G.shape)}"
                )
            chol = (torch.linalg.cholesky(R_A.double().cpu()), torch.linalg.cholesky(R_G.double().cpu()))
            if project_shift:  # tr(P R_G) = C − 1ᵀR_G1/C: the class variance left once the shift is removed
                shift_scale = math.sqrt(c / max(c - float(R_G.double().sum()) / c, 1e-12))
        out = []
        for k in range(draws):
            generator = torch.Generator().manual_seed(int(seed) + k)
            E = torch.randn(c, d, generator=generator, dtype=torch.float64)
            if chol is not None:
                L_A, L_G = chol
                E = L_G @ E @ L_A.T  # vec(L_G E L_Aᵀ) ~ N(0, R_G ⊗ R_A): unit variance per weight, no kron formed
            if project_shift:  # P E: the shift 1 vᵀ that the softmax ignores removed, the variance restored
                E = shift_scale * (E - E.mean(dim=0, keepdim=True))
            out.append(E)
        return torch.stack(out)

    def noisy_accuracy(self, sigma: float, directions: Tensor) -> float:
        weight = self.head.weight.detach().double().cpu()
        # torch.normal(mean, std) would take a standard deviation; we scale a standard normal draw explicitly:
        # noise = σ · rms(W) · E, so σ is the noise's standard deviation relative to the weights' RMS.
        scale = sigma * self.rms
        accs = [self.accuracy((weight + scale * E).to(self.head.weight.dtype)) for E in directions]
        return float(sum(accs) / len(accs))

    def search(
        self, directions: Tensor, *, max_drop: float, iters: int, sigma_range: tuple[float, float]
    ) -> float:
        lo, hi = math.log(sigma_range[0]), math.log(sigma_range[1])
        target = self.clean_accuracy - max_drop

        def passes(log_sigma: float) -> bool:
            return self.noisy_accuracy(math.exp(log_sigma), directions) >= target - 1e-12

        if passes(hi):
            return sigma_range[1]
        if not passes(lo):
            return 0.0
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            if passes(mid):
                lo = mid
            else:
                hi = mid
        return math.exp(lo)


def check_search_args(draws: int, max_drop: float, iters: int, sigma_range: tuple[float, float]) -> None:
    check_int(draws, "draws", minimum=1)
    check_int(iters, "iters (bisection steps)", minimum=0)
    check_fraction(max_drop, "max_drop (an accuracy drop, e.g. 0.1)")
    lo, hi = sigma_range
    if not (0 < lo < hi and math.isfinite(hi)):
        raise S2OError(f"sigma_range must be (low, high) with 0 < low < high, e.g. (1e-4, 100); got {sigma_range!r}")


def noisy_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    sigma: float,
    noise: NoiseKind = "isotropic",
    correlation: tuple[Tensor, Tensor] | None = None,
    draws: int = 4,
    seed: int = 0,
    batch_size: int = 256,
    project_shift: bool = True,
) -> float:
    """Accuracy on fixed inputs with Gaussian noise of relative scale σ on the last layer's weight, averaged.

    Args:
        model: the classifier (its weights are left bitwise unchanged, its mode restored).
        x: fixed inputs, e.g. pre-computed adversarial examples, shape (m, C, H, W).
        y: labels, shape (m,).
        sigma: noise standard deviation relative to the weight's RMS ‖W‖_F/√(C·D) (≥ 0).
        noise: ``"isotropic"`` (σ·rms·E) or ``"correlated"`` (σ·rms·L_G E L_Aᵀ).
        correlation: ``(R_A, R_G)`` for correlated noise (see `last_layer_laplace`).
        draws: number of noise draws averaged (draw k uses seed ``seed + k``).
        seed: seed of the draws.
        batch_size: batch size of the forward passes.
        project_shift: remove the softmax-shift component ``1 vᵀ`` of every draw (why: `s2o_lib.bounds`' module
            docstring).

    Returns:
        The mean accuracy over the draws, in [0, 1] (a float; ``x`` and ``y`` go to the model's device batch by batch).
    """
    check_eps(sigma, name="sigma")
    check_int(draws, "draws", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    evaluator = NoisyHeadAccuracy(model, x, y, batch_size=batch_size)
    directions = evaluator.directions(noise, correlation, draws, seed, project_shift=project_shift)
    return evaluator.noisy_accuracy(sigma, directions)


def sigma_search(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    noise: NoiseKind = "isotropic",
    correlation: tuple[Tensor, Tensor] | None = None,
    max_drop: float = 0.1,
    draws: int = 4,
    iters: int = 12,
    sigma_range: tuple[float, float] = SIGMA_RANGE,
    seed: int = 0,
    batch_size: int = 256,
    project_shift: bool = True,
) -> float:
    """The largest relative noise scale σ on the last layer that keeps accuracy within ``max_drop``.

    Bisection over log σ in ``sigma_range`` with a fixed number of steps, on the criterion
    ``mean accuracy with noise ≥ accuracy without noise − max_drop``. The same noise directions (common random
    numbers) are used at every σ, so the criterion is deterministic and a larger ``max_drop`` never gives a
    smaller σ. Returns ``sigma_range[1]`` if even that σ passes and 0.0 if even ``sigma_range[0]`` fails.

    Args:
        model: the classifier (weights left bitwise unchanged, mode restored).
        x: fixed inputs, e.g. pre-computed adversarial examples (the model is not re-attacked), shape (m, ...).
        y: labels, shape (m,).
        noise: ``"isotropic"`` or ``"correlated"`` (see `noisy_accuracy`).
        correlation: ``(R_A, R_G)`` for correlated noise.
        max_drop: allowed accuracy drop in [0, 1].
        draws: noise draws averaged per σ.
        iters: bisection steps.
        sigma_range: ``(low, high)`` bracket of σ (relative to the weights' RMS).
        seed: seed of the draws.
        batch_size: batch size of the forward passes.
        project_shift: remove the softmax-shift component ``1 vᵀ`` of every draw (why: `s2o_lib.bounds`' module
            docstring).

    Returns:
        σ (relative to ‖W‖_F/√(C·D)), a float; ``x`` and ``y`` go to the model's device batch by batch.
    """
    check_search_args(draws, max_drop, iters, sigma_range)
    check_int(batch_size, "batch_size", minimum=1)
    evaluator = NoisyHeadAccuracy(model, x, y, batch_size=batch_size)
    directions = evaluator.directions(noise, correlation, draws, seed, project_shift=project_shift)
    return evaluator.search(directions, max_drop=max_drop, iters=iters, sigma_range=sigma_range)
