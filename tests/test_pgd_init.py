"""`pgd`'s start point: uniform in the ball, Gaussian (MART's training attack) or none; the deprecated alias."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from s2o_lib.attacks import pgd
from s2o_lib.errors import S2OError


class StartRecorder(nn.Module):
    """A fixed linear classifier that keeps the input of its first forward (the attack's start point)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, 4)
        self.first: torch.Tensor | None = None

    def forward(self, x):
        if self.first is None:
            self.first = x.detach().clone()
        return self.linear(x.flatten(1))


def _start(**kwargs) -> torch.Tensor:
    torch.manual_seed(0)
    model = StartRecorder()
    x = torch.full((64, 3, 8, 8), 0.5)
    y = torch.randint(0, 4, (64,))
    pgd(model, x, y, eps=0.1, alpha=0.01, steps=1, generator=torch.Generator().manual_seed(3), **kwargs)
    return model.first - x


def test_gaussian_start_has_the_requested_std():
    delta = _start(init="gaussian")
    assert 0.00095 < delta.std() < 0.00105 and delta.abs().max() < 0.006
    assert 0.0095 < _start(init="gaussian", init_std=0.01).std() < 0.0105


def test_uniform_and_no_start():
    delta = _start()  # the default: uniform in the L∞ ball
    assert delta.abs().max() <= 0.1 + 1e-7 and abs(delta.std() - 0.1 / 3**0.5) < 0.003
    assert torch.count_nonzero(_start(init="none")) == 0


def test_random_start_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="init="):
        old = _start(random_start=True)
    assert torch.equal(old, _start(init="uniform"))
    with pytest.warns(DeprecationWarning):
        assert torch.count_nonzero(_start(random_start=False)) == 0
    with pytest.raises(S2OError, match="only init"), pytest.warns(DeprecationWarning):
        _start(init="gaussian", random_start=True)


def test_bad_start_arguments_are_refused():
    with pytest.raises(S2OError, match="uniform"):
        _start(init="normal")
    with pytest.raises(S2OError, match="init_std"):
        _start(init="gaussian", init_std=-1.0)
