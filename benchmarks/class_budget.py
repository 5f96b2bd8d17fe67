"""Minutes per notebook on one T4 for a profile (default: the library's `class`), from FLOP counts.

    python benchmarks/class_budget.py                                   # the library's current `class` profile
    python benchmarks/class_budget.py --candidate recommended           # a candidate declared in CANDIDATES
    python benchmarks/class_budget.py --arch preact-resnet18-w32 --train-subset 10000 --epochs 12 --eval-n 500
    python benchmarks/class_budget.py --derive-throughput               # how the T4 figures below are derived
    flock /tmp/s2o-cpu.lock python benchmarks/class_budget.py --cpu-timing   # + seconds measured on this CPU

What it prints: the FLOPs of one training step per image of every method; per notebook 00-09 the minutes on
one T4 (a) in suite order from an empty model cache (a model is paid for by the first notebook that asks
for it; later ones load it), (b) alone from an empty cache, (c) with the pretrained bundle (cached models
loaded, only evaluation runs); and the whole suite. Budget (issue 11): 00-08 <= 15 min each in order,
09 <= 15 min with the bundle and <= 60 min without.

Counting rule. ``F``, ``B_in`` and ``B_full`` are counted once per architecture with
`torch.utils.flop_counter.FlopCounterMode` on one 32×32 image (a multiply-add is 2 FLOPs; convolutions and
matrix products only: BatchNorm, ReLU, softmax, the attack's sign/clamp and the optimiser are not counted):

- ``F``: one forward pass.
- ``B_in``: a backward pass to the input only (parameters frozen, ``loss.backward()``). Every attack takes
  ``torch.autograd.grad(loss, x)``, which computes no weight gradients; FlopCounterMode raises inside
  ``autograd.grad``, hence this stand-in (``B_in`` = ``F`` for the models here).
- ``B_full``: a training backward (weights; the input needs no gradient): about ``2F``.

Passes per image of one training step (``training_step`` in `s2o_lib.defenses`, PGD-k training attack):

- attack: PGD (AT, MART) = ``k (F + B_in) + F`` (the last ``F`` is `pgd`'s final prediction);
  TRADES' KL attack = ``F + k (F + B_in)`` (clean logits first); standard: none.
- training: ``F + B_full`` per input the loss needs: clean for standard, TRADES, MART and every ``+s2o``;
  adversarial for every adversarial method. So AT = ``(2k + 4)F``-equivalents, AT+S²O, TRADES, MART
  = ``(2k + 7)``.
- ``+awp`` after its warm-up epochs: the proxy's forward(s) and backward with the plain base loss
  (``F + B_full`` per input the base needs: AT 1, TRADES and MART 2).
- ``avmixup`` (being added; counted like AT): PGD-k, then ``F + B_full`` on the mixed input; ``+s2o`` adds
  ``F + B_full`` on the clean input.

Evaluation passes follow the code they count (`evaluate.robust_accuracy`: clean ``F`` on n, then each
attack only on the clean-correct fraction; pyautoattack's standard AutoAttack: APGD-CE 101 ``(F + B_in)``
on the clean-correct images, then APGD-T 9 × 101 ``(F + B_in)``, FAB-T 9 × 100 ``(2F + B_in)`` and Square
5000 ``F`` on the images still robust). Those fractions are planning assumptions (`Accuracy`, flags
``--robust-clean`` / ``--robust-aa``), not measurements. Per-epoch evaluation inside `fit` (clean + PGD-10
on ``min(eval_n, 500)`` test images) is counted. Not counted: data loading (``--cpu-timing`` measures it),
kernel-launch latency of small batches (Square on few images, power iterations), start-up and download.

T4 throughput (FLOPs of the count above per second, sustained): derived at run time (``--derive-throughput``)
from public measurements; see `REFERENCE_RUNS`. Since issue 22 the library's `class` profile trains in
``precision="auto"``: fp16 autocast with a loss scaler on a T4 (Turing has fp16 tensor cores, no bf16 ones),
bf16 on Ampere and later. The fp32 table is kept (a run in fp32, and the 15-minute per-notebook check); the
fp16 table prices what ``fit`` runs under autocast (its training steps and its per-epoch PGD evaluation) at the
fp16 figures and everything else at the fp32 ones: the notebooks' own evaluation (`robust_accuracy`,
AutoAttack, sanity checks, bounds, hand-made steps) runs in fp32, and so does AWP's proxy ascent, which
`training_step` runs with autocast off under fp16. ``fp16`` is the mixed-precision run of `REFERENCE_RUNS`;
``fp16-low`` (pessimistic) is it times fp32-low / fp32, the same discount the fp32 budget takes for narrow
layers, small batches and deterministic kernels.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s2o_lib.awp import AWP
from s2o_lib.config import Profile, get_profile
from s2o_lib.defenses import DefenseConfig, training_step
from s2o_lib.errors import S2OError
from s2o_lib.evaluate import parse_attack
from s2o_lib.methods import COMPARISON_METHODS, parse_method
from s2o_lib.models import ARCHITECTURES, PreActResNet18, build_model

CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000
BUDGET_MIN = 15.0            # every notebook 00-08 in suite order; 09 with the bundle
BUDGET_09_NO_BUNDLE_MIN = 60.0
BUDGET_SUITE_FP16_MIN = 45.0  # issue 22: the whole suite from an empty cache, no bundle, on a T4 at fp16-low
#: CPU µs per training image of the CIFAR pipeline (PIL crop + flip + ToTensor, one process), measured with
#: ``--cpu-timing`` under the lock on the project's 2-core CPU machine (222 µs; benchmarks/RESULTS.md).
DATA_US = 220.0


# ============================================================================================ pass algebra
@dataclass(frozen=True)
class Passes:
    """Work per image, in passes: forwards, backwards to the input only, training backwards."""

    fwd: float = 0.0
    bwd_in: float = 0.0
    bwd_full: float = 0.0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.fwd + other.fwd, self.bwd_in + other.bwd_in, self.bwd_full + other.bwd_full)

    def __mul__(self, k: float) -> Passes:
        return Passes(self.fwd * k, self.bwd_in * k, self.bwd_full * k)

    __rmul__ = __mul__

    def flops(self, unit: Unit) -> float:
        return self.fwd * unit.fwd + self.bwd_in * unit.bwd_in + self.bwd_full * unit.bwd_full

    def equivalents(self) -> float:
        """Forward-equivalents with ``B_in = F`` and ``B_full = 2F`` (for a quick look)."""
        return self.fwd + self.bwd_in + 2 * self.bwd_full


FWD, GRAD, TRAIN = Passes(fwd=1), Passes(fwd=1, bwd_in=1), Passes(fwd=1, bwd_full=1)


def pgd_passes(steps: int, restarts: int = 1) -> Passes:
    """`attacks.pgd`: per restart, ``steps`` forward + input-backward pairs and one final prediction."""
    return (GRAD * steps + FWD) * restarts


def step_passes(method: str, steps: int, *, awp_active: bool = True) -> Passes:
    """One `training_step` of ``method`` with a PGD-``steps`` training attack, per image (see the docstring)."""
    base, _, s2o = _method_parts(method)
    attack = {"standard": Passes(), "trades": FWD + GRAD * steps}.get(base, pgd_passes(steps))
    return attack + proxy_passes(method, awp_active=awp_active) + TRAIN * _loss_inputs(base, s2o)


def proxy_passes(method: str, *, awp_active: bool = True) -> Passes:
    """The part of `step_passes` that is AWP's proxy ascent (run in fp32 under fp16, `defenses.training_step`)."""
    base, awp, _ = _method_parts(method)
    return TRAIN * _loss_inputs(base, False) if awp and awp_active else Passes()


def _loss_inputs(base: str, s2o: bool) -> int:
    """Inputs the loss forwards with gradient: clean and/or adversarial (or mixed, for avmixup)."""
    clean = base in ("standard", "trades", "mart") or s2o
    adversarial = base != "standard"
    return int(clean) + int(adversarial)


def _method_parts(method: str) -> tuple[str, bool, bool]:
    parts = method.split("+")
    if parts[0] == "avmixup":  # not parsed by every library version: counted like AT on the mixed input
        return "avmixup", False, "s2o" in parts[1:]
    parsed = parse_method(method)
    return parsed.base, parsed.awp, parsed.s2o is not None


# ============================================================================================ accuracy assumptions
@dataclass(frozen=True)
class Accuracy:
    """Planning assumptions: clean accuracy and AutoAttack accuracy (fractions of n) of a kind of model.

    Attacks in `robust_accuracy` run only on clean-correct images, and AutoAttack's later attacks only on the
    images still robust, so these fractions set the evaluation cost. They are not measured here.
    """

    clean: float
    autoattack: float


ASSUMED = {"standard": Accuracy(clean=0.90, autoattack=0.0), "robust": Accuracy(clean=0.75, autoattack=0.40)}


def autoattack_passes(version: str, acc: Accuracy) -> Passes:
    """pyautoattack per image of n (s2o_lib hands it the clean-correct ones), as counted in its code."""
    c, r = acc.clean, acc.autoattack
    apgd = GRAD * 101                                    # 1 initial + 100 iterations
    apgd_ce = (apgd + FWD * 4) * c                       # clean check, y_pred, acc_curr, output
    targets = 9 if version == "standard" else 3
    apgd_t = (apgd + FWD) * (targets * r) + FWD * (2 * r)
    if version != "standard":
        return apgd_ce + apgd_t
    fab_t = (Passes(fwd=2, bwd_in=1) * 100 + FWD * 3) * (9 * r) + FWD * (2 * r)
    square = FWD * (5003 * r)
    return apgd_ce + apgd_t + fab_t + square


def robust_accuracy_passes(attacks: tuple[str, ...], acc: Accuracy, *, aa_version: str = "standard") -> Passes:
    """`evaluate.robust_accuracy`: clean ``F`` on n; each attack and its check on the clean-correct part."""
    total = FWD
    for name in attacks:
        if name == "clean":
            continue
        if name == "autoattack":
            total = total + autoattack_passes(aa_version, acc) + FWD * acc.clean
        else:  # fgsm (one PGD step without a random start), pgdN, cwN: the attack, then one checking forward
            total = total + (pgd_passes(parse_attack(name).steps) + FWD) * acc.clean
    return total


def sanity_passes(acc: Accuracy, *, steps: tuple[int, int] = (10, 50), restarts: int = 5, radii: int = 6) -> Passes:
    """`evaluate.sanity_checks` with a surrogate and no AutoAttack, per image of its n (as in notebook 09)."""
    pgd20 = robust_accuracy_passes(("pgd20",), acc)
    few, many = steps
    total = pgd20 * (radii - 1) + FWD                                    # the eps grid (eps = 0: clean only)
    total = total + robust_accuracy_passes((f"pgd{few}",), acc) + robust_accuracy_passes((f"pgd{many}",), acc)
    total = total + FWD + (pgd_passes(few, restarts) + FWD) * acc.clean  # more restarts
    total = total + robust_accuracy_passes(("clean", "fgsm", "pgd20"), acc)  # ordering
    total = total + pgd_passes(20) + FWD                                 # transfer from the surrogate
    return total + GRAD                                                  # zero-gradient check


def bound_passes(n: int, *, steps: int = 10, power_iters: int = 100) -> tuple[Passes, int]:
    """`bounds.estimate_bound` as ``(passes per image, images)``: clean, CW-PGD, adversarial forwards on n, plus
    the power iterations (one conv and one transposed conv per layer and iteration on one image, ~2F)."""
    per_image = FWD + pgd_passes(steps) + FWD
    return per_image + FWD * (2 * power_iters / n), n


# ============================================================================================ workload items
@dataclass(frozen=True)
class Train:
    """A training run. ``key`` names the cached run: only the first notebook that asks for it pays."""

    key: str
    method: str
    images: int            # training images per epoch
    epochs: int
    attack_steps: int
    awp_warmup: int
    eval_n: int | None     # fit's per-epoch evaluation (clean + PGD-eval_steps); None: no eval loader
    eval_steps: int

    def awp_epochs(self) -> int:
        # AWP perturbs in the epochs (from 1) >= awp_warmup (`DefenseConfig.awp_active`): 0 and 1 mean all of them.
        return max(self.epochs - max(self.awp_warmup, 1) + 1, 0) if _method_parts(self.method)[1] else 0

    def proxy_total(self) -> Passes:
        """AWP's proxy ascent over the run (fp32 under fp16)."""
        return proxy_passes(self.method) * (self.images * self.awp_epochs())

    def passes_total(self, acc: Accuracy) -> Passes:
        awp_epochs = self.awp_epochs()
        total = step_passes(self.method, self.attack_steps, awp_active=False) * (self.images * (self.epochs - awp_epochs))
        total = total + step_passes(self.method, self.attack_steps) * (self.images * awp_epochs)
        if self.eval_n:
            total = total + (FWD + pgd_passes(self.eval_steps) + FWD) * (self.eval_n * self.epochs)
        return total


@dataclass(frozen=True)
class Run:
    """Work that every run of the notebook does: ``images`` images at ``passes`` each."""

    what: str
    passes: Passes
    images: float

    def passes_total(self, acc: Accuracy) -> Passes:
        return self.passes * self.images


def zoo(p: Profile, method: str, tag: str = "") -> Train:
    """What `zoo.trained_model(method, tag=...)` trains in profile ``p`` (`zoo.fit_settings`)."""
    key = parse_method(method).name if not method.startswith("avmixup") else method
    return Train(key + (f"-{tag}" if tag else ""), method, p.train_subset or CIFAR10_TRAIN, p.epochs, p.attack_steps,
                 p.awp_warmup, min(p.eval_n, 500), min(p.eval_steps, 10))


def ra(what: str, attacks: tuple[str, ...], n: int, kind: str, p: Profile, acc: dict[str, Accuracy]) -> Run:
    """One `robust_accuracy` call on n images of a ``kind`` ("standard" or "robust") model."""
    return Run(what, robust_accuracy_passes(attacks, acc[kind], aa_version=p.autoattack), n)


def steps_on_batch(method: str, batches: int, p: Profile) -> Run:
    """``batches`` extra training steps of ``method`` on one training batch (hand checks, timing cells)."""
    return Run(f"{batches} x {method} step on a batch", step_passes(method, p.attack_steps), batches * p.batch_size)


# ============================================================================================ what each notebook runs
# Keep in sync with notebooks/src/*.py. Each function returns the notebook's work in the profile `p`; `acc`
# holds the accuracy assumptions. Zoo runs are `zoo(...)` items; everything else is a `Run`.
def notebook_00(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 00_setup: profile print, one batch of 16 images from the data loader. No model work.
    return []


def notebook_01(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 01_adversarial_examples: "The images and the model" (trained_model("standard"), n = min(eval_n, 200));
    # FGSM by hand and by the library; the epsilon explorer and 3 figures on 6 images; accuracy vs eps:
    # 7 radii x (FGSM + 2 forwards). The toy MLP and the linear argument cost nothing.
    n = min(p.eval_n, 200)
    return [zoo(p, "standard"), Run("FGSM by hand + library, checks", pgd_passes(1) * 2 + FWD * 6, n),
            Run("accuracy vs eps: 7 x (FGSM + noise)", (pgd_passes(1) + FWD * 2) * 7, n)]


def notebook_02(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 02_pgd_and_evaluation: trained_model("standard"), trained_model("at"); n_eval = eval_n test images.
    # Attack steps tallied over the cells (pgd_acc caches repeated settings): AT model 268 steps in 16 calls
    # (by hand, library, L2, steps grid 1-40, step-size grid, 3 restarts, no start, targeted, CW, 4 radii,
    # PGD-20 at eps/8); standard 100 steps in 6 calls; logit-scaled (masked) standard model 60 steps in 5
    # calls + one input gradient. Each call: its final prediction and one accuracy forward.
    n = p.eval_n
    calls = lambda steps, k: GRAD * steps + FWD * (2 * k)
    return [zoo(p, "standard"), zoo(p, "at"), Run("AT model: 268 PGD steps, 16 calls", calls(268, 16) + FWD, n),
            Run("standard model: 100 PGD steps, 6 calls", calls(100, 6) + FWD, n),
            Run("masked model: 60 PGD steps, 5 calls, 1 gradient", calls(60, 5) + GRAD + FWD, n)]


def notebook_03(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 03_adversarial_training: PGD-AT step by hand vs training_step (2 AT steps on a batch), passes_with_grad
    # (1 standard + 1 AT step), seconds_per_step (6 standard + 6 AT steps incl. warm-up); trained_model
    # standard and at; robust_accuracy(clean, pgd20) on eval_n for standard, AT and AT's best.pt.
    # NOTE: the hand-check and timing cells build their models on the CPU (no .to(device)) as of this commit.
    return [steps_on_batch("at", 9, p), steps_on_batch("standard", 7, p), zoo(p, "standard"), zoo(p, "at"),
            ra("standard: clean, PGD-20", ("clean", "pgd20"), p.eval_n, "standard", p, acc),
            ra("AT last + best.pt: clean, PGD-20", ("clean", "pgd20"), 2 * p.eval_n, "robust", p, acc)]


def notebook_04(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 04_trades: trained_model("trades") and the beta sweep trained_model("trades", tag="beta0.5"/"beta2");
    # standard (cached). On one batch: the KL attack, PGD, loss by hand x3, KL checks. robust_accuracy(clean,
    # pgd20) on eval_n for the three TRADES models and standard.
    # The KL attack by hand and the library's; which attack reaches the larger KL: the KL attack, a uniform-start
    # KL ascent and PGD-CE at K and 4K steps, each followed by two KL forwards; the to-do's PGD.
    k = p.attack_steps
    batch = Run("KL attack, PGD, losses on a batch", FWD + GRAD * k + pgd_passes(k) + FWD * 14, p.batch_size)
    kl_attacks = Run("KL attacks by hand and library; 3 attacks at K and 4K steps",
                     (FWD + GRAD * k) * 3 + (FWD + GRAD * 4 * k) * 2 + pgd_passes(k) * 2 + pgd_passes(4 * k)
                     + FWD * 20, p.batch_size)
    return [zoo(p, "trades"), zoo(p, "trades", "beta0.5"), zoo(p, "trades", "beta2"), zoo(p, "standard"), batch,
            kl_attacks,
            ra("3 TRADES models: clean, PGD-20", ("clean", "pgd20"), 3 * p.eval_n, "robust", p, acc),
            ra("standard: clean, PGD-20", ("clean", "pgd20"), p.eval_n, "standard", p, acc)]


def notebook_05(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 05_awp: trained_model("at+awp"), at and standard (cached). PGD on 64 training images and two AWP
    # perturbations (by hand, library: proxy forward + backward); loss landscape: 3 models x (PGD-10 + 13
    # forwards) on 256; robust generalisation gap: robust_accuracy(clean, pgd20) on 360 train and 360 test
    # images for AT and AT+AWP, 360 test images for standard.
    return [zoo(p, "at+awp"), zoo(p, "at"), zoo(p, "standard"),
            Run("PGD + 2 AWP perturbations on 64", pgd_passes(p.attack_steps) + TRAIN * 2, 64),
            Run("2 full AWP steps (by hand, library) on 64", (pgd_passes(p.attack_steps) + TRAIN * 2) * 2, 64),
            Run("loss landscape: 3 x 9 x (PGD-10 + forward), re-attacked", (pgd_passes(10) + FWD) * 9 * 3, 256),
            Run("loss landscape: 3 x (PGD-10 + 9 forwards), inputs fixed", (pgd_passes(10) + FWD * 9) * 3, 256),
            ra("AT, AT+AWP on train and test: clean, PGD-20", ("clean", "pgd20"), 4 * 360, "robust", p, acc),
            ra("standard on test: clean, PGD-20", ("clean", "pgd20"), 360, "standard", p, acc)]


def notebook_06(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 06_s2o: standard, at (cached); five untrained models (negligible); PGD-attack_steps on eval_n test images +
    # their logits for the released regulariser's check.
    return [zoo(p, "standard"), zoo(p, "at"),
            Run("PGD + logits on eval_n", pgd_passes(p.attack_steps) + FWD * 2, p.eval_n)]


def notebook_06b(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 06b_s2o_training: standard, at (cached); the Laplace correlation (features forward) for AT, the penalty,
    # the to-do's factors and 6 models of the table; trained_model at+s2o, at+s2o-kfac, trades (cached from 04),
    # trades+s2o; the timing cell: 6 rounds x (at, at+s2o) steps on a batch.
    return [zoo(p, "standard"), zoo(p, "at"), zoo(p, "at+s2o"), zoo(p, "at+s2o-kfac"), zoo(p, "trades"),
            zoo(p, "trades+s2o"),
            Run("9 feature forwards on eval_n", FWD * 9, p.eval_n),
            steps_on_batch("at", 6, p), steps_on_batch("at+s2o", 6, p)]


def notebook_07(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 07_bounds: the AT model (cached); estimate_bound (n=512, CW-PGD-10, no σ search) once.
    bound, m = bound_passes(512)
    return [zoo(p, "at"), Run("estimate_bound x 1 (AT)", bound, m)]


def notebook_08(p: Profile, acc: dict[str, Accuracy]) -> list:
    # 08_bound_estimates: 5 models (standard, at, at+s2o, trades, trades+s2o: cached); estimate_bound (n=512,
    # CW-PGD-10) for the 5 models, 2 reseeded AT runs and AT without the shift projection; the bound over
    # training: fit() at and at+s2o on small_m = 5000 training images for min(3 epochs, 200) epochs (no eval
    # loader), keeping ~6 snapshots each; per snapshot estimate_bound on them and robust_accuracy(cw10) on eval_n
    # test images.
    long = min(3 * p.epochs, 200)
    keep = max(1, long // 6)
    snapshots = 2 * (long // keep)
    small = min(5000, p.train_subset or CIFAR10_TRAIN)
    bound, m = bound_passes(512)
    snap = [Train(f"bounds-{meth}-m{small}", meth, small, long, p.attack_steps, p.awp_warmup, None, 10)
            for meth in ("at", "at+s2o")]
    return [*(zoo(p, meth) for meth in ("standard", "at", "at+s2o", "trades", "trades+s2o")), *snap,
            Run("estimate_bound x 8 (5 models, 2 reseeded, 1 unprojected)", bound, 8 * m),
            Run(f"estimate_bound on {snapshots} snapshots", bound, snapshots * m),
            ra(f"CW-10 on {snapshots} snapshots", ("cw10",), snapshots * p.eval_n, "robust", p, acc)]


def notebook_09(p: Profile, acc: dict[str, Accuracy], methods: tuple[str, ...] = COMPARISON_METHODS) -> list:
    # 09_robustness_comparison: trained_model for every method of s2o_lib.compare.comparison_methods(profile)
    # (profile.compare_methods, else COMPARISON_METHODS; with a bundle, the methods it holds);
    # compare_models (clean, fgsm, pgd20, cw20, autoattack) on n_eval = eval_n; the standard model again
    # alone; sanity_checks (surrogate, steps (10, 50), 5 restarts, no AutoAttack) on n_sanity =
    # min(eval_n, 500) for every model and a gradient-masked AT; accuracy_vs_eps for at+s2o (6 radii).
    attacks = ("clean", "fgsm", "pgd20", "cw20", "autoattack")
    n, n_sanity = p.eval_n, min(p.eval_n, 500)
    robust = [m for m in methods if m != "standard"]
    work: list = [zoo(p, m) for m in methods]
    work += [ra(f"compare_models: {len(robust)} robust models", attacks, len(robust) * n, "robust", p, acc),
             ra("compare_models + alone: standard", attacks, 2 * n * ("standard" in methods), "standard", p, acc),
             Run(f"sanity checks: {len(robust) + 1} robust models", sanity_passes(acc["robust"]),
                 (len(robust) + 1) * n_sanity),
             Run("sanity checks: standard", sanity_passes(acc["standard"]), n_sanity * ("standard" in methods)),
             ra("accuracy_vs_eps: at+s2o, 5 radii > 0", ("pgd20",), 5 * n_sanity, "robust", p, acc)]
    return work


NOTEBOOKS: dict[str, Callable[..., list]] = {
    "00": notebook_00, "01": notebook_01, "02": notebook_02, "03": notebook_03, "04": notebook_04,
    "05": notebook_05, "06": notebook_06, "06b": notebook_06b, "07": notebook_07, "08": notebook_08,
    "09": notebook_09,
}


# ============================================================================================ candidate profiles
#: Profiles evaluated for issue 11 (``--candidate NAME``): changes to the library's `class` profile.
#: A key ``methods_09`` would set the methods notebook 09 trains (default: the profile's ``compare_methods``,
#: else `COMPARISON_METHODS`).
CANDIDATES: dict[str, dict] = {
    "current": {},
    # the `class` profile before issue 11 (full-width PRN-18 on all 50,000 images, 15 epochs, piecewise)
    "previous": {"arch": "preact-resnet18", "train_subset": None, "epochs": 15, "eval_n": 1000, "awp_warmup": 4,
                 "lr": 0.1, "milestones": (10, 13), "schedule": "piecewise", "compare_methods": None},
    # the paper's model on a subset: training fits 02, 03, 05; the evaluation of 09 does not (11 models x AutoAttack)
    "A": {"train_subset": 10_000, "epochs": 10, "eval_n": 200, "awp_warmup": 2},
    "B": {"arch": "preact-resnet18-w32", "train_subset": 20_000, "epochs": 10, "eval_n": 200, "awp_warmup": 2},
    "C": {"arch": "preact-resnet18-w32", "train_subset": 10_000, "epochs": 15, "eval_n": 300, "awp_warmup": 3},
    "D": {"arch": "preact-resnet18-w48", "train_subset": 10_000, "epochs": 10, "eval_n": 100, "awp_warmup": 2},
    # the recommendation (benchmarks/RESULTS.md), now the library's `class` profile (one-cycle, lr 0.2)
    "recommended": {"arch": "preact-resnet18-w32", "train_subset": 20_000, "epochs": 8, "eval_n": 200,
                    "awp_warmup": 2},
}


# ============================================================================================ architectures
LOCAL_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "preact-resnet18-w48": lambda **kw: PreActResNet18(width=48, **kw),
}


def make_model(arch: str) -> nn.Module:
    """A CIFAR-10-shaped model: the library's architectures and the w48 candidate (`PreActResNet18(width=48)`)."""
    if arch in LOCAL_ARCHITECTURES:
        return LOCAL_ARCHITECTURES[arch](num_classes=10, in_channels=3)
    if arch in ARCHITECTURES:
        return build_model(arch, num_classes=10, in_channels=3)
    raise S2OError(f"unknown architecture {arch!r}; choose one of {', '.join([*ARCHITECTURES, *LOCAL_ARCHITECTURES])}")


# ============================================================================================ FLOP units
@dataclass(frozen=True)
class Unit:
    """FLOPs per image of a forward, a backward to the input only and a training backward."""

    fwd: float
    bwd_in: float
    bwd_full: float


def _count(fn: Callable[[], None]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def count_unit(model: nn.Module, *, shape: tuple[int, ...] = (3, 32, 32), backward: bool = True) -> Unit:
    """`Unit` of ``model`` on images of ``shape`` (two images, divided by two; the model's mode is restored)."""
    was_training = model.training
    x, y = torch.rand(2, *shape), torch.tensor([0, 1])
    model.eval()
    with torch.no_grad():
        fwd = _count(lambda: model(x)) / 2
    bwd_in = bwd_full = 0.0
    if backward:
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        x_grad = x.clone().requires_grad_(True)
        bwd_in = _count(lambda: F.cross_entropy(model(x_grad), y).backward()) / 2 - fwd
        for p in params:
            p.requires_grad_(True)
        model.train()
        bwd_full = _count(lambda: F.cross_entropy(model(x), y).backward()) / 2 - fwd
        model.zero_grad(set_to_none=True)
    model.train(was_training)
    return Unit(fwd, bwd_in, bwd_full)


# ============================================================================================ T4 throughput
class _MeliketoyBlock(nn.Module):
    """The wide block of meliketoy/wide-resnet.pytorch (the stride sits in conv2); BatchNorm left out (not counted)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=stride, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + self.shortcut(x)


def reference_wrn_28_10() -> nn.Module:
    """WRN-28-10 exactly as in the measured T4 run below (its FLOPs only)."""
    blocks: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1)]
    c_in = 16
    for c_out, stride in ((160, 1), (320, 2), (640, 2)):
        for i in range(4):
            blocks.append(_MeliketoyBlock(c_in, c_out, stride if i == 0 else 1))
            c_in = c_out
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(640, 10))


def reference_resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


@dataclass(frozen=True)
class ReferenceRun:
    """A public T4 measurement: ``epochs`` x (``train_images`` training steps + ``eval_images`` forwards) in
    ``seconds``. Its FLOPs, counted as above, over its seconds give a sustained throughput."""

    name: str
    source: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    train_images: int
    eval_images: int
    epochs: int
    seconds: float

    def tflops(self) -> float:
        unit = count_unit(self.build(), shape=self.shape, backward=self.train_images > 0)
        flops = self.epochs * (self.train_images * (unit.fwd + unit.bwd_full) + self.eval_images * unit.fwd)
        return flops / self.seconds / 1e12


_CESHINE = ("ceshine, 'Mixed Precision Training on Tesla T4 and P100' (2019), https://blog.ceshine.net/post/apex-t4-p100/; "
            "notebooks colab_snapshots/wide_resnet_10epochs_O0/O1.ipynb in github.com/ceshine/apex_pytorch_cifar_experiment: "
            "WRN-28-10, CIFAR-10, batch 128, 10 epochs with a 10k-image validation per epoch, Colab T4")
_NVIDIA = ("NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, 'Inference performance: "
           "NVIDIA T4' (pytorch-21.03 container), batch 128")
REFERENCE_RUNS: dict[str, ReferenceRun] = {
    "fp32": ReferenceRun("WRN-28-10 training, FP32 (apex O0): 57 min 17 s", _CESHINE, reference_wrn_28_10,
                         (3, 32, 32), CIFAR10_TRAIN, CIFAR10_TEST, 10, 57 * 60 + 17),
    "fp32-low": ReferenceRun("ResNet-50 224x224 inference, FP32: 426 img/s", _NVIDIA, reference_resnet50,
                             (3, 224, 224), 0, 426, 1, 1.0),
    "mixed": ReferenceRun("WRN-28-10 training, mixed precision (apex O1): 31 min 14 s", _CESHINE, reference_wrn_28_10,
                          (3, 32, 32), CIFAR10_TRAIN, CIFAR10_TEST, 10, 31 * 60 + 14),
}
T4_PEAK_TFLOPS = {"fp32": 8.1, "fp16 tensor": 65.0}  # NVIDIA T4 datasheet


# ============================================================================================ notebook costs
@dataclass
class NotebookCost:
    """FLOPs of one notebook: training first paid here (suite order), all its training (alone), the rest."""

    name: str
    trained_first: list[str]
    train_first: float
    train_alone: float
    runs: float
    items: list[tuple[str, float, bool]]  # (what, FLOPs, paid in suite order)
    # (FLOPs, of them AWP's proxy ascent, CPU data seconds) per run
    runs_first: list[tuple[float, float, float]] = field(default_factory=list)
    runs_alone: list[tuple[float, float, float]] = field(default_factory=list)

    def minutes(self, tflops: float, *, bundle: bool = False, alone: bool = False,
                train_tflops: float | None = None) -> float:
        """Minutes at ``tflops``. A training run takes max(GPU time, CPU data time): `make_loader` loads in the
        main process, but CUDA runs asynchronously, so the next batch is prepared while the GPU computes.

        ``train_tflops``: the rate of what `fit` runs under autocast (fp16), all but AWP's proxy ascent, which
        stays at ``tflops`` (fp32) as does everything outside `fit`.
        """
        trains = [] if bundle else (self.runs_alone if alone else self.runs_first)
        fast = train_tflops or tflops
        train = sum(max(_minutes(flops - proxy, fast) + _minutes(proxy, tflops), data / 60)
                    for flops, proxy, data in trains)
        return train + _minutes(self.runs, tflops)


def notebook_costs(p: Profile, unit: Unit, acc: dict[str, Accuracy], methods_09: tuple[str, ...], *,
                   data_us: float = 0.0) -> list[NotebookCost]:
    """Per notebook 00-09, in suite order: a zoo run is paid by the first notebook that asks for it.

    ``data_us``: CPU µs per training image of the data pipeline (`make_loader`, ``num_workers=0``).
    """
    seen: set[str] = set()
    out = []
    for name, declare in NOTEBOOKS.items():
        work = declare(p, acc, methods_09) if name == "09" else declare(p, acc)
        cost = NotebookCost(name, [], 0.0, 0.0, 0.0, [])
        asked: set[str] = set()
        for item in work:
            flops = item.passes_total(acc).flops(unit)
            if isinstance(item, Train):
                if item.key in asked:
                    continue
                asked.add(item.key)
                first = item.key not in seen
                seen.add(item.key)
                data = item.images * item.epochs * data_us * 1e-6
                proxy = item.proxy_total().flops(unit)
                cost.train_alone += flops
                cost.runs_alone.append((flops, proxy, data))
                if first:
                    cost.train_first += flops
                    cost.runs_first.append((flops, proxy, data))
                    cost.trained_first.append(item.key)
                cost.items.append((f"train {item.key}: {item.epochs} ep x {item.images} img", flops, first))
            else:
                cost.runs += flops
                cost.items.append((item.what, flops, True))
        out.append(cost)
    return out


# ============================================================================================ CPU measurement
def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_units(arch: str, *, batch: int, repeats: int) -> dict[str, float]:
    """CPU seconds per image of F, F + B_in (autograd.grad to the input, as attacks do) and F + B_full."""
    model = make_model(arch)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def forward() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def input_grad() -> None:
        model.eval()
        x_in = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(x_in), y), x_in)

    def train() -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return {name: _median_seconds(fn, repeats) / batch
            for name, fn in (("F", forward), ("F + B_in", input_grad), ("F + B_full", train))}


def time_methods(arch: str, methods: list[str], *, batch: int, repeats: int, attack_steps: int) -> dict[str, float | None]:
    """CPU seconds per image of one `training_step` per method (AWP active), interleaved round-robin, median
    of ``repeats`` after one warm-up round; ``None`` for a method this library version does not know."""
    torch.manual_seed(0)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    base = make_model(arch)
    config = DefenseConfig(steps=attack_steps)
    closures: dict[str, Callable[[], object]] = {}
    for method in methods:
        try:
            parsed = parse_method(method)
        except S2OError:
            continue
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        awp = AWP(model) if parsed.awp else None
        closures[method] = lambda m=model, o=opt, a=awp, meth=method: training_step(
            m, x, y, method=meth, config=config, optimizer=o, awp=a)
    times: dict[str, list[float]] = {m: [] for m in closures}
    for round_ in range(repeats + 1):
        for method, fn in closures.items():
            start = time.perf_counter()
            fn()
            if round_ > 0:
                times[method].append(time.perf_counter() - start)
    return {m: (statistics.median(times[m]) / batch if m in times else None) for m in methods}


def time_data_pipeline(images: int = 2048) -> float:
    """CPU seconds per image of the CIFAR training pipeline: uint8 HWC array -> PIL -> crop, flip, ToTensor
    (torchvision's CIFAR10.__getitem__ with the transforms of `s2o_lib.data`), one process, batches of 128."""
    from PIL import Image
    from torchvision import transforms

    pixels = torch.randint(0, 256, (images, 32, 32, 3), dtype=torch.uint8).numpy()
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])

    class CifarShaped(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return images

        def __getitem__(self, i: int):
            return transform(Image.fromarray(pixels[i])), 0

    loader = torch.utils.data.DataLoader(CifarShaped(), batch_size=128, shuffle=True, num_workers=0)
    return _median_seconds(lambda: [None for _ in loader], 2) / images


# ============================================================================================ report
def _minutes(flops: float, tflops: float) -> float:
    return flops / (tflops * 1e12) / 60


def method_table(p: Profile, unit: Unit, tf: dict[str, float], methods: list[str],
                 cpu: dict[str, float | None] | None) -> list[str]:
    n = p.train_subset or CIFAR10_TRAIN
    head = "| method | passes/img (F-equiv.) | GFLOP/img/step | T4 min/epoch @fp32 | @fp32-low |"
    rows = [head + (" CPU ms/img | CPU ratio to standard | FLOP ratio to standard |" if cpu else ""),
            "|---" * (5 + 3 * bool(cpu)) + "|"]
    std = step_passes("standard", p.attack_steps).flops(unit)
    for method in methods:
        flops = step_passes(method, p.attack_steps).flops(unit)
        row = (f"| {method} | {step_passes(method, p.attack_steps).equivalents():.0f} | {flops / 1e9:.2f} | "
               f"{_minutes(flops * n, tf['fp32']):.2f} | {_minutes(flops * n, tf['fp32-low']):.2f} |")
        if cpu:
            sec, sec_std = cpu.get(method), cpu.get("standard")
            measured = f"{1e3 * sec:.0f} | {sec / sec_std:.2f}" if sec and sec_std else "n/a | n/a"
            row += f" {measured} | {flops / std:.2f} |"
        rows.append(row)
    return rows


def notebook_table(costs: list[NotebookCost], tf: dict[str, float], overhead: float) -> tuple[list[str], bool]:
    rows = [("| notebook | trains first (suite order) | in order @fp32 | in order @fp32-low | alone @fp32-low | "
             "with bundle @fp32-low | budget |"), "|---|---|---|---|---|---|---|"]
    ok = True
    total = {"order": 0.0, "order_low": 0.0, "alone": 0.0, "bundle": 0.0}
    for c in costs:
        order = c.minutes(tf["fp32"]) + overhead
        low = c.minutes(tf["fp32-low"]) + overhead
        alone = c.minutes(tf["fp32-low"], alone=True) + overhead
        bundle = c.minutes(tf["fp32-low"], bundle=True) + overhead
        if c.name == "09":
            fits = bundle <= BUDGET_MIN and low <= BUDGET_09_NO_BUNDLE_MIN
            verdict = f"{'ok' if fits else 'OVER'} (≤ {BUDGET_MIN:g} bundle, ≤ {BUDGET_09_NO_BUNDLE_MIN:g} without)"
        else:
            fits = low <= BUDGET_MIN
            verdict = f"{'ok' if fits else 'OVER'} (≤ {BUDGET_MIN:g})"
        ok &= fits
        for key, value in (("order", order), ("order_low", low), ("alone", alone), ("bundle", bundle)):
            total[key] += value
        rows.append(f"| {c.name} | {', '.join(c.trained_first) or '—'} | {order:.1f} | {low:.1f} | {alone:.1f} | "
                    f"{bundle:.1f} | {verdict} |")
    rows.append(f"| suite | | {total['order']:.1f} | {total['order_low']:.1f} | {total['alone']:.1f} | "
                f"{total['bundle']:.1f} | {'ok' if ok else 'OVER'} |")
    return rows, ok


def fp16_table(costs: list[NotebookCost], tf: dict[str, float], overhead: float) -> tuple[list[str], float]:
    """Minutes at fp16 (`fit`'s work at the fp16 figures, the rest at fp32); the suite in order at fp16-low."""
    rows = [("| notebook | trains first (suite order) | in order @fp16 | in order @fp16-low | alone @fp16-low | "
             "with bundle | budget |"), "|---|---|---|---|---|---|---|"]
    total = {"order": 0.0, "low": 0.0, "alone": 0.0, "bundle": 0.0}
    for c in costs:
        values = {"order": c.minutes(tf["fp32"], train_tflops=tf["fp16"]) + overhead,
                  "low": c.minutes(tf["fp32-low"], train_tflops=tf["fp16-low"]) + overhead,
                  "alone": c.minutes(tf["fp32-low"], train_tflops=tf["fp16-low"], alone=True) + overhead,
                  "bundle": c.minutes(tf["fp32-low"], bundle=True) + overhead}
        for key, value in values.items():
            total[key] += value
        limit = BUDGET_09_NO_BUNDLE_MIN if c.name == "09" else BUDGET_MIN
        verdict = f"{'ok' if values['low'] <= limit else 'OVER'} (≤ {limit:g} in order)"
        rows.append(f"| {c.name} | {', '.join(c.trained_first) or '—'} | {values['order']:.1f} | {values['low']:.1f} "
                    f"| {values['alone']:.1f} | {values['bundle']:.1f} | {verdict} |")
    fits = total["low"] <= BUDGET_SUITE_FP16_MIN
    rows.append(f"| suite | | {total['order']:.1f} | {total['low']:.1f} | {total['alone']:.1f} | {total['bundle']:.1f} "
                f"| {'ok' if fits else 'OVER'} (≤ {BUDGET_SUITE_FP16_MIN:g} in order @fp16-low) |")
    return rows, total["low"]


def detail_table(costs: list[NotebookCost], tf: dict[str, float]) -> list[str]:
    rows = ["| notebook | work | T4 min @fp32-low | paid in suite order |", "|---|---|---|---|"]
    for c in costs:
        rows += [f"| {c.name} | {what} | {_minutes(flops, tf['fp32-low']):.2f} | {'yes' if paid else 'no (cached)'} |"
                 for what, flops, paid in c.items]
    return rows


def throughputs(override: float | None, override_fp16: float | None = None) -> dict[str, float]:
    """The T4 figures: `REFERENCE_RUNS`, ``fp16`` (= the mixed-precision run) and ``fp16-low`` = fp16 × fp32-low /
    fp32 (derived, pessimistic); a figure measured on the card replaces both estimates of its precision."""
    figures = {key: run.tflops() for key, run in REFERENCE_RUNS.items()}
    figures["fp16"] = figures["mixed"]
    figures["fp16-low"] = figures["mixed"] * figures["fp32-low"] / figures["fp32"]
    if override is not None:
        figures["fp32"] = figures["fp32-low"] = override
    if override_fp16 is not None:
        figures["fp16"] = figures["fp16-low"] = override_fp16
    return figures


# ============================================================================================ command line
_OVERRIDES = ("arch", "epochs", "batch_size", "train_subset", "attack_steps", "eval_n", "eval_steps", "autoattack",
              "awp_warmup")


def effective_profile(args: argparse.Namespace) -> tuple[Profile, tuple[str, ...]]:
    """The profile (library profile, then the candidate's changes, then explicit flags) and 09's methods."""
    base = get_profile(args.profile)
    if args.candidate and args.candidate not in CANDIDATES:
        raise S2OError(f"unknown candidate {args.candidate!r}; choose one of {', '.join(CANDIDATES)}")
    changes = dict(CANDIDATES[args.candidate]) if args.candidate else {}
    methods = changes.pop("methods_09", None)
    for name in _OVERRIDES:
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if changes.get("train_subset") == 0:
        changes["train_subset"] = None
    if args.methods_09:
        methods = tuple(m.strip() for m in args.methods_09.split(",") if m.strip())
    known = {f.name for f in fields(Profile)}
    unknown = set(changes) - known
    if unknown:
        raise S2OError(f"not Profile fields: {', '.join(sorted(unknown))}")
    profile = dataclasses.replace(base, **changes)
    # notebook 09 trains `compare_methods` (`s2o_lib.compare.comparison_methods`; all when None)
    return profile, tuple(methods or profile.compare_methods or COMPARISON_METHODS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="class", help="library profile to start from (default: class)")
    parser.add_argument("--candidate", help=f"apply a candidate's changes: {', '.join(CANDIDATES)}")
    parser.add_argument("--arch", help=f"architecture ({', '.join([*ARCHITECTURES, *LOCAL_ARCHITECTURES])})")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--train-subset", type=int, help="training images (0: all 50,000)")
    parser.add_argument("--attack-steps", dest="attack_steps", type=int, help="steps of the training attack")
    parser.add_argument("--eval-n", type=int, help="test images attacked (profile.eval_n)")
    parser.add_argument("--eval-steps", type=int)
    parser.add_argument("--autoattack", choices=("standard", "fast"))
    parser.add_argument("--awp-warmup", type=int)
    parser.add_argument("--methods-09", help="comma-separated methods notebook 09 trains (default: the profile's "
                                             "compare_methods, else COMPARISON_METHODS)")
    parser.add_argument("--robust-clean", type=float, default=ASSUMED["robust"].clean,
                        help="assumed clean accuracy of adversarially trained models")
    parser.add_argument("--robust-aa", type=float, default=ASSUMED["robust"].autoattack,
                        help="assumed AutoAttack accuracy of adversarially trained models")
    parser.add_argument("--tflops", type=float,
                        help="a sustained TFLOP/s measured on the card: replaces both fp32 figures (RESULTS.md)")
    parser.add_argument("--tflops-fp16", type=float,
                        help="the same at fp16 (benchmarks/gpu_check.py measures it): replaces both fp16 figures")
    parser.add_argument("--overhead-min", type=float, default=0.5,
                        help="allowance per notebook for start-up, imports and data loading (minutes)")
    parser.add_argument("--data-us", type=float, default=DATA_US,
                        help="CPU µs per training image of the data pipeline (default: measured, see DATA_US)")
    parser.add_argument("--detail", action="store_true", help="also list every work item")
    parser.add_argument("--derive-throughput", action="store_true", help="print how the T4 figures are derived")
    parser.add_argument("--cpu-timing", action="store_true", help="time the steps on this CPU (run under the lock)")
    parser.add_argument("--cpu-arch", help="architecture timed on the CPU (default: the profile's)")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="intra-op threads for the CPU timing (1: robust when another process holds a core)")
    parser.add_argument("--cpu-batch", type=int, default=8)
    parser.add_argument("--cpu-repeats", type=int, default=2)
    parser.add_argument("--cpu-methods", help="comma-separated methods to time (default: all in the table)")
    return parser.parse_args(argv)


TABLE_METHODS = ["standard", "at", "at+s2o", "trades", "trades+s2o", "mart", "mart+s2o", "at+awp", "at+awp+s2o",
                 "trades+awp", "trades+awp+s2o", "avmixup", "avmixup+s2o"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    profile, methods_09 = effective_profile(args)
    acc = {"standard": ASSUMED["standard"], "robust": Accuracy(args.robust_clean, args.robust_aa)}
    unit = count_unit(make_model(profile.arch))
    tf = throughputs(args.tflops, args.tflops_fp16)
    print(f"## Profile `{profile.name}`" + (f", candidate `{args.candidate}`" if args.candidate else ""))
    library = get_profile(args.profile)
    changed = {f.name: getattr(profile, f.name) for f in fields(Profile)
               if f.name != "notes" and getattr(profile, f.name) != getattr(library, f.name)}
    print(f"\narch {profile.arch}, epochs {profile.epochs}, batch {profile.batch_size}, training images "
          f"{profile.train_subset or CIFAR10_TRAIN}, PGD-{profile.attack_steps} training, eval_n {profile.eval_n}, "
          f"AutoAttack {profile.autoattack}, AWP warm-up {profile.awp_warmup}; changed from the library: "
          f"{changed or 'nothing'}; notebook 09 trains: {', '.join(methods_09)}")
    print(f"\nFLOPs per image ({profile.arch}, FlopCounterMode): F = {unit.fwd / 1e9:.3f} G, B_in = "
          f"{unit.bwd_in / 1e9:.3f} G, B_full = {unit.bwd_full / 1e9:.3f} G")
    print(f"T4 sustained TFLOP/s: fp32 {tf['fp32']:.2f}{' (override)' if args.tflops else ''}, fp32-low "
          f"{tf['fp32-low']:.2f}, fp16 {tf['fp16']:.2f}{' (override)' if args.tflops_fp16 else ''}, fp16-low "
          f"{tf['fp16-low']:.2f} (class trains in fp16 on a T4); "
          f"peaks {T4_PEAK_TFLOPS}. Accuracy assumptions: {acc}. Data pipeline {args.data_us:g} µs per training "
          f"image. Allowance per notebook {args.overhead_min:g} min.")
    if args.derive_throughput:
        print("\n### Throughput derivation\n")
        for key, run in REFERENCE_RUNS.items():
            print(f"- {key}: {run.name} -> {tf[key]:.2f} TFLOP/s ({100 * tf[key] / T4_PEAK_TFLOPS['fp32']:.0f}% of the "
                  f"fp32 peak). Source: {run.source}")
        print(f"- fp16: the mixed run, {tf['fp16']:.2f}; fp16-low: fp16 × fp32-low / fp32 = {tf['fp16-low']:.2f} "
              "(derived, pessimistic: the fp32 budget's discount applied to fp16)")
    cpu = None
    if args.cpu_timing:
        cpu = _cpu_report(args, profile)
    print(f"\n### Training step per method (PGD-{profile.attack_steps}; min/epoch over "
          f"{profile.train_subset or CIFAR10_TRAIN} images, AWP active)\n")
    print("\n".join(method_table(profile, unit, tf, TABLE_METHODS, cpu)))
    costs = notebook_costs(profile, unit, acc, methods_09, data_us=args.data_us)
    rows, ok = notebook_table(costs, tf, args.overhead_min)
    print("\n### Minutes per notebook on one T4 (fp32 figures; budget checked @fp32-low)\n")
    print("\n".join(rows))
    if args.detail:
        print("\n### Work items\n")
        print("\n".join(detail_table(costs, tf)))
    rows16, suite16 = fp16_table(costs, tf, args.overhead_min)
    print("\n### Minutes per notebook on one T4 at fp16 (the class profile's precision there: `fit`'s training and "
          "per-epoch evaluation at the fp16 figures; AWP's proxy and the notebooks' evaluation at fp32)\n")
    print("\n".join(rows16))
    print(f"\nbudget: {'every notebook fits' if ok else 'OVER budget'} (fp32 table); suite from an empty cache at "
          f"fp16-low {suite16:.1f} min: " + (f"fits ≤ {BUDGET_SUITE_FP16_MIN:g}" if suite16 <= BUDGET_SUITE_FP16_MIN
                                              else f"OVER {BUDGET_SUITE_FP16_MIN:g} by {suite16 - BUDGET_SUITE_FP16_MIN:.1f}"))


def _cpu_report(args: argparse.Namespace, profile: Profile) -> dict[str, float | None]:
    arch = args.cpu_arch or profile.arch
    torch.set_num_threads(args.cpu_threads)
    methods = [m.strip() for m in args.cpu_methods.split(",")] if args.cpu_methods else TABLE_METHODS
    if "standard" not in methods:
        methods = ["standard", *methods]
    print(f"\n### CPU measurement ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {arch}, batch {args.cpu_batch}, median of {args.cpu_repeats} after "
          "1 warm-up)\n")
    units = time_units(arch, batch=args.cpu_batch, repeats=args.cpu_repeats)
    flop_unit = count_unit(make_model(arch))
    print("| pass | CPU ms/img | ratio to F (measured) | ratio to F (FLOPs) |\n|---|---|---|---|")
    flop_ratio = {"F": 1.0, "F + B_in": 1 + flop_unit.bwd_in / flop_unit.fwd,
                  "F + B_full": 1 + flop_unit.bwd_full / flop_unit.fwd}
    for name, sec in units.items():
        print(f"| {name} | {1e3 * sec:.1f} | {sec / units['F']:.2f} | {flop_ratio[name]:.2f} |")
    print(f"\ndata pipeline (PIL crop + flip + ToTensor, one process): {1e6 * time_data_pipeline():.0f} µs/img")
    timed = time_methods(arch, methods, batch=args.cpu_batch, repeats=args.cpu_repeats,
                         attack_steps=profile.attack_steps)
    missing = [m for m, v in timed.items() if v is None]
    if missing:
        print(f"not timed (this library version does not know them): {', '.join(missing)}")
    return timed


if __name__ == "__main__":
    main()
