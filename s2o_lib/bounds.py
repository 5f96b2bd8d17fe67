r"""Spectral and Frobenius norms, and the PAC-Bayesian robust generalisation bound of S²O.

The bound (Neyshabur, Bhojanapalli & Srebro, ICLR 2018, in its spectrally-normalised margin form; extended to
adversarial inputs and to a posterior with a non-diagonal covariance as in Jin et al., NeurIPS 2020 and the S²O
paper, CVPR 2022 / TPAMI 2025). With probability ≥ 1 − δ over the m training samples,

    L_0^adv  ≤  L̂_γ^adv  +  sqrt( Q_S / (γ² m) ),

    Q_S  =  (B + ε₂)² · n² · h · ln(n h) · ∏ᵢ ‖Wᵢ‖₂² · Σᵢ ‖Wᵢ‖_F² / ‖Wᵢ‖₂² · maxᵢ ‖Sᵢ‖₂
            −  Σᵢ ln det Sᵢ  +  ln(n m / δ).

``Q_S`` is reported as ``kl_independent`` / ``kl_correlated`` (with ``log10_kl_*``), and the square-root
(complexity) term as ``log10_bound_independent`` / ``log10_bound_correlated`` = log10 sqrt(Q_S / (γ² m)).

Symbols, and what this module plugs in for each (`BoundReport` field in brackets):

- ``L_0^adv``: the robust test error (the probability that some x′ in the threat ball is misclassified).
- ``L̂_γ^adv``: the empirical robust margin loss: the fraction of training points whose margin
  ``z_y − max_{j≠y} z_j`` at the adversarial point is ≤ γ. The adversarial point is PGD on the CW margin loss
  (`s2o_lib.attacks.pgd` with ``loss="cw"``), which looks for the lowest-margin point of the L∞ ball
  [``robust_margin_loss``].
- ``γ``: the robust margin, the ``margin_quantile`` quantile (default 0.1, the 10th percentile) of the positive
  adversarial margins. If no margin is positive, γ falls back to that quantile of |margin| (then L̂ = 1 and the
  bound is vacuous anyway); ``BoundReport.gamma_fallback`` says so [``gamma``].
- ``m``: the number of training samples used (a seeded random subset of at most ``n`` of them) [``m``].
- ``n``: the depth [``depth``], the number of layers with weights: every ``nn.Conv2d`` and ``nn.Linear`` that runs in the
  forward pass (residual shortcuts included). ``BatchNorm`` is **ignored** (not folded into the convolutions),
  and so is a ``Normalize`` module inside the model: their fixed per-channel scalings are not counted.
- ``h``: the width, the largest ``out_channels``/``out_features``/``in_channels``/``in_features`` of those layers
  [``width``].
- ``B``: the largest L2 norm of the m training inputs [``input_norm``].
- ``ε₂``: **the L2 radius ``ε·√d`` of the ball that circumscribes the L∞ ball** of radius ε in d = C·H·W
  dimensions (the bound is stated for L2 perturbations of the input; this is the conservative conversion)
  [``eps_l2``].
- ``‖Wᵢ‖₂``: the spectral norm of layer i. For a convolution this is, by default, the norm of the *true* linear
  operator ``x ↦ conv(x)`` on the layer's actual input shape (power iteration with ``F.conv2d`` and its adjoint
  ``F.conv_transpose2d``); ``conv_spectral="reshaped"`` uses the cheaper norm of the kernel reshaped to
  ``(out, in·k·k)`` instead. Every norm is a power iteration with a fixed number of iterations from a seeded
  start (deterministic), which returns a lower bound of the true value [``layers``, ``log10_spectral_product``
  = log10 ∏ᵢ‖Wᵢ‖₂²].
- ``‖Wᵢ‖_F``: the Frobenius norm of the weight tensor (the kernel for a convolution, not the unrolled operator).
  With the true operator norm, a convolution's ratio ``‖W‖_F²/‖W‖₂²`` can be below 1 [``sum_fro_over_spec``].
- ``Sᵢ``: the correlation matrix of layer i's posterior perturbation, ``vec(Uᵢ) ~ N(0, σ² Sᵢ)``. The
  *independent* version takes every Sᵢ = I (so ``maxᵢ‖Sᵢ‖₂ = 1``, ``Σ ln det Sᵢ = 0``: the usual bound). The
  *correlated* version keeps Sᵢ = I except for the last layer, whose S is the Kronecker-factored Laplace
  correlation ``R = R_G ⊗ R_A`` of `s2o_lib.laplace` (computed on the clean training inputs, as the ``+s2o-kfac``
  objective does); then ``maxᵢ‖Sᵢ‖₂ = max(1, ‖R‖₂) = ‖R‖₂`` and ``−Σ ln det Sᵢ = −log det R ≥ 0``. R is never
  materialised: its norms and log-determinant come from the factors [``R_fro``, ``R_spectral``, ``R_logdet``].
- ``δ``: the failure probability (default 0.05).

**The O(·) constant is fixed to 1.** The papers state the bound up to an unspecified absolute constant; any fixed
value only shifts every log10 value below by the same amount, so comparisons between models are unaffected.
Absolute values are vacuous for real networks (often by tens of orders of magnitude): every product is computed
in log space and the report carries ``log10_*`` versions that stay finite where the plain value overflows.

The empirical counterpart (`sigma_search`): the largest relative posterior scale σ for which adding Gaussian
noise to the last layer's weight keeps the robust training accuracy within ``max_drop`` of the noise-free one —
isotropic noise ``σ·s·E`` against correlated noise ``σ·s·L_G E L_Aᵀ`` (L the Cholesky factors of R_G, R_A, so
``vec(noise) ~ N(0, σ² s² R_G ⊗ R_A)`` with the same per-weight variance as the isotropic noise), where E is a
standard normal C × D matrix and ``s = ‖W‖_F/√(C·D)`` is the weight's root-mean-square: **σ is relative to the
weights' magnitude**. The accuracy is measured on adversarial training points computed **once** before the
search (the CW-PGD points of the bound; the noisy model is not re-attacked, which is optimistic but cheap and
deterministic), averaged over a few seeded draws that are reused at every σ, and σ is found by bisection over
log σ with a fixed number of steps. The model's weights are never left changed. A larger σ means a flatter
posterior the data tolerate [``sigma_isotropic``, ``sigma_correlated``].

Example:
    >>> import torch
    >>> from s2o_lib.models import build_model
    >>> from s2o_lib.bounds import estimate_bound
    >>> model = build_model("small-cnn", num_classes=10, in_channels=1)
    >>> x, y = torch.rand(32, 1, 16, 16), torch.randint(0, 10, (32,))
    >>> report = estimate_bound(model, (x, y), eps=0.1, steps=2, n=32, sigma_search=False, power_iters=20)
    >>> report.kl_correlated >= report.kl_independent
    True
    >>> report.depth, report.width
    (5, 256)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd
from torch.utils.data import DataLoader, Dataset

from .attacks import check_eps, check_images, eval_mode, pgd
from .errors import S2OError, unknown_name
from .laplace import kfac_factors, kronecker_correlation, kronecker_summaries
from .models import last_linear

LayerKind = Literal["conv", "linear"]
NoiseKind = Literal["isotropic", "correlated"]
ConvSpectral = Literal["true", "reshaped"]
NOISE_KINDS: tuple[str, ...] = ("isotropic", "correlated")
CONV_SPECTRAL: tuple[str, ...] = ("true", "reshaped")

#: Default σ range of the bisection, relative to the weights' RMS (see `sigma_search`).
SIGMA_RANGE: tuple[float, float] = (1e-4, 1e2)
_LN10 = math.log(10.0)


# ============================================================================================ checks
def _check_int(value: Any, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise S2OError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_open_unit(value: Any, name: str, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise S2OError(f"{name} must be a number strictly between 0 and 1 (e.g. {example}), got {value!r}")


def _check_iters(iters: Any) -> None:
    _check_int(iters, "iters (power iterations)", minimum=1)


def _seeded_randn(shape: Sequence[int], seed: int, like: Tensor) -> Tensor:
    """A standard normal tensor drawn on the CPU from ``seed`` (identical on every device), then moved."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float64).to(like.device, like.dtype)


# ============================================================================================ power iteration
def power_iteration(
    op: Callable[[Tensor], Tensor],
    adjoint: Callable[[Tensor], Tensor],
    v0: Tensor,
    *,
    iters: int = 100,
) -> Tensor:
    """Largest singular value of a linear operator A by power iteration on AᵀA, for a batch of start vectors.

    Each of the k start vectors is iterated independently (``v ← AᵀA v / ‖AᵀA v‖``) for exactly ``iters``
    iterations; the estimate for a unit v is ``sqrt(‖AᵀA v‖)``, a lower bound of ‖A‖₂ that increases to it.
    There is no convergence test: the loop never synchronises with the host (no ``.item()``, no ``bool()``),
    and the same start vector and iteration count give the same number every time. Convergence is slow when the
    top singular values cluster (convolutions on large inputs): the estimate can then be low by ~0.1 % after 100
    iterations — use more iterations for exact work.

    Args:
        op: ``v ↦ A v``, mapping a batch (k, *in_shape) to (k, *out_shape).
        adjoint: ``u ↦ Aᵀ u``, mapping (k, *out_shape) back to (k, *in_shape).
        v0: start vectors, shape (k, *in_shape) (need not be normalised; a seeded random draw).
        iters: number of iterations (≥ 1).

    Returns:
        The k estimates of ‖A‖₂, shape (k,), detached.

    Example:
        >>> W = torch.diag(torch.tensor([3.0, 1.0]))
        >>> power_iteration(lambda v: v @ W.T, lambda u: u @ W, torch.ones(1, 2)).round(decimals=4)
        tensor([3.])
    """
    _check_iters(iters)
    if v0.ndim < 2:
        raise S2OError(f"v0 must be a batch of start vectors, shape (k, ...); got shape {tuple(v0.shape)}")
    tiny = torch.finfo(v0.dtype).tiny

    def unit(t: Tensor) -> Tensor:
        norm = t.flatten(1).norm(dim=1).clamp_min(tiny)
        return t / norm.view(-1, *([1] * (t.ndim - 1)))

    with torch.no_grad():
        v = unit(v0.detach())
        sigma = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
        for _ in range(iters):  # fixed count: no host synchronisation inside the loop
            w = adjoint(op(v))
            sigma = w.flatten(1).norm(dim=1).sqrt()
            v = unit(w)
    return sigma


def matrix_spectral_norm(
    W: Tensor, *, iters: int = 100, seed: int = 0
) -> Tensor:
    """Spectral norm ‖W‖₂ of a matrix, or of each matrix of a stack, by seeded power iteration.

    Args:
        W: a matrix (m, n) or a stack (..., m, n).
        iters: number of power iterations (fixed).
        seed: seed of the random start vectors (deterministic: drawn on the CPU).

    Returns:
        ‖W‖₂ as a 0-d tensor for a matrix, shape (...) for a stack.

    Example:
        >>> W = torch.randn(20, 30)
        >>> bool(torch.isclose(matrix_spectral_norm(W, iters=500), torch.linalg.matrix_norm(W, ord=2), rtol=1e-3))
        True
    """
    if W.ndim < 2:
        raise S2OError(f"W must be a matrix (m, n) or a stack (..., m, n); got shape {tuple(W.shape)}")
    W = W.detach()
    batch, (m, n) = W.shape[:-2], W.shape[-2:]
    stack = W.reshape(-1, m, n)
    v0 = _seeded_randn((stack.shape[0], n), seed, W)
    sigma = power_iteration(
        lambda v: torch.bmm(stack, v.unsqueeze(-1)).squeeze(-1),
        lambda u: torch.bmm(stack.transpose(1, 2), u.unsqueeze(-1)).squeeze(-1),
        v0,
        iters=iters,
    )
    return sigma.reshape(batch)


# ============================================================================================ convolutions
def conv_operator(
    conv: nn.Conv2d, input_shape: Sequence[int]
) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """The linear map of a convolution (bias dropped) on inputs of one shape, and its adjoint.

    With zero padding the adjoint is ``F.conv_transpose2d`` with the layer's stride, padding, dilation and groups
    (and the ``output_padding`` that restores the input size); for other padding modes, or string padding such
    as ``"same"``, the adjoint is the vector-Jacobian product of the (linear) forward map.

    Args:
        conv: the layer; its weight is (out, in/groups, kh, kw).
        input_shape: one input's shape (C_in, H, W).

    Returns:
        ``(op, adjoint)``: ``op`` maps (k, C_in, H, W) to (k, C_out, H_out, W_out); ``adjoint`` maps back.
    """
    if not isinstance(conv, nn.Conv2d):
        raise S2OError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or shape[0] != conv.in_channels:
        raise S2OError(
            f"input_shape must be one input's (C_in, H, W) with C_in = {conv.in_channels}; got {tuple(input_shape)}"
        )
    weight = conv.weight.detach()

    def op(v: Tensor) -> Tensor:
        return conv._conv_forward(v, weight, None)

    if conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
        out_hw = op(torch.zeros(1, *shape, dtype=weight.dtype, device=weight.device)).shape[-2:]
        output_padding = tuple(
            size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)
            for size, o, s, p, d, k in zip(
                shape[1:], out_hw, conv.stride, conv.padding, conv.dilation, conv.kernel_size, strict=True
            )
        )

        def adjoint(u: Tensor) -> Tensor:
            return F.conv_transpose2d(
                u, weight, None, conv.stride, conv.padding, output_padding, conv.groups, conv.dilation
            )

        return op, adjoint

    def adjoint_vjp(u: Tensor) -> Tensor:
        with torch.enable_grad():
            x = torch.zeros(u.shape[0], *shape, dtype=u.dtype, device=u.device, requires_grad=True)
            (grad,) = torch.autograd.grad(op(x), x, grad_outputs=u)
        return grad

    return op, adjoint_vjp


def conv_spectral_norm(
    conv: nn.Conv2d,
    input_shape: Sequence[int],
    *,
    iters: int = 100,
    seed: int = 0,
    starts: int = 1,
) -> Tensor:
    """Spectral norm of the true linear operator of a convolution on inputs of shape ``input_shape``.

    Power iteration with ``F.conv2d`` and its adjoint ``F.conv_transpose2d`` (see `conv_operator`); the bias is
    an offset and does not count. ``starts`` random start vectors run as one batch; the largest estimate wins.

    Args:
        conv: the layer.
        input_shape: one input's shape (C_in, H, W).
        iters: number of power iterations (fixed).
        seed: seed of the start vectors.
        starts: number of start vectors (≥ 1), run batched.

    Returns:
        A 0-d tensor, a lower bound of ‖conv‖₂ that converges to it.

    Example:
        >>> conv = nn.Conv2d(2, 3, 3, padding=1)
        >>> float(conv_spectral_norm(conv, (2, 8, 8))) > 0
        True
    """
    _check_int(starts, "starts", minimum=1)
    op, adjoint = conv_operator(conv, input_shape)
    shape = tuple(int(s) for s in input_shape)[-3:]
    v0 = _seeded_randn((starts, *shape), seed, conv.weight)
    return power_iteration(op, adjoint, v0, iters=iters).max()


def reshaped_spectral_norm(
    weight: Tensor, *, iters: int = 100, seed: int = 0
) -> Tensor:
    """Spectral norm of a weight reshaped to a matrix (out, rest): for a conv kernel (out, in·kh·kw).

    This cheap proxy ignores how the kernel slides over the image: for a 1×1 convolution with stride 1 it equals
    the true operator norm; in general ``true ≤ √(kh·kw) · reshaped`` (each input pixel enters at most kh·kw
    patches), and neither is always the larger.

    Args:
        weight: a weight tensor (out, ...).
        iters: number of power iterations (fixed).
        seed: seed of the start vector.

    Returns:
        A 0-d tensor.
    """
    return matrix_spectral_norm(weight.detach().reshape(weight.shape[0], -1), iters=iters, seed=seed)


# ============================================================================================ per-layer norms
@dataclass(frozen=True)
class LayerNorms:
    """Norms of one layer with weights.

    Attributes:
        name: the module's name in ``model.named_modules()``.
        kind: ``"conv"`` (nn.Conv2d) or ``"linear"`` (nn.Linear).
        weight_shape: the weight's shape.
        input_shape: one input's shape as seen in the forward pass ((C, H, W) or (D,)).
        out_width: out_channels / out_features.
        in_width: in_channels / in_features.
        spectral: ‖W‖₂ of the true linear operator on ``input_shape`` (for a Linear: of the matrix). This is the
            norm the bound uses by default.
        spectral_reshaped: ‖W‖₂ of the weight reshaped to (out, rest) (for a Linear: the same number as
            ``spectral``).
        frobenius: ‖W‖_F of the weight tensor.
    """

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    out_width: int
    in_width: int
    spectral: float
    spectral_reshaped: float
    frobenius: float

    def as_dict(self) -> dict[str, Any]:
        """The norms as a plain dictionary."""
        return asdict(self)


def _example_batch(model: nn.Module, example_input: Tensor | Sequence[int]) -> Tensor:
    """The example batch on the model's device/dtype; a shape (C, H, W) or (1, C, H, W) gives one zero input."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    if isinstance(example_input, Tensor):
        if example_input.ndim < 2 or example_input.shape[0] < 1:
            raise S2OError(
                "example_input must be a non-empty batch, e.g. x_train[:1] of shape (1, C, H, W); "
                f"got shape {tuple(example_input.shape)}"
            )
        return example_input.detach().to(device, dtype)
    shape = tuple(int(s) for s in example_input)
    if len(shape) == 0 or any(s < 1 for s in shape):
        raise S2OError(f"example_input must be a batch tensor or one input's shape, e.g. (1, 16, 16); got {shape}")
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    return torch.zeros(1, *shape, dtype=dtype, device=device)


def _weight_layers_in_call_order(model: nn.Module, example: Tensor) -> list[tuple[str, nn.Module, tuple]]:
    """Every Conv2d/Linear that runs on the example batch, in call order, with its per-sample input shape."""
    names = {module: name for name, module in model.named_modules()}
    for name, module in model.named_modules():
        if isinstance(module, _ConvNd) and not isinstance(module, nn.Conv2d):
            raise S2OError(
                f"layer {name!r} is a {type(module).__name__}; bounds support nn.Conv2d and nn.Linear layers only"
            )
    seen: dict[nn.Module, tuple] = {}

    def hook(module: nn.Module, inputs: tuple, _output: Any) -> None:
        if module not in seen:  # a module called twice keeps its first input shape
            seen[module] = tuple(inputs[0].shape[1:])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with eval_mode(model), torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return [(names[m], m, s) for m, s in seen.items()]


def layer_norms(
    model: nn.Module,
    example_input: Tensor | Sequence[int],
    *,
    iters: int = 100,
    seed: int = 0,
) -> list[LayerNorms]:
    """Spectral (true and reshaped) and Frobenius norms of every Conv2d and Linear layer of a model.

    The layers are those that run in one eval-mode forward pass of ``example_input`` (forward hooks record each
    layer's per-sample input shape), in call order; residual shortcuts count. **BatchNorm is ignored** (not
    folded into the preceding convolution), and so are biases (offsets do not change a Lipschitz constant) and
    any ``Normalize`` step inside the model.

    For a convolution, ``spectral`` is the norm of the true linear operator ``x ↦ conv(x)`` on the recorded
    input shape (`conv_spectral_norm`) and ``spectral_reshaped`` the cheaper norm of the kernel reshaped to
    (out, in·k·k) (`reshaped_spectral_norm`). For a Linear layer both are the matrix's spectral norm. Every
    norm is a seeded, fixed-iteration power iteration (a lower bound of the exact value).

    Args:
        model: the network; its mode is restored afterwards and its weights are not touched.
        example_input: one sample batch of inputs, e.g. ``x_train[:1]`` (any batch size; only the shapes matter),
            or, for convenience, one input's shape such as (3, 32, 32), which runs a zero input.
        iters: power iterations per norm.
        seed: seed of the power iterations' start vectors (layer i uses ``seed + 7919·i``).

    Returns:
        One `LayerNorms` per layer.

    Example:
        >>> from s2o_lib.models import build_model
        >>> norms = layer_norms(build_model("small-cnn", num_classes=10, in_channels=1), torch.rand(1, 1, 16, 16))
        >>> [layer.kind for layer in norms]
        ['conv', 'conv', 'conv', 'linear', 'linear']
    """
    _check_iters(iters)
    example = _example_batch(model, example_input)
    result: list[LayerNorms] = []
    for index, (name, module, in_shape) in enumerate(_weight_layers_in_call_order(model, example)):
        weight = module.weight.detach()
        layer_seed = seed + 7919 * index
        reshaped = float(reshaped_spectral_norm(weight, iters=iters, seed=layer_seed))
        if isinstance(module, nn.Conv2d):
            true = float(conv_spectral_norm(module, in_shape, iters=iters, seed=layer_seed))
            kind, out_w, in_w = "conv", module.out_channels, module.in_channels
        else:
            true = reshaped
            kind, out_w, in_w = "linear", module.out_features, module.in_features
        result.append(
            LayerNorms(
                name=name,
                kind=kind,
                weight_shape=tuple(weight.shape),
                input_shape=tuple(in_shape),
                out_width=int(out_w),
                in_width=int(in_w),
                spectral=true,
                spectral_reshaped=reshaped,
                frobenius=float(weight.double().norm()),
            )
        )
    return result


# ============================================================================================ Laplace posterior
@dataclass(frozen=True)
class LastLayerLaplace:
    """The Kronecker-factored Laplace correlation ``R = R_G ⊗ R_A`` of the last layer, via `s2o_lib.laplace`.

    Attributes:
        R_A: input-side correlation factor (D × D), float64.
        R_G: class-side correlation factor (C × C), float64.
        fro: ‖R‖_F.
        spectral: ‖R‖₂ (≥ 1 for a correlation matrix).
        logdet: log det R (≤ 0, 0 only for R = I).
        dim: C·D.
    """

    R_A: Tensor
    R_G: Tensor
    fro: float
    spectral: float
    logdet: float
    dim: int


def last_layer_laplace(features: Tensor, probs: Tensor, *, damping: float = 0.1) -> LastLayerLaplace:
    """The last layer's Laplace correlation from its inputs and the softmax outputs (R is never formed).

    Uses `s2o_lib.laplace.kfac_factors`, `kronecker_correlation` and `kronecker_summaries`, in float64.

    Args:
        features: inputs of the last linear layer, shape (m, D).
        probs: softmax probabilities, shape (m, C).
        damping: relative damping of both K-FAC factors (> 0).

    Returns:
        A `LastLayerLaplace`.

    Example:
        >>> lap = last_layer_laplace(torch.randn(64, 8), torch.softmax(torch.randn(64, 3), 1))
        >>> lap.spectral >= 1.0 and lap.logdet <= 0.0
        True
    """
    A, G = kfac_factors(features.detach().double(), probs.detach().double(), damping=damping)
    R_A, R_G = kronecker_correlation(A, G)
    summary = kronecker_summaries(R_A, R_G)
    return LastLayerLaplace(
        R_A=R_A, R_G=R_G, fro=float(summary.fro), spectral=float(summary.spectral),
        logdet=float(summary.logdet), dim=int(summary.dim),
    )


# ============================================================================================ forward passes
@dataclass
class _Pass:
    logits: Tensor  # (m, C) model outputs
    features: Tensor  # (m, D) inputs of the last linear layer
    head_out: Tensor  # (m, C) outputs of the last linear layer
    head_is_output: bool  # the head ran once per forward and its output is the model's output


def _device_of(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        raise S2OError("the model has no parameters; give a trained network")
    return param.device, param.dtype


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def _forward_pass(model: nn.Module, x: Tensor, *, batch_size: int) -> _Pass:
    """Eval-mode logits, last-layer inputs and last-layer outputs of ``x`` (CPU tensors), batch by batch."""
    head = last_linear(model)
    device, dtype = _device_of(model)
    calls: list[tuple[Tensor, Tensor]] = []

    def hook(_module: nn.Module, inputs: tuple, output: Tensor) -> None:
        calls.append((inputs[0].detach(), output.detach()))

    logits, feats, outs = [], [], []
    handle = head.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.no_grad():
            for part in _batches(x.shape[0], batch_size):
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
    return _Pass(logits=logits_t, features=torch.cat(feats), head_out=head_out_t, head_is_output=is_output)


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


# ============================================================================================ σ search
class _HeadNoise:
    """Accuracy of a model on fixed inputs when Gaussian noise is added to its last layer's weight.

    Fast path (models whose output is the last layer's output, as every `s2o_lib.models` model): the last
    layer's inputs are computed once and the perturbed weight is applied to them, so the model's weights are
    never touched. Otherwise every draw writes ``W + noise`` into the weight, runs the model and writes the saved
    weight back (bitwise), also on error.
    """

    def __init__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int, forward: _Pass | None = None
    ) -> None:
        self.model, self.x, self.y, self.batch_size = model, x, y.cpu(), batch_size
        self.head = last_linear(model)
        self.device, self.dtype = _device_of(model)
        self.forward = forward if forward is not None else _forward_pass(model, x, batch_size=batch_size)
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
                for part in _batches(self.x.shape[0], self.batch_size):
                    out = self.model(self.x[part].to(self.device, self.dtype))
                    correct.append((out.argmax(1).cpu() == self.y[part]).double())
        finally:
            with torch.no_grad():
                param.copy_(saved)  # bitwise restore
        return torch.cat(correct)

    def accuracy(self, weight: Tensor | None) -> float:
        return float(self._correct(weight).mean())

    def directions(self, noise: str, correlation: tuple[Tensor, Tensor] | None, draws: int, seed: int) -> Tensor:
        """``draws`` unit-scale noise matrices (draws, C, D): E, or L_G E L_Aᵀ for correlated noise."""
        c, d = self.head.weight.shape
        if noise not in NOISE_KINDS:
            raise unknown_name("noise kind", noise, NOISE_KINDS)
        chol = None
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
        out = []
        for k in range(draws):
            generator = torch.Generator().manual_seed(int(seed) + k)
            E = torch.randn(c, d, generator=generator, dtype=torch.float64)
            if chol is not None:
                L_A, L_G = chol
                E = L_G @ E @ L_A.T  # vec(L_G E L_Aᵀ) ~ N(0, R_G ⊗ R_A): unit variance per weight, no kron formed
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


def _check_search_args(draws: int, max_drop: float, iters: int, sigma_range: tuple[float, float]) -> None:
    _check_int(draws, "draws", minimum=1)
    _check_int(iters, "iters (bisection steps)", minimum=0)
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not 0 <= max_drop <= 1:
        raise S2OError(f"max_drop must be an accuracy drop in [0, 1] (e.g. 0.1), got {max_drop!r}")
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

    Returns:
        The mean accuracy over the draws, in [0, 1].
    """
    check_eps(sigma, name="sigma")
    _check_int(draws, "draws", minimum=1)
    _check_int(batch_size, "batch_size", minimum=1)
    evaluator = _HeadNoise(model, x, y, batch_size=batch_size)
    return evaluator.noisy_accuracy(sigma, evaluator.directions(noise, correlation, draws, seed))


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

    Returns:
        σ (relative to ‖W‖_F/√(C·D)).
    """
    _check_search_args(draws, max_drop, iters, sigma_range)
    _check_int(batch_size, "batch_size", minimum=1)
    evaluator = _HeadNoise(model, x, y, batch_size=batch_size)
    directions = evaluator.directions(noise, correlation, draws, seed)
    return evaluator.search(directions, max_drop=max_drop, iters=iters, sigma_range=sigma_range)


# ============================================================================================ the bound
def _ln(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    if top == math.inf:
        return math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class BoundValue:
    """One evaluation of the bound (see the module docstring); natural logs unless named ``log10_``.

    Attributes:
        log_kl: ln Q, Q the bracket of the bound (the KL-derived term plus the confidence term ln(nm/δ)).
        kl: Q (``inf`` when it overflows a float).
        log10_kl: log10 Q.
        log10_bound: log10 sqrt(Q / (γ² m)), the complexity (square-root) term of the bound.
        bound: L̂_γ^adv + sqrt(Q / (γ² m)) (``inf`` when it overflows).
    """

    log_kl: float
    kl: float
    log10_kl: float
    log10_bound: float
    bound: float


def robust_bound(
    *,
    B: float,
    eps_l2: float,
    depth: int,
    width: int,
    log_spectral_product: float,
    sum_fro_over_spec: float,
    max_S_spectral: float,
    neg_logdet_S: float,
    m: int,
    delta: float,
    gamma: float,
    empirical_loss: float,
) -> BoundValue:
    """The spectrally-normalised robust PAC-Bayes bound from its terms, computed in log space (O(·) constant 1).

    Every product is a sum of logarithms and every sum a log-sum-exp, so the result is finite even where
    ∏ᵢ‖Wᵢ‖₂² overflows a float.

    Args:
        B: the largest L2 norm of the training inputs.
        eps_l2: the L2 radius of the threat ball.
        depth: n, the number of layers with weights.
        width: h, the largest layer width.
        log_spectral_product: ln ∏ᵢ‖Wᵢ‖₂² (= Σᵢ 2·ln‖Wᵢ‖₂), natural log.
        sum_fro_over_spec: Σᵢ ‖Wᵢ‖_F²/‖Wᵢ‖₂².
        max_S_spectral: maxᵢ ‖Sᵢ‖₂ (1 under independence).
        neg_logdet_S: −Σᵢ ln det Sᵢ (0 under independence; ≥ 0 for correlation matrices).
        m: the number of training samples.
        delta: the failure probability, in (0, 1).
        gamma: the margin γ > 0.
        empirical_loss: L̂_γ^adv in [0, 1].

    Returns:
        A `BoundValue`.

    Example:
        >>> v = robust_bound(B=1.0, eps_l2=0.0, depth=2, width=2, log_spectral_product=0.0, sum_fro_over_spec=2.0,
        ...                  max_S_spectral=1.0, neg_logdet_S=0.0, m=100, delta=0.05, gamma=1.0, empirical_loss=0.0)
        >>> round(v.bound, 4) == round(((4 * 2 * math.log(4) * 2 + math.log(2 * 100 / 0.05)) / 100) ** 0.5, 4)
        True
    """
    log_perturbation = (
        2 * _ln(B + eps_l2) + 2 * _ln(depth) + _ln(width) + _ln(_ln(depth * width))
        + log_spectral_product + _ln(sum_fro_over_spec) + _ln(max_S_spectral)
    )
    confidence = math.log(depth * m / delta)
    log_q = _logsumexp([log_perturbation, _ln(neg_logdet_S), _ln(confidence)])
    log_sqrt_term = 0.5 * (log_q - 2 * _ln(gamma) - math.log(m))
    log_bound = _logsumexp([_ln(empirical_loss), log_sqrt_term])
    return BoundValue(
        log_kl=log_q,
        kl=_exp(log_q),
        log10_kl=log_q / _LN10,
        log10_bound=log_sqrt_term / _LN10,
        bound=_exp(log_bound),
    )


@dataclass(frozen=True)
class BoundReport:
    """Every term of the robust PAC-Bayes bound for one model (symbols as in the module docstring).

    Attributes:
        m: training samples used.
        depth: n, the number of Conv2d/Linear layers that run in the forward pass.
        width: h, the largest in/out width of those layers.
        input_dim: d, the number of input entries C·H·W.
        input_norm: B, the largest L2 norm of the m training inputs.
        eps: the L∞ radius of the threat model.
        eps_l2: ε₂ = ε·√d, the L2 radius of the ball around the L∞ ball (what enters the bound).
        alpha: the PGD step size used.
        steps: the PGD steps used.
        delta: δ.
        margin_quantile: the quantile of positive adversarial margins that sets γ.
        gamma: γ, the robust margin.
        gamma_fallback: True when no adversarial margin was positive (γ from |margins|; the bound is vacuous).
        robust_margin_loss: L̂_γ^adv, the fraction of the m points with adversarial margin ≤ γ.
        clean_train_acc: accuracy on the clean training points.
        robust_train_acc: accuracy on the CW-PGD adversarial training points.
        conv_spectral: which convolution norm enters the bound, ``"true"`` or ``"reshaped"``.
        log10_spectral_product: log10 ∏ᵢ‖Wᵢ‖₂².
        sum_fro_over_spec: Σᵢ ‖Wᵢ‖_F²/‖Wᵢ‖₂².
        confidence_term: ln(n m / δ).
        damping: relative damping of the K-FAC factors.
        R_fro: ‖R‖_F of the last layer's Laplace correlation R = R_G ⊗ R_A.
        R_spectral: ‖R‖₂ (≥ 1).
        R_logdet: log det R (natural log, ≤ 0).
        R_dim: the dimension C·D of R.
        kl_independent: Q_I, the bracket of the bound with every Sᵢ = I (``inf`` if it overflows a float).
        kl_correlated: Q_R, the bracket with the last layer's S = R (≥ Q_I).
        log10_kl_independent: log10 Q_I (always finite).
        log10_kl_correlated: log10 Q_R.
        log10_bound_independent: log10 sqrt(Q_I / (γ² m)), the complexity term of the independent bound.
        log10_bound_correlated: log10 sqrt(Q_R / (γ² m)).
        bound_independent: the whole bound L̂_γ^adv + sqrt(Q_I / (γ² m)) (``inf`` on overflow; > 1 is vacuous).
        bound_correlated: L̂_γ^adv + sqrt(Q_R / (γ² m)).
        head_weight_rms: ‖W‖_F/√(C·D) of the last layer: σ's unit.
        sigma_max_drop: the allowed robust-accuracy drop of the σ search.
        sigma_isotropic: largest relative σ of isotropic last-layer noise within the drop (nan: not searched;
            100, the top of `SIGMA_RANGE`: at least that much; 0.0: even 1e-4 breaks the drop).
        sigma_correlated: the same for noise correlated as R (nan: not searched).
        layers: the per-layer norms (`LayerNorms`), in call order.
    """

    m: int
    depth: int
    width: int
    input_dim: int
    input_norm: float
    eps: float
    eps_l2: float
    alpha: float
    steps: int
    delta: float
    margin_quantile: float
    gamma: float
    gamma_fallback: bool
    robust_margin_loss: float
    clean_train_acc: float
    robust_train_acc: float
    conv_spectral: str
    log10_spectral_product: float
    sum_fro_over_spec: float
    confidence_term: float
    damping: float
    R_fro: float
    R_spectral: float
    R_logdet: float
    R_dim: int
    kl_independent: float
    kl_correlated: float
    log10_kl_independent: float
    log10_kl_correlated: float
    log10_bound_independent: float
    log10_bound_correlated: float
    bound_independent: float
    bound_correlated: float
    head_weight_rms: float
    sigma_max_drop: float
    sigma_isotropic: float
    sigma_correlated: float
    layers: tuple[LayerNorms, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Every field as a plain dictionary (``layers`` as a list of dictionaries)."""
        out = asdict(self)
        out["layers"] = [layer.as_dict() for layer in self.layers]
        return out

    def scalars(self) -> dict[str, Any]:
        """Every field except ``layers``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "layers"}


def _as_tensors(train_data: Any, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded random subset of at most ``n`` (image, label) pairs, as CPU tensors."""
    if isinstance(train_data, (tuple, list)) and len(train_data) == 2 and all(
        isinstance(t, Tensor) for t in train_data
    ):
        x_all, y_all = train_data
        if x_all.shape[0] != y_all.shape[0]:
            raise S2OError(
                f"(X, y) must hold one label per image; got {x_all.shape[0]} images, {y_all.shape[0]} labels"
            )
        total = x_all.shape[0]
        getter = None
    elif isinstance(train_data, DataLoader):
        raise S2OError("give the Dataset (loader.dataset) or an (X, y) tuple of tensors, not a DataLoader")
    elif isinstance(train_data, Dataset) and hasattr(train_data, "__len__"):
        total = len(train_data)
        getter = train_data
    else:
        raise S2OError(
            f"train_data must be an (X, y) tuple of tensors or a map-style Dataset; got {type(train_data).__name__}"
        )
    if total == 0:
        raise S2OError("train_data is empty; give at least one (image, label) pair")
    if total > n:
        index = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:n].sort().values
    else:
        index = torch.arange(total)
    if getter is None:
        x, y = x_all[index], y_all[index]
    else:
        items = [getter[int(i)] for i in index]
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
    x, y = x.detach().cpu(), torch.as_tensor(y).detach().cpu()
    check_images(x, y)
    return x, y.long()


def estimate_bound(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor] | Dataset,
    *,
    eps: float,
    alpha: float | None = None,
    steps: int = 10,
    n: int = 512,
    delta: float = 0.05,
    margin_quantile: float = 0.1,
    damping: float = 0.1,
    sigma_search: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    conv_spectral: ConvSpectral = "true",
    power_iters: int = 100,
    sigma_max_drop: float = 0.1,
    sigma_draws: int = 4,
    sigma_iters: int = 12,
) -> BoundReport:
    """Estimate every term of the robust PAC-Bayes bound, independent and correlated, for one model.

    Steps: a seeded subset of m ≤ ``n`` training points; clean logits and last-layer inputs; L∞ PGD on the CW
    margin loss (random start, seeded) for the adversarial margins, γ and L̂_γ^adv; per-layer norms
    (`layer_norms`); the last layer's Laplace correlation on the clean points (`last_layer_laplace`); the bound
    in log space (`robust_bound`); optionally the σ search (`sigma_search`) on the fixed adversarial points
    (pre-computed once for speed: the perturbed model is not re-attacked, which is optimistic).

    The model's mode is restored, its weights are left bitwise unchanged and no ``.grad`` is created.

    Args:
        model: a classifier of images in [0, 1] with an ``nn.Linear`` last layer (e.g. from `s2o_lib.models`).
        train_data: training data, an ``(X, y)`` tuple of tensors or a map-style Dataset of (image, label).
        eps: L∞ radius of the threat model (≥ 0).
        alpha: PGD step size (``None``: 2.5·eps/steps, Madry et al.'s choice).
        steps: PGD steps (≥ 1).
        n: the largest number of training points used (≥ 1); m = min(n, len(train_data)).
        delta: failure probability δ in (0, 1).
        margin_quantile: quantile in (0, 1) of the positive adversarial margins that sets γ.
        damping: relative damping of the K-FAC factors (> 0).
        sigma_search: run the empirical σ search (else both σ are nan).
        seed: seed of the subset, the PGD starts, the power iterations and the noise draws.
        batch_size: batch size of the forward passes and attacks.
        conv_spectral: ``"true"`` (the operator norm, default) or ``"reshaped"`` kernel norm in the bound.
        power_iters: power iterations per norm (fixed; fewer is cheaper and lower, see `power_iteration`).
        sigma_max_drop: allowed robust-accuracy drop of the σ search.
        sigma_draws: noise draws averaged per σ.
        sigma_iters: bisection steps of the σ search.

    Returns:
        A `BoundReport`.

    Example:
        >>> report = estimate_bound(model, (x_train, y_train), eps=8/255, steps=10)  # doctest: +SKIP
        >>> report.log10_bound_independent, report.log10_bound_correlated  # doctest: +SKIP
    """
    check_eps(eps)
    _check_int(steps, "steps", minimum=1)
    _check_int(n, "n (number of training samples)", minimum=1)
    _check_int(batch_size, "batch_size", minimum=1)
    _check_int(seed, "seed", minimum=0)
    _check_open_unit(delta, "delta", "0.05")
    _check_open_unit(margin_quantile, "margin_quantile", "0.1")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not damping > 0:
        raise S2OError(f"damping must be > 0 (e.g. 0.1), got {damping!r}")
    if conv_spectral not in CONV_SPECTRAL:
        raise unknown_name("conv_spectral", conv_spectral, CONV_SPECTRAL)
    _check_iters(power_iters)
    if sigma_search:
        _check_search_args(sigma_draws, sigma_max_drop, sigma_iters, SIGMA_RANGE)
    if alpha is None:
        alpha = 2.5 * eps / steps
    check_eps(alpha, name="alpha (step size)")
    head = last_linear(model)  # S2OError for a model without nn.Linear
    device, dtype = _device_of(model)

    x, y = _as_tensors(train_data, n, seed)
    m = x.shape[0]
    if int(y.max()) >= head.out_features or int(y.min()) < 0:
        raise S2OError(
            f"labels must lie in [0, {head.out_features - 1}] for this model; got [{int(y.min())}, {int(y.max())}]"
        )

    with eval_mode(model):
        clean = _forward_pass(model, x, batch_size=batch_size)
        if eps > 0:
            generator = torch.Generator(device=device).manual_seed(int(seed))
            x_adv = torch.cat([
                pgd(model, x[part].to(device, dtype), y[part].to(device), eps=eps, alpha=alpha, steps=steps,
                    loss="cw", generator=generator).cpu()
                for part in _batches(m, batch_size)
            ])
        else:
            x_adv = x
        adv = clean if eps == 0 else _forward_pass(model, x_adv, batch_size=batch_size)

        margin_adv = margins(adv.logits.double(), y)
        positive = margin_adv[margin_adv > 0]
        gamma_fallback = positive.numel() == 0
        source = margin_adv.abs() if gamma_fallback else positive
        gamma = max(float(torch.quantile(source, margin_quantile)), 1e-12)
        empirical = float((margin_adv <= gamma).double().mean())
        robust_acc = float((adv.logits.argmax(1) == y).double().mean())
        clean_acc = float((clean.logits.argmax(1) == y).double().mean())

        norms = layer_norms(model, x[:1], iters=power_iters, seed=seed)
        laplace = last_layer_laplace(clean.features, F.softmax(clean.head_out.double(), dim=1), damping=damping)

        sigma_iso = sigma_cor = math.nan
        evaluator = _HeadNoise(model, x_adv, y, batch_size=batch_size, forward=adv)
        if sigma_search:
            for kind in NOISE_KINDS:
                directions = evaluator.directions(kind, (laplace.R_A, laplace.R_G), sigma_draws, seed)
                value = evaluator.search(directions, max_drop=sigma_max_drop, iters=sigma_iters,
                                         sigma_range=SIGMA_RANGE)
                if kind == "isotropic":
                    sigma_iso = value
                else:
                    sigma_cor = value

    spectral = [layer.spectral if conv_spectral == "true" else layer.spectral_reshaped for layer in norms]
    log_spec = sum(2 * _ln(s) for s in spectral)
    sum_ratio = sum((layer.frobenius / s) ** 2 if s > 0 else 0.0 for layer, s in zip(norms, spectral, strict=True))
    depth = len(norms)
    width = max(max(layer.out_width, layer.in_width) for layer in norms)
    input_dim = int(x[0].numel())
    B = float(x.flatten(1).double().norm(dim=1).max())
    eps_l2 = eps * math.sqrt(input_dim)
    common = {"B": B, "eps_l2": eps_l2, "depth": depth, "width": width, "log_spectral_product": log_spec,
              "sum_fro_over_spec": sum_ratio, "m": m, "delta": delta, "gamma": gamma, "empirical_loss": empirical}
    # Independent posterior: every S_i = I. Correlated: the last layer's S is the Laplace correlation R, so
    # max_i ‖S_i‖₂ = max(1, ‖R‖₂) and −Σ_i ln det S_i = −log det R (≥ 0; the clamp only absorbs round-off).
    independent = robust_bound(max_S_spectral=1.0, neg_logdet_S=0.0, **common)
    correlated = robust_bound(max_S_spectral=max(1.0, laplace.spectral), neg_logdet_S=max(0.0, -laplace.logdet),
                              **common)
    return BoundReport(
        m=m, depth=depth, width=width, input_dim=input_dim, input_norm=B, eps=float(eps), eps_l2=eps_l2,
        alpha=float(alpha), steps=steps, delta=float(delta), margin_quantile=float(margin_quantile), gamma=gamma,
        gamma_fallback=gamma_fallback, robust_margin_loss=empirical, clean_train_acc=clean_acc,
        robust_train_acc=robust_acc, conv_spectral=conv_spectral, log10_spectral_product=log_spec / _LN10,
        sum_fro_over_spec=sum_ratio, confidence_term=math.log(depth * m / delta), damping=float(damping),
        R_fro=laplace.fro, R_spectral=laplace.spectral, R_logdet=laplace.logdet, R_dim=laplace.dim,
        kl_independent=independent.kl, kl_correlated=correlated.kl,
        log10_kl_independent=independent.log10_kl, log10_kl_correlated=correlated.log10_kl,
        log10_bound_independent=independent.log10_bound, log10_bound_correlated=correlated.log10_bound,
        bound_independent=independent.bound, bound_correlated=correlated.bound,
        head_weight_rms=evaluator.rms, sigma_max_drop=float(sigma_max_drop), sigma_isotropic=sigma_iso,
        sigma_correlated=sigma_cor, layers=tuple(norms),
    )


# ============================================================================================ tables
#: The rows of `compare_reports`, in order.
TABLE_ROWS: tuple[str, ...] = (
    "m", "depth", "width", "input_norm", "eps", "eps_l2", "gamma", "robust_margin_loss", "clean_train_acc",
    "robust_train_acc", "log10_spectral_product", "sum_fro_over_spec", "R_fro", "R_spectral", "R_logdet",
    "log10_kl_independent", "log10_kl_correlated", "log10_bound_independent", "log10_bound_correlated",
    "sigma_isotropic", "sigma_correlated",
)


def _check_reports(reports: Mapping[str, BoundReport]) -> None:
    if not isinstance(reports, Mapping) or not reports:
        raise S2OError("reports must be a non-empty mapping {model name: BoundReport}")
    for name, report in reports.items():
        if not isinstance(report, BoundReport):
            raise S2OError(
                f"reports[{name!r}] must be a BoundReport (from estimate_bound), got {type(report).__name__}"
            )


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def compare_reports(reports: Mapping[str, BoundReport], *, rows: Sequence[str] = TABLE_ROWS) -> str:
    """A markdown table of bound terms: one column per model, one row per term.

    Args:
        reports: ``{model name: BoundReport}``.
        rows: the `BoundReport` fields to show (default `TABLE_ROWS`).

    Returns:
        The table as a markdown string.

    Example:
        >>> print(compare_reports({"at": report_at, "at+s2o": report_s2o}))  # doctest: +SKIP
    """
    _check_reports(reports)
    valid = {f.name for f in fields(BoundReport)} - {"layers"}
    for row in rows:
        if row not in valid:
            raise unknown_name("BoundReport field", row, valid)
    names = list(reports)
    lines = ["| term | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(_fmt(getattr(reports[k], row)) for k in names) + " |")
    return "\n".join(lines)


def reports_to_rows(
    reports: Mapping[str, BoundReport], *, form: Literal["wide", "long", "layers"] = "wide"
) -> list[dict[str, Any]]:
    """Bound reports as a list of plain dictionaries, e.g. for ``pandas.DataFrame(rows)`` or seaborn.

    Args:
        reports: ``{model name: BoundReport}``.
        form: ``"wide"`` (one row per model: ``model`` and every scalar field), ``"long"`` (one row per model
            and numeric field: ``model``, ``term``, ``value``) or ``"layers"`` (one row per model and layer:
            ``model``, ``index`` and the `LayerNorms` fields).

    Returns:
        The rows.
    """
    _check_reports(reports)
    out: list[dict[str, Any]] = []
    for name, report in reports.items():
        if form == "wide":
            out.append({"model": name, **report.scalars()})
        elif form == "long":
            for term, value in report.scalars().items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out.append({"model": name, "term": term, "value": float(value)})
        elif form == "layers":
            for index, layer in enumerate(report.layers):
                out.append({"model": name, "index": index, **layer.as_dict()})
        else:
            raise unknown_name("rows form", form, ("wide", "long", "layers"))
    return out

