r"""Norms of a network's weights: spectral norms by power iteration, convolutions as linear operators, the
per-layer norms the robust PAC-Bayes bound needs, and the weight-correlation statistic of Jin et al. (2020).

- `power_iteration`: the largest singular value of any linear operator given as ``(op, adjoint)``, for a batch
  of seeded start vectors, with a fixed number of iterations (deterministic, no host synchronisation).
- `matrix_spectral_norm`, `conv_spectral_norm` (the *true* operator norm of ``x ↦ conv(x)`` on the layer's
  input shape, via `conv_operator`: ``F.conv2d`` and its adjoint ``F.conv_transpose2d``) and
  `reshaped_spectral_norm` (the cheaper norm of the kernel reshaped to ``(out, in·k·k)``).
- `layer_norms`: spectral (true and reshaped) and Frobenius norms of every Conv2d and Linear layer that runs in
  the forward pass, in call order (what `s2o_lib.bounds.estimate_bound` multiplies).
- `weight_correlation`, `mean_abs_correlation`: cosine similarities between a layer's neurons and their mean
  absolute value ρ; `compound_symmetry`, `compound_symmetry_logdet`: the correlation matrix with every
  off-diagonal ρ, and its ln det, that Jin et al. (2020) build from that ρ (their correlated posterior, used
  by `s2o_lib.bounds`).

Every norm is a power iteration with a fixed number of iterations from a seeded start, which returns a lower
bound of the true value that converges to it.

Example:
    >>> import torch
    >>> from s2o_lib.models import build_model
    >>> from s2o_lib.norms import layer_norms
    >>> norms = layer_norms(build_model("small-cnn", num_classes=10, in_channels=1), (1, 16, 16), iters=20)
    >>> [layer.kind for layer in norms]
    ['conv', 'conv', 'conv', 'linear', 'linear']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from .attacks import eval_mode
from .checks import check_int
from .errors import S2OError
from .models import device_of, dtype_of

__all__ = [
    "LayerKind", "LayerNorms", "compound_symmetry", "compound_symmetry_logdet", "conv_operator",
    "conv_spectral_norm", "jin_posterior_terms", "layer_norms", "matrix_spectral_norm", "mean_abs_correlation",
    "power_iteration", "reshaped_spectral_norm", "weight_correlation",
]


LayerKind = Literal["conv", "linear"]


def _check_iters(iters: Any) -> None:
    check_int(iters, "iters (power iterations)", minimum=1)


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
    check_int(starts, "starts", minimum=1)
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
        rho: Jin et al. 2020's ρ, the mean |cosine similarity| between the layer's neuron (filter) weight
            vectors (`mean_abs_correlation`; 0 for a layer with one neuron).
    """

    name: str
    kind: LayerKind
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    out_width: int
    in_width: int
    spectral: float
    spectral_reshaped: float
    frobenius: float
    rho: float

    def as_dict(self) -> dict[str, Any]:
        """The norms as a plain dictionary."""
        return asdict(self)


def _example_batch(model: nn.Module, example_input: Tensor | Sequence[int]) -> Tensor:
    """The example batch on the model's device/dtype; a shape (C, H, W) or (1, C, H, W) gives one zero input."""
    device, dtype = device_of(model), dtype_of(model)
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
        example_input: one sample batch of inputs, e.g. ``x_train[:1]`` (any batch size; only the shapes matter;
            moved to the model's device and dtype), or one input's shape such as (3, 32, 32), which runs a zero input.
        iters: power iterations per norm.
        seed: seed of the power iterations' start vectors (layer i uses ``seed + 7919·i``).

    Returns:
        One `LayerNorms` per layer (Python floats and ints).

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
                rho=mean_abs_correlation(weight) if weight.shape[0] > 1 else 0.0,
            )
        )
    return result


# ============================================================================================ weight correlation
def weight_correlation(weight: Tensor) -> Tensor:
    """Cosine similarity between the rows (neurons or flattened filters) of a weight tensor.

    Jin et al. (2020) measure a layer's weight correlation as the mean absolute off-diagonal entry.

    Args:
        weight: a weight tensor (out, ...).

    Returns:
        The (out, out) matrix of cosine similarities, float32.
    """
    w = weight.detach().flatten(1).float()
    w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return w @ w.T


def mean_abs_correlation(weight: Tensor) -> float:
    """Mean |cosine similarity| over distinct pairs of neurons (Jin et al. 2020's ρ).

    Args:
        weight: a weight tensor (out, ...) with out ≥ 2.
    """
    c = weight_correlation(weight)
    n = c.shape[0]
    return float((c.abs().sum() - c.diagonal().abs().sum()) / (n * (n - 1)))


def compound_symmetry(rho: float, n: int) -> Tensor:
    """S(ρ): the n × n correlation matrix with every off-diagonal ρ (float64), Jin et al. 2020's layer model.

    Args:
        rho: the common off-diagonal correlation.
        n: the size (neurons of the layer).
    """
    check_int(n, "n (neurons)", minimum=1)
    return torch.full((n, n), float(rho), dtype=torch.float64).fill_diagonal_(1.0)


def compound_symmetry_logdet(rho: float, *, n_out: int, n_in: int = 1) -> float:
    """ln det of ``I_{n_in} ⊗ S(ρ)``, S(ρ) the n_out × n_out correlation matrix with every off-diagonal ρ.

    S(ρ) (compound symmetry) has the eigenvalue 1 + (n_out − 1)ρ once and 1 − ρ (n_out − 1) times, so

        ln det = n_in · [(n_out − 1)·ln(1 − ρ) + ln(1 + (n_out − 1)ρ)]   (≤ 0, 0 only at ρ = 0).

    Jin et al. (NeurIPS 2020) model a layer's posterior this way — the weights of different neurons correlated
    by the layer's ρ (`mean_abs_correlation`), one such block per input weight — and add
    −n_in·[(n_out − 1)·ln(1 − ρ) + ln(1 + (n_out − 1)ρ)] per layer to their complexity measure.

    Args:
        rho: the common correlation, in (−1/(n_out − 1), 1) so that S(ρ) is positive definite.
        n_out: neurons (filters) of the layer, ≥ 1.
        n_in: weights per neuron (in_features, or in_channels·k·k for a convolution), ≥ 1.

    Returns:
        ln det, natural log.

    Example:
        >>> S = compound_symmetry(0.3, 4)
        >>> round(compound_symmetry_logdet(0.3, n_out=4), 12) == round(float(torch.logdet(S)), 12)
        True
    """
    check_int(n_out, "n_out (neurons)", minimum=1)
    check_int(n_in, "n_in (weights per neuron)", minimum=1)
    low = -1.0 / (n_out - 1) if n_out > 1 else -math.inf
    if not (isinstance(rho, (int, float)) and low < rho < 1):
        raise S2OError(f"rho must lie in ({low:.4g}, 1) for a positive-definite {n_out}×{n_out} compound-symmetry "
                       f"matrix, e.g. a mean |cosine similarity| such as 0.1; got {rho!r}")
    return n_in * ((n_out - 1) * math.log1p(-rho) + math.log1p((n_out - 1) * rho))


def jin_posterior_terms(layers: Sequence[LayerNorms]) -> tuple[float, float]:
    """``maxᵢ‖Sᵢ‖₂`` and ``−Σᵢ ln det Sᵢ`` of Jin et al. 2020's posterior, Sᵢ = I_{n_in} ⊗ S(ρᵢ) per layer.

    Args:
        layers: the layers' norms (`s2o_lib.norms.layer_norms`), each with its ρ (mean |cos| between neurons).

    Returns:
        ``(max_S_spectral, neg_logdet_S)``: ``maxᵢ (1 + (n_out − 1)·ρᵢ)`` and
        ``Σᵢ −n_in·[(n_out − 1)·ln(1 − ρᵢ) + ln(1 + (n_out − 1)·ρᵢ)]`` with n_out the layer's neurons (filters)
        and n_in the weights of one neuron.
    """
    spectral, neg_logdet = 1.0, 0.0
    for layer in layers:
        n_out = layer.weight_shape[0]
        n_in = math.prod(layer.weight_shape[1:])
        spectral = max(spectral, 1.0 + (n_out - 1) * layer.rho)
        neg_logdet -= compound_symmetry_logdet(layer.rho, n_out=n_out, n_in=n_in)
    return spectral, neg_logdet
