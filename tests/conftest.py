"""Shared fixtures: the bundled digits and small models trained once per test session."""

from __future__ import annotations

import pytest
import torch

from s2o_lib.config import get_profile, seed_everything
from s2o_lib.data import load_dataset, make_loader, tensors
from s2o_lib.models import build_model
from s2o_lib.train import fit

SMOKE = get_profile("smoke")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread while a module runs (restored afterwards); use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.

    The batches in these tests are tiny: a second thread saves ~20% on an idle 2-core machine but costs 2-3×
    (up to ~20×) when another process holds a core, because threads wait for each other at every op.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    """(train, test) digits datasets."""
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="session")
def digits_test_tensors(digits):
    return tensors(digits[1])


def train_small(method: str, train, *, epochs: int, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small CNN trained on digits with the smoke profile's attack settings."""
    seed_everything(seed)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    settings = dict(
        method=method, epochs=epochs, lr=SMOKE.lr, milestones=SMOKE.milestones, eps=SMOKE.eps,
        alpha=SMOKE.alpha, attack_steps=SMOKE.train_steps, awp_warmup=SMOKE.awp_warmup, progress=False,
    )
    settings.update(kwargs)
    fit(model, make_loader(train, batch_size=SMOKE.batch_size, shuffle=True, seed=seed), **settings)
    return model.eval()


@pytest.fixture(scope="session")
def standard_model(digits):
    return train_small("standard", digits[0], epochs=4)


@pytest.fixture(scope="session")
def at_model(digits):
    return train_small("at", digits[0], epochs=5)
