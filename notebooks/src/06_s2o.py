# %% [markdown]
# # 06 · S²O: second-order statistics of the weights
#
# Adversarial training (notebook 03) and TRADES (notebook 04) change the *loss*. S²O (Jin et al., CVPR 2022;
# TPAMI 2025) adds a term that changes the *statistics of the weights*: it pushes the network towards weights
# that are **less correlated**, because a PAC-Bayesian robust generalisation bound is tighter then.
#
# **Learning goals.** After this notebook you can
#
# - explain why PAC-Bayesian bounds treat weights as **random variables** with a posterior covariance, and tell
#   that covariance apart from the **cosine similarity between the rows of trained weights** (which we measure,
#   next to its random baseline),
# - derive from the bound why S²O **minimises the correlation matrix's Frobenius norm** — a surrogate that
#   tightens *bounds* on $\|S\|_2$ and $\ln\det S$, not the quantities themselves,
# - write the **released soft-target regulariser** step by step and check it against `s2o_lib.s2o`.
#
# Notebook **06b** continues with the theory's Laplace/KFAC objective, training AT and TRADES with and without
# S²O, its cost, and what an eight-seed experiment says about the S²O gain.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from s2o_lib.attacks import pgd
from s2o_lib.config import get_profile, seed_everything
from s2o_lib.data import dataset_info, tensors
from s2o_lib.models import build_model, hidden_layer
from s2o_lib.norms import mean_abs_correlation, weight_correlation
from s2o_lib.plots import correlation_heatmap
from s2o_lib.s2o import (
    default_off_diagonal_mass,
    s2o_regulariser,
    soft_target_matrix,
    soft_targets,
)
from s2o_lib.zoo import profile_data, trained_model

# %% [markdown]
# ## The profile
# In `smoke` everything is shrunk to run on a CPU: 16×16 digits, a small CNN, ε = 0.15, PGD-5 training,
# 6 epochs. The models come from the shared cache (`notebooks/runs/`), shared with notebooks 03, 04, 06b, 08.

# %%
profile = get_profile()
info = dataset_info(profile.dataset)
print(f"profile: {profile.name}")
print(f"dataset {profile.dataset}, model {profile.arch}, {profile.epochs} epochs, batch {profile.batch_size}")
print(f"threat model: L-inf eps = {profile.eps:.4f}; training attack PGD-{profile.train_steps}")
print(profile.notes)

# %% [markdown]
# ## 1 · Weights as random variables
# A PAC-Bayesian bound does not talk about one weight vector $w$ but about a **distribution** over weights:
# a posterior $Q = \mathcal N(w, \Sigma)$ centred at the trained weights, compared with a prior
# $P = \mathcal N(0, \sigma^2 I)$ fixed before training. With probability $\ge 1-\delta$ over $m$ samples,
#
# $$
# \mathbb E_{w'\sim Q}\,L(w') \;\le\; \mathbb E_{w'\sim Q}\,\hat L(w') + O\!\Big(\sqrt{\tfrac{\mathrm{KL}(Q\,\|\,P) + \ln(m/\delta)}{m}}\Big).
# $$
#
# Neyshabur et al. (2018) take $\Sigma = \sigma^2 I$: every weight is perturbed **independently**. That is
# convenient (the KL is a sum over weights), and nothing forces it: $\Sigma$ is the analyst's choice, and any
# choice fixed independently of the data gives a valid bound. S²O asks for a posterior whose covariance has
# **correlations**, and for weights that make such a posterior cheap in the bound.
#
# Two different things are called "weight correlation", and they must not be confused:
#
# - the **posterior covariance** $\Sigma$: how the weights *co-vary* when drawn from $Q$ — a property of a
#   distribution, which one trained weight vector does not determine (section 4 estimates one with a Laplace
#   approximation);
# - the **cosine similarity between rows** of one trained weight matrix: how similar the weight vectors of two
#   neurons are — a property of the posterior's *mean*. Jin et al. (NeurIPS 2020) use it as a measurable proxy,
#   $\rho$ = mean $|\cos(w_i, w_j)|$ over pairs of neurons $i \ne j$ of a layer, and relate it to
#   generalisation.
#
# Let us measure the second for the **last layer** (`head`, one row per class) and the **hidden layer** before
# it, for a normally trained and a PGD-AT model — next to its value for **untrained** weights of the same shape,
# the baseline every number must be read against.

# %% tags=["nbval-ignore-output"]
model_std, hist_std = trained_model("standard")
model_at, hist_at = trained_model("at")

# %%
classes = list(range(info.num_classes))
fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
for col, (name, model) in enumerate([("standard", model_std), ("AT", model_at)]):
    w_head, w_hidden = model.head.weight, hidden_layer(model).weight
    correlation_heatmap(weight_correlation(w_head), ax=axes[col], labels=classes,
                        title=f"{name}: head, ρ = {mean_abs_correlation(w_head):.2f}")
    correlation_heatmap(weight_correlation(w_hidden), ax=axes[2 + col],
                        title=f"{name}: hidden ({w_hidden.shape[0]} neurons), ρ = {mean_abs_correlation(w_hidden):.2f}")
fig.suptitle("cosine similarity between the weight vectors of a layer's neurons")
plt.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
# Baselines: independent random vectors of length D have mean |cos| ≈ sqrt(2 / (π D)); and the untrained
# network (the same architecture at its random initialisation, five seeds) is the empirical one.
untrained = []
for init_seed in range(5):
    seed_everything(init_seed)
    untrained.append(build_model(profile.arch, num_classes=info.num_classes, in_channels=info.in_channels))
rho_rows = []
for layer_name, layer_of in [("head", lambda m: m.head.weight), ("hidden", lambda m: hidden_layer(m).weight)]:
    d = layer_of(model_at)[0].numel()
    rho_rows.append({"layer": layer_name, "D": d,
                     "standard": mean_abs_correlation(layer_of(model_std)),
                     "AT": mean_abs_correlation(layer_of(model_at)),
                     "untrained (mean of 5)": float(np.mean([mean_abs_correlation(layer_of(u)) for u in untrained])),
                     "random, sqrt(2/(πD))": math.sqrt(2 / (math.pi * d))})
rho_table = pd.DataFrame(rho_rows).set_index("layer")
rho_table["AT / untrained"] = rho_table["AT"] / rho_table["untrained (mean of 5)"]
rho_table.round(3)

# %%
assert (rho_table[["standard", "AT", "untrained (mean of 5)"]] >= 0).all().all()
assert (rho_table[["standard", "AT", "untrained (mean of 5)"]] <= 1).all().all()
# The formula is a good baseline for the untrained layers: within a factor of two.
ratio = rho_table["untrained (mean of 5)"] / rho_table["random, sqrt(2/(πD))"]
assert ((ratio > 0.5) & (ratio < 2)).all(), ratio
print("largest AT / untrained ratio:", f"{rho_table['AT / untrained'].max():.2f}")

# %% [markdown]
# Read each ρ against its baselines in the same row: the last column says how many times the untrained value
# the trained one is. These numbers describe the *rows of one weight matrix*; they say nothing directly about
# the posterior covariance, which is what the bound needs. That a correlated posterior can be worth having is
# an argument about the bound (next section), not something this table proves.

# %% [markdown]
# ## 2 · From the bound to "minimise the correlation"
# S²O keeps the scale but lets each layer's perturbation be correlated: $\mathrm{vec}(U_i) \sim
# \mathcal N(0, \sigma^2 S_i)$ with $S_i$ a **correlation matrix** (unit diagonal, so $\mathrm{tr}\,S_i$ is the
# dimension $n$). Two places of the bound feel $S_i$:
#
# - **KL term.** For one layer, $\mathrm{KL}\big(\mathcal N(w, \sigma^2 S)\,\|\,\mathcal N(0, \sigma^2 I)\big)
#   = \tfrac12\big[\mathrm{tr}\,S + \|w\|^2/\sigma^2 - n - \ln\det S\big] = \tfrac{\|w\|^2}{2\sigma^2} - \tfrac12\ln\det S$.
#   The extra $-\tfrac12\ln\det S \ge 0$ vanishes only for $S = I$.
# - **Perturbation term.** The margin argument needs the random perturbation's spectral norm to be small;
#   it grows with $\|S\|_2$.
#
# The resulting spectrally-normalised robust bound (depth $n$, width $\le h$, inputs of norm $\le B$, radius ε,
# robust margin loss $\hat L^{adv}_\gamma$) reads
#
# $$
# L_0^{adv} \le \hat L_\gamma^{adv} + O\!\left(\sqrt{\frac{(B+\varepsilon)^2 n^2 h\ln(nh)\,\prod_i\|W_i\|_2^2\,
# \sum_i \frac{\|W_i\|_F^2}{\|W_i\|_2^2}\,\max_i\|S_i\|_2 \;-\; \sum_i \ln\det S_i \;+\; \ln\frac{nm}{\delta}}{\gamma^2 m}}\right),
# $$
#
# which is the usual bound when every $S_i = I$. (Its absolute value is vacuous for real networks; compare
# models and follow trends.)
#
# **Why the Frobenius norm?** Let $\lambda_1,\dots,\lambda_n \ge 0$ be the eigenvalues of $S$. Then
# $\sum_k \lambda_k = n$ and $\|S\|_F^2 = \sum_k \lambda_k^2$, so
# $\sum_k (\lambda_k - 1)^2 = \|S\|_F^2 - n =: r^2$. Every eigenvalue therefore lies in $[1 - r, 1 + r]$, which
# gives two **bounds**:
#
# $$
# \|S\|_2 = \lambda_{\max} \le 1 + \sqrt{\|S\|_F^2 - n}, \qquad
# \ln\det S = \sum_k \ln\lambda_k \ge n\,\ln\!\big(1 - \sqrt{\|S\|_F^2 - n}\big)\quad (r < 1).
# $$
#
# A smaller $\|S\|_F$ tightens both bounds, and at $\|S\|_F = \sqrt n$ (its minimum, $S = I$) they are exact.
# It does **not** order $\|S\|_2$ or $\ln\det S$ themselves: a matrix with the smaller $\|S\|_F$ can have the
# larger $\|S\|_2$ (To do 1 below builds one). So minimising $\|S\|_F$ is a **surrogate** — one smooth number
# that controls both terms of the bound from above, not a quantity the bound contains. So: **decorrelate**,
# i.e. minimise $\|S\|_F$.
#
# A numeric check with the **equicorrelated** matrix $S = (1-\rho) I + \rho\,\mathbf 1\mathbf 1^\top$, for which
# $\|S\|_2 = 1 + (n-1)\rho$ and $\ln\det S = (n-1)\ln(1-\rho) + \ln(1 + (n-1)\rho)$ (Jin et al. 2020 use
# this model to turn ρ into a complexity measure):

# %%
n = 10
rhos = np.linspace(0.0, 0.9, 19)
rows = []
for rho in rhos:
    S = (1 - rho) * torch.eye(n, dtype=torch.float64) + rho * torch.ones(n, n, dtype=torch.float64)
    eig = torch.linalg.eigvalsh(S)
    rows.append({"rho": rho, "fro": torch.linalg.matrix_norm(S).item(), "spectral": eig[-1].item(),
                 "logdet": torch.linalg.slogdet(S)[1].item(), "trace": torch.trace(S).item()})
equi = pd.DataFrame(rows)

# %% tags=["nbval-ignore-output"]
equi.iloc[::3].round(3)

# %%
assert np.allclose(equi.trace, n)
assert np.allclose(equi.spectral, 1 + (n - 1) * equi.rho)
assert np.allclose(equi.logdet, (n - 1) * np.log(1 - equi.rho) + np.log(1 + (n - 1) * equi.rho))
assert np.all(equi.spectral <= 1 + np.sqrt(equi.fro**2 - n) + 1e-9)  # the eigenvalue bound above
r = np.sqrt(equi.fro**2 - n)
small = r < 1
assert np.all(equi.logdet[small] >= n * np.log(1 - r[small]) - 1e-9)  # and the log-det bound
assert np.all(np.diff(equi.fro) > 0) and np.all(np.diff(equi.spectral) > 0) and np.all(np.diff(equi.logdet) < 0)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].plot(equi.fro, equi.spectral, "o-", ms=3, label="‖S‖₂")
axes[0].plot(equi.fro, 1 + np.sqrt(equi.fro**2 - n), ":", color="grey", label="1 + √(‖S‖_F² − n)")
axes[0].set_xlabel("‖S‖_F")
axes[0].set_ylabel("‖S‖₂")
axes[0].legend(fontsize=8)
axes[1].plot(equi.fro, -equi.logdet, "o-", ms=3, color="C1")
axes[1].set_xlabel("‖S‖_F")
axes[1].set_ylabel("−log det S  (KL penalty × 2)")
for ax in axes:
    ax.axvline(math.sqrt(n), color="grey", lw=1, ls="--")
    ax.grid(alpha=0.3)
fig.suptitle(f"equicorrelated {n}×{n} correlation matrix, ρ from 0 to 0.9 (dashed: ‖I‖_F = √n)")
plt.tight_layout()
plt.show()

# %% [markdown]
# For this one-parameter family both $\|S\|_2$ and $-\ln\det S$ grow with $\|S\|_F$ (all three grow with ρ); in
# general only the bounds do. The bound needs the **posterior's** correlation, which we cannot observe; S²O
# estimates it (section 4) or replaces it by a cheap proxy (section 3).
#
# **To do 1 — the Frobenius norm does not order $\|S\|_2$.** Write `correlation_summaries(S)` returning
# $(\|S\|_F, \|S\|_2, \ln\det S)$ of a symmetric matrix (`torch.linalg` has all three). The check cell builds
# two 3 × 3 correlation matrices, with eigenvalues (1.9, 0.55, 0.55) and (1.6, 1.4, 0), and tells you whether
# your numbers are right; then compare the two rows: which has the smaller $\|S\|_F$, which the smaller
# $\|S\|_2$, and do both bounds hold?

# %%
def correlation_summaries(S):
    """(‖S‖_F, ‖S‖₂, ln det S) of a symmetric positive semi-definite matrix S, as floats."""
    # TO DO: three calls to torch.linalg (matrix_norm, eigvalsh, slogdet).


# %%
# Two correlation matrices (unit diagonal): the equicorrelated one with ρ = 0.45 has eigenvalues
# (1 + 2ρ, 1 − ρ, 1 − ρ) = (1.9, 0.55, 0.55); the Gram matrix of three unit vectors in the plane at angles
# 0, ±φ with cos 2φ = −0.4 has eigenvalues 3/2 ± |1 + 2 cos 2φ|/2 = (1.6, 1.4) and 0.
S_a = 0.55 * torch.eye(3, dtype=torch.float64) + 0.45 * torch.ones(3, 3, dtype=torch.float64)
phi = math.acos(-0.4) / 2
angles = torch.tensor([0.0, phi, -phi], dtype=torch.float64)
S_b = torch.cos(angles[:, None] - angles[None, :])
for S in (S_a, S_b):
    assert torch.allclose(S.diagonal(), torch.ones(3, dtype=torch.float64)), "a correlation matrix"
assert torch.allclose(torch.linalg.eigvalsh(S_a), torch.tensor([0.55, 0.55, 1.9], dtype=torch.float64))
assert torch.allclose(torch.linalg.eigvalsh(S_b), torch.tensor([0.0, 1.4, 1.6], dtype=torch.float64), atol=1e-12)
answers = [correlation_summaries(S) for S in (S_a, S_b)]
if any(a is None for a in answers):
    print("To do 1 is open: write correlation_summaries above and run this cell again.")
else:
    for S, (fro, spectral, logdet) in zip((S_a, S_b), answers):
        eig = torch.linalg.eigvalsh(S).clamp_min(0)
        assert abs(fro - math.sqrt(float((eig**2).sum()))) < 1e-9, "‖S‖_F² is the sum of the squared eigenvalues"
        assert abs(spectral - float(eig.max())) < 1e-9, "‖S‖₂ is the largest eigenvalue"
        assert (logdet < -20) if float(eig.min()) < 1e-12 else abs(logdet - float(torch.log(eig).sum())) < 1e-9
        print(f"‖S‖_F = {fro:.3f}   ‖S‖₂ = {spectral:.3f}  (bound {1 + math.sqrt(fro**2 - 3):.3f})   "
              f"ln det S = {logdet:.3f}")
    print("To do 1: correct. The first matrix has the smaller ‖S‖_F and the larger ‖S‖₂.")

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# def correlation_summaries(S):
#     return (torch.linalg.matrix_norm(S).item(), torch.linalg.eigvalsh(S).max().item(),
#             torch.linalg.slogdet(S)[1].item())
# ```
# $(1.9, 0.55, 0.55)$: $\|S\|_F = \sqrt{4.215} \approx 2.05$, $\|S\|_2 = 1.9$, $\ln\det S = \ln 0.575 \approx -0.55$.
# $(1.6, 1.4, 0)$: $\|S\|_F = \sqrt{4.52} \approx 2.13$, $\|S\|_2 = 1.6$, $\ln\det S = -\infty$ (in floating
# point a large negative number). The first has the
# smaller Frobenius norm but the larger spectral norm; the bound $1 + \sqrt{\|S\|_F^2 - 3}$ (2.10 and 2.23) holds
# for both. Here $\ln\det S$ happens to follow $\|S\|_F$, but it need not either: the norm controls the spread
# of the spectrum, not where the largest or smallest eigenvalue sits.
# </details>

# %% [markdown]
# ## 3 · The released regulariser, written out
# The authors' public code does not compute a posterior at all. It uses the **batch's logits** $Z$ ($B\times C$,
# taken without gradient) as a proxy for the last layer's second-order statistics and turns them into **soft
# targets**:
#
# 1. $M = Z^\top Z$ — the batch sum of the logit outer products ($C\times C$).
# 2. $A_{ij} = \max_k |M_{ik}| - |M_{ij}|$: class $j$ gets the more mass, the **less** its logit co-varies with
#    class $i$'s. Set the diagonal to 0.
# 3. Scale each row so its off-diagonal entries sum to $m$ (0.8 for 10 classes), then set the diagonal to $1-m$.
# 4. Soft targets $q_b = A[y_b]$ (row of the label); the same from the adversarial logits gives $q^{adv}$.
# 5. $R = \tfrac12\big[\mathrm{KL}(q\,\|\,f(x)) + \mathrm{KL}(q^{adv}\,\|\,f(x'))\big]$, averaged over the batch.
#
# AT+S²O trains on $0.9\cdot\mathrm{CE}(f(x'), y) + 0.1\cdot R$; TRADES+S²O on
# $0.7\cdot\mathrm{CE}(f(x), y) + 0.3\cdot R + 6\cdot\mathrm{KL}(f(x)\,\|\,f(x'))$.

# %%
def soft_targets_by_hand(logits, y, m=0.8):
    """The released S²O soft targets q = A[y], step by step."""
    z = logits.detach().float()
    M = z.T @ z                                                   # 1. (C, C) second moment of the logits
    absM = M.abs()
    A = absM.max(dim=1, keepdim=True).values - absM               # 2. weakly co-varying classes get more
    A.fill_diagonal_(0.0)
    C = A.shape[0]
    row_sum = A.sum(dim=1, keepdim=True)
    eye = torch.eye(C, device=A.device)
    uniform = (1.0 - eye) / (C - 1)                               #    (a row of zeros becomes uniform)
    A = torch.where(row_sum > 0, m * A / row_sum.clamp_min(1e-30), m * uniform)  # 3. off-diagonal mass m
    A = A + (1.0 - m) * eye                                       #    and 1 - m on the label
    return A[y]                                                   # 4. one row per sample


def kl_to_softmax(q, logits):
    """Batch mean of KL(q || softmax(logits)) = sum q log q - q log p (0 log 0 = 0)."""
    log_p = F.log_softmax(logits, dim=1)
    return (torch.xlogy(q, q) - q * log_p).sum(dim=1).mean()


def s2o_regulariser_by_hand(logits_clean, logits_adv, y, m=0.8):
    q, q_adv = soft_targets_by_hand(logits_clean, y, m), soft_targets_by_hand(logits_adv, y, m)
    return 0.5 * (kl_to_softmax(q, logits_clean) + kl_to_softmax(q_adv, logits_adv))  # 5.


# %% [markdown]
# Check against the library on the AT model's logits for a test batch and its PGD adversarial examples.

# %%
_, test = profile_data(profile)
device = next(model_at.parameters()).device
x_test, y_test = (t.to(device) for t in tensors(test, n=profile.eval_n))
m = default_off_diagonal_mass(info.num_classes)
x_adv = pgd(model_at, x_test, y_test, eps=profile.eps, alpha=profile.alpha, steps=profile.train_steps,
            generator=torch.Generator(device=device).manual_seed(0))  # a generator on the data's device
with torch.no_grad():
    logits_clean, logits_adv = model_at(x_test), model_at(x_adv)

q_hand = soft_targets_by_hand(logits_clean, y_test, m)
q_lib = soft_targets(logits_clean, y_test, m)
r_hand = s2o_regulariser_by_hand(logits_clean, logits_adv, y_test, m)
r_lib = s2o_regulariser(logits_clean, logits_adv, y_test, off_diagonal_mass=m)

# %% tags=["nbval-ignore-output"]
print(f"max |q_hand - q_lib| = {(q_hand - q_lib).abs().max():.2e}")
print(f"R by hand {r_hand:.6f}, library {r_lib:.6f}")

# %%
assert torch.allclose(q_hand, q_lib, atol=1e-6), "hand-written soft targets differ from s2o_lib.s2o.soft_targets"
assert torch.allclose(r_hand, r_lib, atol=1e-6), "hand-written regulariser differs from s2o_lib.s2o.s2o_regulariser"
A = soft_target_matrix(logits_clean, off_diagonal_mass=m)
assert torch.allclose(A.sum(1), torch.ones(info.num_classes, device=device), atol=1e-6), "soft-target rows must sum to 1"
assert torch.allclose(A.diagonal(), torch.full((info.num_classes,), 1 - m, device=device), atol=1e-6), "diagonal must be 1 - m"
assert (A >= 0).all()

# %% [markdown]
# What does $A$ look like for a trained model? Row $i$ is the target distribution for an image of class $i$:
# $1-m = 0.2$ on the label, and the rest spread towards the classes whose logits move **least** with class $i$'s.

# %%
fig, ax = plt.subplots(figsize=(5.2, 4.2))
sns.heatmap(A.cpu().numpy(), ax=ax, cmap="viridis", vmin=0, annot=True, fmt=".2f", annot_kws={"fontsize": 6},
            xticklabels=classes, yticklabels=classes, square=True, cbar_kws={"shrink": 0.8})
ax.set_xlabel("target class j")
ax.set_ylabel("true class i")
ax.set_title(f"S²O soft-target matrix A (AT model, {len(y_test)} test images, m = {m})", fontsize=9)
plt.tight_layout()
plt.show()

# %% [markdown]
# Fitting these targets gives every wrong class a share of the probability in proportion to how *weakly* it is
# correlated with the label's class — a cheap, per-batch proxy for making the last layer's class vectors less
# correlated. No gradient flows through $A$.

# %% [markdown]
# ## Exercise
# **2.** The off-diagonal mass $m$ controls how soft the targets are. Compute the soft-target matrix of the AT
# model for $m \in \{0.2, 0.5, 0.8, 0.95\}$ and the mean entropy of its rows. Which $m$ gives the most uniform
# wrong-class distribution, and why is the *shape* of the off-diagonal part the same for every $m$?
#
# <details><summary>Solution</summary>
#
# ```python
# for mm in (0.2, 0.5, 0.8, 0.9, 0.95):
#     A_m = soft_target_matrix(logits_clean, off_diagonal_mass=mm)
#     entropy = -(torch.xlogy(A_m, A_m)).sum(1).mean()
#     off = A_m * (1 - torch.eye(10, device=device)) / mm   # the off-diagonal part, rescaled to sum to 1
#     print(f"m={mm}: mean row entropy {entropy:.3f}, off-diagonal shape {off[0, :4].cpu().numpy().round(3)}")
# ```
# The entropy rises with $m$ up to about $m = 0.9$ (the label's $1-m$ then equals a typical wrong class's share).
# The off-diagonal part is $m\cdot A_{ij}/\sum_j A_{ij}$: $m$ only scales it, the *shape* comes from $|M|$ alone.
# </details>

# %% [markdown]
# ## Summary
# - PAC-Bayesian bounds view weights as a Gaussian posterior whose covariance is the analyst's choice. The
#   cosine similarity between rows of trained weights (Jin et al.'s ρ) is a different, measurable statistic of
#   the posterior's mean; read it against its untrained baseline.
# - With a correlated posterior $\mathcal N(w, \sigma^2 S)$ the robust bound gains $-\sum\ln\det S_i$ and a factor
#   $\max\|S_i\|_2$; for a correlation matrix a smaller $\|S\|_F$ tightens the **bounds**
#   $\|S\|_2 \le 1 + \sqrt{\|S\|_F^2 - n}$ and $\ln\det S \ge n\ln(1 - \sqrt{\|S\|_F^2 - n})$ — so S²O
#   **decorrelates**, as a surrogate (it does not order $\|S\|_2$ itself: To do 1).
# - The **released code** does it with a cheap soft-target regulariser built from the batch's logit second moment
#   ($0.9\,\mathrm{CE}_{adv} + 0.1\,R$ for AT), written out above and checked against the library.
#
# **Next:** 06b · S²O in training — the Laplace posterior, AT and TRADES ± S²O, cost and evidence.
#
# **References.**
# Jin, Yi, Huang, Schewe, Huang. *Enhancing Adversarial Training with Second-Order Statistics of Weights.* CVPR 2022
# (arXiv 2203.06020) ·
# Jin, Yi, Huang, Schewe, Huang. *S²O: Enhancing Adversarial Training with Second-Order Statistics of Weights.* IEEE
# TPAMI 47(10), 2025 · code: github.com/Alexkael/S2O ·
# Jin, Yi, Zhang, Zhang, Schewe, Huang. *How does Weight Correlation Affect the Generalisation Ability of Deep Neural
# Networks?* NeurIPS 2020 ·
# Neyshabur, Bhojanapalli, Srebro. *A PAC-Bayesian Approach to Spectrally-Normalized Margin Bounds.* ICLR 2018 ·
# Martens & Grosse. *Optimizing Neural Networks with Kronecker-factored Approximate Curvature.* ICML 2015 ·
# Ritter, Botev, Barber. *A Scalable Laplace Approximation for Neural Networks.* ICLR 2018 ·
# Madry, Makelov, Schmidt, Tsipras, Vladu. *Towards Deep Learning Models Resistant to Adversarial Attacks.* ICLR 2018 ·
# Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan. *Theoretically Principled Trade-off between Robustness and Accuracy*
# (TRADES). ICML 2019.
