# %% [markdown]
# # 02 · PGD and evaluation: strong attacks, and how not to fool yourself
#
# Notebook 01 took *one* signed-gradient step (FGSM). Iterating that step, and projecting back onto the
# ε-ball after each one, gives **projected gradient descent (PGD)**, the attack every robustness paper
# reports. An attack only gives an *upper bound* on robust accuracy, so this notebook is as much about
# running it **well** as about running it at all.
#
# **Learning goals.** After this notebook you can
#
# - write **PGD** as projected gradient ascent (random start, signed step, projection, clipping) and check it
#   against `s2o_lib.attacks.pgd`,
# - draw the **L∞ and L2 balls** and say how the attacks differ,
# - choose the **step size, number of steps and restarts**, and run **targeted** attacks,
# - use the **Carlini–Wagner (CW) margin loss** instead of the cross-entropy,
# - compare a standard and an adversarially trained model with **accuracy-versus-ε** curves,
# - recognise evaluations that **go wrong** (too few steps, a bad step size, no random start, gradient
#   masking) and run the **sanity checks** that catch them.

# %%
import itertools
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import make_moons
from torch import nn

from s2o_lib.attacks import cw_margin_loss, pgd
from s2o_lib.config import get_device, get_profile, seed_everything
from s2o_lib.data import dataset_info, tensors
from s2o_lib.plots import image_grid, plot_accuracy_vs_eps
from s2o_lib.zoo import profile_data, trained_model

# %% [markdown]
# ## The profile
# In `smoke`: 16×16 digits, a small CNN, an L∞ radius ε = 0.15. The later notebooks report PGD-20 with step
# 0.02 (`eval_steps`, `eval_alpha`); here, where we run dozens of attacks, our workhorse is the cheaper
# **PGD-10 with step ε/4**, on the first 100 test images (in `class`: the profile's `eval_n` images).

# %%
profile = get_profile()
device = get_device()
if device.type == "cpu":
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and does not fight over shared cores
eps = profile.eps
n_eval = 100 if profile.name == "smoke" else profile.eval_n
print(f"profile: {profile.name}")
print(f"dataset {profile.dataset}, model {profile.arch}, threat model: L-inf eps = {eps:.4f}")
print(f"reported evaluation: PGD-{profile.eval_steps}, step {profile.eval_alpha:.4f}; here PGD-10, step eps/4, "
      f"on {n_eval} test images")
print(profile.notes)

# %% [markdown]
# ## PGD as projected gradient ascent
# The attacker wants $\max_{\delta \in S} \ell(f(x + \delta), y)$ over the threat set
# $S = \{\delta : \|\delta\|_\infty \le \varepsilon,\ x + \delta \in [0, 1]^d\}$. PGD (Madry et al. 2018)
# does gradient *ascent* with a projection:
#
# 1. **random start**: $x^0 = \mathrm{clip}_{[0,1]}(x + u)$ with $u$ uniform in $[-\varepsilon, \varepsilon]^d$;
# 2. **signed step**: $\tilde x = x^t + \alpha\,\mathrm{sign}\,\nabla_x \ell(f(x^t), y)$ (steepest ascent for L∞);
# 3. **projection** onto the ball: $x + \mathrm{clip}_{[-\varepsilon, \varepsilon]}(\tilde x - x)$;
# 4. **clipping** into the image box $[0, 1]$; repeat from 2 for $K$ steps.
#
# FGSM is the special case $K = 1$, $\alpha = \varepsilon$, no random start.

# %%
def pgd_by_hand(model, x, y, *, eps, alpha, steps, random_start=True):
    """L∞ PGD on the cross-entropy: random start, signed steps, projection, clipping."""
    model.eval()
    x = x.detach()
    delta = torch.empty_like(x).uniform_(-eps, eps) if random_start else torch.zeros_like(x)
    x_adv = (x + delta).clamp(0, 1)                          # 1. random start, still an image
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()         # 2. signed ascent step
        x_adv = x + (x_adv - x).clamp(-eps, eps)             # 3. project onto the eps-ball around x
        x_adv = x_adv.clamp(0, 1)                            # 4. back into the image box
    return x_adv

# %% [markdown]
# ## The models and the images
# The standard model from notebook 01 and the PGD-adversarially trained (AT) model of notebook 03. Both come
# from `trained_model`: trained the first time (AT takes a little longer), loaded from `runs/` afterwards.

# %% tags=["nbval-ignore-output"]
model_std, _ = trained_model("standard")
model_at, _ = trained_model("at")
_, test = profile_data(profile)
x, y = tensors(test, n=n_eval)
x, y = x.to(device), y.to(device)
num_classes = dataset_info(profile.dataset).num_classes


def accuracy(model, x_in, labels=None):
    """Fraction of x_in classified as labels (default: the true labels y)."""
    with torch.no_grad():
        return (model(x_in).argmax(1) == (y if labels is None else labels)).float().mean().item()


_results = {}


def pgd_acc(model, *, seed=0, **kwargs):
    """Accuracy under s2o_lib.attacks.pgd (eps, alpha, steps, ... as keywords), with a fixed random start.

    Results are remembered, so asking twice for the same model and settings costs nothing.
    """
    kwargs = {"norm": "linf", "loss": "ce", "init": "uniform", "restarts": 1, "targeted": False, **kwargs}
    key = (id(model), seed, tuple(sorted(kwargs.items())))
    if key not in _results:
        torch.manual_seed(seed)
        _results[key] = accuracy(model, pgd(model, x, y, **kwargs))
    return _results[key]


clean = {"standard": accuracy(model_std, x), "AT": accuracy(model_at, x)}
print(f"clean accuracy on {len(y)} test images: standard {clean['standard']:.3f}, AT {clean['AT']:.3f}")

# %% [markdown]
# ## Does our PGD agree with the library's?
# Both draw the random start from torch's global generator, so seeding it identically before each call gives
# the same start and, step by step, the same attack. We compare on the AT model, where the accuracy under
# attack is not simply zero.

# %%
attack = dict(eps=eps, alpha=eps / 4, steps=10)  # PGD-10, our workhorse
torch.manual_seed(0)
x_hand = pgd_by_hand(model_at, x, y, **attack)
torch.manual_seed(0)
x_lib = pgd(model_at, x, y, **attack)

assert torch.allclose(x_hand, x_lib, atol=1e-6), "pgd_by_hand must match s2o_lib.attacks.pgd"
assert accuracy(model_at, x_hand) == accuracy(model_at, x_lib), "both must reach the same accuracy"
for x_adv in (x_hand, x_lib):
    assert ((x_adv - x).abs() <= eps + 1e-6).all(), "perturbations must lie in the eps-ball"
    assert x_adv.min() >= 0 and x_adv.max() <= 1, "adversarial images must stay in [0, 1]"
assert accuracy(model_at, x_lib) <= clean["AT"], "robust accuracy cannot exceed clean accuracy"
assert accuracy(model_at, x_lib) == pgd_acc(model_at, **attack)
print("pgd_by_hand matches s2o_lib.attacks.pgd")

# %% tags=["nbval-ignore-output"]
print(f"AT model, L-inf eps = {eps:g}, PGD-10 (step eps/4, one random start) on {len(y)} test images: "
      f"clean {clean['AT']:.3f}, by hand {accuracy(model_at, x_hand):.3f}, library {accuracy(model_at, x_lib):.3f}")

# %% [markdown]
# ## L∞ and L2 balls
# The threat model is a choice. The **L∞ ball** (a square in 2-D, a cube in $d$ dimensions) lets every
# pixel move by ε; the **L2 ball** (a disc) bounds the total energy $\|\delta\|_2 \le \varepsilon_2$, so a
# few pixels may move a lot. The steepest-ascent step differs accordingly:
#
# - L∞: $\alpha\,\mathrm{sign}(g)$, which moves *diagonally* and ends in a corner of the square;
# - L2: $\alpha\, g / \|g\|_2$, which follows the gradient; the projection rescales $\delta$ to length ε₂.
#
# On the two-moons toy of notebook 01 (retrained here in a second), both attacks start from the same point.

# %% tags=["nbval-ignore-output"]
seed_everything(0)
points, labels = make_moons(n_samples=400, noise=0.1, random_state=0)
points = (points - points.min(0)) / (points.max(0) - points.min(0))
X_toy, Y_toy = torch.tensor(points, dtype=torch.float32), torch.tensor(labels)
toy = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
opt = torch.optim.Adam(toy.parameters(), lr=0.02)
for _ in range(300):
    opt.zero_grad()
    F.cross_entropy(toy(X_toy), Y_toy).backward()
    opt.step()
toy.eval()
print(f"toy MLP training accuracy: {accuracy(toy, X_toy, Y_toy):.2f}")

# %%
eps_toy, alpha_toy, steps_toy = 0.1, 0.025, 8
# Trajectories: PGD stopped after 0, 1, ..., steps_toy steps (no random start, so each run extends the last).
paths = {}
for norm in ("linf", "l2"):
    paths[norm] = torch.stack([X_toy] + [
        pgd(toy, X_toy, Y_toy, eps=eps_toy, alpha=alpha_toy, steps=k, norm=norm, init="none")
        for k in range(1, steps_toy + 1)
    ])  # (steps + 1, points, 2)
with torch.no_grad():
    wrong_linf = toy(paths["linf"][-1]).argmax(1) != Y_toy
right_before = toy(X_toy).argmax(1) == Y_toy
i = int(torch.nonzero(right_before & wrong_linf)[0])  # a point the L∞ attack flips

assert (paths["linf"][-1] - X_toy).abs().max() <= eps_toy + 1e-6
assert (paths["l2"][-1] - X_toy).norm(dim=1).max() <= eps_toy + 1e-6

# %% report="The L∞ ball (square) and the L2 ball (disc) of radius ε around one point, with the PGD steps of each attack."
grid = torch.linspace(0, 1, 200)
gx, gy = torch.meshgrid(grid, grid, indexing="xy")
with torch.no_grad():
    prob = toy(torch.stack([gx.flatten(), gy.flatten()], 1)).softmax(1)[:, 1].view(200, 200)
p = X_toy[i]
fig, ax = plt.subplots(figsize=(5.5, 5))
ax.contourf(gx, gy, prob, levels=20, cmap="RdBu_r", alpha=0.5)
ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.5)
ax.add_patch(plt.Rectangle((p[0] - eps_toy, p[1] - eps_toy), 2 * eps_toy, 2 * eps_toy, fill=False, color="C1",
                           lw=2, label=f"L∞ ball, ε = {eps_toy}"))
ax.add_patch(plt.Circle(p.tolist(), eps_toy, fill=False, color="C2", lw=2, label=f"L2 ball, ε₂ = {eps_toy}"))
ax.add_patch(plt.Circle(p.tolist(), eps_toy * math.sqrt(2), fill=False, color="C2", lw=1, ls=":",
                        label="L2 ball of radius ε√d ⊇ L∞ ball"))
for norm, color in (("linf", "C1"), ("l2", "C2")):
    ax.plot(*paths[norm][:, i].T, "o-", color=color, ms=4, lw=1.5, label=f"PGD steps ({norm})")
ax.plot(*p, "o", color="lime", ms=9, mec="k", label="clean point")
ax.set_xlim(p[0] - 2.5 * eps_toy, p[0] + 2.5 * eps_toy)
ax.set_ylim(p[1] - 2.5 * eps_toy, p[1] + 2.5 * eps_toy)
ax.set_aspect("equal")
ax.set_title("L∞ steps move diagonally into a corner; L2 steps follow the gradient", fontsize=9)
ax.legend(fontsize=7, loc="lower left")
plt.tight_layout()
plt.show()

# %% [markdown]
# With the same radius the disc is the smaller set: here the L∞ attack crosses the boundary from a corner of
# the square, while the L2 attack, which has to stay inside the disc, does not get there.

# %% [markdown]
# ### The L2 attack on images
# Which L2 radius is "comparable" to ε = 0.15 in L∞? The L∞ ball sits inside the L2 ball of radius
# $\varepsilon\sqrt d$ (its corners: every pixel at ±ε) and contains the L2 ball of radius ε, a factor
# $\sqrt d = 16$ apart for 16×16 images. Common benchmarks pick something in between (MNIST: 0.3 in L∞ and
# 2.0 in L2 ≈ ε√d/4); we take $\varepsilon_2 = \varepsilon\sqrt d / 4$.

# %%
d = x[0].numel()
eps_l2 = eps * math.sqrt(d) / 4
attack_l2 = dict(eps=eps_l2, alpha=eps_l2 / 4, steps=10, norm="l2")
torch.manual_seed(0)
x_l2 = pgd(model_at, x, y, **attack_l2)
acc_l2 = {"standard": pgd_acc(model_std, **attack_l2), "AT": accuracy(model_at, x_l2)}
acc_linf = {"standard": pgd_acc(model_std, **attack), "AT": pgd_acc(model_at, **attack)}

assert ((x_l2 - x).flatten(1).norm(dim=1) <= eps_l2 + 1e-5).all(), "L2 perturbations must lie in the L2 ball"
assert x_l2.min() >= 0 and x_l2.max() <= 1
assert all(acc_l2[k] <= clean[k] for k in clean)

# %% tags=["nbval-ignore-output"]
print(f"d = {d}, eps_inf = {eps}, eps_2 = {eps_l2:.3f}  (eps*sqrt(d) = {eps * math.sqrt(d):.2f})")
for name, acc in clean.items():
    print(f"{name:8s}: clean {acc:.3f}, L-inf PGD {acc_linf[name]:.3f}, L2 PGD {acc_l2[name]:.3f}")

# %% [markdown]
# The two perturbations of the AT model's inputs look different: the L∞ one spends the full budget ε on
# most pixels, the L2 one concentrates on fewer pixels around the strokes (grey is zero).

# %%
with torch.no_grad():
    preds = {name: [f"pred {int(v)}" for v in model_at(img).argmax(1)]
             for name, img in (("clean", x), ("L∞ adversarial", x_lib), ("L2 adversarial", x_l2))}
fig = image_grid({"clean": x, "L∞ adversarial": x_lib, "L∞ δ": x_lib - x, "L2 adversarial": x_l2, "L2 δ": x_l2 - x},
                 titles=preds, max_images=8)
plt.show()

# %% [markdown]
# ## Step size, steps and restarts
# PGD has three knobs. We turn them one at a time on the **AT model** (the standard model falls to 0 % with
# almost any setting, so it cannot show the differences):
#
# - **steps** $K$ at a fixed step size α = 0.02: with $K\alpha < \varepsilon$ the attack cannot even reach the
#   boundary of the ball;
# - **step size** α at $K = 10$: too small and it does not get far; too large can make it jump between
#   corners of the ball instead of converging (on this model α = ε and 2ε did about as well as ε/4);
# - **restarts**: run PGD from several random starts and count an image as broken if *any* run breaks it.

# %%
steps_grid = [1, 2, 5, 10, 20, 40]
acc_steps = [pgd_acc(model_at, eps=eps, alpha=profile.eval_alpha, steps=k) for k in steps_grid]
alpha_factors = [0.01, 0.05, 0.25, 1.0, 2.0]
acc_alpha = [pgd_acc(model_at, eps=eps, alpha=a * eps, steps=10) for a in alpha_factors]
restarts_grid = [1, 3]
acc_restarts = [pgd_acc(model_at, **attack, restarts=r) for r in restarts_grid]
acc_no_start = pgd_acc(model_at, **attack, init="none")

# %% tags=["nbval-ignore-output"]
print(f"AT model, eps = {eps}, clean accuracy {clean['AT']:.3f}")
print(f"steps (alpha = {profile.eval_alpha:.3f}):   " + "  ".join(f"{k:>2d}: {a:.3f}" for k, a in zip(steps_grid, acc_steps)))
print("alpha/eps (10 steps): " + "  ".join(f"{f:>4}: {a:.3f}" for f, a in zip(alpha_factors, acc_alpha)))
print("restarts (10 steps):  " + "  ".join(f"{r}: {a:.3f}" for r, a in zip(restarts_grid, acc_restarts)))
print(f"no random start (10 steps, alpha = eps/4): {acc_no_start:.3f}")

# %% report="Accuracy of the AT model under PGD as a function of the number of steps, the step size and the restarts."
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
axes[0].semilogx(steps_grid, acc_steps, "o-")
axes[0].set_xlabel(f"steps K (α = {profile.eval_alpha})")
axes[0].axvline(eps / profile.eval_alpha, color="grey", ls=":", lw=1)
axes[0].text(eps / profile.eval_alpha, 0.95, " Kα = ε", fontsize=8, va="top")
axes[1].semilogx(alpha_factors, acc_alpha, "o-", color="C1")
axes[1].set_xlabel("step size α / ε (10 steps)")
axes[2].plot(restarts_grid, acc_restarts, "o-", color="C2")
axes[2].set_xlabel("random restarts (10 steps, α = ε/4)")
axes[2].set_xticks(restarts_grid)
axes[0].set_ylabel("AT accuracy under PGD")
for ax in axes:
    ax.axhline(clean["AT"], color="k", ls="--", lw=1, label="clean")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What must hold: restarts can only **add** broken images (with the same seed the first restart is the
# single run), and many steps with a sensible step size must beat one small step. Random starts being random,
# we allow one or two images of slack elsewhere.

# %%
assert all(a <= clean["AT"] for a in acc_steps + acc_alpha + acc_restarts)
assert all(b <= a for a, b in itertools.pairwise(acc_restarts)), "more restarts can only break more images"
assert acc_steps[-1] < acc_steps[0], "PGD-40 must beat PGD-1 with a small step"
assert acc_steps[-1] <= acc_steps[-2] + 0.02, "going from 20 to 40 steps must not help the model"
assert min(acc_alpha) < acc_alpha[0], "a tiny step size must be weaker than a sensible one"

# %% jupyter={"source_hidden": true}
# The prose: a step of eps or 2 eps and no random start made little or no difference (a few images of 100).
assert max(abs(a - acc_alpha[2]) for a in acc_alpha[3:]) <= 0.05, "alpha = eps, 2 eps vs eps/4"
assert abs(acc_no_start - acc_restarts[0]) <= 0.05, "no random start vs one"

# %% [markdown]
# ## Targeted attacks
# A **targeted** attack wants a *chosen* wrong class $t$: it descends the loss of $t$,
# $x \leftarrow x - \alpha\,\mathrm{sign}\,\nabla_x \ell(f(x), t)$ (`pgd(..., targeted=True)` with the targets
# passed as labels). Its **success rate** is the fraction of images classified as $t$. We target
# $t = (y + 1) \bmod 10$.

# %%
targets = (y + 1) % num_classes
attack_t = dict(**attack, targeted=True)
success = {}
for name, m in (("standard", model_std), ("AT", model_at)):
    torch.manual_seed(0)
    x_t = pgd(m, x, targets, **attack_t)
    assert ((x_t - x).abs() <= eps + 1e-6).all() and x_t.min() >= 0 and x_t.max() <= 1
    success[name] = accuracy(m, x_t, targets)

# %% tags=["nbval-ignore-output"]
for name, rate in success.items():
    print(f"{name:8s}: targeted success rate (pred == y+1) {rate:.3f}")

# %%
assert success["standard"] > success["AT"], "the AT model must resist the targeted attack better"

# %% [markdown]
# ## The Carlini–Wagner margin loss
# The cross-entropy is not the only loss to ascend. Carlini & Wagner (2017) attack the **margin** between the
# true logit and the best other logit; `s2o_lib.attacks.cw_margin_loss` uses the form of the TRADES/MART
# evaluation code, with a confidence κ = 50:
#
# $$
# \ell_{\mathrm{CW}}(z, y) = -\max\big(z_y - \max_{j \ne y} z_j + \kappa,\ 0\big).
# $$
#
# It is negative while the true class wins and only stops growing once another class leads by κ. Because it
# works on **logits**, not on probabilities, it does not saturate when the softmax is very confident, which
# matters below. Let us check the formula on a few logits, then attack with it.

# %%
z = torch.tensor([[5.0, 1.0, 3.0], [0.0, 2.0, -1.0]])
labels_z = torch.tensor([0, 0])
by_hand = -(z[:, 0] - torch.tensor([3.0, 2.0]) + 50).clamp(min=0)   # true logit minus the best other
assert torch.allclose(cw_margin_loss(z, labels_z), by_hand)
print(cw_margin_loss(z, labels_z))

# %%
acc_cw, acc_ce = {}, {}
for name, m in (("standard", model_std), ("AT", model_at)):
    acc_ce[name] = pgd_acc(m, **attack)
    acc_cw[name] = pgd_acc(m, **attack, loss="cw")

# %% tags=["nbval-ignore-output"]
print(f"PGD-10 (step eps/4, eps = {eps:g}) on {len(y)} test images")
for name in clean:
    print(f"{name:8s}: PGD-10 CE {acc_ce[name]:.3f}, CW {acc_cw[name]:.3f}")

# %%
for name, acc in clean.items():
    assert acc_cw[name] <= acc
    assert abs(acc_ce[name] - acc_cw[name]) <= 0.1, "on an honest model CE and CW must roughly agree"

# %% [markdown]
# ## Accuracy versus ε: standard training versus adversarial training
# One attack (PGD-10, α = ε/4, random start) at several radii. The dotted line is the training radius.

# %%
eps_grid = [eps * m for m in (0, 1 / 3, 2 / 3, 1, 2, 10 / 3)]  # smoke: 0, 0.05, 0.1, 0.15, 0.3, 0.5
curves = {}
for name, m in (("standard", model_std), ("AT", model_at)):
    curves[name] = [clean[name]] + [pgd_acc(m, eps=e, alpha=e / 4, steps=10) for e in eps_grid[1:]]

# %% tags=["nbval-ignore-output"]
print(f"PGD-10 (step eps/4) on {len(y)} test images")
print("eps:      " + "  ".join(f"{e:5.3f}" for e in eps_grid))
for name, accs in curves.items():
    print(f"{name:8s}: " + "  ".join(f"{a:5.3f}" for a in accs))

# %% report="Accuracy under PGD-10 against the radius ε, for the standard and the adversarially trained model."
ax = plot_accuracy_vs_eps({name: (eps_grid, accs) for name, accs in curves.items()}, eps_marker=eps)
ax.set_title("PGD-10 on the standard and the AT model")
plt.tight_layout()
plt.show()

# %%
k = 3  # eps_grid[3] is the profile's eps
assert curves["AT"][k] > curves["standard"][k], "AT must beat standard training under PGD at the training eps"
for name, accs in curves.items():
    assert all(a <= clean[name] for a in accs), "robust accuracy cannot exceed clean accuracy"
    assert accs[-1] <= 0.05, f"{name}: at a very large eps accuracy must fall to about zero"

# %% [markdown]
# The AT model keeps a good part of its accuracy at the training radius, where the standard model has none;
# it pays with a lower clean accuracy. Beyond about 2ε neither model is robust, as it must be: at ε = 0.5 an
# attacker may turn every image into uniform grey.

# %% [markdown]
# ## How evaluations go wrong
# A PGD number is only an **upper bound** on the true robust accuracy: a weak attack makes any model look
# robust. The sweeps above already showed two ways to get it wrong on the AT model: **too few steps**
# (PGD-1 with a small step) and a **step size** that is far too small. A step that is too large and **no
# random start** made little or no difference here. The most treacherous failure is **gradient masking**
# (Athalye et al. 2018): the model is not robust, but its gradients are useless to the attacker.
#
# Here is a model that masks gradients by construction: the standard model with its logits multiplied by
# $10^4$. It predicts exactly the same classes. But its softmax is saturated, $p_y = 1$ in float32, so the
# cross-entropy's input gradient $(p - e_y)^\top \partial z / \partial x$ is **exactly zero**, and
# $\mathrm{sign}(0) = 0$: PGD does not move.

# %%
class ScaledLogits(nn.Module):
    """A gradient-masked model: the same predictions, logits times `scale` (saturating the softmax)."""

    def __init__(self, model, scale=1e4):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x) * self.scale


model_masked = ScaledLogits(model_std).eval()
x_g = x.clone().requires_grad_(True)
(grad,) = torch.autograd.grad(F.cross_entropy(model_masked(x_g), y, reduction="sum"), x_g)
zero_grad = (grad.flatten(1).abs().sum(1) == 0).float().mean().item()
assert accuracy(model_masked, x) == clean["standard"], "scaling the logits does not change the predictions"

# %% tags=["nbval-ignore-output"]
print(f"images whose cross-entropy input gradient is exactly zero: {zero_grad:.0%}")

# %% [markdown]
# ### The checks that catch it
# Carlini et al. (2019) list checks that every evaluation should pass. Three cheap ones:
#
# 1. **large ε**: at a radius where the images can be destroyed, accuracy must go to about zero;
# 2. **more steps must not help the model**: PGD-20 must not be weaker than PGD-10 (beyond noise);
# 3. **another loss agrees**: PGD on the CW margin loss must not be much stronger than PGD on CE.

# %%
def sanity_checks_by_hand(model, *, eps, large_eps, tol=0.05):
    """Accuracies of the three checks, and whether each passes."""
    ce10 = pgd_acc(model, eps=eps, alpha=eps / 4, steps=10)
    ce20 = pgd_acc(model, eps=eps, alpha=eps / 8, steps=20)
    cw10 = pgd_acc(model, eps=eps, alpha=eps / 4, steps=10, loss="cw")
    big = pgd_acc(model, eps=large_eps, alpha=large_eps / 4, steps=10)
    result = {"PGD-10 CE": ce10, "PGD-20 CE": ce20, "PGD-10 CW": cw10, f"CE at eps={large_eps:.2f}": big}
    passed = {"large eps -> ~0": big <= tol, "more steps do not help": ce20 <= ce10 + tol,
              "CW agrees with CE": abs(cw10 - ce10) <= 2 * tol}
    return result, passed


checks = {name: sanity_checks_by_hand(m, eps=eps, large_eps=eps_grid[-1])
          for name, m in (("standard", model_std), ("AT", model_at), ("masked (logits x 1e4)", model_masked))}
torch.manual_seed(0)
acc_masked_no_start = pgd_acc(model_masked, **attack, init="none")

# %% tags=["nbval-ignore-output"]
print(f"{len(y)} test images, eps = {eps:g}")
for name, (result, passed) in checks.items():
    print(f"{name}:  " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))
    print("    " + ", ".join(f"{k}: {'pass' if ok else 'FAIL'}" for k, ok in passed.items()))
print(f"masked model, PGD-10 CE without a random start: {acc_masked_no_start:.3f}")

# %% report="Sanity checks (Carlini et al. 2019) on the standard, the AT and a gradient-masked model."
names = list(checks)
cols = list(checks[names[0]][0])
fig, ax = plt.subplots(figsize=(8, 3.2))
width = 0.8 / len(cols)
for j, col in enumerate(cols):
    ax.bar(np.arange(len(names)) + (j - (len(cols) - 1) / 2) * width, [checks[n][0][col] for n in names],
           width, label=col)
ax.set_xticks(np.arange(len(names)), [f"{n}\n{'passes' if all(checks[n][1].values()) else 'FAILS'}" for n in names])
ax.set_ylabel("accuracy under attack")
ax.set_ylim(0, 1)
ax.legend(fontsize=8, ncol=2)
ax.set_title(f"The masked model 'looks robust' to PGD-CE at ε = {eps}, until CW or a large ε expose it", fontsize=9)
plt.tight_layout()
plt.show()

# %%
assert all(checks["standard"][1].values()), "the standard model must pass the sanity checks"
assert all(checks["AT"][1].values()), "the AT model must pass the sanity checks"
masked_result, masked_passed = checks["masked (logits x 1e4)"]
assert masked_result["PGD-10 CE"] > 0.5, "PGD on CE should be fooled by the masked gradients"
assert masked_result["PGD-10 CW"] <= 0.05, "CW must expose the masked model (it is the standard model)"
assert not masked_passed["CW agrees with CE"], "the CE-vs-CW check must catch gradient masking"
assert acc_masked_no_start == clean["standard"], "with zero gradients and no random start PGD does not move"

# %% [markdown]
# The masked model is the standard model in disguise: it has **no** robustness at all, yet PGD on the
# cross-entropy reports a high "robust accuracy". Without a random start the attack does not move at all.
# The CW margin loss, which works on logits, breaks it completely, and at a large ε the CE attack still
# fails, which is impossible for an honest attack. When a defence looks robust, suspect the evaluation
# first; `s2o_lib.sanity.sanity_checks` packages such checks for the later notebooks.

# %% [markdown]
# ## Exercise: PGD in L2, by hand
# **To do 1.** Write `pgd_l2_by_hand(model, x, y, *, eps, alpha, steps)` without random start: the step is
# $\alpha\, g / \|g\|_2$ (per image), the projection rescales $\delta$ to length at most ε, then clip to
# $[0, 1]$. It returns `None` until you write it; the next cell checks it against
# `pgd(..., norm="l2", init="none")`. Then: why does the L2 step not need a `sign`?

# %%
def pgd_l2_by_hand(model, x, y, *, eps, alpha, steps):
    """L2 PGD from x itself (no random start): normalised gradient steps, projection onto the L2 ball."""
    # TO DO: a loop of `steps` steps; the per-image norm is t.flatten(1).norm(dim=1).view(-1, 1, 1, 1).


# %%
x_l2_hand = pgd_l2_by_hand(model_std, x, y, eps=eps_l2, alpha=eps_l2 / 4, steps=10)
if x_l2_hand is None:
    print("To do 1 is open: write pgd_l2_by_hand above and run this cell again.")
else:
    x_l2_lib = pgd(model_std, x, y, eps=eps_l2, alpha=eps_l2 / 4, steps=10, norm="l2", init="none")
    assert x_l2_hand.shape == x.shape, f"shape {tuple(x_l2_hand.shape)}, expected {tuple(x.shape)}"
    assert ((x_l2_hand - x).flatten(1).norm(dim=1) <= eps_l2 + 1e-4).all(), "δ must lie in the L2 ball"
    assert torch.allclose(x_l2_hand, x_l2_lib, atol=1e-5), "differs from pgd(..., norm='l2', init='none')"
    print("To do 1: correct.")

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# def pgd_l2_by_hand(model, x, y, *, eps, alpha, steps):
#     def norm(t):  # per-image L2 norm, shaped to broadcast over (B, C, H, W)
#         return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
#     x_adv = x.clone()
#     for _ in range(steps):
#         x_adv.requires_grad_(True)
#         (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
#         x_adv = x_adv.detach() + alpha * grad / norm(grad)             # normalised ascent step
#         delta = x_adv - x
#         delta = delta * (eps / norm(delta)).clamp(max=1.0)             # project onto the L2 ball
#         x_adv = (x + delta).clamp(0, 1)
#     return x_adv
# ```
#
# The steepest-ascent direction of a linear function $g^\top\delta$ over a unit ball is $\mathrm{sign}(g)$
# for L∞ (the corner) and $g/\|g\|_2$ for L2 (the gradient direction itself).
#
# </details>

# %% [markdown]
# ## Summary
# - PGD = random start + signed gradient step + projection onto the ε-ball + clipping to $[0, 1]$, repeated;
#   our `pgd_by_hand` matches `s2o_lib.attacks.pgd` image for image when both are seeded alike.
# - L∞ and L2 are different threat models: signed steps towards the corners of a cube versus gradient steps
#   inside a ball. Compare them only at radii chosen with care ($\varepsilon_2$ between ε and ε√d).
# - Use enough steps ($K\alpha$ well above ε), a step size around ε/4 to ε/10, random starts and restarts;
#   check CE against the CW margin loss; report targeted and untargeted numbers as such.
# - Adversarial training keeps accuracy at the training ε where standard training has none.
# - Sanity checks (accuracy → 0 at large ε, more steps do not help, CE ≈ CW) catch weak evaluations and
#   gradient masking, such as a model with logits scaled by $10^4$ that "looks robust" to PGD-CE.
#
# **Next:** 03 · Adversarial training: how the AT model used here is trained.
#
# **References**
# - I. Goodfellow, J. Shlens, C. Szegedy. *Explaining and Harnessing Adversarial Examples.* ICLR 2015.
# - A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. *Towards Deep Learning Models Resistant to
#   Adversarial Attacks.* ICLR 2018.
# - N. Carlini, D. Wagner. *Towards Evaluating the Robustness of Neural Networks.* IEEE S&P 2017.
# - N. Carlini, A. Athalye, N. Papernot, W. Brendel, J. Rauber, D. Tsipras, I. Goodfellow, A. Madry,
#   A. Kurakin. *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
# - A. Athalye, N. Carlini, D. Wagner. *Obfuscated Gradients Give a False Sense of Security: Circumventing
#   Defenses to Adversarial Examples.* ICML 2018.
