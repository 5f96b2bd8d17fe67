# %% [markdown]
# # 07 · Estimating the PAC-Bayesian robust bound
#
# Notebook 06 argued from a bound: a posterior whose weights are **less correlated** gives a tighter robust
# generalisation bound, so S²O decorrelates. This notebook *measures* that bound. We estimate every term for
# trained models, put the usual **independent** posterior beside the **correlated** one, follow the bound
# over training next to the robust generalisation gap it is meant to explain, and say plainly what such
# numbers can and cannot tell us.
#
# **Learning goals.** After this notebook you can
#
# - name every symbol of the spectrally-normalised robust PAC-Bayes bound and say how it is estimated,
# - compute a **spectral norm by power iteration** — of a matrix and of the true linear operator of a
#   convolution — and check it against `torch.linalg.matrix_norm`,
# - assemble the bound **in log space** from its terms and check it against `s2o_lib.bounds.estimate_bound`,
# - compare standard, AT, AT+S²O, TRADES and TRADES+S²O term by term, **independent vs correlated**,
# - run the **empirical PAC-Bayes check**: how much weight noise, isotropic or correlated, a model tolerates,
# - read bounds honestly: absolute values are vacuous; **comparisons and trends** are the point.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

from s2o_lib.bounds import compare_reports, estimate_bound, reports_to_rows, sigma_search
from s2o_lib.checkpoint import load_model
from s2o_lib.config import get_profile, seed_everything
from s2o_lib.data import dataset_info, make_loader, tensors
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import build_model
from s2o_lib.norms import conv_spectral_norm, layer_norms, reshaped_spectral_norm
from s2o_lib.train import epoch_checkpoint_name, fit
from s2o_lib.zoo import fit_settings, profile_data, runs_root, trained_model

# %% [markdown]
# ## The profile
# In `smoke` the models are small CNNs on 16×16 digits with ε = 0.15, trained for 6 epochs; they come from the
# shared cache (`notebooks/runs/`) that notebooks 03–06 filled. On a CPU we use one thread: the power
# iterations and small attacks here are faster that way on a shared two-core machine.

# %%
profile = get_profile()
info = dataset_info(profile.dataset)
train, test = profile_data(profile)
x_train, y_train = tensors(train)
x_test, y_test = tensors(test)
print(f"profile: {profile.name} — {profile.dataset}, {profile.arch}, ε = {profile.eps:.4f}")
print(f"{len(train)} training and {len(test)} test images of shape {tuple(x_train.shape[1:])}")

# %%
# NBVAL_IGNORE_OUTPUT
models = {name: trained_model(method, progress=False)[0]
          for name, method in [("standard", "standard"), ("AT", "at"), ("AT+S²O", "at+s2o"),
                               ("TRADES", "trades"), ("TRADES+S²O", "trades+s2o")]}
device = next(models["AT"].parameters()).device
if device.type == "cpu":
    torch.set_num_threads(1)
print(f"{len(models)} models on {device}")

# %% [markdown]
# ## 1 · The bound, every symbol defined
# With probability at least $1-\delta$ over the draw of $m$ training samples, for every $\gamma > 0$
# (Neyshabur et al. 2018, extended to adversarial inputs and to a correlated posterior as in Jin et al. 2020
# and the S²O paper):
#
# $$
# L_0^{adv} \;\le\; \hat L_\gamma^{adv} \;+\; \sqrt{\frac{Q_S}{\gamma^2 m}},\qquad
# Q_S = (B+\varepsilon_2)^2\, n^2 h \ln(nh)\,\prod_{i=1}^n\|W_i\|_2^2\,\sum_{i=1}^n\frac{\|W_i\|_F^2}{\|W_i\|_2^2}\,
# \max_i\|S_i\|_2 \;-\; \sum_i \ln\det S_i \;+\; \ln\frac{nm}{\delta}.
# $$
#
# | symbol | meaning | how we estimate it |
# |---|---|---|
# | $L_0^{adv}$ | robust test error: some $x'$ in the ε-ball is misclassified | what we would like to bound |
# | $\hat L_\gamma^{adv}$ | robust margin loss: fraction of training points whose worst-case margin $z_y - \max_{j\ne y} z_j$ is $\le\gamma$ | PGD-10 on the CW margin loss, random start |
# | $\gamma$ | the margin | the 10th percentile of the positive adversarial margins |
# | $m$ | training samples | a seeded subset of at most 512 |
# | $n$, $h$ | depth (layers with weights) and largest width | counted from the modules that run |
# | $B$ | largest input norm $\|x\|_2$ | measured on the $m$ points |
# | $\varepsilon_2$ | L2 radius of the threat ball | $\varepsilon\sqrt d$: the L2 ball around the L∞ ball of radius ε in $d$ dimensions |
# | $\|W_i\|_2$, $\|W_i\|_F$ | spectral and Frobenius norm of layer $i$ | power iteration on the true operator (convolutions included) |
# | $S_i$ | correlation matrix of layer $i$'s posterior, $\mathrm{vec}(U_i)\sim\mathcal N(0,\sigma^2 S_i)$ | independent: all $S_i = I$; correlated: the last layer's $S = R_G\otimes R_A$ (Laplace/KFAC, notebook 06) |
# | $\delta$ | failure probability | 0.05 |
#
# **Constants we fixed, and why.** The papers state the bound up to an absolute constant inside $O(\cdot)$; we
# set it to 1. Any other fixed value shifts every $\log_{10}$ below by the same amount, so *comparisons* are
# unaffected. BatchNorm scalings are ignored (not folded into the convolutions), which makes the numbers
# smaller than a strict treatment would. With $S_i = I$ the two correlation terms vanish
# ($\max\|S_i\|_2 = 1$, $\ln\det I = 0$): that is the usual independent bound.

# %% [markdown]
# ## 2 · Spectral norms by power iteration, written out
# $\|W\|_2$ is the largest singular value. Power iteration on $W^\top W$ finds it without forming anything:
# repeat $v \leftarrow W^\top W v / \|W^\top W v\|$; then $\|W^\top W v\| \to \|W\|_2^2$.
# A convolution is a linear map too, $x \mapsto \mathrm{conv}(x)$, and its transpose is `conv_transpose2d`,
# so the same loop gives the norm of the **true operator** on the layer's input shape. The cheap alternative
# reshapes the kernel to a matrix (out, in·k·k); each input pixel enters at most $k^2$ patches, so
# $\|\mathrm{conv}\|_2 \le k\,\|W_{\text{reshaped}}\|_2$, and neither is always the larger.

# %%
def power_iteration_norm(apply, apply_t, v, iters=100):
    """‖A‖₂ from v ← AᵀA v / ‖AᵀA v‖ (apply = A·, apply_t = Aᵀ·)."""
    with torch.no_grad():
        for _ in range(iters):
            w = apply_t(apply(v))
            sigma_sq = w.norm()
            v = w / sigma_sq
    return sigma_sq.sqrt().item()


model = models["AT"]
gen = torch.Generator().manual_seed(0)

W = model.head.weight.detach()  # the last layer: a plain matrix
head_hand = power_iteration_norm(lambda v: W @ v, lambda u: W.T @ u,
                                 torch.randn(W.shape[1], generator=gen).to(W.device))

conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # the first convolution
k = conv.weight.detach()
shape = (1, *x_train.shape[1:])  # one input image
conv_hand = power_iteration_norm(
    lambda v: F.conv2d(v, k, stride=conv.stride, padding=conv.padding),
    lambda u: F.conv_transpose2d(u, k, stride=conv.stride, padding=conv.padding),
    torch.randn(shape, generator=gen).to(k.device),
)

# %%
# NBVAL_IGNORE_OUTPUT
head_exact = torch.linalg.matrix_norm(W, ord=2).item()
conv_lib = conv_spectral_norm(conv, shape[1:]).item()
conv_reshaped = reshaped_spectral_norm(conv.weight).item()
print(f"head:  power iteration {head_hand:.5f}   torch.linalg.matrix_norm(ord=2) {head_exact:.5f}")
print(f"conv1: power iteration {conv_hand:.5f}   s2o_lib conv_spectral_norm {conv_lib:.5f}   "
      f"reshaped kernel {conv_reshaped:.5f}  (k·reshaped = {conv.kernel_size[0] * conv_reshaped:.5f})")

# %%
assert math.isclose(head_hand, head_exact, rel_tol=1e-4), "power iteration must agree with the exact spectral norm"
# Both are lower bounds that converge from different random starts: they agree to about 1e-4 after 100 steps.
assert math.isclose(conv_hand, conv_lib, rel_tol=1e-3), "hand-written conv norm must agree with s2o_lib"
assert conv_lib <= conv.kernel_size[0] * conv_reshaped * (1 + 1e-4), "‖conv‖₂ ≤ k·‖reshaped‖₂ must hold"

# %% [markdown]
# `s2o_lib.norms.layer_norms` does this for every layer, in the order they run, with their real input shapes.
# Here it is for the AT model: the true operator norm and the reshaped one, side by side.

# %%
# NBVAL_IGNORE_OUTPUT
norms = layer_norms(model, x_train[:1].to(device))
pd.DataFrame([{"layer": l.name, "kind": l.kind, "input": l.input_shape, "‖W‖₂ (true)": l.spectral,
               "‖W‖₂ (reshaped)": l.spectral_reshaped, "‖W‖_F": l.frobenius} for l in norms]).round(3)

# %% [markdown]
# ## 3 · The bound for one model, assembled by hand
# `estimate_bound` runs the attack, measures margins, norms and the Laplace correlation, and returns a
# `BoundReport` of every term. We rebuild $\log_{10}\sqrt{Q/(\gamma^2 m)}$ from those terms ourselves. Products
# become sums of logarithms — $\prod_i\|W_i\|_2^2$ alone can overflow a float for deep networks.

# %%
# NBVAL_IGNORE_OUTPUT
settings = dict(eps=profile.eps, steps=10, n=512, seed=0)
report = estimate_bound(model, (x_train, y_train), **settings)
print(f"γ = {report.gamma:.4f}, L̂_γ = {report.robust_margin_loss:.3f}, "
      f"robust train accuracy (CW-PGD-10) = {report.robust_train_acc:.3f}")


# %%
def log10_complexity(r, *, correlated):
    """log10 sqrt(Q / (γ² m)) from a report's terms."""
    n, h, m = r.depth, r.width, r.m
    log_spec = sum(2 * math.log(l.spectral) for l in r.layers)
    ratio = sum((l.frobenius / l.spectral) ** 2 for l in r.layers)
    max_S = max(1.0, r.R_spectral) if correlated else 1.0
    neg_logdet = -r.R_logdet if correlated else 0.0
    log_perturbation = (2 * math.log(r.input_norm + r.eps_l2) + 2 * math.log(n) + math.log(h)
                        + math.log(math.log(n * h)) + log_spec + math.log(ratio) + math.log(max_S))
    terms = [log_perturbation, math.log(math.log(n * m / r.delta))] + ([math.log(neg_logdet)] if neg_logdet > 0 else [])
    top = max(terms)
    log_q = top + math.log(sum(math.exp(t - top) for t in terms))  # ln Q, a log-sum-exp
    return 0.5 * (log_q - 2 * math.log(r.gamma) - math.log(m)) / math.log(10)


by_hand = {kind: log10_complexity(report, correlated=kind == "correlated") for kind in ("independent", "correlated")}

# %%
# NBVAL_IGNORE_OUTPUT
for kind, value in by_hand.items():
    print(f"{kind:12s} by hand {value:.6f}   estimate_bound {getattr(report, f'log10_bound_{kind}'):.6f}")

# %%
assert math.isclose(by_hand["independent"], report.log10_bound_independent, rel_tol=1e-9)
assert math.isclose(by_hand["correlated"], report.log10_bound_correlated, rel_tol=1e-9)
assert report.robust_train_acc <= report.clean_train_acc
assert 0 <= report.robust_margin_loss <= 1 and report.gamma > 0

# %% [markdown]
# ## 4 · Five models, term by term
# The same estimate, with the same training points, attack and seed, for the five models of notebooks 03–06.
# Each estimate also runs the σ search of section 6.

# %%
# NBVAL_IGNORE_OUTPUT
# The AT model's report is the one of section 3 (same data, settings and seed): reuse it.
reports = {name: report if m is model else estimate_bound(m, (x_train, y_train), **settings)
           for name, m in models.items()}
print(compare_reports(reports, rows=("gamma", "robust_margin_loss", "clean_train_acc", "robust_train_acc",
                                     "log10_spectral_product", "sum_fro_over_spec", "R_fro", "R_spectral",
                                     "R_logdet", "log10_bound_independent", "log10_bound_correlated")))

# %%
for name, r in reports.items():
    assert r.robust_train_acc <= r.clean_train_acc, name
    assert r.log10_q_correlated >= r.log10_q_independent, f"{name}: S = R can only add to Q (‖R‖₂ ≥ 1, −log det R ≥ 0)"
    assert r.R_fro >= math.sqrt(r.R_dim) * (1 - 1e-9), f"{name}: ‖R‖_F ≥ √dim for any correlation matrix"
    assert all(math.isfinite(v) for v in (r.log10_bound_independent, r.log10_bound_correlated)), name
assert reports["AT"].robust_train_acc > reports["standard"].robust_train_acc + 0.2, "AT must be robust on its training data"

# %% [markdown]
# A picture per term. Each panel is one ingredient; lower is tighter except for γ (a larger margin helps).

# %%
# REPORT: The robust PAC-Bayes bound term by term for five models (log10 complexity term: independent vs correlated posterior).
frame = pd.DataFrame(reports_to_rows(reports)).set_index("model")
panels = [("log10_spectral_product", "log10 ∏‖W‖₂²"), ("sum_fro_over_spec", "Σ ‖W‖_F²/‖W‖₂²"),
          ("gamma", "margin γ (higher is better)"), ("robust_margin_loss", "L̂_γ (robust margin loss)"),
          ("R_fro", "‖R‖_F of the last layer"), ("R_logdet", "log det R (0 for R = I)")]
fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
colours = plt.cm.tab10(np.arange(len(frame)))
for ax, (column, title) in zip(axes.flat, panels):
    ax.bar(frame.index, frame[column], color=colours)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    if column == "gamma":
        ax.set_yscale("log")  # the standard model's fallback γ (from |margins|) dwarfs the others
for ax, kind in zip(axes.flat[6:], ["q", "bound"]):
    width = 0.38
    xs = np.arange(len(frame))
    ax.bar(xs - width / 2, frame[f"log10_{kind}_independent"], width, label="independent (S = I)")
    ax.bar(xs + width / 2, frame[f"log10_{kind}_correlated"], width, label="correlated (S = R)")
    ax.set_xticks(xs, frame.index, rotation=45, fontsize=8)
    ax.set_title("log10 Q" if kind == "q" else "log10 √(Q / γ²m)", fontsize=10)
    ax.legend(fontsize=7)
fig.suptitle(f"bound terms ({profile.dataset}, ε = {profile.eps:.3f}, m = {reports['AT'].m})")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Reading the chart.**
#
# - The **standard** model has no robust margin at all: every adversarial margin is negative, γ falls back to
#   the 10th percentile of $|\text{margin}|$, $\hat L_\gamma^{adv} = 1$, and its bound says nothing — correctly.
# - Adversarial training buys a positive robust margin with **smaller** spectral products than the standard
#   model has, but the margin it buys is small, so $1/\gamma$ dominates the complexity term.
# - The correlated bound is **always** above the independent one: in this formula $\|S\|_2 \ge 1$ and
#   $-\ln\det S \ge 0$, so $S = I$ is the best case. The argument of S²O is not that correlation helps; it is
#   that the posterior of a trained network *is* correlated (notebook 06 measured it), so the honest bound is
#   the correlated one, and shrinking $\|R\|_F$ moves it towards the independent one.
# - Compare AT with AT+S²O and TRADES with TRADES+S²O on the $\|R\|_F$ and $\log\det R$ panels before
#   concluding anything. In the smoke run the S²O models have *smaller* spectral products than their bases but
#   not a smaller $\|R\|_F$: the released regulariser acts on the second moments of the logits, not on the
#   Laplace $R$ directly, and six epochs on digits are far from the paper's setting. Section 5 shows how much
#   such numbers move by chance.

# %% [markdown]
# ## 5 · How much does the bound move by chance?
# Before reading a difference between two models, see how much one model's estimate moves when only the
# random parts change: the subset of training points, the attack's random start, the power iterations' start.

# %%
# NBVAL_IGNORE_OUTPUT
reseeded = {"seed 0": report, **{  # seed 0 is section 3's report
    f"seed {s}": estimate_bound(model, (x_train, y_train), **{**settings, "seed": s}, sigma_search=False)
    for s in (1, 2)}}
spread = pd.DataFrame(reports_to_rows(reseeded)).set_index("model")
spread[["gamma", "robust_margin_loss", "log10_bound_independent", "log10_bound_correlated", "R_fro"]].round(3)

# %% [markdown]
# The margin γ is a quantile of a few hundred numbers and carries most of the spread; a difference between
# models smaller than this spread is noise.

# %% [markdown]
# ## 6 · The empirical check: how much noise does a model tolerate?
# The bound is a statement about a *posterior*: the trained weights plus noise. We can test that idea directly.
# Add Gaussian noise to the last layer, $W + \sigma s E$ ($s$ the RMS of $W$, $E$ standard normal), and find by
# bisection the largest σ that keeps the robust training accuracy within 10 points of its noise-free value.
# Then do the same with **correlated** noise $\sigma s\,L_G E L_A^\top$ ($L$ the Cholesky factors of $R_G$, $R_A$),
# whose entries have the same variance but follow the Laplace correlation. (Mind the convention:
# `torch.normal(mean, std)` takes a standard deviation, so σ scales the noise, σ² its variance.)

# %%
# NBVAL_IGNORE_OUTPUT
sigmas = frame[["robust_train_acc", "sigma_isotropic", "sigma_correlated"]]
sigmas.round(3)

# %%
# REPORT: Largest relative last-layer noise σ that keeps robust training accuracy within 10 points: isotropic vs correlated.
fig, ax = plt.subplots(figsize=(7, 3.4))
xs = np.arange(len(frame))
ax.bar(xs - 0.2, frame["sigma_isotropic"], 0.4, label="isotropic noise")
ax.bar(xs + 0.2, frame["sigma_correlated"], 0.4, label="noise correlated as R")
ax.set_xticks(xs, frame.index)
ax.set_yscale("log")
ax.set_ylabel("largest σ (× RMS of W)")
ax.set_title("how much last-layer noise each model tolerates")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The search is monotone by construction — it reuses the same noise draws at every σ — so allowing a larger
# accuracy drop can never give a smaller σ. A quick check on the AT model:

# %%
x_fixed, y_fixed = x_train[:256].to(device), y_train[:256].to(device)  # clean points suffice for this check
sigma_by_drop = [sigma_search(model, x_fixed, y_fixed, max_drop=d, iters=10) for d in (0.02, 0.1, 0.3)]
assert sigma_by_drop == sorted(sigma_by_drop), sigma_by_drop

# %% [markdown]
# **What the σ search shows.** In the smoke run, for the adversarially trained models, the correlated noise can
# be several times larger than the isotropic noise before the robust accuracy drops: the network is flat along the directions
# the Laplace posterior says are correlated. That is the empirical face of the S²O argument — a realistic
# posterior is correlated. Two cautions: the noisy models are evaluated on adversarial points computed once,
# not re-attacked (optimistic); and when the robust accuracy is already near zero (the standard model), no
# noise can lower it by 10 points, so σ hits the top of the search range (100) and means nothing.

# %% [markdown]
# ## 7 · Does the bound track the robust generalisation gap?
# A bound is useful if it moves with what it bounds. The quantity is the **robust generalisation gap**: robust
# accuracy on training points minus robust accuracy on test points, under the same attack (CW-PGD-10).
#
# With 6 epochs on 1437 digits there is little gap to explain, so we make one appear the way Rice et al. (2020)
# saw it: train on a **small training set** for longer, with a learning-rate drop two thirds of the way. `fit`
# keeps the weights of every third epoch (`keep_every`), and we estimate the bound on each snapshot, for AT
# and AT+S²O. Runs are cached, so a second execution only re-estimates.

# %%
small_m = 300 if profile.dataset == "digits" else 5000
long_epochs = min(3 * profile.epochs, 200)
keep_every = max(1, long_epochs // 6)
small = Subset(train, torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:small_m].tolist())
x_small, y_small = tensors(small)


def train_with_snapshots(method):
    """Train `method` on the small set, keeping every `keep_every`-th epoch; return the snapshot folder."""
    folder = runs_root() / profile.name / f"bounds-{method}-m{small_m}-seed0"
    seed_everything(0)
    net = build_model(profile.arch, num_classes=info.num_classes, in_channels=info.in_channels).to(device)
    settings_long = fit_settings(profile, epochs=long_epochs, milestones=(2 * long_epochs // 3,))
    fit(net, make_loader(small, batch_size=profile.batch_size, shuffle=True, seed=0), method=method,
        checkpoint_dir=folder, keep_every=keep_every, progress=False, **settings_long)
    return folder


# %%
# NBVAL_IGNORE_OUTPUT
rows = []
for method in ("at", "at+s2o"):
    folder = train_with_snapshots(method)
    for epoch in range(keep_every, long_epochs + 1, keep_every):
        snapshot, _ = load_model(folder / epoch_checkpoint_name(epoch), map_location=device)
        r = estimate_bound(snapshot, (x_small, y_small), **settings)
        test_robust = robust_accuracy(snapshot, (x_test, y_test), attacks=["cw10"], eps=profile.eps,
                                      alpha=r.alpha, n=profile.eval_n)["cw10"]
        rows.append({"method": method, "epoch": epoch, "robust train": r.robust_train_acc,
                     "robust test": test_robust, "gap": r.robust_train_acc - test_robust,
                     "log10 bound (indep.)": r.log10_bound_independent,
                     "log10 bound (corr.)": r.log10_bound_correlated,
                     "log10 ∏‖W‖₂²": r.log10_spectral_product, "γ": r.gamma,
                     "σ iso": r.sigma_isotropic, "σ corr": r.sigma_correlated})
trajectory = pd.DataFrame(rows)
trajectory.round(3)

# %%
# REPORT: Robust generalisation gap (train − test, CW-PGD-10) and the bound's log10 complexity term over training on a small set.
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
for colour, (method, part) in zip(["C0", "C1"], trajectory.groupby("method", sort=False)):
    axes[0].plot(part["epoch"], part["gap"], marker="o", color=colour, label=method)
    axes[1].plot(part["epoch"], part["log10 bound (indep.)"], marker="o", color=colour, label=f"{method}, S = I")
    axes[1].plot(part["epoch"], part["log10 bound (corr.)"], marker="s", ls="--", color=colour, label=f"{method}, S = R")
    axes[2].plot(part["epoch"], part["log10 ∏‖W‖₂²"], marker="o", color=colour, label=method)
for ax, title in zip(axes, ["robust generalisation gap", "log10 √(Q / γ²m)", "log10 ∏‖W‖₂²"]):
    ax.axvline(2 * long_epochs // 3, color="grey", ls=":", lw=1)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
rank = trajectory[["gap", "log10 bound (indep.)", "log10 bound (corr.)", "log10 ∏‖W‖₂²"]].rank()
print("Spearman rank correlation with the gap, over all snapshots:")
print(rank.corr()["gap"].drop("gap").round(2).to_string())

# %%
for method, part in trajectory.groupby("method"):
    assert part["robust train"].iloc[-1] > part["robust train"].iloc[0], f"{method}: training made no robust progress"
assert np.isfinite(trajectory[["log10 bound (indep.)", "log10 bound (corr.)", "log10 ∏‖W‖₂²"]]).all().all()
assert (trajectory["log10 bound (corr.)"] >= trajectory["log10 bound (indep.)"]).all()

# %% [markdown]
# **What we see** (in the smoke run; other profiles may differ). The gap opens after the learning-rate drop, when the model starts to fit its few training
# points adversarially. The spectral product grows steadily over training and is the term that moves with the
# gap most reliably. The complexity term as a whole is noisier, because it divides by γ — a low quantile of
# the margins, which jumps from snapshot to snapshot (section 5). With so few snapshots, a rank correlation
# is a description of this run, not evidence; run it with other seeds before you believe a sign.

# %% [markdown]
# ## 8 · What the numbers can and cannot say
# - **They are vacuous.** The complexity term printed below is orders of magnitude above 1, and a bound on an
#   error rate is only informative below 1. This is normal for norm-based PAC-Bayes bounds of real networks (Neyshabur et al. 2018 report the
#   same; Jiang et al. 2020 compare many such measures). Nothing below says a model *is* robust.
# - **Comparisons are meaningful only under one protocol**: the same training points, the same attack, the
#   same γ rule, the same constants. Change the γ quantile or the attack and every number moves.
# - **Trends are the point**: does a term move with the measured gap over training, and in the direction the
#   theory predicts across methods? On smoke-sized runs the S²O models do not differ from their bases by more
#   than the run-to-run spread; the paper's claims are about 200-epoch CIFAR-10 runs (`S2O_PROFILE=paper`).
# - **The σ search is the experiment behind the bound**: it asks the posterior question directly, and it
#   answers that correlated noise is tolerated far better than isotropic noise of the same size.

# %%
# NBVAL_IGNORE_OUTPUT
for name, r in reports.items():
    print(f"{name:11s} whole bound (independent) = {r.bound_independent:.3g}"
          f"   (L̂ = {r.robust_margin_loss:.2f} + complexity 10^{r.log10_bound_independent:.1f})")

# %%
assert all(r.bound_independent > 1 for r in reports.values()), "a non-vacuous bound here would be news: check it!"

# %% [markdown]
# ## Exercises
# **1 · The margin rule.** γ is the 10th percentile of the positive adversarial margins. Estimate the bound of
# the AT model with `margin_quantile` 0.05, 0.1 and 0.3. How do γ, $\hat L_\gamma^{adv}$ and the complexity term
# move? Why is there no "right" value?
#
# <details><summary>Solution</summary>
#
# ```python
# for q in (0.05, 0.1, 0.3):
#     r = estimate_bound(models["AT"], (x_train, y_train), **settings, margin_quantile=q, sigma_search=False)
#     print(f"q = {q}: γ = {r.gamma:.3f}, L̂ = {r.robust_margin_loss:.2f}, log10 term = {r.log10_bound_independent:.2f}")
# ```
# A larger quantile gives a larger γ, hence a smaller complexity term $\propto 1/\gamma$, but more training
# points fall below the margin, so $\hat L_\gamma^{adv}$ grows. The bound holds for every γ (up to a union bound
# over a grid of γ); the trade-off between the two terms is the whole point of a margin bound.
# </details>
#
# **2 · True or reshaped?** Rebuild the five reports with `conv_spectral="reshaped"`. Which models change
# rank? Which of the two norms is the one the bound needs?
#
# <details><summary>Solution</summary>
#
# ```python
# reshaped = {name: estimate_bound(m, (x_train, y_train), **settings, conv_spectral="reshaped", sigma_search=False)
#             for name, m in models.items()}
# print(compare_reports(reshaped, rows=("log10_spectral_product", "log10_bound_independent")))
# ```
# The bound's perturbation argument needs the norm of the linear map the layer applies — the true operator.
# The reshaped kernel is a cheap proxy that ignores how the kernel slides over the image; the two differ by up
# to a factor $k$ per layer, and that factor compounds over the depth.
# </details>

# %% [markdown]
# ## Summary
# - The robust PAC-Bayes bound combines a robust margin loss with a complexity term built from the depth,
#   width, input norm, threat radius, per-layer spectral and Frobenius norms, the margin γ — and, for a
#   correlated posterior, $\|S\|_2$ and $-\ln\det S$ of its correlation matrices.
# - Spectral norms come from power iteration; for convolutions, on the **true operator**
#   (`conv2d`/`conv_transpose2d`). The bound is assembled in log space; `estimate_bound` returns every term.
# - With the measured Laplace correlation, the correlated bound is always above the independent one;
#   decorrelating (S²O) narrows the difference. The σ search shows the correlated posterior is the realistic one.
# - Absolute values are vacuous; differences smaller than the run-to-run spread are noise; trends over training
#   and consistent differences across methods are what such estimates can support.
#
# **References.**
# Neyshabur, Bhojanapalli, Srebro. *A PAC-Bayesian Approach to Spectrally-Normalized Margin Bounds.* ICLR 2018 ·
# Farnia, Zhang, Tse. *Generalizable Adversarial Training via Spectral Normalization.* ICLR 2019 ·
# Jin, Yi, Zhang, Zhang, Schewe, Huang. *How does Weight Correlation Affect the Generalisation Ability of Deep Neural
# Networks?* NeurIPS 2020 ·
# Jin, Yi, Huang, Schewe, Huang. *Enhancing Adversarial Training with Second-Order Statistics of Weights.* CVPR 2022;
# TPAMI 47(10), 2025 ·
# Rice, Wong, Kolter. *Overfitting in Adversarially Robust Deep Learning.* ICML 2020 ·
# Jiang, Neyshabur, Mobahi, Krishnan, Bengio. *Fantastic Generalization Measures and Where to Find Them.* ICLR 2020 ·
# Sedghi, Gupta, Long. *The Singular Values of Convolutional Layers.* ICLR 2019.
