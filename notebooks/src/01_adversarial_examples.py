# %% [markdown]
# # 01 · Adversarial examples: why tiny perturbations fool a network
#
# A network that reads almost every test digit correctly can be made to misread most of them by moving every
# pixel a little, in a direction computed from its gradient — while random noise of the same size costs only a
# few digits. How little? In the `smoke` profile (the table of "Accuracy versus ε" below), FGSM at 5 % of the pixel
# range leaves the standard model about half of the digits, at 10 % only a few, and at 15 % — where the change
# is visible but the digits are still easy to read — almost none. This notebook shows why, first on a picture
# you can look at, then on images.
#
# **Learning goals.** After this notebook you can
#
# - say what an **adversarial example** and a **threat model** (the ε-ball around an input) are,
# - see on a **2-D toy problem** how a small step inside the ε-ball crosses the decision boundary,
# - explain with a **linear model** why the damage grows with the input dimension: $w^\top(\varepsilon\,
#   \mathrm{sign}\, w) = \varepsilon\|w\|_1$,
# - write the **Fast Gradient Sign Method (FGSM)** yourself and check it against `s2o_lib.attacks.fgsm`,
# - read an **accuracy-versus-ε** curve, and see how much less random noise of the same size does.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from sklearn.datasets import make_moons
from torch import nn

from s2o_lib.attacks import fgsm
from s2o_lib.config import get_device, get_profile, seed_everything
from s2o_lib.data import dataset_info, tensors
from s2o_lib.plots import image_grid, plot_accuracy_vs_eps
from s2o_lib.widgets import epsilon_explorer, epsilon_figure
from s2o_lib.zoo import profile_data, trained_model

# %% [markdown]
# ## The profile
# Every size below comes from the active profile (`S2O_PROFILE`). In `smoke` the notebook runs in seconds on
# a CPU: 16×16 digits, a small CNN and an L∞ radius ε = 0.15 (digits need a larger radius than CIFAR's 8/255).

# %%
profile = get_profile()
device = get_device()
if device.type == "cpu":
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and does not fight over shared cores
print(f"profile: {profile.name}")
print(f"dataset {profile.dataset}, model {profile.arch}, threat model: L-inf eps = {profile.eps:.4f}")
print(profile.notes)

# %% [markdown]
# ## What is an adversarial example?
# A classifier $f$ maps an input $x$ to a label. An **adversarial example** for $(x, y)$ is an input
# $x' = x + \delta$ that a human would still label $y$, but that $f$ labels differently. "A human would
# still label it $y$" is made precise by a **threat model**: here the L∞ ball
#
# $$
# B_\infty(x, \varepsilon) = \{x' : \|x' - x\|_\infty \le \varepsilon,\ x' \in [0, 1]^d\},
# $$
#
# every pixel may move by at most ε, and the result must still be an image. The attacker looks for the
# point of the ball where the loss is largest: $\max_{x' \in B_\infty(x, \varepsilon)} \ell(f(x'), y)$.

# %% [markdown]
# ## A picture first: two moons in the unit square
# Two interleaved half-circles, scaled into $[0, 1]^2$ so that they live in the same box as pixel values.
# A tiny MLP learns to separate them in about a second.

# %% tags=["nbval-ignore-output"]
seed_everything(0)
points, labels = make_moons(n_samples=400, noise=0.1, random_state=0)
points = (points - points.min(0)) / (points.max(0) - points.min(0))  # scale into [0, 1]^2
X_toy = torch.tensor(points, dtype=torch.float32)
Y_toy = torch.tensor(labels)

toy = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
opt = torch.optim.Adam(toy.parameters(), lr=0.02)
for _ in range(300):
    opt.zero_grad()
    F.cross_entropy(toy(X_toy), Y_toy).backward()
    opt.step()
toy.eval()
with torch.no_grad():
    toy_acc = (toy(X_toy).argmax(1) == Y_toy).float().mean().item()
print(f"toy MLP training accuracy: {toy_acc:.2f}")

# %%
assert toy_acc > 0.9, "the toy MLP should separate the moons"

# %% [markdown]
# Now take one correctly classified point, draw its ε-ball (a **square** for L∞: each coordinate moves by
# at most ε) and take one FGSM step, $x' = x + \varepsilon\,\mathrm{sign}\,\nabla_x \ell$. The gradient
# sign sends the point to a **corner** of the square, the corner where the loss grows fastest. The library's
# `fgsm` works on any batch in $[0, 1]$, including 2-D points.

# %% tags=["nbval-ignore-output"]
eps_toy = 0.08
X_adv_toy = fgsm(toy, X_toy, Y_toy, eps=eps_toy)
with torch.no_grad():
    pred_toy, pred_adv_toy = toy(X_toy).argmax(1), toy(X_adv_toy).argmax(1)
flipped = (pred_toy == Y_toy) & (pred_adv_toy != Y_toy)
print(f"FGSM with eps = {eps_toy} flips {int(flipped.sum())} of the {len(Y_toy)} points from right to wrong")

# %%
assert flipped.any(), "some points near the boundary must be flipped"
assert ((X_adv_toy - X_toy).abs() <= eps_toy + 1e-6).all()
assert X_adv_toy.min() >= 0 and X_adv_toy.max() <= 1

# %% report="A 2-D toy problem: the decision boundary, the L∞ ε-ball (square) of one point and the FGSM step that crosses the boundary."
grid = torch.linspace(0, 1, 200)
gx, gy = torch.meshgrid(grid, grid, indexing="xy")
with torch.no_grad():
    prob = toy(torch.stack([gx.flatten(), gy.flatten()], 1)).softmax(1)[:, 1].view(200, 200)
i = int(torch.nonzero(flipped)[0])  # the first flipped point
p, q = X_toy[i], X_adv_toy[i]

fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
for ax, zoom in zip(axes, (False, True)):
    ax.contourf(gx, gy, prob, levels=20, cmap="RdBu_r", alpha=0.6)  # red region: class 1
    ax.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.5)
    ax.scatter(*X_toy.T, c=Y_toy, cmap="bwr", s=8, edgecolors="k", linewidths=0.2)
    ax.add_patch(plt.Rectangle((p[0] - eps_toy, p[1] - eps_toy), 2 * eps_toy, 2 * eps_toy,
                               fill=False, color="gold", lw=2, label=f"L∞ ball, ε = {eps_toy}"))
    ax.annotate("", xy=q.cpu().numpy(), xytext=p.cpu().numpy(), arrowprops=dict(arrowstyle="->", color="k", lw=2))
    ax.plot(*p, "o", color="lime", ms=9, mec="k", label="clean point")
    ax.plot(*q, "X", color="yellow", ms=11, mec="k", label="after one FGSM step")
    ax.set_aspect("equal")
    if zoom:
        ax.set_xlim(p[0] - 3 * eps_toy, p[0] + 3 * eps_toy)
        ax.set_ylim(p[1] - 3 * eps_toy, p[1] + 3 * eps_toy)
        ax.set_title("zoomed in: the step lands in a corner of the square")
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title("decision boundary (black) of the toy MLP")
axes[0].legend(loc="lower left", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# In two dimensions an ε-ball of side 0.16 is a sizeable patch, and only points near the boundary can be
# flipped. Images have **hundreds or thousands** of dimensions; the next section shows why that changes
# everything.

# %% [markdown]
# ## Why high dimension hurts: the linear argument
# Goodfellow et al. (2015) explain adversarial examples with a *linear* model $f(x) = w^\top x$. Inside the
# L∞ ball the change $w^\top\delta$ is largest for $\delta = \varepsilon\,\mathrm{sign}(w)$:
#
# $$
# \max_{\|\delta\|_\infty \le \varepsilon} w^\top \delta = \varepsilon\, w^\top \mathrm{sign}(w)
#   = \varepsilon \|w\|_1 \approx \varepsilon\, d\, \overline{|w_i|}.
# $$
#
# Each coordinate changes by only ε, but the effects all **add up in the same direction**, so the change of
# the output grows **linearly in the dimension** $d$. Random noise of the same size points in random
# directions; its effects mostly cancel and grow only like $\varepsilon\|w\|_2 \approx \varepsilon\sqrt{d}$.

# %% tags=["nbval-ignore-output"]
torch.manual_seed(0)
eps_lin = 0.01
dims = [2, 16, 64, 256, 1024, 3072, 12288]
worst, noise = [], []
for d in dims:
    w = torch.randn(d)
    worst.append(float(w @ (eps_lin * w.sign())))                 # the worst case: eps * ||w||_1
    random_signs = torch.randint(0, 2, (200, d)).float() * 2 - 1  # random corners of the ball
    noise.append(float((random_signs * eps_lin @ w).abs().mean()))
    assert math.isclose(worst[-1], eps_lin * float(w.abs().sum()), rel_tol=1e-4)
    assert (random_signs * eps_lin @ w).max() <= worst[-1] + 1e-4  # no corner beats sign(w)
for d, a, b in zip(dims, worst, noise):
    print(f"d = {d:6d}: change of w.x under eps*sign(w) = {a:8.3f}, under random signs = {b:6.3f}")

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.loglog(dims, worst, "o-", label="ε·sign(w): ε‖w‖₁ ∝ d")
ax.loglog(dims, noise, "s-", label="random ±ε: ∝ √d")
for d, name in [(256, "16×16 digits"), (3072, "CIFAR-10")]:
    ax.axvline(d, color="grey", ls=":", lw=1)
    ax.text(d, max(worst) * 0.6, name, rotation=90, fontsize=8, ha="right")
ax.set_xlabel("input dimension d")
ax.set_ylabel(f"change of wᵀx (ε = {eps_lin})")
ax.legend(fontsize=8)
ax.grid(alpha=0.3, which="both")
plt.tight_layout()
plt.show()

# %% [markdown]
# Networks with ReLUs are *piecewise linear*, and they are trained to be fairly linear around the data, so
# the same argument applies to them locally: the **sign of the input gradient** is the direction to push.

# %% [markdown]
# ## FGSM, written out
# The **Fast Gradient Sign Method** takes one step of size ε along the sign of the gradient of the
# cross-entropy with respect to the input, then clips back into the image box:
#
# $$
# x' = \mathrm{clip}_{[0, 1]}\big(x + \varepsilon\,\mathrm{sign}\,\nabla_x \ell(f(x), y)\big).
# $$
#
# Two details: the model is in **eval mode** (BatchNorm must not update its statistics while we attack),
# and we sum the loss over the batch so that each image gets the gradient of its own loss.

# %%
def fgsm_by_hand(model, x, y, *, eps):
    """One signed-gradient step of size eps on the cross-entropy, clipped to [0, 1]."""
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return (x.detach() + eps * grad.sign()).clamp(0, 1)

# %% [markdown]
# ## The images and the model
# `trained_model("standard")` trains the profile's model with ordinary cross-entropy the first time and
# loads it from `runs/` afterwards. We attack the first 200 test images.

# %% tags=["nbval-ignore-output"]
model, history = trained_model("standard")
_, test = profile_data(profile)
x, y = tensors(test, n=min(profile.eval_n, 200))
x, y = x.to(device), y.to(device)
info = dataset_info(profile.dataset)


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


clean_acc = accuracy(model, x, y)
print(f"{len(y)} test images, clean accuracy of the standard model: {clean_acc:.3f}")

# %% [markdown]
# Does our FGSM agree with the library's? It should give the same images (up to a rounding error of the
# last bit) and so the same predictions.

# %%
x_hand = fgsm_by_hand(model, x, y, eps=profile.eps)
x_lib = fgsm(model, x, y, eps=profile.eps)
assert torch.allclose(x_hand, x_lib, atol=1e-6), "fgsm_by_hand must match s2o_lib.attacks.fgsm"
with torch.no_grad():
    assert torch.equal(model(x_hand).argmax(1), model(x_lib).argmax(1))
assert ((x_lib - x).abs() <= profile.eps + 1e-6).all(), "perturbations must lie in the eps-ball"
assert x_lib.min() >= 0 and x_lib.max() <= 1, "adversarial images must stay in [0, 1]"
fgsm_acc = accuracy(model, x_lib, y)
assert fgsm_acc <= clean_acc, "robust accuracy cannot exceed clean accuracy"
print("fgsm_by_hand matches s2o_lib.attacks.fgsm")

# %% tags=["nbval-ignore-output"]
print(f"clean accuracy {clean_acc:.3f} -> under FGSM (eps = {profile.eps}) {fgsm_acc:.3f}")

# %% [markdown]
# ## Look at them
# Top row: clean test images with the model's predictions. Middle: the same images after FGSM. Bottom: the
# perturbation $\delta = x' - x$ (grey is zero). To us the middle row still shows the same digits.

# %% report="Clean test digits (top), their FGSM adversarial versions (middle) and the perturbation (bottom), with the standard model's predictions."
with torch.no_grad():
    pred_clean, pred_adv = model(x).argmax(1), model(x_lib).argmax(1)
fig = image_grid(
    {"clean": x, f"FGSM ε={profile.eps}": x_lib, "δ = x' − x": x_lib - x},
    titles={"clean": [f"pred {int(p)}" for p in pred_clean],
            f"FGSM ε={profile.eps}": [f"pred {int(p)}" for p in pred_adv]},
    max_images=8,
)
plt.show()

# %% [markdown]
# ## Explore ε yourself
# The figure above used the profile's ε. The slider below starts at a third of it and goes up to twice it:
# drag it (or click its handle and use the arrow keys). At which ε do the predictions start to change, and at
# which ε do *you* stop recognising the digits? The slider needs a running kernel; the picture above it is its
# starting point, kept for a notebook opened without one.

# %% tags=["nbval-ignore-output"]
epsilon_figure(model, x[:6], y[:6], eps=profile.eps / 3, attack="fgsm")  # the slider's start, as a picture
plt.show()
epsilon_explorer(model, x[:6], y[:6], max_eps=2 * profile.eps, eps=profile.eps / 3, attack="fgsm")

# %% [markdown]
# ## Accuracy versus ε
# One number per radius: the fraction of test images still classified correctly after FGSM. As a control
# we add **random ±ε noise** (a random corner of the same ball): same size, random direction.

# %%
eps_grid = [profile.eps * m for m in (0, 1 / 6, 1 / 3, 2 / 3, 1, 4 / 3, 2)]  # smoke: 0, 0.025, ..., 0.3
torch.manual_seed(0)
acc_fgsm, acc_noise = [], []
for eps in eps_grid:
    x_adv = fgsm(model, x, y, eps=eps) if eps > 0 else x
    x_noise = (x + eps * (torch.randint_like(x, 0, 2) * 2 - 1)).clamp(0, 1)
    acc_fgsm.append(accuracy(model, x_adv, y))
    acc_noise.append(accuracy(model, x_noise, y))

# %% tags=["nbval-ignore-output"]
for eps, a, b in zip(eps_grid, acc_fgsm, acc_noise):
    print(f"eps = {eps:5.3f}: FGSM {a:.3f}   random noise {b:.3f}")

# %% report="Accuracy of the standard model under FGSM and under random noise of the same L∞ size."
ax = plot_accuracy_vs_eps({"FGSM": (eps_grid, acc_fgsm), "random ±ε noise": (eps_grid, acc_noise)},
                          eps_marker=profile.eps)
ax.set_ylabel("test accuracy")
ax.set_title("standard model: the direction matters, not the size")
plt.tight_layout()
plt.show()

# %%
assert acc_fgsm[0] == clean_acc
assert all(a <= clean_acc for a in acc_fgsm), "robust accuracy cannot exceed clean accuracy"
k = 4  # eps_grid[4] is the profile's eps
assert acc_fgsm[k] < acc_noise[k], "FGSM must hurt more than random noise of the same size"
assert acc_fgsm[-1] < 0.5 * clean_acc, "a large eps must break a standard model"

# %% jupyter={"source_hidden": true}
if profile.name == "smoke":  # the prose's numbers: eps_grid[2, 3, 4, 6] = 0.05, 0.10, 0.15, 0.3
    assert clean_acc > 0.95, "almost every test digit is read correctly"
    assert 0.4 <= acc_fgsm[2] <= 0.7, "about half survive FGSM at 5 % of the pixel range"
    assert acc_fgsm[3] < 0.15, "only a few at 10 %"
    assert acc_fgsm[4] < 0.05, "almost none at 15 %"
    assert min(acc_noise[:5]) > 0.9, "up to the profile's eps random noise costs only a few digits"
    assert 0.55 <= acc_noise[-1] <= 0.75, "at twice the profile's eps it leaves about two thirds"

# %% [markdown]
# Up to the profile's ε (0.15) random noise costs the standard model only a few digits, while FGSM at the same
# ε leaves almost none; only at twice that ε does noise cost about a third of them. FGSM is only the
# *first* step of a search: notebook 02 iterates it (PGD) and finds adversarial examples where FGSM fails.

# %% [markdown]
# ## Exercise: a targeted FGSM
# **To do 1.** FGSM pushes *away* from the true label. A **targeted** attack pushes *towards* a chosen class
# $t$ by stepping **down** the loss of $t$: $x' = \mathrm{clip}(x - \varepsilon\,\mathrm{sign}\,\nabla_x
# \ell(f(x), t))$. Write `targeted_fgsm_by_hand` in the next cell (it returns `None` until you do); the cell
# after it checks it against `fgsm(..., targeted=True)` with the targets $t = (y + 1) \bmod 10$ and measures
# how often the model predicts $t$. Is a targeted attack easier or harder than an untargeted one at the same ε?

# %%
def targeted_fgsm_by_hand(model, x, t, *, eps):
    """One signed-gradient step *down* the cross-entropy of the target classes t, clipped to [0, 1]."""
    # TO DO: like fgsm_by_hand, with the target t instead of y and a minus sign.


# %%
t = (y + 1) % info.num_classes
x_t = targeted_fgsm_by_hand(model, x, t, eps=profile.eps)
if x_t is None:
    print("To do 1 is open: write targeted_fgsm_by_hand above and run this cell again.")
else:
    x_t_lib = fgsm(model, x, t, eps=profile.eps, targeted=True)
    assert x_t.shape == x.shape, f"shape {tuple(x_t.shape)}, expected {tuple(x.shape)}"
    assert torch.allclose(x_t, x_t_lib, atol=1e-6), "differs from fgsm(..., targeted=True): check the sign"
    print(f"To do 1: correct. Hits the target: {accuracy(model, x_t, t):.3f}; "
          f"misclassified: {1 - accuracy(model, x_t, y):.3f}; untargeted FGSM misclassifies {1 - fgsm_acc:.3f}")

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# def targeted_fgsm_by_hand(model, x, t, *, eps):
#     x = x.detach().clone().requires_grad_(True)
#     loss = F.cross_entropy(model(x), t, reduction="sum")
#     (grad,) = torch.autograd.grad(loss, x)
#     return (x.detach() - eps * grad.sign()).clamp(0, 1)   # minus: descend the target's loss
# ```
#
# Hitting one *given* wrong class is harder than hitting *any* wrong class, so the target success rate is
# lower than the untargeted error rate at the same ε (a one-step attack may also overshoot into a third
# class). Notebook 02 does targeted attacks with PGD.
#
# </details>

# %% [markdown]
# ## Summary
# - An adversarial example is a point of the threat set (here the L∞ ε-ball, inside $[0, 1]^d$) that the
#   model misclassifies. In 2-D only points near the boundary have one; in high dimension almost all do.
# - For a linear model the worst L∞ perturbation is $\varepsilon\,\mathrm{sign}(w)$ and changes the output
#   by $\varepsilon\|w\|_1$, which grows with $d$; random noise of the same size grows only like $\sqrt d$.
# - FGSM is one signed-gradient step: $x' = \mathrm{clip}(x + \varepsilon\,\mathrm{sign}\nabla_x\ell)$. Our
#   `fgsm_by_hand` matches `s2o_lib.attacks.fgsm`.
# - A standard model's accuracy falls under FGSM as ε grows — in `smoke` to about half at ε = 0.05, a small
#   fraction at ε = 0.10 and almost zero at ε = 0.15 — while random noise of the same size keeps it above 0.9
#   up to ε = 0.15 and near two thirds at ε = 0.3.
#
# **Next:** 02 · PGD and evaluation: stronger attacks, and how to evaluate robustness without fooling yourself.
#
# **References**
# - I. Goodfellow, J. Shlens, C. Szegedy. *Explaining and Harnessing Adversarial Examples.* ICLR 2015.
# - C. Szegedy et al. *Intriguing properties of neural networks.* ICLR 2014.
# - A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. *Towards Deep Learning Models Resistant to
#   Adversarial Attacks.* ICLR 2018.
