"""Training steps written the way the authors' released scripts write them, for speed comparisons only.

Each function reproduces, per batch, what the public S²O code does: a deep copy of the model for the
attack (AT), the clean logits recomputed at every attack step (TRADES), the extra forward passes for the
soft-target terms and the per-sample Python loop of outer products (``torch.kron``) that builds the
logit second-moment matrix. They run in fp32 with no other tricks. They are transcriptions for
benchmarking; the library's versions live in ``s2o_lib.defenses``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def _loop_soft_targets(output: torch.Tensor, target: torch.Tensor, m: float = 0.8) -> torch.Tensor:
    with torch.no_grad():
        c = output.size(1)
        aa = torch.zeros(c, c, device=output.device)
        for xx in output:
            aa += torch.kron(xx, xx.reshape((-1, 1)))
        aa = -1 * torch.abs(aa)
        aa_min, _ = torch.min(aa, 1)
        aa = aa - aa_min.reshape(-1, 1)
        for i in range(len(aa)):
            aa[i, i] = 0.0
        aa = m * aa / aa.sum(1).reshape(-1, 1)
        for i in range(len(aa)):
            aa[i, i] = 1 - m
        return aa[target]


def _pgd_whitebox(model, x, y, eps, alpha, steps):
    model.eval()
    x_pgd = (x + torch.empty_like(x).uniform_(-eps, eps)).detach()
    for _ in range(steps):
        x_pgd.requires_grad_(True)
        with torch.enable_grad():
            loss = nn.CrossEntropyLoss()(model(x_pgd), y)
        loss.backward()
        eta = alpha * x_pgd.grad.sign()
        x_pgd = x_pgd.detach() + eta
        x_pgd = (x + torch.clamp(x_pgd - x, -eps, eps)).clamp(0, 1).detach()
    return x_pgd


def _trades_attack(model, x, eps, alpha, steps):
    kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    x_adv = x.detach() + 0.001 * torch.randn_like(x)
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + alpha * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    model.train()
    return x_adv.detach()


def released_at(model, opt, x, y, *, eps, alpha, steps, **_):
    """PGD-AT as in the released AT script, without S²O (deep copy for the attack)."""
    model.train()
    opt.zero_grad()
    with torch.no_grad():
        x_adv = _pgd_whitebox(copy.deepcopy(model), x, y, eps, alpha, steps)
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    opt.step()


def released_at_s2o(model, opt, x, y, *, eps, alpha, steps, **_):
    """AT+S²O exactly as ``CIFAR10_AT_S2O/train_S2O.py`` does per batch."""
    kl = nn.KLDivLoss(reduction="sum")
    model.train()
    opt.zero_grad()
    with torch.no_grad():
        x_adv = _pgd_whitebox(copy.deepcopy(model), x, y, eps, alpha, steps)
    output = model(x)
    output_adv = model(x_adv)
    loss_adv = F.cross_entropy(output_adv, y)
    yy = _loop_soft_targets(output, y)
    yy_adv = _loop_soft_targets(output_adv, y)
    loss_yy = (1.0 / yy.size(0)) * kl(F.log_softmax(model(x), dim=1), yy)
    loss_yy_adv = (1.0 / yy_adv.size(0)) * kl(F.log_softmax(model(x_adv), dim=1), yy_adv)
    loss = 0.9 * loss_adv + 0.1 * 0.5 * (loss_yy + loss_yy_adv)
    loss.backward()
    opt.step()


def released_trades(model, opt, x, y, *, eps, alpha, steps, beta=6.0, **_):
    """TRADES as in its released ``trades.py`` (clean logits recomputed at every attack step)."""
    x_adv = _trades_attack(model, x, eps, alpha, steps)
    opt.zero_grad()
    logits = model(x)
    loss_robust = (1.0 / len(x)) * nn.KLDivLoss(reduction="sum")(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1))
    loss = F.cross_entropy(logits, y) + beta * loss_robust
    loss.backward()
    opt.step()


def _trades_s2o_update(model, opt, x, x_adv, y, beta):
    """The released TRADES+S²O loss (extra forward passes, looped soft targets), backward and step."""
    kl = nn.KLDivLoss(reduction="sum")
    opt.zero_grad()
    output = model(x)
    output_adv = model(x_adv)
    yy = _loop_soft_targets(output, y)
    yy_adv = _loop_soft_targets(output_adv, y)
    loss_yy = (1.0 / yy.size(0)) * kl(F.log_softmax(model(x), dim=1), yy)
    loss_yy_adv = (1.0 / yy_adv.size(0)) * kl(F.log_softmax(model(x_adv), dim=1), yy_adv)
    loss_robust = (1.0 / len(x)) * kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1))
    loss = F.cross_entropy(output, y) * 0.7 + 0.3 * 0.5 * (loss_yy + loss_yy_adv) + beta * loss_robust
    loss.backward()
    opt.step()


def released_trades_s2o(model, opt, x, y, *, eps, alpha, steps, beta=6.0, **_):
    """TRADES+S²O as ``CIFAR10_TRADES_S2O/trades_s2o.py`` does per batch."""
    x_adv = _trades_attack(model, x, eps, alpha, steps)
    _trades_s2o_update(model, opt, x, x_adv, y, beta)


def released_trades_awp_s2o(model, opt, x, y, *, eps, alpha, steps, beta=6.0, proxy=None, proxy_opt=None, gamma=5e-3, **_):
    """TRADES+AWP+S²O as the released AWP script does per batch (proxy AWP, extra passes, loops)."""
    x_adv = _trades_attack(model, x, eps, alpha, steps)
    # AWP: one ascent step of the plain TRADES loss on the proxy, rescaled per weight.
    proxy.load_state_dict(model.state_dict())
    proxy.train()
    loss_natural = F.cross_entropy(proxy(x), y)
    loss_robust = F.kl_div(F.log_softmax(proxy(x_adv), dim=1), F.softmax(proxy(x), dim=1), reduction="batchmean")
    proxy_opt.zero_grad()
    (-1.0 * (loss_natural + beta * loss_robust)).backward()
    proxy_opt.step()
    diff = {}
    proxy_params = dict(proxy.named_parameters())
    for name, p in model.named_parameters():
        if p.dim() > 1:
            d = proxy_params[name].detach() - p.detach()
            diff[name] = p.detach().norm() / (d.norm() + 1e-20) * d
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in diff:
                p.add_(gamma * diff[name])
    _trades_s2o_update(model, opt, x, x_adv, y, beta)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in diff:
                p.sub_(gamma * diff[name])


RELEASED = {
    "at": released_at,
    "at+s2o": released_at_s2o,
    "trades": released_trades,
    "trades+s2o": released_trades_s2o,
    "trades+awp+s2o": released_trades_awp_s2o,
}
