# %% [markdown]
# # 03 · Adversarial training: PGD-AT, robust overfitting and its cost
#
# Notebook 02 attacked a normally trained network and broke it. Here we *train against the attack*.
#
# **Learning goals.** After this notebook you can
#
# - write adversarial training as a **min-max problem** and say what each level does,
# - write one **PGD-AT training step** yourself and check it against `s2o_lib.defenses.training_step`,
# - read clean and robust **accuracy curves** over epochs and compare PGD-AT with standard training,
# - explain **robust overfitting** (Rice, Wong & Kolter 2020) and pick the **best-robust checkpoint**, and read
#   the **robust generalisation gap** in a small-data run (eight seeds, run offline),
# - estimate what adversarial training **costs**: about (K+1)× the forward/backward passes of standard training.

# %%
import copy
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.regime import analyse_regime, load_results
from s2o_lib.checkpoint import load_model
from s2o_lib.config import get_device, get_profile, seed_everything
from s2o_lib.data import dataset_info, make_loader
from s2o_lib.defenses import DefenseConfig, training_step
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import build_model
from s2o_lib.plots import plot_history
from s2o_lib.zoo import profile_data, runs_root, trained_model

# %% [markdown]
# ## The profile
# Every size below comes from the active profile. In `smoke` the whole notebook runs in well under a minute
# on a CPU: 16×16 digits, a small CNN, ε = 0.15, PGD-5 during training and only 6 epochs.

# %%
profile = get_profile()
device = get_device()  # every model and batch below goes here, as `trained_model` puts its models
print(f"profile: {profile.name}")
print(f"dataset {profile.dataset}, model {profile.arch}, {profile.epochs} epochs, lr {profile.lr}, "
      f"milestones {profile.milestones}")
print(f"training attack: PGD-{profile.attack_steps}, eps = {profile.eps:.4f}, step {profile.alpha:.4f}")
print(profile.notes)

# %% [markdown]
# ## The min-max formulation
# Standard training minimises the average loss on the training points. Madry et al. (2018) minimise the
# average loss on the **worst point of the threat set** around each training point instead:
#
# $$
# \min_\theta \; \mathbb{E}_{(x, y)\sim\mathcal D}\Big[\max_{\|\delta\|_\infty \le \varepsilon}
#   \ell\big(f_\theta(x + \delta),\, y\big)\Big].
# $$
#
# - The **inner maximisation** is an attack: we cannot solve it exactly, so we approximate it with PGD-K,
#   $\delta \leftarrow \Pi_{\|\delta\|_\infty\le\varepsilon}\big(\delta + \alpha\,\mathrm{sign}\,\nabla_\delta
#   \ell(f_\theta(x+\delta), y)\big)$, started at a random point of the ball.
# - The **outer minimisation** is ordinary SGD, on the loss at the adversarial point $x' = x + \delta$.
#   By Danskin's theorem, the gradient of the max is (roughly) the gradient at the maximiser, so we may treat
#   $x'$ as a constant when we differentiate with respect to $\theta$.

# %% [markdown]
# ## One PGD-AT step, written out
# Two details matter. The attack runs in **eval mode** (BatchNorm uses its running statistics and does not
# update them while we search for $x'$); the weight update runs in **train mode**, on $x'$ only.

# %%
def at_step_by_hand(model, x, y, opt, *, eps, alpha, steps):
    """One PGD-AT step: PGD-`steps` in eval mode, then CE on x_adv in train mode, then an optimiser step."""
    # Inner maximisation: PGD on the cross-entropy from a uniform random start, in eval mode.
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)  # project onto the ball, stay an image
    # Outer minimisation: an ordinary SGD step on the loss at x_adv, in train mode.
    model.train()
    loss = F.cross_entropy(model(x_adv), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()

# %% [markdown]
# We check it against the library: two copies of the same freshly initialised network, the same batch,
# the same seed for the random start, one step each. Their weights — and BatchNorm's running statistics —
# must agree afterwards.

# %%
info = dataset_info(profile.dataset)
train_set, test_set = profile_data(profile)
x, y = (t.to(device) for t in next(iter(make_loader(train_set, batch_size=profile.batch_size, shuffle=True, seed=0))))

seed_everything(0)
net_hand = build_model(profile.arch, num_classes=info.num_classes, in_channels=info.in_channels).to(device)
net_lib = copy.deepcopy(net_hand)
opt_hand = torch.optim.SGD(net_hand.parameters(), lr=profile.lr, momentum=0.9, weight_decay=5e-4)
opt_lib = torch.optim.SGD(net_lib.parameters(), lr=profile.lr, momentum=0.9, weight_decay=5e-4)
config = DefenseConfig(eps=profile.eps, alpha=profile.alpha, steps=profile.attack_steps)

torch.manual_seed(1)
loss_hand = at_step_by_hand(net_hand, x, y, opt_hand, eps=config.eps, alpha=config.alpha, steps=config.steps)
torch.manual_seed(1)
loss_lib = training_step(net_lib, x, y, method="at", config=config, optimizer=opt_lib).loss

# %% tags=["nbval-ignore-output"]
state_hand, state_lib = net_hand.state_dict(), net_lib.state_dict()
max_diff = max((state_hand[k].float() - state_lib[k].float()).abs().max().item() for k in state_hand)
print(f"loss: by hand {loss_hand.item():.6f}, library {loss_lib.item():.6f}; largest weight difference {max_diff:.2e}")

# %%
assert torch.allclose(loss_hand, loss_lib)
assert all(torch.allclose(state_hand[k].float(), state_lib[k].float(), atol=1e-6) for k in state_hand), \
    "the hand-written PGD-AT step must reach the same weights as training_step(method='at')"

# %% [markdown]
# ## Training: standard versus PGD-AT
# `trained_model` trains with `fit` (SGD with momentum 0.9, weight decay 5e-4, a piecewise learning rate)
# and evaluates clean and PGD accuracy on a test subset after every epoch. Both models are cached in
# `notebooks/runs/` and shared with later notebooks, so a second run only loads them.

# %% tags=["nbval-ignore-output"]
model_std, hist_std = trained_model("standard")
model_at, hist_at = trained_model("at")
print(f"standard: {hist_std.epoch[-1]} epochs; PGD-AT: {hist_at.epoch[-1]} epochs")

# %% report="Clean (dashed) and PGD (solid) test accuracy over epochs; the star marks the best-robust epoch."
ax = plot_history({"standard": hist_std, "PGD-AT": hist_at})
ax.set_title(f"standard vs PGD-AT ({profile.name}, eps={profile.eps:g})")
plt.show()

# %% [markdown]
# Standard training reaches a high clean accuracy and almost no PGD accuracy. PGD-AT gives up some clean
# accuracy and gains a lot of robustness. Now a fresh, stronger evaluation than the per-epoch one:
# PGD-20 with a random start on `eval_n` test images.

# %% tags=["nbval-ignore-output"]
evaluation = dict(attacks=("clean", "pgd20"), eps=profile.eval_eps, alpha=profile.eval_alpha, n=profile.eval_n)
acc_std = robust_accuracy(model_std, test_set, **evaluation)
acc_at = robust_accuracy(model_at, test_set, **evaluation)
protocol = f"PGD-20 (step {profile.eval_alpha:g}, eps {profile.eval_eps:g}) on {profile.eval_n} test images"
print(protocol)
for name, acc in (("standard", acc_std), ("PGD-AT", acc_at)):
    print(f"{name:9s} clean {acc['clean']:.3f}   PGD-20 {acc['pgd20']:.3f}")

# %%
for acc in (acc_std, acc_at):
    assert acc["pgd20"] <= acc["clean"], "a sample robust to PGD must also be correct on the clean input"
assert acc_at["pgd20"] > acc_std["pgd20"] + 0.1, "PGD-AT must beat standard training under PGD"

# %% [markdown]
# ## Robust overfitting and the best-robust checkpoint
# Rice, Wong & Kolter (2020) found that in long PGD-AT runs the **robust test accuracy peaks shortly after
# the first learning-rate decay and then falls**, while robust *training* accuracy keeps rising: the network
# memorises adversarial examples of the training set. Clean accuracy shows no such dip, so you only see it if
# you watch the robust curve. Their cure is as simple as it is effective: **early stopping on a robust
# validation metric**. `fit` does this for us — after each epoch it measures PGD accuracy on the evaluation
# subset and keeps the best epoch as `best.pt` next to the last checkpoint, `runs/<profile>/<method>-seed0/`.
# (The S²O paper picks its AT checkpoints between epochs 100 and 110, just after the decay at 100.)

# %% tags=["nbval-ignore-output"]
run_dir = runs_root() / profile.name / "at-seed0"
model_best, meta_best = load_model(run_dir / "best.pt")
print(f"run folder: {run_dir}")
selection = f"per-epoch PGD-{min(profile.eval_steps, 10)} on {min(profile.eval_n, 500)} test images"
print(f"best epoch {hist_at.best_epoch} of {hist_at.epoch[-1]} ({selection}: {hist_at.best_robust:.3f}); "
      f"last epoch {hist_at.eval_robust[-1]:.3f}")
acc_best = robust_accuracy(model_best, test_set, **evaluation)
print(f"best.pt:  clean {acc_best['clean']:.3f}   PGD-20 {acc_best['pgd20']:.3f}   ({protocol})")

# %%
assert meta_best["epoch"] == hist_at.best_epoch, "best.pt must hold the epoch the history calls best"
assert hist_at.best_robust == max(hist_at.eval_robust)
assert acc_best["pgd20"] <= acc_best["clean"]

# %% [markdown]
# **Honestly, in `smoke`:** six epochs with one learning-rate decay are far too short for robust
# overfitting, so the best epoch is usually the last one or close to it, and `best.pt` and the final
# weights agree (or nearly). The mechanism — keep the best-robust checkpoint, not the last — is the same in
# every profile.
#
# ### What a small-data run shows
# Robust overfitting needs a model that can *memorise* the adversarial examples of its training set. With few
# training images that happens on a CPU too. The suite trained PGD-AT offline on **100 training digits for 80
# epochs** (learning rate ×0.1 at epochs 40 and 60), eight training seeds, and recorded PGD-10 accuracy on the
# training images, on 300 held-out validation images and on the 360 test images every 8 epochs
# (`benchmarks/regime_search.py`; `benchmarks/regime.py` reads the committed results — nothing is trained here).

# %%
regime = analyse_regime(load_results("confirm"))
runs_at = regime.runs["at"]
record = next(iter(runs_at.values()))
r = record["regime"]
print(f"PGD-AT, {len(runs_at)} seeds ({min(runs_at)}–{max(runs_at)}), run offline by benchmarks/regime_search.py: "
      f"small-cnn on {r['subset']} training digits, {r['epochs']} epochs, batch {r['batch_size']}, lr {r['lr']:g} "
      f"(×0.1 at epochs {', '.join(map(str, record['milestones']))}); PGD-10 accuracy (%), mean over the seeds")
curve = regime.curves("at")            # mean over the seeds, percent, one row per recorded epoch
per_seed = {seed: record["curve"] for seed, record in regime.runs["at"].items()}
peak_epoch = int(curve["test_pgd10"].idxmax())
last_epoch = int(curve.index[-1])
print(curve[["train_pgd10", "val_pgd10", "test_pgd10"]].round(1).to_string())
print(f"test PGD-10: peak {curve['test_pgd10'].max():.1f}% at epoch {peak_epoch}, last {curve['test_pgd10'].iloc[-1]:.1f}%;"
      f" train PGD-10 at the last epoch {curve['train_pgd10'].iloc[-1]:.1f}%")

# %% report="PGD-AT on 100 training digits for 80 epochs (8 seeds, run offline): robust accuracy on the training images, on validation and on test images per epoch."
fig, ax = plt.subplots(figsize=(7, 4))
for name, color in (("train", "C0"), ("val", "C2"), ("test", "C1")):
    for points in per_seed.values():
        ax.plot([p["epoch"] for p in points], [100 * p[f"{name}_pgd10"] for p in points], color=color, lw=0.5,
                alpha=0.35)
    ax.plot(curve.index, curve[f"{name}_pgd10"], "o-", color=color, ms=3, label=f"{name} (mean of {len(runs_at)} seeds)")
for milestone in record["milestones"]:
    ax.axvline(milestone, color="grey", ls=":", lw=1)
ax.set_xlabel("epoch (dotted: learning rate ×0.1)")
ax.set_ylabel("PGD-10 accuracy (%)")
ax.set_title("PGD-AT on 100 digits: the robust generalisation gap")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

# %%
gap_last = curve["train_pgd10"].iloc[-1] - curve["test_pgd10"].iloc[-1]
decline = curve["test_pgd10"].max() - curve["test_pgd10"].iloc[-1]
print(f"robust generalisation gap at the last epoch: {gap_last:.1f} points; test decline after its peak: "
      f"{decline:.1f} points")

# %% jupyter={"source_hidden": true}
# The prose below: a large gap, and no decline of more than two points after the peak.
assert gap_last > 20 and 0 <= decline < 2

# %% [markdown]
# What this run shows is the **robust generalisation gap**: robust accuracy on the 100 training images climbs
# far above robust test accuracy (the gap is printed above). It does **not** show the second half of robust
# overfitting — test robust accuracy does not fall after its peak (by less than two points); it stops
# improving while the training accuracy stays far above it.
# Rice et al. see the fall on CIFAR-10 with 200 epochs and much larger networks; a run this small memorises
# without (yet) getting worse on the test set. The gap is the quantity that AWP (notebook 05) and S²O (notebook
# 06) claim to shrink, and this regime is where the suite tests them.

# %% [markdown]
# ## What adversarial training costs
# Count the passes through the network in one step. Standard training does **one** forward and one
# backward pass. PGD-K AT does K forward+backward passes to find $x'$ (gradients with respect to the input)
# and one more for the weight update: **K + 1**. We count the forward passes that build a graph (each is
# followed by exactly one backward pass) with a hook.

# %%
def passes_with_grad(method):
    """Number of forward passes with autograd on during one training step of `method`."""
    seed_everything(0)
    net = build_model(profile.arch, num_classes=info.num_classes, in_channels=info.in_channels).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=profile.lr)
    count = [0]
    hook = net.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + torch.is_grad_enabled()))
    training_step(net, x, y, method=method, config=config, optimizer=opt)
    hook.remove()
    return count[0]

print(f"forward+backward passes per step: standard {passes_with_grad('standard')}, "
      f"PGD-{config.steps} AT {passes_with_grad('at')}")

# %% [markdown]
# In wall-clock time the ratio is usually smaller than K + 1: the per-epoch times recorded by `fit` also
# include data loading and the per-epoch PGD evaluation, which both methods pay. Timings vary between
# machines and runs, so this output is not compared by the tests.

# %% tags=["nbval-ignore-output"]
t_std, t_at = np.mean(hist_std.seconds), np.mean(hist_at.seconds)
print(f"seconds per epoch (training + evaluation): standard {t_std:.2f}, PGD-AT {t_at:.2f}  -> {t_at / t_std:.1f}x")


def seconds_per_step(method, repeats=5):
    """Wall-clock seconds of one `training_step` on `device` (GPU work is waited for before reading the clock)."""
    net = build_model(profile.arch, num_classes=info.num_classes, in_channels=info.in_channels).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=profile.lr)
    training_step(net, x, y, method=method, config=config, optimizer=opt)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        training_step(net, x, y, method=method, config=config, optimizer=opt)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


s_std, s_at = seconds_per_step("standard"), seconds_per_step("at")
print(f"seconds per training step alone on {device}: standard {s_std * 1e3:.1f} ms, PGD-AT {s_at * 1e3:.1f} ms "
      f"-> {s_at / s_std:.1f}x (K + 1 = {config.steps + 1})")

# %% [markdown]
# With the paper's PGD-10 that is about 11× the cost of standard training — the reason for cheaper variants
# such as FGSM with a random start ("fast AT", Wong et al. 2020) and the reason the S²O authors report their
# regulariser's extra cost (about 20%) *relative to* adversarial training.
#
# ## Exercise
# **To do 1.** How many graph-building forward passes does one TRADES step need with a K-step attack? Write
# your answer as a function of K in `trades_passes` (it returns `None` until you do); the next cell checks it
# with `passes_with_grad("trades")`.

# %%
def trades_passes(K):
    """Forward passes with autograd on in one TRADES training step with a K-step KL attack."""
    # TO DO: return a formula in K (look at the TRADES loss and at the KL attack of notebook 04).


# %%
answer = trades_passes(config.steps)
if answer is None:
    print("To do 1 is open: write trades_passes above and run this cell again.")
else:
    counted = passes_with_grad("trades")
    assert answer == counted, f"you predicted {answer}, the hook counted {counted} for K = {config.steps}"
    print(f"To do 1: correct — {counted} graph-building forward passes for K = {config.steps}.")

# %% [markdown]
# **To do 2.** Train PGD-AT with a **single** attack step (FGSM with a random start, step size 1.25·ε as in
# Wong et al. 2020). Return from `fgsm_at_settings` the settings that `trained_model("at", tag="fgsm", ...)`
# needs (`attack_steps`, `alpha`); the next cell checks them, trains the model and compares its cost and PGD-20
# accuracy with PGD-5 AT.

# %%
def fgsm_at_settings(eps):
    """The overrides of trained_model("at", ...) for FGSM-AT at radius eps: {"attack_steps": ..., "alpha": ...}."""
    # TO DO: one attack step of 1.25 * eps.


# %%
settings = fgsm_at_settings(profile.eps)
if settings is None:
    print("To do 2 is open: write fgsm_at_settings above and run this cell again.")
else:
    assert set(settings) == {"attack_steps", "alpha"}, f"expected attack_steps and alpha, got {sorted(settings)}"
    assert settings["attack_steps"] == 1, "FGSM-AT takes a single attack step"
    assert math.isclose(settings["alpha"], 1.25 * profile.eps), "the step is 1.25 eps (Wong et al. 2020)"
    model_fgsm, hist_fgsm = trained_model("at", tag="fgsm", **settings)
    acc_fgsm = robust_accuracy(model_fgsm, test_set, **evaluation)
    assert acc_fgsm["pgd20"] <= acc_fgsm["clean"]
    print(f"To do 2: correct. {protocol}:")
    for name, hist, acc in (("PGD-5 AT", hist_at, acc_at), ("FGSM-AT", hist_fgsm, acc_fgsm)):
        print(f"{name:9s} {np.mean(hist.seconds):.2f} s per epoch   clean {acc['clean']:.3f}   PGD-20 {acc['pgd20']:.3f}")

# %% [markdown]
# <details><summary>Solution</summary>
#
# 1. `def trades_passes(K): return K + 2` — K for the KL attack, plus two for the weight update, which
#    back-propagates through the forward passes on $x$ and on $x'$ (two forward passes, one backward): K + 2
#    graph-building forward passes for K + 1 backward passes. TRADES also runs one forward pass without gradients on $x$ to get
#    the clean probabilities the attack moves away from.
# 2. `def fgsm_at_settings(eps): return {"attack_steps": 1, "alpha": 1.25 * eps}`. The run gets its own tag
#    because its settings differ from the profile's; `plot_history({"PGD-AT": hist_at, "FGSM-AT": hist_fgsm})`
#    draws both.
#
# It is roughly 2× standard training instead of (K + 1)×. Its PGD accuracy is usually somewhat lower, and with
# larger ε or longer training it can suddenly collapse to near zero ("catastrophic overfitting"): the model
# learns to defeat the single-step attack, not the threat model. Always evaluate with a multi-step attack.
# </details>

# %% [markdown]
# ## Summary
# - Adversarial training solves $\min_\theta \mathbb E \max_{\|\delta\|\le\varepsilon}\ell(f_\theta(x+\delta), y)$;
#   PGD approximates the inner max, SGD does the outer min (attack in eval mode, update in train mode).
# - PGD-AT trades some clean accuracy for much higher PGD accuracy; standard training has almost none.
# - Robust test accuracy can peak and then fall (robust overfitting); keep the **best-robust** checkpoint
#   (`best.pt`, `history.best_epoch`), chosen on held-out data.
# - A PGD-K step costs about K + 1 forward/backward passes.
# - Robustness is only as good as the evaluation: use strong, multi-step attacks and the checks of
#   Carlini et al. (2019); a later notebook adds AutoAttack.
#
# **References**
# - A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. *Towards Deep Learning Models Resistant to
#   Adversarial Attacks.* ICLR 2018.
# - L. Rice, E. Wong, J. Z. Kolter. *Overfitting in Adversarially Robust Deep Learning.* ICML 2020.
# - E. Wong, L. Rice, J. Z. Kolter. *Fast is Better than Free: Revisiting Adversarial Training.* ICLR 2020.
# - N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras, I. Goodfellow, A. Madry,
#   A. Kurakin. *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
# - Next: **04 · TRADES** replaces the adversarial cross-entropy with a clean loss plus a robustness term.
