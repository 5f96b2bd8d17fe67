"""AWP's proxy learning rate per script (issue 12, item 8): 0.01 in AT-AWP (``AT_AWP/train_cifar10.py``), 0.1 in
TRADES-AWP (``trades_AWP/train_trades_cifar.py``); `fit` must build its AWP proxy optimiser with that rate."""

from __future__ import annotations

import pytest
import torch

from s2o_lib.awp import AWP
from s2o_lib.data import make_loader, tensors
from s2o_lib.models import build_model
from s2o_lib.settings import AWPConfig, fit_options
from s2o_lib.train import fit

from .conftest import SMOKE


@pytest.mark.parametrize(("method", "awp", "proxy_lr"),
                         [("at+awp", None, 0.01), ("trades+awp", AWPConfig(warmup=0), 0.1),
                          ("at+awp+s2o", None, 0.01), ("mart+awp", AWPConfig(warmup=0), 0.1)])
def test_fit_gives_the_awp_proxy_each_scripts_learning_rate(monkeypatch, digits, method, awp, proxy_lr):
    import s2o_lib.train

    built: list[float] = []

    class RecordingAWP(AWP):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.proxy_optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(s2o_lib.train, "AWP", RecordingAWP)
    train = torch.utils.data.TensorDataset(*tensors(digits[0], n=16))
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    fit(model, make_loader(train, batch_size=16, shuffle=False), method=method, epochs=1, awp=awp, progress=False,
        **fit_options(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=1))
    assert built == [proxy_lr]
