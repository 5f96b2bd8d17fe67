"""Shared fixtures: the bundled digits and small models trained once per test session."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s2o_lib.config import get_profile, seed_everything
from s2o_lib.data import load_dataset, make_loader, tensors
from s2o_lib.models import build_model
from s2o_lib.settings import fit_options
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
    """A small CNN trained on digits with the smoke profile's attack settings; ``kwargs`` are flat settings
    (``lr=...``, ``beta=...``) or `fit` keywords, as `s2o_lib.settings.fit_options` takes them."""
    seed_everything(seed)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    settings = dict(
        method=method, epochs=epochs, lr=SMOKE.lr, milestones=SMOKE.milestones, eps=SMOKE.eps,
        alpha=SMOKE.alpha, attack_steps=SMOKE.attack_steps, awp_warmup=SMOKE.awp_warmup, progress=False,
    )
    settings.update(kwargs)
    fit(model, make_loader(train, batch_size=SMOKE.batch_size, shuffle=True, seed=seed), **fit_options(**settings))
    return model.eval()


def reference_pgd(model, x, y, *, eps: float, alpha: float, steps: int) -> torch.Tensor:
    """Textbook L∞ PGD (Madry et al. 2018), written as torchattacks.PGD writes it: a uniform random start in
    the ε-ball (from torch's global generator), then ``steps`` signed-gradient steps on the mean cross-entropy,
    each projected back onto the ball and into [0, 1]. The reference the library's PGD is measured against."""
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return x_adv


@pytest.fixture(scope="session")
def standard_model(digits):
    return train_small("standard", digits[0], epochs=4)


@pytest.fixture(scope="session")
def at_model(digits):
    return train_small("at", digits[0], epochs=5)


# --------------------------------------------------------------------------- a tiny CIFAR-10 on disk
CIFAR_TRAIN_PER_BATCH, CIFAR_TEST = 4, 6


def write_fake_cifar10(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write a tiny CIFAR-10 in the real on-disk format: pickled dicts, N×3072 uint8, channel-major.

    torchvision unpickles with ``encoding="latin1"`` and reads the keys ``"data"`` and ``"labels"`` (the
    real files come from Python 2, so their keys load as ``str``), and ``"label_names"`` from batches.meta.
    """
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written: dict[str, tuple[np.ndarray, list[int]]] = {}
    sizes = {f"data_batch_{i}": CIFAR_TRAIN_PER_BATCH for i in range(1, 6)} | {"test_batch": CIFAR_TEST}
    for filename, n in sizes.items():
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / filename, "wb") as f:
            pickle.dump({"batch_label": filename, "data": data, "labels": labels}, f, protocol=2)
        written[filename] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        pickle.dump({"label_names": names, "num_cases_per_batch": CIFAR_TRAIN_PER_BATCH, "num_vis": 3072}, f)
    return written


@pytest.fixture()
def skip_md5(monkeypatch):
    """Bypass only the MD5 comparison: the files must still exist.

    Patching ``CIFAR10._check_integrity`` alone is not enough, since ``_load_meta`` calls the module-level
    ``check_integrity`` with the real batches.meta checksum.
    """
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture
def start_slow_notebook_run(tmp_path):
    """``start(cells_before=(), *, new_session=False)``: ``run-notebooks`` on one notebook whose last cell sleeps,
    returned once that cell has started as ``(process, out_dir)``; ``cells_before`` are nbformat cells run first."""
    import subprocess
    import sys
    import time

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    def start(cells_before=(), *, new_session=False):
        marker = tmp_path / "started"
        slow = new_code_cell(f"import time, pathlib\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(120)")
        nb = new_notebook(cells=[*cells_before, slow])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        (tmp_path / "nbs").mkdir()
        nbformat.write(nb, tmp_path / "nbs" / "00_slow.ipynb")
        out = tmp_path / "out"
        run = subprocess.Popen([sys.executable, "-m", "s2o_lib", "run-notebooks", "--profile", "smoke", "--out",
                                str(out), "--notebook-dir", str(tmp_path / "nbs"), "--no-progress"],
                               cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=new_session)
        deadline = time.time() + 120
        while not marker.exists() and time.time() < deadline and run.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), run.communicate()
        return run, out

    return start


@pytest.fixture
def published_bundles(monkeypatch):
    """`trained_model` with the suite's bundle source, as after the notebooks' set-up cell, undone afterwards."""
    from s2o_lib import zoo
    from s2o_lib.suite import bundle

    monkeypatch.setattr(zoo, "RUN_SOURCES", [])
    bundle.use_published_bundles()
    return zoo.RUN_SOURCES
