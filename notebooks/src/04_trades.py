# %% [markdown]
# # 04 · TRADES: trading clean accuracy for robustness, on purpose
#
# PGD-AT (notebook 03) trains only on adversarial inputs, and its clean accuracy drops. TRADES (Zhang et al.
# 2019) splits the objective into a **clean** part and a **robustness** part and puts a knob, β, between them.
#
# **Learning goals.** After this notebook you can
#
# - describe the **robustness–accuracy trade-off** and where TRADES' two terms come from,
# - write the **TRADES loss** yourself and check it against `s2o_lib.defenses.trades_loss`,
# - write TRADES' **KL attack** yourself, check it against `s2o_lib.attacks.trades_kl_attack`, and explain why
#   it needs no labels, starts next to $x$ — and why PGD on the cross-entropy can reach a *larger* KL,
# - run a **β sweep** and read the clean-versus-PGD plot it produces.

# %%
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from s2o_lib.attacks import pgd, trades_kl_attack
from s2o_lib.config import get_profile
from s2o_lib.data import make_loader
from s2o_lib.defenses import trades_loss
from s2o_lib.evaluate import robust_accuracy
from s2o_lib.models import device_of
from s2o_lib.zoo import profile_data, trained_model

# %% [markdown]
# ## The profile
# In `smoke` (CPU, seconds) the β sweep is shrunk to **three values, β ∈ {0.5, 2, 6}**, each trained for the
# profile's 6 epochs on the digits with PGD-5; the paper-style sweep uses more values and full training.

# %%
profile = get_profile()
print(f"profile: {profile.name}")
print(f"dataset {profile.dataset}, model {profile.arch}, {profile.epochs} epochs, eps = {profile.eps:.4f}, "
      f"training attack: {profile.attack_steps} steps of {profile.alpha:.4f}")
print(profile.notes)

# %% [markdown]
# ## The trade-off
# Zhang et al. split the **robust error** — the chance that some point of the ε-ball around $x$ is
# misclassified — into the **natural error** (x itself is wrong) plus the **boundary error** (x is right, but
# a point of its ball is on the other side of the decision boundary). Bounding the second with a smooth
# surrogate gives the TRADES objective:
#
# $$
# \min_\theta\; \mathbb E\Big[\underbrace{\mathrm{CE}\big(f_\theta(x), y\big)}_{\text{be accurate}}
# \;+\; \beta\,\underbrace{\max_{\|x'-x\|_\infty\le\varepsilon}
#   \mathrm{KL}\big(f_\theta(x)\,\big\|\,f_\theta(x')\big)}_{\text{be smooth around } x}\Big],
# $$
#
# with $f_\theta(\cdot)$ the softmax probabilities. The first term asks for correct clean predictions; the
# second asks the prediction not to change inside the ball, *whatever the label*. Large β buys robustness with
# clean accuracy; β → 0 is standard training. The papers (and S²O's code) use β = 6.

# %% [markdown]
# ## The TRADES loss, written out
# $\mathrm{KL}(p\,\|\,q) = \sum_k p_k(\log p_k - \log q_k)$, averaged over the batch ("batchmean").

# %%
def trades_loss_by_hand(model, x, x_adv, y, beta):
    """CE on the clean input plus beta times KL(clean probabilities || adversarial probabilities)."""
    logits_clean, logits_adv = model(x), model(x_adv)
    log_p = F.log_softmax(logits_clean, dim=1)             # log f(x)
    log_q = F.log_softmax(logits_adv, dim=1)               # log f(x')
    ce = -log_p.gather(1, y[:, None]).mean()
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return ce + beta * kl

# %% [markdown]
# We check it against the library on a batch of training images and their KL-attack adversarial examples,
# using a TRADES model trained in this profile. (In training the model is in train mode; here we use eval
# mode so that the check does not touch BatchNorm's running statistics.)

# %% tags=["nbval-ignore-output"]
model_trades, hist_trades = trained_model("trades")  # β = 6, the default: shared with other notebooks

# %%
train_set, test_set = profile_data(profile)
device = device_of(model_trades)  # the profile's device: the batch goes where the model is
x, y = (t.to(device) for t in next(iter(make_loader(train_set, batch_size=profile.batch_size, shuffle=True, seed=0))))
torch.manual_seed(0)
x_kl = trades_kl_attack(model_trades, x, eps=profile.eps, alpha=profile.alpha, steps=profile.attack_steps)

model_trades.eval()
with torch.no_grad():
    logits_clean, logits_adv = model_trades(x), model_trades(x_kl)
    for beta in (0.5, 2.0, 6.0):
        mine = trades_loss_by_hand(model_trades, x, x_kl, y, beta)
        library = trades_loss(logits_clean, logits_adv, y, beta=beta)
        assert torch.allclose(mine, library, atol=1e-6), (beta, mine, library)

# %% [markdown]
# ## The KL attack, written out
# TRADES' inner maximisation is not PGD on the cross-entropy: it ascends the **KL term itself**, pushing the
# prediction at $x'$ away from the prediction at $x$, with signed-gradient steps projected back onto the ball:
#
# $$
# x' \leftarrow \Pi_{B_\infty(x, \varepsilon) \cap [0,1]^d}\Big(x' + \alpha\,\mathrm{sign}\,\nabla_{x'}
#   \mathrm{KL}\big(f(x)\,\|\,f(x')\big)\Big), \qquad x'_0 = x + 0.001\cdot\mathcal N(0, I).
# $$
#
# It needs **no labels** (it works on any input), and it starts *next to* $x$ rather than at a random point of
# the ball: at $x' = x$ exactly the KL and its gradient would be zero, so a tiny Gaussian nudge gets it moving.
# The clean probabilities $f(x)$ are computed once, without gradient; the KL is summed over the batch, so each
# image's gradient is its own.

# %%
def kl_attack_by_hand(model, x, *, eps, alpha, steps, generator):
    """TRADES' KL attack: PGD on KL(f(x) || f(x')) from x + 0.001·N(0, I), in eval mode."""
    model.eval()
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)                                  # the target distribution f(x)
    x_adv = (x + 0.001 * torch.empty_like(x).normal_(generator=generator)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        log_q = F.log_softmax(model(x_adv), dim=1)
        kl = (torch.xlogy(p_clean, p_clean) - p_clean * log_q).sum()         # Σ_batch KL(f(x) || f(x'))
        (grad,) = torch.autograd.grad(kl, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()                          # ascend
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)               # back into the ball, an image
    return x_adv.detach()


def kl_to_clean(model, x, x_other):
    """Per-image KL(f(x) || f(x_other)), shape (B,)."""
    with torch.no_grad():
        log_p, log_q = F.log_softmax(model(x), 1), F.log_softmax(model(x_other), 1)
        return (log_p.exp() * (log_p - log_q)).sum(1)


attack_settings = dict(eps=profile.eps, alpha=profile.alpha, steps=profile.attack_steps)
x_kl_hand = kl_attack_by_hand(model_trades, x, generator=torch.Generator().manual_seed(0), **attack_settings)
x_kl_lib = trades_kl_attack(model_trades, x, generator=torch.Generator().manual_seed(0), **attack_settings)
same = (x_kl_hand - x_kl_lib).abs().amax(dim=(1, 2, 3)) < 1e-6
print(f"written-out KL attack = trades_kl_attack on {int(same.sum())} of {len(same)} images")

# %%
assert same.float().mean() >= 0.95, "the written-out attack must match trades_kl_attack"
assert torch.allclose(kl_to_clean(model_trades, x, x_kl_hand).mean(), kl_to_clean(model_trades, x, x_kl_lib).mean(),
                      rtol=1e-3)
assert (x_kl - x).abs().max() <= profile.eps + 1e-6 and 0 <= x_kl.min() and x_kl.max() <= 1

# %% [markdown]
# (Summed in a different order, a gradient entry that is almost exactly zero can change sign between the two
# versions; the check therefore asks for the same images on almost every input, not bit for bit.)
#
# ### Which attack reaches the larger KL?
# One would expect the attack that *ascends the KL* to reach the largest KL. Let us measure, on the same batch,
# the KL that three attacks reach with the training budget (PGD-K with step α) and with four times as many
# steps: the KL attack; the same KL ascent started from a **uniform** random point of the ball (like PGD);
# and PGD on the **cross-entropy** with the label, from a uniform start.

# %%
def kl_ascent_uniform(model, x, *, eps, alpha, steps, generator):
    """The same KL ascent, started at a uniform random point of the ε-ball instead of next to x."""
    start = (x + torch.empty_like(x).uniform_(-eps, eps, generator=generator)).clamp(0, 1)
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    x_adv = start
    for _ in range(steps):
        x_adv.requires_grad_(True)
        kl = (torch.xlogy(p_clean, p_clean) - p_clean * F.log_softmax(model(x_adv), dim=1)).sum()
        (grad,) = torch.autograd.grad(kl, x_adv)
        x_adv = (x + (x_adv.detach() + alpha * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


kl_start = kl_to_clean(model_trades, x, (x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
                       .clamp(0, 1)).mean().item()
reached = {}
for steps in (profile.attack_steps, 4 * profile.attack_steps):
    settings = dict(eps=profile.eps, alpha=profile.alpha, steps=steps)
    candidates = {
        "KL attack (start next to x)": trades_kl_attack(model_trades, x, generator=torch.Generator().manual_seed(0),
                                                        **settings),
        "KL ascent, uniform start": kl_ascent_uniform(model_trades, x, generator=torch.Generator().manual_seed(0),
                                                       **settings),
        "PGD on cross-entropy": pgd(model_trades, x, y, generator=torch.Generator().manual_seed(0), **settings),
    }
    reached[steps] = {name: kl_to_clean(model_trades, x, z) for name, z in candidates.items()}

# %% tags=["nbval-ignore-output"]
print(f"KL(f(x) || f(x')) at the KL attack's start: {kl_start:.1e} (mean over {len(y)} images)")
for steps, by_attack in reached.items():
    ce = by_attack["PGD on cross-entropy"]
    print(f"{steps:2d} steps: " + ";  ".join(f"{name} {kl.mean():.3f}" for name, kl in by_attack.items())
          + f";  KL attack above PGD-CE on {int((by_attack['KL attack (start next to x)'] > ce).sum())} "
          f"of {len(ce)} images")

# %%
k = profile.attack_steps
assert reached[k]["KL attack (start next to x)"].mean() > 10 * kl_start, "the KL attack increases the KL it ascends"
assert all((kl >= -1e-6).all() for by_attack in reached.values() for kl in by_attack.values()), "a KL is >= 0"

# %% jupyter={"source_hidden": true}
# The prose below, at the training budget: PGD-CE reaches the larger mean KL, and the uniform start lifts the KL
# ascent above the KL attack's start next to x.
assert reached[k]["PGD on cross-entropy"].mean() > reached[k]["KL attack (start next to x)"].mean()
assert reached[k]["KL ascent, uniform start"].mean() > reached[k]["KL attack (start next to x)"].mean()

# %% [markdown]
# **Why PGD on the cross-entropy reaches the larger KL.** Both attacks are *local* searches of a non-concave
# function with a handful of signed steps, so neither finds the maximum, and "the KL attack maximises the KL"
# describes its objective, not its result. Two things favour PGD-CE on this batch:
#
# - **The start.** The KL attack begins where the KL has its minimum: at $x' \approx x$ the KL and its gradient
#   nearly vanish (the start value printed above), so its first steps are steered by the tiny Gaussian nudge,
#   not by where the KL is large. Started from a uniform random point of the ball, as PGD is, the *same* KL ascent
#   climbs higher (second column).
# - **The label.** PGD-CE pushes the probability of the true class down. A TRADES model's clean predictions are
#   not confident (its largest softmax probability on clean test digits averages below one half, measured
#   below), so moving that mass to a wrong class changes the whole distribution a lot — and the KL to the
#   clean prediction rides along.
#
# Per image the KL attack still wins on part of the batch (the last count). TRADES keeps its attack label-free and started next to $x$ because that is what the robustness term
# asks for — "do not change the prediction near $x$", whatever the label — and because it is the attack of the
# authors' code, which the library follows.

# %% tags=["nbval-ignore-output"]
n_conf = min(len(test_set), 360)
x_test, y_test = (t.to(device) for t in next(iter(make_loader(test_set, batch_size=n_conf, shuffle=False))))
confidence = {}
for name, method in (("standard", "standard"), ("PGD-AT", "at"), ("TRADES β=6", "trades")):
    m = model_trades if method == "trades" else trained_model(method)[0]  # shared with notebook 03
    with torch.no_grad():
        confidence[name] = F.softmax(m(x_test), dim=1).max(1).values.mean().item()
print(f"mean largest softmax probability on {n_conf} clean test digits: "
      + ", ".join(f"{name} {c:.2f}" for name, c in confidence.items()))

# %% jupyter={"source_hidden": true}
# The prose above: TRADES is the least confident, on average below one half.
assert confidence["TRADES β=6"] < 0.5 and confidence["TRADES β=6"] < confidence["PGD-AT"] - 0.1
assert confidence["PGD-AT"] < confidence["standard"]

# %% [markdown]
# ## A β sweep
# Each β is its own training run, cached under its own tag (`trades-beta0.5-seed0`, ...). β = 6 is the profile
# default, so it is the plain `trained_model("trades")` from above. We evaluate every model, and a standard one
# for reference, with PGD-20 (random start) on `eval_n` test images.

# %% tags=["nbval-ignore-output"]
betas = (0.5, 2.0, 6.0)  # smoke: three values; try more in the exercise
models = {b: model_trades if b == 6.0 else trained_model("trades", tag=f"beta{b:g}", beta=b)[0] for b in betas}
model_std, _ = trained_model("standard")  # shared with notebook 03

# %% tags=["nbval-ignore-output"]
evaluation = dict(attacks=("clean", "pgd20"), eps=profile.eval_eps, alpha=profile.eval_alpha, n=profile.eval_n)
results = {b: robust_accuracy(m, test_set, **evaluation) for b, m in models.items()}
result_std = robust_accuracy(model_std, test_set, **evaluation)
print(f"standard      clean {result_std['clean']:.3f}   PGD-20 {result_std['pgd20']:.3f}")
for b, r in results.items():
    print(f"TRADES β={b:<4g} clean {r['clean']:.3f}   PGD-20 {r['pgd20']:.3f}")

# %% report="The robustness–accuracy trade-off: clean vs PGD-20 test accuracy of TRADES for several β, and standard training."
fig, ax = plt.subplots(figsize=(5.5, 4))
clean = [results[b]["clean"] for b in betas]
robust = [results[b]["pgd20"] for b in betas]
ax.plot(clean, robust, "o-", color="C1", label="TRADES")
for b, c, r in zip(betas, clean, robust):
    ax.annotate(f"β = {b:g}", (c, r), textcoords="offset points", xytext=(6, 4), fontsize=9)
ax.plot([result_std["clean"]], [result_std["pgd20"]], "s", color="C0", label="standard")
ax.set_xlabel("clean accuracy")
ax.set_ylabel("PGD-20 accuracy")
ax.set_title(f"TRADES β sweep ({profile.name}, eps={profile.eval_eps:g})")
ax.grid(alpha=0.3)
ax.legend(loc="lower left")
plt.show()

# %%
for r in (*results.values(), result_std):
    assert r["pgd20"] <= r["clean"], "robust accuracy can never exceed clean accuracy"
assert results[6.0]["pgd20"] > result_std["pgd20"] + 0.1, "TRADES must beat standard training under PGD"

# %% [markdown]
# **Reading the plot.** Moving along the curve from small to large β usually moves *up and to the left*: more
# PGD accuracy, less clean accuracy. In `smoke` the runs are short and the test subset small (200 images, so
# one image is 0.5 points), so neighbouring β can swap places; the standard model sits at the far right
# bottom — high clean accuracy, next to no robustness. What the tests check is only what must hold in every
# run: robust ≤ clean, and TRADES far above standard under PGD.
#
# ## Exercises
# **To do 1 — the error decomposition behind TRADES.** Zhang et al. split the robust error into the natural
# error (x itself is wrong) and the boundary error (x is right, but the attack's x' is wrong). Write
# `boundary_error(model, x, x_adv, y)`: the fraction of images that are right on x and wrong on x'. It returns
# `None` until you write it; the next cell checks that natural + boundary error = robust error on the PGD
# examples of the TRADES model.

# %%
def boundary_error(model, x, x_adv, y):
    """Fraction of images classified correctly on x but not on x_adv (a float in [0, 1])."""
    # TO DO: two argmax predictions under torch.no_grad(), then a mean of a boolean.


# %%
x_pgd = pgd(model_trades, x, y, eps=profile.eps, alpha=profile.alpha, steps=profile.attack_steps,
            generator=torch.Generator().manual_seed(0))
answer = boundary_error(model_trades, x, x_pgd, y)
if answer is None:
    print("To do 1 is open: write boundary_error above and run this cell again.")
else:
    with torch.no_grad():
        right_clean = model_trades(x).argmax(1) == y
        right_adv = model_trades(x_pgd).argmax(1) == y
    natural = 1 - right_clean.float().mean().item()
    robust = 1 - (right_clean & right_adv).float().mean().item()
    assert abs(natural + float(answer) - robust) < 1e-6, (
        f"natural {natural:.3f} + yours {float(answer):.3f} should equal robust {robust:.3f}")
    print(f"To do 1: correct. natural {natural:.3f} + boundary {float(answer):.3f} = robust error {robust:.3f}")

# %% [markdown]
# <details><summary>Solution</summary>
#
# ```python
# def boundary_error(model, x, x_adv, y):
#     with torch.no_grad():
#         right = model(x).argmax(1) == y
#         wrong_adv = model(x_adv).argmax(1) != y
#     return (right & wrong_adv).float().mean().item()
# ```
# </details>
#
# **2.** Add β = 1 and β = 12 to the sweep. Where does the curve bend?
# **3.** TRADES and PGD-AT were trained with the same attack budget. Put the cached PGD-AT model
#    (`trained_model("at")`) on the plot. Is it on, above or below the TRADES curve?
#
# <details><summary>Solution</summary>
#
# ```python
# more = {b: trained_model("trades", tag=f"beta{b:g}", beta=b)[0] for b in (1.0, 12.0)}
# for b, m in more.items():
#     r = robust_accuracy(m, test_set, **evaluation)
#     print(b, r["clean"], r["pgd20"])
# model_at, _ = trained_model("at")
# print("AT", robust_accuracy(model_at, test_set, **evaluation))
# ```
#
# 2. Smaller β moves towards standard training (higher clean, lower PGD accuracy); the gain in PGD accuracy
#    flattens out for large β while clean accuracy keeps falling — β ≈ 6 sits near the bend in the paper's
#    CIFAR-10 experiments, which is why it became the default.
# 3. On CIFAR-10, TRADES with β = 6 has a higher AutoAttack accuracy than PGD-AT at a somewhat lower clean
#    accuracy: RobustBench lists TRADES (WRN-34-10) at 84.92 / 53.08 (clean / AutoAttack), and the AutoAttack
#    paper (Croce & Hein 2020) reports 87.14 / 44.04 for the PGD-AT model of Madry et al. (WRN-34-10) — different
#    training recipes and groups. In `smoke` the two are close and the order depends on the run: a six-epoch digits run
#    is a demonstration, not a benchmark.
# </details>

# %% [markdown]
# ## Summary
# - TRADES = clean cross-entropy + β · KL(f(x) ‖ f(x′)), with x′ from a label-free PGD on that KL, started
#   next to x.
# - β sets the trade-off: larger β, more robust and less accurate on clean inputs. β = 6 is the default of
#   the TRADES paper, of MART and of S²O's code.
# - The written-out loss matches `trades_loss(logits_clean, logits_adv, y, beta=β)`.
# - Report clean *and* robust accuracy, with a strong attack (Carlini et al. 2019); one number alone hides the
#   trade-off.
#
# **References**
# - H. Zhang, Y. Yu, J. Jiao, E. P. Xing, L. El Ghaoui, M. I. Jordan. *Theoretically Principled Trade-off
#   between Robustness and Accuracy.* ICML 2019 (TRADES).
# - A. Madry et al. *Towards Deep Learning Models Resistant to Adversarial Attacks.* ICLR 2018.
# - L. Rice, E. Wong, J. Z. Kolter. *Overfitting in Adversarially Robust Deep Learning.* ICML 2020.
# - N. Carlini et al. *On Evaluating Adversarial Robustness.* arXiv:1902.06705, 2019.
# - F. Croce, M. Hein. *Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free
#   Attacks* (AutoAttack). ICML 2020.
# - Next: **05 · AWP** perturbs the *weights* as well as the inputs.
