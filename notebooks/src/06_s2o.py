# %% [markdown]
# # 06 · S²O: what the regulariser touches
#
# Adversarial training (03) and TRADES (04) change the *loss*. S²O (Jin et al., CVPR 2022; TPAMI 2025) argues
# from a PAC-Bayesian bound that the *second-order statistics of the weights* matter too, and its released code
# adds a regulariser built from the logits' second moment. This notebook follows that argument from the bound to
# the code, and measures on a trained model what the code's matrix actually contains.
#
# **Learning goals.** Tell the posterior covariance of a PAC-Bayes bound from the cosine of trained weights;
# derive why S²O minimises a correlation matrix's Frobenius norm; write the released regulariser and its
# label-smoothing control and check both against `s2o_lib.s2o`; compute the logits' second moment $M$ two ways.

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
from s2o_lib.defenses import DefenseConfig
from s2o_lib.models import build_model, hidden_layer
from s2o_lib.norms import mean_abs_correlation, weight_correlation
from s2o_lib.plots import correlation_heatmap
from s2o_lib.s2o import (
    default_off_diagonal_mass,
    label_smoothing_regulariser,
    s2o_regulariser,
    soft_target_matrix,
    soft_targets,
)
from s2o_lib.zoo import profile_data, trained_model

profile = get_profile()
info = dataset_info(profile.dataset)
print(f"profile {profile.name}: {profile.dataset}, {profile.arch}, ε = {profile.eps:.4f}, {profile.epochs} epochs")

# %% [markdown]
# ## 1 · Weights as random variables
# A PAC-Bayesian bound speaks about a **distribution** over weights: a posterior $Q = \mathcal N(w, \Sigma)$
# centred at the trained weights, against a prior $P = \mathcal N(0, \sigma^2 I)$. With probability $\ge 1-\delta$
# over $m$ training samples, for **every** posterior $Q$ at once,
#
# $$
# \mathbb E_{w'\sim Q}\,L(w') \;\le\; \mathbb E_{w'\sim Q}\,\hat L(w') + O\!\Big(\sqrt{\tfrac{\mathrm{KL}(Q\,\|\,P) + \ln(m/\delta)}{m}}\Big).
# $$
#
# It is the **prior** that must not depend on the training data; the posterior may (07 uses this). Neyshabur et
# al. (2018) take $\Sigma = \sigma^2 I$, every weight perturbed independently. S²O asks for a posterior with
# **correlations**. Two different things are called "weight correlation":
#
# - the **posterior covariance** Σ, a property of a distribution that one weight vector does not determine
#   (06b estimates one with a Laplace approximation);
# - the **cosine similarity between the rows** of a trained matrix, $\rho$ = mean $|\cos(w_i, w_j)|$ over pairs of
#   neurons (Jin et al., NeurIPS 2020): a measurable property of the posterior's *mean*.
#
# We measure the second for the last layer (`head`, one row per class) and the hidden layer before it, beside
# its value for **untrained** weights of the same shape.

# %% tags=["nbval-ignore-output"]
model_std, _ = trained_model("standard")
model_at, _ = trained_model("at")

# %%
classes = list(range(info.num_classes))
fig, axes = plt.subplots(2, 2, figsize=(9, 7.6))
for col, (name, model) in enumerate([("standard", model_std), ("AT", model_at)]):
    w_head, w_hidden = model.head.weight, hidden_layer(model).weight
    correlation_heatmap(weight_correlation(w_head), ax=axes[0, col], labels=classes,
                        title=f"{name}: head, ρ = {mean_abs_correlation(w_head):.2f}")
    correlation_heatmap(weight_correlation(w_hidden), ax=axes[1, col],
                        title=f"{name}: hidden ({w_hidden.shape[0]} neurons), ρ = {mean_abs_correlation(w_hidden):.2f}")
fig.suptitle("cosine similarity between the weight vectors of a layer's neurons")
plt.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
untrained = []
for init_seed in range(5):  # the same architecture at five random initialisations
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
rho_table.round(2)

# %% jupyter={"source_hidden": true}
ratio = rho_table["untrained (mean of 5)"] / rho_table["random, sqrt(2/(πD))"]
assert ((ratio > 0.5) & (ratio < 2)).all(), "the formula is the untrained layers' baseline, within a factor 2"
assert rho_table["AT / untrained"].max() > 1.5, "the text says: training makes a layer clearly more correlated"

# %% [markdown]
# Training makes the class vectors more similar than chance (last column). These numbers describe *one weight
# matrix*; whether a correlated *posterior* is worth having is an argument about the bound, next.
#
# ## 2 · From the bound to "minimise the correlation"
# S²O lets each layer's perturbation be correlated: $\mathrm{vec}(U_i) \sim \mathcal N(0, \sigma^2 S_i)$, with
# $S_i$ a $k_i\times k_i$ **correlation matrix** (unit diagonal, $\mathrm{tr}\,S_i = k_i$). Two terms feel it:
#
# - **KL.** $\mathrm{KL}\big(\mathcal N(w, \sigma^2 S)\,\|\,\mathcal N(0, \sigma^2 I)\big) = \tfrac{\|w\|^2}{2\sigma^2} - \tfrac12\ln\det S$;
#   the extra $-\tfrac12\ln\det S \ge 0$ vanishes only for $S = I$.
# - **Perturbation.** The margin argument needs the noise's spectral norm small; it grows with $\|S\|_2$.
#
# Notebook 07 writes the resulting robust bound out term by term (the suite's reconstruction, constants set to 1).
#
# **Why the Frobenius norm?** With eigenvalues $\lambda_1..\lambda_k \ge 0$ of $S$, $\sum\lambda_j = k$ and
# $\|S\|_F^2 = \sum\lambda_j^2$, so $\sum(\lambda_j - 1)^2 = \|S\|_F^2 - k =: r^2$ and every eigenvalue lies in
# $[1-r, 1+r]$:
#
# $$
# \|S\|_2 \le 1 + \sqrt{\|S\|_F^2 - k}, \qquad \ln\det S \ge k\,\ln\!\big(1 - \sqrt{\|S\|_F^2 - k}\big)\quad (r < 1).
# $$
#
# A smaller $\|S\|_F$ tightens both **bounds**, exact at $S = I$. It does not order $\|S\|_2$ or $\ln\det S$
# themselves (To do 1 builds a counter-example): minimising $\|S\|_F$ is a smooth **surrogate** for both terms.
# The equicorrelated matrix $S = (1-\rho) I + \rho\,\mathbf 1\mathbf 1^\top$ (Jin et al. 2020's model) has
# $\|S\|_2 = 1 + (k-1)\rho$ and $\ln\det S = (k-1)\ln(1-\rho) + \ln(1 + (k-1)\rho)$:

# %%
k = 10
rows = []
for rho in np.linspace(0.0, 0.9, 19):
    S = (1 - rho) * torch.eye(k, dtype=torch.float64) + rho * torch.ones(k, k, dtype=torch.float64)
    rows.append({"rho": rho, "fro": torch.linalg.matrix_norm(S).item(), "spectral": torch.linalg.eigvalsh(S)[-1].item(),
                 "logdet": torch.linalg.slogdet(S)[1].item()})
equi = pd.DataFrame(rows)
assert np.allclose(equi.spectral, 1 + (k - 1) * equi.rho)
assert np.allclose(equi.logdet, (k - 1) * np.log(1 - equi.rho) + np.log(1 + (k - 1) * equi.rho))
assert np.all(equi.spectral <= 1 + np.sqrt(equi.fro**2 - k) + 1e-9)  # the eigenvalue bound above
r = np.sqrt(equi.fro**2 - k)
assert np.all(equi.logdet[r < 1] >= k * np.log(1 - r[r < 1]) - 1e-9)  # and the log-det bound

fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
axes[0].plot(equi.fro, equi.spectral, "o-", ms=3, label="‖S‖₂")
axes[0].plot(equi.fro, 1 + np.sqrt(equi.fro**2 - k), ":", color="grey", label="bound 1 + √(‖S‖_F² − k)")
axes[0].set_ylabel("‖S‖₂")
axes[0].legend(fontsize=9, loc="upper left")
axes[1].plot(equi.fro, -equi.logdet, "o-", ms=3, color="C1")
axes[1].set_ylabel("−ln det S  (2 × the KL penalty)")
for ax in axes:
    ax.set_xlabel("‖S‖_F")
    ax.axvline(math.sqrt(k), color="grey", lw=1, ls="--")
    ax.grid(alpha=0.3)
fig.suptitle(f"equicorrelated {k}×{k} correlation matrix, ρ from 0 to 0.9 (dashed: ‖I‖_F = √k)")
plt.tight_layout()
plt.show()

# %% [markdown]
# **To do 1 — the Frobenius norm does not order $\|S\|_2$.** Write `correlation_summaries(S)` returning
# $(\|S\|_F, \|S\|_2, \ln\det S)$. The check cell builds two 3 × 3 correlation matrices with eigenvalues
# (1.9, 0.55, 0.55) and (1.6, 1.4, 0): which has the smaller $\|S\|_F$, which the smaller $\|S\|_2$?

# %%
def correlation_summaries(S):
    """(‖S‖_F, ‖S‖₂, ln det S) of a symmetric positive semi-definite matrix S, as floats."""
    # TO DO: three calls to torch.linalg (matrix_norm, eigvalsh, slogdet).


# %%
S_a = 0.55 * torch.eye(3, dtype=torch.float64) + 0.45 * torch.ones(3, 3, dtype=torch.float64)  # eigenvalues 1.9, .55, .55
phi = math.acos(-0.4) / 2  # three unit vectors in a plane at angles 0, ±φ: eigenvalues 1.6, 1.4, 0
angles = torch.tensor([0.0, phi, -phi], dtype=torch.float64)
S_b = torch.cos(angles[:, None] - angles[None, :])
answers = [correlation_summaries(S) for S in (S_a, S_b)]
if any(a is None for a in answers):
    print("To do 1 is open: write correlation_summaries above and run this cell again.")
else:
    for S, (fro, spectral, logdet) in zip((S_a, S_b), answers):
        eig = torch.linalg.eigvalsh(S).clamp_min(0)
        assert abs(fro - math.sqrt(float((eig**2).sum()))) < 1e-9, "‖S‖_F² is the sum of the squared eigenvalues"
        assert abs(spectral - float(eig.max())) < 1e-9, "‖S‖₂ is the largest eigenvalue"
        assert (logdet < -20) if float(eig.min()) < 1e-12 else abs(logdet - float(torch.log(eig).sum())) < 1e-9
        print(f"‖S‖_F = {fro:.3f}   ‖S‖₂ = {spectral:.3f}  (bound {1 + math.sqrt(fro**2 - 3):.3f})   ln det S = {logdet:.3f}")
    print("To do 1: correct. The first matrix has the smaller ‖S‖_F and the larger ‖S‖₂.")

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# def correlation_summaries(S):
#     return (torch.linalg.matrix_norm(S).item(), torch.linalg.eigvalsh(S).max().item(),
#             torch.linalg.slogdet(S)[1].item())
# ```
# $\|S\|_F \approx 2.05$ and $2.13$, $\|S\|_2 = 1.9$ and $1.6$: the smaller Frobenius norm has the larger
# spectral norm, and the bound $1 + \sqrt{\|S\|_F^2 - 3}$ (2.10, 2.23) holds for both.
# </details>
#
# ## 3 · The released regulariser, written out
# The authors' code computes no posterior. It takes the **batch's logits** $Z$ ($B\times C$, without gradient)
# and turns their second moment into **soft targets**:
#
# 1. $M = Z^\top Z$ ($C\times C$).
# 2. $A_{ij} = \max_l |M_{il}| - |M_{ij}|$: class $j$ gets more mass the **less** its logit co-varies with class
#    $i$'s; diagonal set to 0.
# 3. Each row scaled so its off-diagonal entries sum to $m$ (0.8 for 10 classes); diagonal $1-m$.
# 4. Soft targets $q_b = A[y_b]$; the same from the adversarial logits gives $q^{adv}$.
# 5. $R = \tfrac12\big[\mathrm{KL}(q\,\|\,f(x)) + \mathrm{KL}(q^{adv}\,\|\,f(x'))\big]$, a batch mean.
#
# AT+S²O trains on $0.9\cdot\mathrm{CE}(f(x'), y) + 0.1\cdot R$; TRADES+S²O and MART+S²O replace 0.7 of their
# first term by $0.3\cdot R$.

# %%
def soft_targets_by_hand(logits, y, m=0.8):
    """The released S²O soft targets q = A[y], step by step."""
    z = logits.detach().float()
    absM = (z.T @ z).abs()                                        # 1. (C, C) second moment of the logits
    A = absM.max(dim=1, keepdim=True).values - absM               # 2. weakly co-varying classes get more
    A.fill_diagonal_(0.0)
    eye = torch.eye(A.shape[0], device=A.device)
    row_sum = A.sum(dim=1, keepdim=True)
    uniform = (1.0 - eye) / (A.shape[0] - 1)                      #    (a row of zeros becomes uniform)
    A = torch.where(row_sum > 0, m * A / row_sum.clamp_min(1e-30), m * uniform)  # 3. off-diagonal mass m
    return (A + (1.0 - m) * eye)[y]                               #    1 - m on the label; 4. one row per sample


def kl_to_softmax(q, logits):
    """Batch mean of KL(q || softmax(logits)) (0 log 0 = 0)."""
    return (torch.xlogy(q, q) - q * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def s2o_regulariser_by_hand(logits_clean, logits_adv, y, m=0.8):
    q, q_adv = soft_targets_by_hand(logits_clean, y, m), soft_targets_by_hand(logits_adv, y, m)
    return 0.5 * (kl_to_softmax(q, logits_clean) + kl_to_softmax(q_adv, logits_adv))  # 5.


# %% [markdown]
# Checked against the library on the AT model's logits for test images and their PGD adversarial examples:

# %%
_, test = profile_data(profile)
device = next(model_at.parameters()).device
x_test, y_test = (t.to(device) for t in tensors(test, n=profile.eval_n))
m = default_off_diagonal_mass(info.num_classes)
x_adv = pgd(model_at, x_test, y_test, eps=profile.eps, alpha=profile.alpha, steps=profile.attack_steps,
            generator=torch.Generator(device=device).manual_seed(0))
with torch.no_grad():
    feats = model_at.features(x_test)
    logits_clean, logits_adv = model_at.head(feats), model_at(x_adv)
assert torch.allclose(soft_targets_by_hand(logits_clean, y_test, m), soft_targets(logits_clean, y_test, m), atol=1e-6)
r_hand = s2o_regulariser_by_hand(logits_clean, logits_adv, y_test, m)
r_lib = s2o_regulariser(logits_clean, logits_adv, y_test, off_diagonal_mass=m)
assert torch.allclose(r_hand, r_lib, atol=1e-6), "hand-written regulariser differs from s2o_lib.s2o.s2o_regulariser"
print("soft targets and R by hand = s2o_lib.s2o")

# %% [markdown]
# ## 4 · What $M$ measures
# The head is affine, $z = W a + b$. Append a 1 to the features, $\tilde a = (a, 1)$, and the bias to the
# weights, $\tilde W = [W\; b]$: then $z = \tilde W\tilde a$ and
#
# $$
# M = Z^\top Z = \sum_b z_b z_b^\top = \tilde W\Big(\sum_b \tilde a_b \tilde a_b^\top\Big)\tilde W^\top .
# $$
#
# $M_{ij}$ is the inner product of class vectors $i$ and $j$ **in the metric of the features' second moment**.
# It is the cosine similarity of section 1 only if that second moment were a multiple of $I$. Computed both
# ways, and the two correlation patterns side by side:

# %%
W_tilde = torch.cat([model_at.head.weight, model_at.head.bias[:, None]], dim=1).detach()
a_tilde = torch.cat([feats, torch.ones(len(feats), 1, device=device)], dim=1)
M_logits = logits_clean.T @ logits_clean
M_weights = W_tilde @ (a_tilde.T @ a_tilde) @ W_tilde.T
assert torch.allclose(M_logits, M_weights, rtol=1e-4, atol=1e-3 * M_logits.abs().max().item()), "M = W̃ (Σ ã ãᵀ) W̃ᵀ"


def as_correlation(gram):
    d = gram.diagonal().sqrt()
    return gram / (d[:, None] * d[None, :])


off = ~torch.eye(info.num_classes, dtype=torch.bool, device=device)
corr_M, cos_W = as_correlation(M_logits)[off], weight_correlation(model_at.head.weight)[off]
agreement = float(np.corrcoef(corr_M.cpu().numpy(), cos_W.detach().cpu().numpy())[0, 1])

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.9))
correlation_heatmap(as_correlation(M_logits), ax=axes[0], labels=classes, title="M = ZᵀZ, as a correlation")
correlation_heatmap(weight_correlation(model_at.head.weight), ax=axes[1], labels=classes,
                    title="cos of the head's class vectors")
fig.suptitle("AT model, test images: what the regulariser reads (left) and what section 1 measured (right)")
plt.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
print(f"max |M − W̃ΣããᵀW̃ᵀ| / max |M| = {(M_logits - M_weights).abs().max() / M_logits.abs().max():.1e}")
print(f"mean |correlation| of M off the diagonal: {corr_M.abs().mean():.2f};  of the class vectors: {cos_W.abs().mean():.2f}")
print(f"Pearson correlation of the two patterns' off-diagonal entries: {agreement:.2f}")

# %% jupyter={"source_hidden": true}
assert agreement > 0.5, "the text below says: the two patterns agree"
assert corr_M.abs().mean() > cos_W.abs().mean(), "the text below says: M's correlations are the larger"

# %% [markdown]
# The two patterns agree (their off-diagonal entries correlate strongly), and $M$'s correlations are the
# larger: were the features' second moment a multiple of $I$ (and the bias 0), the two would be equal, so $M$
# weighs the class vectors' directions by how much the features use them. The soft targets are computed from the
# class vectors' geometry as the features see it. What training on them does to the weights this identity does not say: 06b measures it.

# %% [markdown]
# ## 5 · The label mass, and the control it calls for
# The soft targets put $1 - m = 0.2$ on the label. Mixed with the one-hot term, the model is trained towards a
# label probability of $(1-w) + w(1-m)$: 0.92 for AT+S²O ($w = 0.1$), 0.76 for TRADES+S²O and MART+S²O
# ($w = 0.3$). That is a structured **label smoothing**, and label smoothing alone is known to raise PGD accuracy
# without real robustness (Shafahi et al. 2019; Carlini et al. 2019). The control `+ls` keeps everything of
# `+s2o` except the *shape*: the off-label mass $m$ is spread uniformly, $m/(C-1)$ per class.

# %%
config = DefenseConfig()
for method in ("at+s2o", "trades+s2o", "mart+s2o", "at+ls", "at"):
    print(f"{method:11s} trained towards {config.label_mass(method):.2f} on the label")


def label_smoothing_by_hand(logits_clean, logits_adv, y, m=0.8):
    """The +ls control: R with the soft targets replaced by uniform label smoothing at the same mass."""
    C = logits_clean.shape[1]
    u = torch.full((len(y), C), m / (C - 1), device=logits_clean.device)
    u[torch.arange(len(y)), y] = 1 - m
    return 0.5 * (kl_to_softmax(u, logits_clean) + kl_to_softmax(u, logits_adv))


r_ls = label_smoothing_regulariser(logits_clean, logits_adv, y_test, off_diagonal_mass=m)
assert torch.allclose(label_smoothing_by_hand(logits_clean, logits_adv, y_test, m), r_ls, atol=1e-6)
print("the +ls control by hand = s2o_lib.s2o.label_smoothing_regulariser")

# %% jupyter={"source_hidden": true}
assert math.isclose(config.label_mass("at+s2o"), 0.92) and math.isclose(config.label_mass("trades+s2o"), 0.76)
assert config.label_mass("at+ls") == config.label_mass("at+s2o") and config.label_mass("at") == 1.0

# %% [markdown]
# The soft-target matrix of the AT model: row $i$ is the target of an image of class $i$, 0.2 on the label and
# the rest towards the classes whose logits move **least** with class $i$'s. The control's matrix would be 0.2 on
# the diagonal and $0.8/9 \approx 0.089$ everywhere else.

# %%
A = soft_target_matrix(logits_clean, off_diagonal_mass=m)
fig, ax = plt.subplots(figsize=(5.6, 4.6))
sns.heatmap(A.cpu().numpy(), ax=ax, cmap="viridis", vmin=0, annot=True, fmt=".2f", annot_kws={"fontsize": 7},
            xticklabels=classes, yticklabels=classes, square=True, cbar_kws={"shrink": 0.8})
ax.set_xlabel("target class j")
ax.set_ylabel("true class i")
ax.set_title(f"S²O soft targets A (AT model, {len(y_test)} test images, m = {m})", fontsize=10)
plt.tight_layout()
plt.show()

# %% jupyter={"source_hidden": true}
assert torch.allclose(A.sum(1), torch.ones(info.num_classes, device=device), atol=1e-6) and (A >= 0).all()
assert torch.allclose(A.diagonal(), torch.full((info.num_classes,), 1 - m, device=device), atol=1e-6)

# %% [markdown]
# ## Exercise
# **2.** Compute the soft-target matrix for $m \in \{0.2, 0.5, 0.8, 0.95\}$ and the mean entropy of its rows.
# Why is the *shape* of the off-diagonal part the same for every $m$?
#
# <details><summary>Solution</summary>
#
# ```python
# for mm in (0.2, 0.5, 0.8, 0.95):
#     A_m = soft_target_matrix(logits_clean, off_diagonal_mass=mm)
#     off_shape = A_m * (1 - torch.eye(10, device=device)) / mm
#     print(mm, float(-(torch.xlogy(A_m, A_m)).sum(1).mean()), off_shape[0, :4].cpu().numpy().round(3))
# ```
# The off-diagonal part is $m\cdot A_{ij}/\sum_j A_{ij}$: $m$ scales it, the shape comes from $|M|$ alone.
# </details>
#
# ## Summary
# - A PAC-Bayes bound holds for every posterior at once; only the prior must be fixed before the data. The
#   cosine ρ of trained rows is a statistic of the posterior's mean, read against its untrained baseline.
# - With a correlated posterior the bound gains $-\sum\ln\det S_i$ and a factor $\max\|S_i\|_2$; a smaller
#   $\|S\|_F$ tightens bounds on both, so S²O decorrelates as a surrogate.
# - The released code builds soft targets from $M = Z^\top Z = \tilde W(\sum\tilde a\tilde a^\top)\tilde W^\top$,
#   trains towards 0.92 (AT) or 0.76 (TRADES, MART) on the label, and `+ls` is its label-smoothing control.
#
# **Next:** 06b measures what S²O and the control change, over eight seeds.
#
# **References.** Jin, Yi, Huang, Schewe, Huang. *Enhancing Adversarial Training with Second-Order Statistics of
# Weights.* CVPR 2022; *S²O*, IEEE TPAMI 47(10), 2025; code github.com/Alexkael/S2O ·
# Jin, Yi, Zhang, Zhang, Schewe, Huang. *How does Weight Correlation Affect the Generalisation Ability of Deep
# Neural Networks?* NeurIPS 2020 · Neyshabur, Bhojanapalli, Srebro. *A PAC-Bayesian Approach to
# Spectrally-Normalized Margin Bounds.* ICLR 2018 · Shafahi, Ghiasi, Huang, Goldstein. *Label Smoothing and Logit
# Squeezing: A Replacement for Adversarial Training?* arXiv:1910.11585, 2019 · Carlini et al. *On Evaluating
# Adversarial Robustness.* arXiv:1902.06705, 2019.
