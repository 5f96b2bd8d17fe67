"""The `class` profile: the half-width PreAct ResNet-18, the one-cycle schedule, ``Profile.schedule``."""

from __future__ import annotations

import shutil
from itertools import pairwise
from pathlib import Path

import pytest
import torch

import s2o_lib.train
from s2o_lib.checkpoint import load_model, save_checkpoint
from s2o_lib.config import PROFILES, get_profile, seed_everything
from s2o_lib.data import make_loader
from s2o_lib.errors import S2OError
from s2o_lib.models import PreActResNet18, build_model, model_spec
from s2o_lib.presets import ARCH_NAMES
from s2o_lib.settings import AttackConfig, OptimConfig
from s2o_lib.train import CHECKPOINT_NAME, fit, make_optimizer, make_scheduler
from s2o_lib.zoo import fit_settings

from .conftest import SMOKE


def test_half_width_preact_resnet18_has_a_quarter_of_the_channels():
    model = build_model("preact-resnet18-w32", num_classes=10, in_channels=3)
    assert model.conv1.out_channels == 32 and model.layer4[0].conv1.out_channels == 256
    assert model.head.in_features == 256
    assert 2.7e6 < sum(p.numel() for p in model.parameters()) < 2.9e6
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    # The default width is the paper's model, with the same layer names (its checkpoints still load).
    assert PreActResNet18(num_classes=10, in_channels=3).head.in_features == 512
    assert set(PreActResNet18(num_classes=10, in_channels=3, width=32).state_dict()) == set(model.state_dict())
    assert "preact-resnet18-w32" in ARCH_NAMES
    with pytest.raises(S2OError, match="width must be a positive number of channels"):
        PreActResNet18(num_classes=10, in_channels=3, width=0)


def test_a_half_width_checkpoint_rebuilds_the_half_width_model(tmp_path):
    model = build_model("preact-resnet18-w32", num_classes=10, in_channels=3).eval()
    save_checkpoint(tmp_path / "w32.pt", {"model": model.state_dict(), "meta": {"model": model_spec(model)}})
    loaded, meta = load_model(tmp_path / "w32.pt")
    assert meta["model"]["arch"] == "preact-resnet18-w32" and loaded.head.in_features == 256
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))


def test_class_profile_is_the_budgeted_one_and_smoke_and_paper_keep_piecewise():
    p = get_profile("class")
    assert (p.arch, p.epochs, p.batch_size, p.train_subset, p.attack_steps, p.eval_n, p.autoattack) == (
        "preact-resnet18-w32", 8, 128, 20_000, 5, 200, "fast")
    assert PROFILES["paper"].autoattack == "standard"  # the reproduction runs the four attacks
    assert (p.lr, p.schedule, p.awp_warmup) == (0.2, "onecycle", 2)
    assert "half width" in p.notes and "20,000" in p.notes and "200 test images" in p.notes
    assert PROFILES["smoke"].schedule == PROFILES["paper"].schedule == "piecewise"
    assert fit_settings(p)["optim"].schedule == "onecycle" and fit_settings(p)["optim"].lr == 0.2
    assert fit_settings(SMOKE)["optim"] == OptimConfig(lr=SMOKE.lr, milestones=SMOKE.milestones)
    assert fit_settings(p, schedule="piecewise")["optim"].schedule == "piecewise"
    assert p.with_(epochs=3).epochs == 3 and p.epochs == 8
    with pytest.raises(S2OError, match="not Profile fields: epoch"):
        p.with_(epoch=3)


def test_one_cycle_rises_to_the_peak_at_two_fifths_and_falls_back():
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    opt = make_optimizer(model, lr=0.2, momentum=0.9, weight_decay=5e-4)
    sched = make_scheduler(opt, schedule="onecycle", milestones=(), total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = max(range(100), key=lrs.__getitem__)
    assert 38 <= peak <= 40 and lrs[peak] == pytest.approx(0.2, rel=0.01)
    assert lrs[0] < 1e-4 and lrs[-1] < 0.01
    assert all(a <= b for a, b in pairwise(lrs[: peak + 1]))
    assert all(a >= b for a, b in pairwise(lrs[peak:]))
    assert opt.param_groups[0]["momentum"] == 0.9  # the momentum is not cycled
    with pytest.raises(S2OError, match="one-cycle schedule needs total_steps"):
        make_scheduler(opt, schedule="onecycle", milestones=(), total_steps=0)


def _fit(train, epochs: int, schedule: str, folder: Path | None = None):
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    loader = make_loader(train, batch_size=256, shuffle=True, seed=0)
    history = fit(model, loader, method="at", epochs=epochs,
                  optim=OptimConfig(lr=0.1, schedule=schedule, milestones=(2,)),
                  attack=AttackConfig(eps=SMOKE.eps, alpha=SMOKE.alpha, steps=1), checkpoint_dir=folder,
                  progress=False)
    return model, history, len(loader)


def test_fit_steps_one_cycle_per_batch_and_piecewise_per_epoch(digits):
    train, _ = digits
    _, history, batches = _fit(train, 3, "onecycle")
    total = 3 * batches
    # History.lr is the rate at the start of each epoch: OneCycleLR's value after epoch * batches steps.
    opt = make_optimizer(build_model("small-cnn", num_classes=10, in_channels=1), lr=0.1, momentum=0.9,
                         weight_decay=5e-4)
    sched = make_scheduler(opt, schedule="onecycle", milestones=(), total_steps=total)
    expected = []
    for step in range(total):
        if step % batches == 0:
            expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert history.lr == pytest.approx(expected)
    _, piecewise, _ = _fit(train, 3, "piecewise")
    assert piecewise.lr == pytest.approx([0.1, 0.01, 0.01])


def test_one_cycle_resumes_exactly_and_refuses_another_length(tmp_path, digits, monkeypatch):
    train, _ = digits
    straight, h_straight, _ = _fit(train, 3, "onecycle", tmp_path / "straight")
    # Keep the checkpoint written after epoch 2 of a 3-epoch run, then resume the run from it.
    save = s2o_lib.train._Training.save

    def save_and_copy(self, folder, epoch, **kwargs):
        save(self, folder, epoch, **kwargs)
        if epoch == 2:
            shutil.copytree(folder, tmp_path / "cut")

    monkeypatch.setattr(s2o_lib.train._Training, "save", save_and_copy)
    _fit(train, 3, "onecycle", tmp_path / "first")
    monkeypatch.undo()
    assert (tmp_path / "cut" / CHECKPOINT_NAME).exists()
    shutil.copytree(tmp_path / "cut", tmp_path / "cut2")
    resumed, h_resumed, _ = _fit(train, 3, "onecycle", tmp_path / "cut")
    assert h_resumed.epoch == [1, 2, 3] and h_resumed.lr == pytest.approx(h_straight.lr)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(S2OError, match="'onecycle' schedule over .* steps, this run the 'onecycle' schedule over"):
        _fit(train, 4, "onecycle", tmp_path / "cut2")
    with pytest.raises(S2OError, match="schedule 'onecycle' -> 'piecewise'"):
        _fit(train, 3, "piecewise", tmp_path / "cut2")


def test_notebook_09_compares_the_profiles_methods_and_cached_others(tmp_path):
    from s2o_lib.compare import comparison_methods
    from s2o_lib.methods import COMPARISON_METHODS

    cls = get_profile("class")
    assert comparison_methods(get_profile("paper"), root=tmp_path) == COMPARISON_METHODS
    assert comparison_methods(get_profile("smoke"), root=tmp_path) == get_profile("smoke").compare_methods
    assert comparison_methods(cls, root=tmp_path) == cls.compare_methods
    assert "avmixup" not in cls.compare_methods and len(cls.compare_methods) == 11
    # A model already cached (e.g. unpacked from a bundle) joins, in COMPARISON_METHODS' order.
    (tmp_path / "class" / "avmixup-seed0").mkdir(parents=True)
    (tmp_path / "class" / "avmixup-seed0" / CHECKPOINT_NAME).write_bytes(b"")
    methods = comparison_methods(cls, root=tmp_path)
    assert methods == tuple(m for m in COMPARISON_METHODS if m in cls.compare_methods or m == "avmixup")
    with pytest.raises(S2OError, match="compare_methods of profile 'class' holds nope"):
        comparison_methods(cls.with_(compare_methods=("at", "nope")), root=tmp_path)
