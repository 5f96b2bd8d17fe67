r"""A spectrally-normalised robust PAC-Bayesian bound with a correlated posterior, estimated term by term.

**This is our reconstruction, not a quotation of the S²O paper** (whose exact theorem and constants we do not
reproduce). It has the form of the spectrally-normalised margin bound of Neyshabur, Bhojanapalli & Srebro
(ICLR 2018), extended to adversarial inputs as Farnia, Zhang & Tse (ICLR 2019, *Generalizable Adversarial
Training via Spectral Normalization*) do, with the two terms a non-diagonal posterior covariance adds (the idea
of Jin et al., NeurIPS 2020 and of S²O, CVPR 2022 / TPAMI 2025). With probability ≥ 1 − δ over the m training
samples,

    L_0^adv  ≤  L̂_γ^adv  +  sqrt( Q_S / (γ² m) ),

    Q_S  =  (B + ε₂)² · n² · h · ln(n h) · ∏ᵢ ‖Wᵢ‖₂² · Σᵢ ‖Wᵢ‖_F² / ‖Wᵢ‖₂² · maxᵢ ‖Sᵢ‖₂
            −  Σᵢ ln det Sᵢ  +  ln(n m / δ).

``Q_S``, the bracket of the bound (the KL term plus the confidence term), is reported as ``q_independent`` /
``q_correlated`` (with ``log10_q_*``), and the square-root (complexity) term as ``log10_bound_independent`` /
``log10_bound_correlated`` = log10 sqrt(Q_S / (γ² m)). The norms ‖Wᵢ‖ come from `s2o_lib.norms`.

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
- ``Sᵢ``: the correlation matrix of layer i's posterior perturbation, ``vec(Uᵢ) ~ N(0, σ² Sᵢ)``. The posterior
  is the analyst's choice, and the bound holds for each choice; three are computed:

  - *independent*: every Sᵢ = I (so ``maxᵢ‖Sᵢ‖₂ = 1``, ``Σ ln det Sᵢ = 0``: the usual bound);
  - *correlated* (KFAC-Laplace, this library's construction): Sᵢ = I except for the last layer, whose S is the
    Kronecker-factored Laplace correlation ``R = R_G ⊗ R_A`` of `s2o_lib.laplace` (computed on the clean
    training inputs; the library's ``+s2o-kfac`` reading of the paper's objective uses the same factors on the
    base loss's inputs); then ``maxᵢ‖Sᵢ‖₂ = max(1, ‖R‖₂) = ‖R‖₂`` and ``−Σ ln det Sᵢ = −log det R ≥ 0``. R is
    never materialised: its norms and log-determinant come from the factors [``R_fro``, ``R_spectral``,
    ``R_logdet``];
  - *Jin et al. 2020's* correlated posterior, for every layer: the weights of different neurons (filters) are
    correlated by the layer's ρ, the mean |cosine similarity| between its neuron weight vectors, with one
    compound-symmetry block S(ρ) (unit diagonal, every off-diagonal ρ) per input weight, Sᵢ = I_{n_in} ⊗ S(ρᵢ).
    Then ``‖Sᵢ‖₂ = 1 + (n_out − 1)ρᵢ`` and ``−ln det Sᵢ = −n_in·[(n_out − 1)·ln(1 − ρᵢ) + ln(1 + (n_out − 1)ρᵢ)]``
    (`s2o_lib.norms.compound_symmetry_logdet`) [``jin_S_spectral``, ``jin_neg_logdet``, ``*_jin``].
- ``δ``: the failure probability (default 0.05).

**Our constants.** The papers state the bound up to absolute constants inside O(·); the proofs give the
perturbation (norm) term, the ln det term and the confidence term ln(nm/δ) *different* constants. We set every
one of them to 1, take δ = 0.05 by default, use the conservative L2 radius ε₂ = ε·√d, γ from a margin quantile and
ignore BatchNorm. Other constants would weight the three terms differently, so a comparison between two models
whose Q_S is made of different mixtures of the terms can change with them: read differences as differences
under these constants. Absolute values are vacuous for real networks (often by tens of orders of magnitude):
every product is computed in log space and the report carries ``log10_*`` versions that stay finite where the
plain value overflows.

The empirical counterpart (`sigma_search`): the largest relative posterior scale σ for which adding Gaussian
noise to the last layer's weight keeps the robust training accuracy within ``max_drop`` of the noise-free one —
isotropic noise ``σ·s·E`` against correlated noise ``σ·s·L_G E L_Aᵀ`` (L the Cholesky factors of R_G, R_A, so
``vec(noise) ~ N(0, σ² s² R_G ⊗ R_A)`` with the same per-weight variance as the isotropic noise), where E is a
standard normal C × D matrix and ``s = ‖W‖_F/√(C·D)`` is the weight's root-mean-square: **σ is relative to the
weights' magnitude**. The accuracy is measured on adversarial training points computed **once** before the
search (the CW-PGD points of the bound; the noisy model is not re-attacked, which is optimistic but cheap and
deterministic), averaged over a few seeded draws that are reused at every σ, and σ is found by bisection over
log σ with a fixed number of steps. The model's weights are never left changed. A larger σ means a flatter
posterior the data tolerate [``sigma_isotropic``, ``sigma_correlated``, ``sigma_jin``: noise correlated across
the classes as Jin et al.'s S(ρ) of the last layer, independent across inputs].

**The softmax-shift direction is projected out** of every noise draw (``project_shift=True``, the default):
adding the same vector v to every row of W (noise ``1 vᵀ``) adds v·a to every logit and leaves the softmax and the
prediction unchanged, so noise along it is tolerated at any scale. A class correlation with large off-diagonals
puts most of the noise there, which would inflate the correlated σ without saying anything about the model.
Each draw is therefore multiplied on the class side by P = I − 11ᵀ/C (every column then sums to zero) and
rescaled by ``sqrt(C / tr(P R_G))`` (R_G = I for isotropic noise), for every kind of noise alike: the noise keeps
a mean variance of 1 per weight (σ keeps its meaning), all of it in directions that change the prediction.
Without the rescaling the projection would change nothing, since the shift never changes the argmax; what the
projection changes is *how much* of the noise at a given σ can hurt.

Example:
    >>> import torch
    >>> from s2o_lib.models import build_model
    >>> from s2o_lib.bounds import estimate_bound
    >>> model = build_model("small-cnn", num_classes=10, in_channels=1)
    >>> x, y = torch.rand(32, 1, 16, 16), torch.randint(0, 10, (32,))
    >>> report = estimate_bound(model, (x, y), eps=0.1, steps=2, n=32, sigma_search=False, power_iters=20)
    >>> report.q_correlated >= report.q_independent
    True
    >>> report.depth, report.width
    (5, 256)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from .attacks import eval_mode, margins, pgd
from .checks import check_eps, check_int, check_open_unit, check_positive
from .data import batch_slices, tensors
from .errors import S2OError, unknown_name
from .laplace import LastLayerLaplace, last_layer_laplace
from .models import device_of, dtype_of, last_linear
from .noise import (
    SIGMA_RANGE,
    ForwardOutputs,
    NoisyHeadAccuracy,
    check_search_args,
    forward_pass,
)
from .norms import LayerNorms, compound_symmetry, jin_posterior_terms, layer_norms

__all__ = [
    "CONV_SPECTRAL", "SIGMA_POSTERIORS", "BoundReport", "BoundValue", "ConvSpectral", "estimate_bound",
    "reports_to_rows", "robust_bound",
]


ConvSpectral = Literal["true", "reshaped"]
#: The σ searches of `estimate_bound`: isotropic, KFAC-Laplace correlated, Jin et al. 2020's correlated.
SIGMA_POSTERIORS: tuple[str, ...] = ("isotropic", "correlated", "jin")
CONV_SPECTRAL: tuple[str, ...] = ("true", "reshaped")

_LN10 = math.log(10.0)


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
        log_q: ln Q, Q the bracket of the bound (the KL-derived term plus the confidence term ln(nm/δ)).
        q: Q (``inf`` when it overflows a float).
        log10_q: log10 Q.
        log10_bound: log10 sqrt(Q / (γ² m)), the complexity (square-root) term of the bound.
        bound: L̂_γ^adv + sqrt(Q / (γ² m)) (``inf`` when it overflows).
    """

    log_q: float
    q: float
    log10_q: float
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
        log_q=log_q,
        q=_exp(log_q),
        log10_q=log_q / _LN10,
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
        q_independent: Q_I, the bracket of the bound with every Sᵢ = I (``inf`` if it overflows a float).
        q_correlated: Q_R, the bracket with the last layer's S = R (≥ Q_I).
        log10_q_independent: log10 Q_I (always finite).
        log10_q_correlated: log10 Q_R.
        log10_bound_independent: log10 sqrt(Q_I / (γ² m)), the complexity term of the independent bound.
        log10_bound_correlated: log10 sqrt(Q_R / (γ² m)).
        bound_independent: the whole bound L̂_γ^adv + sqrt(Q_I / (γ² m)) (``inf`` on overflow; > 1 is vacuous).
        bound_correlated: L̂_γ^adv + sqrt(Q_R / (γ² m)).
        jin_S_spectral: maxᵢ‖Sᵢ‖₂ = maxᵢ (1 + (n_out − 1)ρᵢ) of Jin et al. 2020's posterior (`jin_posterior_terms`).
        jin_neg_logdet: −Σᵢ ln det Sᵢ of that posterior (≥ 0), over every layer.
        q_jin: Q_J, the bracket with Jin et al.'s Sᵢ in every layer.
        log10_q_jin: log10 Q_J.
        log10_bound_jin: log10 sqrt(Q_J / (γ² m)).
        bound_jin: L̂_γ^adv + sqrt(Q_J / (γ² m)).
        head_weight_rms: ‖W‖_F/√(C·D) of the last layer: σ's unit.
        sigma_max_drop: the allowed robust-accuracy drop of the σ search.
        sigma_isotropic: largest relative σ of isotropic last-layer noise within the drop (nan: not searched;
            100, the top of `SIGMA_RANGE`: at least that much; 0.0: even 1e-4 breaks the drop).
        sigma_correlated: the same for noise correlated as R (nan: not searched).
        sigma_jin: the same for noise correlated across the classes as S(ρ) of the last layer (Jin et al. 2020).
        sigma_project_shift: whether the softmax-shift direction was projected out of the noise.
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
    q_independent: float
    q_correlated: float
    log10_q_independent: float
    log10_q_correlated: float
    log10_bound_independent: float
    log10_bound_correlated: float
    bound_independent: float
    bound_correlated: float
    jin_S_spectral: float
    jin_neg_logdet: float
    q_jin: float
    log10_q_jin: float
    log10_bound_jin: float
    bound_jin: float
    head_weight_rms: float
    sigma_max_drop: float
    sigma_isotropic: float
    sigma_correlated: float
    sigma_jin: float
    sigma_project_shift: bool
    layers: tuple[LayerNorms, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Every field as a plain dictionary (``layers`` as a list of dictionaries)."""
        out = asdict(self)
        out["layers"] = [layer.as_dict() for layer in self.layers]
        return out

    def scalars(self) -> dict[str, Any]:
        """Every field except ``layers``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "layers"}


@dataclass(frozen=True)
class _RobustMargin:
    """γ and the empirical robust margin loss L̂_γ^adv from the adversarial margins (see the module docstring)."""

    gamma: float
    gamma_fallback: bool
    empirical_loss: float

    @classmethod
    def of(cls, margin_adv: Tensor, *, quantile: float) -> _RobustMargin:
        positive = margin_adv[margin_adv > 0]
        fallback = positive.numel() == 0
        source = margin_adv.abs() if fallback else positive
        gamma = max(float(torch.quantile(source, quantile)), 1e-12)
        return cls(gamma=gamma, gamma_fallback=fallback, empirical_loss=float((margin_adv <= gamma).double().mean()))


def _check_bound_args(
    *, eps: float, steps: int, n: int, batch_size: int, seed: int, delta: float, margin_quantile: float,
    damping: float, conv_spectral: str, power_iters: int,
) -> None:
    check_eps(eps)
    check_int(steps, "steps", minimum=1)
    check_int(n, "n (number of training samples)", minimum=1)
    check_int(batch_size, "batch_size", minimum=1)
    check_int(seed, "seed", minimum=0)
    check_open_unit(delta, "delta", example="0.05")
    check_open_unit(margin_quantile, "margin_quantile", example="0.1")
    check_positive(damping, "damping", example="0.1")
    if conv_spectral not in CONV_SPECTRAL:
        raise unknown_name("conv_spectral", conv_spectral, CONV_SPECTRAL)
    check_int(power_iters, "power_iters", minimum=1)


def _training_points(model: nn.Module, train_data: object, *, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """At most ``n`` training points drawn at random with ``seed``, with labels the model can output."""
    classes = last_linear(model).out_features  # S2OError for a model without nn.Linear
    x, y = tensors(train_data, n=n, order="random", seed=seed)
    if int(y.max()) >= classes or int(y.min()) < 0:
        raise S2OError(f"labels must lie in [0, {classes - 1}] for this model; got [{int(y.min())}, {int(y.max())}]")
    return x, y


def _adversarial_points(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, seed: int, batch_size: int
) -> Tensor:
    """L∞ PGD on the CW margin loss from a seeded random start, batch by batch (CPU); ``x`` itself at ε = 0."""
    if eps == 0:
        return x
    device, dtype = device_of(model), dtype_of(model)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    return torch.cat([
        pgd(model, x[part].to(device, dtype), y[part].to(device), eps=eps, alpha=alpha, steps=steps, loss="cw",
            generator=generator).cpu()
        for part in batch_slices(x.shape[0], batch_size)
    ])


def _norm_terms(norms: Sequence[LayerNorms], conv_spectral: str) -> dict[str, Any]:
    """ln ∏ᵢ‖Wᵢ‖₂², Σᵢ ‖Wᵢ‖_F²/‖Wᵢ‖₂², the depth n and the width h of the layers."""
    spectral = [layer.spectral if conv_spectral == "true" else layer.spectral_reshaped for layer in norms]
    return {
        "log_spectral_product": sum(2 * _ln(s) for s in spectral),
        "sum_fro_over_spec": sum((layer.frobenius / s) ** 2 if s > 0 else 0.0
                                 for layer, s in zip(norms, spectral, strict=True)),
        "depth": len(norms),
        "width": max(max(layer.out_width, layer.in_width) for layer in norms),
    }


def _sigmas(
    evaluator: NoisyHeadAccuracy, laplace: LastLayerLaplace, head_rho: float, *, max_drop: float, draws: int,
    iters: int, seed: int, project_shift: bool,
) -> dict[str, float]:
    """The σ search for isotropic, KFAC-correlated and Jin-correlated noise on the same fixed adversarial points."""
    c, d = evaluator.head.weight.shape
    correlations = {"isotropic": None, "correlated": (laplace.R_A, laplace.R_G),
                    "jin": (torch.eye(d, dtype=torch.float64), compound_symmetry(head_rho, c))}
    found = {}
    for posterior, correlation in correlations.items():
        kind = "isotropic" if correlation is None else "correlated"
        directions = evaluator.directions(kind, correlation, draws, seed, project_shift=project_shift)
        found[f"sigma_{posterior}"] = evaluator.search(directions, max_drop=max_drop, iters=iters,
                                                       sigma_range=SIGMA_RANGE)
    return found


def estimate_bound(
    model: nn.Module, train_data: tuple[Tensor, Tensor] | Dataset, *, eps: float, alpha: float | None = None,
    steps: int = 10, n: int = 512, delta: float = 0.05, margin_quantile: float = 0.1, damping: float = 0.1,
    sigma_search: bool = True, seed: int = 0, batch_size: int = 256, conv_spectral: ConvSpectral = "true",
    power_iters: int = 100, sigma_max_drop: float = 0.1, sigma_draws: int = 4, sigma_iters: int = 12,
    sigma_project_shift: bool = True,
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
        sigma_project_shift: project the softmax-shift direction out of the σ search's noise (see the module
            docstring; ``False`` only to see what it changes).

    Returns:
        A `BoundReport` of floats (its layers' norms too); the data goes to the model's device batch by batch.

    Example:
        >>> report = estimate_bound(model, (x_train, y_train), eps=8/255, steps=10)  # doctest: +SKIP
        >>> report.log10_bound_independent, report.log10_bound_correlated  # doctest: +SKIP
    """
    _check_bound_args(eps=eps, steps=steps, n=n, batch_size=batch_size, seed=seed, delta=delta,
                      margin_quantile=margin_quantile, damping=damping, conv_spectral=conv_spectral,
                      power_iters=power_iters)
    if sigma_search:
        check_search_args(sigma_draws, sigma_max_drop, sigma_iters, SIGMA_RANGE)
    alpha = 2.5 * eps / steps if alpha is None else alpha
    check_eps(alpha, name="alpha (step size)")
    x, y = _training_points(model, train_data, n=n, seed=seed)
    with eval_mode(model):
        clean = forward_pass(model, x, batch_size=batch_size)
        x_adv = _adversarial_points(model, x, y, eps=eps, alpha=alpha, steps=steps, seed=seed, batch_size=batch_size)
        adv = clean if eps == 0 else forward_pass(model, x_adv, batch_size=batch_size)
        margin = _RobustMargin.of(margins(adv.logits.double(), y), quantile=margin_quantile)
        norms = layer_norms(model, x[:1], iters=power_iters, seed=seed)
        laplace = last_layer_laplace(clean.features, F.softmax(clean.head_out.double(), dim=1), damping=damping)
        evaluator = NoisyHeadAccuracy(model, x_adv, y, batch_size=batch_size, forward=adv)
        sigmas = (_sigmas(evaluator, laplace, norms[-1].rho, max_drop=sigma_max_drop, draws=sigma_draws,
                          iters=sigma_iters, seed=seed, project_shift=sigma_project_shift)
                  if sigma_search else {f"sigma_{p}": math.nan for p in SIGMA_POSTERIORS})

    return _bound_report(
        x, y, clean=clean, adv=adv, margin=margin, terms=_norm_terms(norms, conv_spectral), laplace=laplace,
        sigmas=sigmas, layers=tuple(norms), head_weight_rms=evaluator.rms,
        settings={"eps": float(eps), "alpha": float(alpha), "steps": steps, "delta": float(delta),
                  "margin_quantile": float(margin_quantile), "conv_spectral": conv_spectral,
                  "damping": float(damping), "sigma_max_drop": float(sigma_max_drop),
                  "sigma_project_shift": bool(sigma_project_shift)},
    )


def _bound_report(
    x: Tensor, y: Tensor, *, clean: ForwardOutputs, adv: ForwardOutputs, margin: _RobustMargin,
    terms: dict[str, Any], laplace: LastLayerLaplace, sigmas: dict[str, float], layers: tuple[LayerNorms, ...],
    head_weight_rms: float, settings: dict[str, Any],
) -> BoundReport:
    """Both bounds (independent and correlated posterior) from the measured terms, as a `BoundReport`."""
    m, input_dim, delta = x.shape[0], int(x[0].numel()), settings["delta"]
    B, eps_l2 = float(x.flatten(1).double().norm(dim=1).max()), settings["eps"] * math.sqrt(input_dim)
    common = {"B": B, "eps_l2": eps_l2, "m": m, "delta": delta, "gamma": margin.gamma,
              "empirical_loss": margin.empirical_loss, **terms}
    # Independent posterior: every S_i = I. Correlated: the last layer's S is the Laplace correlation R, so
    # max_i ‖S_i‖₂ = max(1, ‖R‖₂) and −Σ_i ln det S_i = −log det R (≥ 0; the clamp only absorbs round-off).
    independent = robust_bound(max_S_spectral=1.0, neg_logdet_S=0.0, **common)
    correlated = robust_bound(max_S_spectral=max(1.0, laplace.spectral), neg_logdet_S=max(0.0, -laplace.logdet),
                              **common)
    jin_spectral, jin_neg_logdet = jin_posterior_terms(layers)  # Jin et al. 2020: S_i = I ⊗ S(ρ_i), every layer
    jin = robust_bound(max_S_spectral=jin_spectral, neg_logdet_S=max(0.0, jin_neg_logdet), **common)
    return BoundReport(
        m=m, depth=terms["depth"], width=terms["width"], input_dim=input_dim, input_norm=B, eps_l2=eps_l2,
        gamma=margin.gamma, gamma_fallback=margin.gamma_fallback, robust_margin_loss=margin.empirical_loss,
        clean_train_acc=float((clean.logits.argmax(1) == y).double().mean()),
        robust_train_acc=float((adv.logits.argmax(1) == y).double().mean()),
        log10_spectral_product=terms["log_spectral_product"] / _LN10, sum_fro_over_spec=terms["sum_fro_over_spec"],
        confidence_term=math.log(terms["depth"] * m / delta), R_fro=laplace.fro, R_spectral=laplace.spectral,
        R_logdet=laplace.logdet, R_dim=laplace.dim, q_independent=independent.q, q_correlated=correlated.q,
        log10_q_independent=independent.log10_q, log10_q_correlated=correlated.log10_q,
        log10_bound_independent=independent.log10_bound, log10_bound_correlated=correlated.log10_bound,
        bound_independent=independent.bound, bound_correlated=correlated.bound, jin_S_spectral=jin_spectral,
        jin_neg_logdet=jin_neg_logdet, q_jin=jin.q, log10_q_jin=jin.log10_q, log10_bound_jin=jin.log10_bound,
        bound_jin=jin.bound, head_weight_rms=head_weight_rms,
        **settings, **sigmas, layers=layers,
    )


# ============================================================================================ tables
def _check_reports(reports: Mapping[str, BoundReport]) -> None:
    if not isinstance(reports, Mapping) or not reports:
        raise S2OError("reports must be a non-empty mapping {model name: BoundReport}")
    for name, report in reports.items():
        if not isinstance(report, BoundReport):
            raise S2OError(
                f"reports[{name!r}] must be a BoundReport (from estimate_bound), got {type(report).__name__}"
            )


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

