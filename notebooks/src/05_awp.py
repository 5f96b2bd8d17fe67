# %% [markdown]
# # 05 · AWP: adversarial weight perturbation and a flatter loss landscape
#
# Adversarial training perturbs the **inputs**. Wu, Xia & Wang (2020) observed that adversarially trained
# networks whose robust loss is **flat in weight space** generalise their robustness better, and proposed
# perturbing the **weights** too: Adversarial Weight Perturbation (AWP).
#
# **Learning goals.** After this notebook you can
#
# - say what a **flat weight–loss landscape** is and why it relates to the **robust generalisation gap**,
# - write AWP's **weight perturbation** yourself and check it against `s2o_lib.defenses.AWP.perturbation`,
# - draw a **1-D weight–loss landscape** along a filter-normalised random direction (Li et al. 2018),
# - measure the robust generalisation gap (train PGD accuracy − test PGD accuracy) with and without AWP.

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from s2o_lib.attacks import pgd
from s2o_lib.config import get_profile
from s2o_lib.data import tensors
from s2o_lib.defenses import AWP
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import device_of
from s2o_lib.zoo import profile_data, trained_model

# %% [markdown]
# ## The profile
# In `smoke` everything is small: 6 epochs (AWP is active from epoch `awp_warmup` = 2 on), the landscape is
# scanned at 13 points on **one fixed batch of 256 training images** whose adversarial examples are computed
# **once per model** (at the trained weights) and then held fixed along the scan, and the gap is measured on
# a few hundred images.

# %%
profile = get_profile()
print(f"profile: {profile.name}")
print(f"dataset {profile.dataset}, model {profile.arch}, {profile.epochs} epochs, eps = {profile.eps:.4f}, "
      f"PGD-{profile.train_steps} training, AWP warm-up {profile.awp_warmup} epoch(s)")
print(profile.notes)

# %% [markdown]
# ## Flatness and AWP
# Write $\rho(w) = \frac1n\sum_i \max_{\|x_i'-x_i\|_\infty\le\varepsilon}\ell(f_w(x_i'), y_i)$ for the robust
# training loss. Two networks can have the same $\rho(w)$ but a very different neighbourhood: one sits in a
# narrow valley, where a small change of the weights makes the robust loss shoot up, the other in a wide,
# flat one. Wu et al. found that a flatter robust loss goes with a smaller gap between robust training and
# robust test accuracy, and trained for flatness directly:
#
# $$
# \min_w\; \max_{v:\ \|v_l\| \le \gamma\|w_l\| \ \forall l}\; \rho(w + v).
# $$
#
# The weight perturbation $v$ is **relative**: for every layer $l$ its norm is at most γ times that layer's
# weight norm (the AWP authors use γ = 10⁻² in their AT script and 5·10⁻³ in their TRADES script;
# `s2o_lib.defenses.AWP_DEFAULTS` holds both), so it means the same for big and small layers. Like the inner attack, the inner
# max is approximated — with a **single** ascent step:
#
# 1. copy the model to a **proxy**, take one SGD step on the proxy that *increases* the loss (learning rate
#    η = 0.01),
# 2. for every weight tensor take the change $u_l = w_l^{\text{proxy}} - w_l$ and rescale it to
#    $v_l = \gamma\,\|w_l\|\; u_l / \|u_l\|$ (BatchNorm parameters and biases are left alone),
# 3. compute the training loss and its gradient at $w + v$, restore $w$ and step.
#
# The proxy keeps the real model's BatchNorm statistics untouched.

# %%
def awp_perturbation_by_hand(model, loss_fn, *, gamma, lr):
    """AWP's weight perturbation: one ascent step on a proxy copy, then γ‖W‖·u/‖u‖ per weight tensor."""
    proxy = copy.deepcopy(model).train()
    params = [p for p in proxy.parameters()]
    grads = torch.autograd.grad(loss_fn(proxy), params)
    diff = {}
    with torch.no_grad():
        for (name, w), g in zip(model.named_parameters(), grads):
            if w.ndim <= 1:                    # BatchNorm weights and all biases stay unperturbed
                continue
            u = (w + lr * g) - w               # the proxy's ascent step, as the change it makes to w
            diff[name] = gamma * w.norm() / (u.norm() + 1e-20) * u
    return diff

# %% [markdown]
# We compare it with the library's `AWP.perturbation` on the cached AT+AWP model, with the plain PGD-AT loss
# on a batch of adversarial examples, the same γ and the same proxy learning rate.

# %%
# NBVAL_IGNORE_OUTPUT
model_awp, hist_awp = trained_model("at+awp")
model_at, hist_at = trained_model("at")              # shared with notebook 03
model_std, hist_std = trained_model("standard")

# %%
train_set, test_set = profile_data(profile)
device = device_of(model_awp)  # the profile's device: the batch goes where the models are
x_batch, y_batch = (t.to(device) for t in tensors(train_set, n=256))
torch.manual_seed(0)
x_adv_batch = pgd(model_awp, x_batch[:64], y_batch[:64], eps=profile.eps, alpha=profile.alpha,
                  steps=profile.train_steps)


def at_loss(m):
    return F.cross_entropy(m(x_adv_batch), y_batch[:64])


gamma, proxy_lr = 5e-3, 0.01
mine = awp_perturbation_by_hand(model_awp, at_loss, gamma=gamma, lr=proxy_lr)
library = AWP(model_awp, gamma=gamma, lr=proxy_lr).perturbation(at_loss)

# %%
assert mine.keys() == library.keys(), "the same weight tensors must be perturbed"
for name in mine:
    assert torch.allclose(mine[name], library[name], rtol=1e-4, atol=1e-7), name
    weight = dict(model_awp.named_parameters())[name]
    assert torch.isclose(mine[name].norm(), gamma * weight.norm(), rtol=1e-4), "‖v_l‖ must be γ‖w_l‖"
print("perturbed tensors:", ", ".join(mine))

# %% [markdown]
# ## A 1-D weight–loss landscape
# Li et al. (2018) plot $L(w + \alpha d)$ along a random direction $d$. A plain Gaussian $d$ would be misleading:
# ReLU networks with BatchNorm are scale-invariant, so a network with large weights looks flatter only because
# the same step is relatively smaller. **Filter normalisation** fixes this: for every filter (row) $i$ of a
# weight tensor, $d_i \leftarrow d_i \cdot \|w_i\| / \|d_i\|$; biases and BatchNorm parameters get $d = 0$.
# Then $\alpha = \pm1$ moves every filter by its own norm, the same relative amount in every network.
#
# The loss we scan is the **robust training loss**: cross-entropy on adversarial examples of a fixed training
# batch. To keep it cheap we attack once per model, at the trained weights (PGD-10), and keep those $x'$ fixed
# along the scan — strictly this is a lower bound on the robust loss away from $\alpha = 0$ (re-attacking at
# every point would give the exact curve at 13× the cost).

# %%
def filter_normalised_direction(model, seed=0):
    """A random direction with each filter scaled to the norm of the matching filter of the weights."""
    generator = torch.Generator().manual_seed(seed)
    direction = {}
    for name, w in model.named_parameters():
        if w.ndim <= 1:
            direction[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator).to(w.device)  # drawn on the CPU: the same on every device
        scale = w.detach().flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1).clamp_min(1e-12)
        direction[name] = d * scale.view(-1, *([1] * (w.ndim - 1)))
    return direction


def loss_landscape(model, x, y, alphas, *, seed=0):
    """Cross-entropy on the fixed batch (x, y) at w + α·d for each α; the weights are restored afterwards."""
    model.eval()
    direction = filter_normalised_direction(model, seed)
    params = dict(model.named_parameters())
    original = {name: p.detach().clone() for name, p in params.items()}
    losses = []
    with torch.no_grad():
        for a in alphas:
            for name, p in params.items():
                p.copy_(original[name] + a * direction[name])
            losses.append(F.cross_entropy(model(x), y).item())
        for name, p in params.items():
            p.copy_(original[name])
    return np.array(losses)

# %%
alphas = np.linspace(-1, 1, 13)
models = {"standard": model_std, "PGD-AT": model_at, "AT+AWP": model_awp}
saved = {name: copy.deepcopy(m.state_dict()) for name, m in models.items()}
landscapes = {}
for name, m in models.items():
    torch.manual_seed(0)
    x_adv = pgd(m, x_batch, y_batch, eps=profile.eps, alpha=profile.eval_alpha, steps=10)  # once per model
    landscapes[name] = loss_landscape(m, x_adv, y_batch, alphas, seed=0)

# %%
for name, m in models.items():
    state = m.state_dict()
    assert all(torch.equal(state[k], saved[name][k]) for k in state), f"{name}: weights not restored exactly"

# %%
# REPORT: Robust (PGD) training loss along a filter-normalised random direction: standard vs PGD-AT vs AT+AWP.
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
for name, losses in landscapes.items():
    color = f"C{list(landscapes).index(name)}"
    ax1.plot(alphas, losses, "o-", ms=3, color=color, label=name)
    if name != "standard":  # the right panel zooms in on the two adversarially trained models
        ax2.plot(alphas, losses - losses[len(alphas) // 2], "o-", ms=3, color=color, label=name)
ax1.set_yscale("log")
ax1.set_title("robust training loss L(w + αd)")
ax2.set_title("adversarially trained: L(w + αd) − L(w)")
for ax in (ax1, ax2):
    ax.set_xlabel("α (filter-normalised direction)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
for name, losses in landscapes.items():
    mid = len(alphas) // 2
    print(f"{name:9s} L(w) = {losses[mid]:.3f}   L(w ± d) = {losses[0]:.3f} / {losses[-1]:.3f}")

# %% [markdown]
# The standard model's robust loss is high everywhere: its adversarial examples fool it completely. The two
# adversarially trained models have a low robust loss at α = 0, and the question is how fast it rises. In the
# paper's CIFAR-10 runs AWP's curve is clearly the flatter one. In `smoke` — six epochs, AWP active for five of
# them, γ = 10⁻² (the AT script's), one random direction — the difference can be small, and which curve is flatter along a
# *single* direction can change with the seed; Exercise 1 averages over several.
#
# ## The robust generalisation gap
# The gap is PGD accuracy on training images minus PGD accuracy on test images. We use PGD-20 on the same
# number of training and test images.

# %%
# NBVAL_IGNORE_OUTPUT
n_gap = min(len(test_set), 360)
evaluation = dict(attacks=("clean", "pgd20"), eps=profile.eval_eps, alpha=profile.eval_alpha, n=n_gap)
gap = {}
for name in ("PGD-AT", "AT+AWP"):
    on_train = robust_accuracy(models[name], train_set, **evaluation)
    on_test = robust_accuracy(models[name], test_set, **evaluation)
    gap[name] = (on_train, on_test)
    print(f"{name:7s} train: clean {on_train['clean']:.3f} PGD-20 {on_train['pgd20']:.3f} | "
          f"test: clean {on_test['clean']:.3f} PGD-20 {on_test['pgd20']:.3f} | "
          f"gap {on_train['pgd20'] - on_test['pgd20']:+.3f}")
on_test_std = robust_accuracy(model_std, test_set, **evaluation)

# %%
# REPORT: Robust (PGD-20) accuracy on training and test images, and their gap, with and without AWP.
fig, ax = plt.subplots(figsize=(5.5, 3.6))
names = list(gap)
positions = np.arange(len(names))
train_acc = [gap[n][0]["pgd20"] for n in names]
test_acc = [gap[n][1]["pgd20"] for n in names]
ax.bar(positions - 0.2, train_acc, width=0.4, label="train PGD-20")
ax.bar(positions + 0.2, test_acc, width=0.4, label="test PGD-20")
for p, a, b in zip(positions, train_acc, test_acc):
    ax.annotate(f"gap {a - b:+.3f}", (p, max(a, b)), textcoords="offset points", xytext=(0, 4), ha="center")
ax.set_xticks(positions, names)
ax.set_ylabel("PGD-20 accuracy")
ax.set_ylim(0, 1)
ax.legend(fontsize=8, loc="lower right")
ax.set_title(f"robust generalisation gap ({profile.name})")
plt.show()

# %%
for on_train, on_test in gap.values():
    for r in (on_train, on_test):
        assert r["pgd20"] <= r["clean"], "robust accuracy can never exceed clean accuracy"
assert gap["AT+AWP"][1]["pgd20"] > on_test_std["pgd20"] + 0.1, "AT+AWP must beat standard training under PGD"
assert gap["PGD-AT"][1]["pgd20"] > on_test_std["pgd20"] + 0.1, "PGD-AT must beat standard training under PGD"

# %% [markdown]
# **Honestly, in `smoke`:** the gap is small for both models — six epochs on the digits are too few to
# overfit adversarially — so AWP has little to close, and the two bars may differ by a few images either way.
# With the long schedules of the `paper` profile PGD-AT's robust training accuracy climbs far above its test
# accuracy (robust overfitting, notebook 03), and AWP is what keeps the gap small: on CIFAR-10 RobustBench
# lists TRADES-AWP at 56.17% AutoAttack accuracy against 53.08% for TRADES (WRN-34-10).
#
# ## Exercise
# 1. One random direction is one sample. Average the landscape of each model over five directions
#    (`seed=0..4`). Is AT+AWP flatter on average?
# 2. Train AT+AWP with a twice larger γ (`awp_gamma=0.02`) and add it to the landscape and the gap.
#
# <details><summary>Solution</summary>
#
# ```python
# # 1. five filter-normalised directions per model, adversarial examples computed once per model
# for name, m in models.items():
#     torch.manual_seed(0)
#     x_adv = pgd(m, x_batch, y_batch, eps=profile.eps, alpha=profile.eval_alpha, steps=10)
#     mean = np.mean([loss_landscape(m, x_adv, y_batch, alphas, seed=s) for s in range(5)], axis=0)
#     plt.plot(alphas, mean - mean[len(alphas) // 2], label=name)
# plt.legend(); plt.show()
#
# # 2. a run whose settings differ from the profile's needs its own tag
# model_big, _ = trained_model("at+awp", tag="gamma0.02", awp_gamma=0.02)
# ```
#
# 1. Averaging removes most of the direction-to-direction noise; on CIFAR-10 AWP's average curve is clearly
#    flatter. On the smoke digits expect a small difference.
# 2. A larger γ flattens the landscape further but, past a point, costs clean and robust accuracy: the model
#    is trained for the worst case of a bigger weight neighbourhood than it needs. Wu et al. use γ = 10⁻² for AT
#    and 5·10⁻³ for TRADES on CIFAR-10.
# </details>

# %% [markdown]
# ## Summary
# - AWP solves $\min_w \max_{\|v_l\|\le\gamma\|w_l\|}\rho(w+v)$: one ascent step on a proxy copy, rescaled to
#   γ‖W‖ per weight tensor, then the training gradient at $w + v$ — about one extra forward/backward per step.
# - The written-out perturbation matches `AWP.perturbation`; the model's own weights are restored exactly.
# - Filter-normalised directions make loss landscapes of different networks comparable.
# - Flatness of the robust loss in weight space goes with a smaller robust generalisation gap; AWP aims for
#   it directly. In `smoke` both effects are small.
# - As always, judge robustness with strong attacks (Carlini et al. 2019).
#
# **References**
# - D. Wu, S.-T. Xia, Y. Wang. *Adversarial Weight Perturbation Helps Robust Generalization.* NeurIPS 2020.
# - H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein. *Visualizing the Loss Landscape of Neural Nets.*
#   NeurIPS 2018.
# - A. Madry et al. *Towards Deep Learning Models Resistant to Adversarial Attacks.* ICLR 2018.
# - L. Rice, E. Wong, J. Z. Kolter. *Overfitting in Adversarially Robust Deep Learning.* ICML 2020.
# - H. Zhang et al. *Theoretically Principled Trade-off between Robustness and Accuracy.* ICML 2019 (TRADES).
# - N. Carlini et al. *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
