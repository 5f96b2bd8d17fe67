"""fp16 mixed precision: the loss scaler in the training step, its checkpointed state, the precision per GPU.

fp16 is refused on a CPU for training (`s2o_lib.fast.resolve_precision`); ``S2O_CPU_FP16=1`` lets these tests run
its code path there (CPU autocast computes fp16 and ``torch.amp.GradScaler("cpu")`` scales).
"""

from __future__ import annotations

import pytest
import torch

from s2o_lib import attacks, fast
from s2o_lib.awp import AWP
from s2o_lib.checkpoint import load_checkpoint
from s2o_lib.config import get_profile, seed_everything
from s2o_lib.data import tensors
from s2o_lib.defenses import DefenseConfig, training_step
from s2o_lib.errors import S2OError
from s2o_lib.fast import DeviceLoader, autocast, grad_scaler, preferred_precision, resolve_precision
from s2o_lib.models import build_model
from s2o_lib.settings import fit_options
from s2o_lib.train import CHECKPOINT_NAME, fit
from s2o_lib.zoo import fit_settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cpu_fp16(monkeypatch):
    monkeypatch.setenv(fast.CPU_FP16_ENV, "1")


def _batch(digits, n=64):
    return tensors(digits[0], n=n)


def _step(x, y, *, precision, method="at+s2o", scaler=None):
    """One training step of a fresh small CNN; (weights before, weights after, result)."""
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    config = DefenseConfig(eps=0.1, alpha=0.03, steps=2, awp_warmup=0).for_method(method)
    awp = None
    if "awp" in method:
        awp = AWP(model, gamma=config.awp_gamma, lr=config.awp_lr)
    with autocast("cpu", precision):
        result = training_step(model, x, y, method=method, config=config, optimizer=opt, awp=awp, scaler=scaler)
    return before, model.state_dict(), result


# --------------------------------------------------------------------------------------------- the choice
def test_fp16_on_a_cpu_is_refused_in_one_line_saying_what_to_use(digits):
    for device in ("cpu", "mps"):
        with pytest.raises(S2OError, match=r"needs a CUDA GPU .*precision='fp32'") as err:
            resolve_precision("fp16", device)
        assert "\n" not in str(err.value)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    x, y = _batch(digits, 32)
    loader = DeviceLoader((x * 255).round().to(torch.uint8), y, batch_size=16, shuffle=True)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(S2OError, match="needs a CUDA GPU"):
        fit(model, loader, method="standard", epochs=1, progress=False, **fit_options(precision="fp16"))
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())  # refused before any step
    with pytest.raises(S2OError, match="unknown precision"):
        fit(model, loader, method="standard", epochs=1, progress=False, **fit_options(precision="fp8"))


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                                      ((8, 6), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert preferred_precision("cuda") == expected
    # the class profile trains in "auto": fp16 on a T4 (7.5), bf16 from Ampere (8.0) on
    assert resolve_precision(fit_settings(get_profile("class"))["speed"].precision, "cuda") == expected
    assert resolve_precision("auto", "cpu") == "fp32"


def test_only_the_class_profile_chooses_its_precision():
    assert get_profile("class").precision == "auto"
    assert get_profile("smoke").precision == get_profile("paper").precision == "fp32"
    assert fit_settings(get_profile("paper"))["speed"].precision == "fp32"


# --------------------------------------------------------------------------------------------- the step
def _update(before, after):
    """The step's change of every parameter (BatchNorm's running statistics left out), as one vector."""
    return torch.cat([(after[k] - before[k]).flatten() for k in after if "running" not in k and "num_batches" not in k])


# TRADES' KL attack starts 0.001 from x, where a 16-bit forward's rounding is as large as the start's effect on
# the KL: its first sign step differs from fp32's on many pixels, in bf16 as in fp16; hence the looser bound.
@pytest.mark.parametrize(("method", "bound"), [("at+s2o", 0.25), ("trades+awp+s2o", 0.5)])
def test_fp16_step_goes_through_the_scaler_and_follows_fp32(digits, cpu_fp16, method, bound):
    x, y = _batch(digits)
    before, ref, ref_result = _step(x, y, precision="fp32", method=method)
    scaler = grad_scaler("cpu", "fp16")
    assert scaler.is_enabled() and not grad_scaler("cpu", "bf16").is_enabled()
    _, low, result = _step(x, y, precision="fp16", method=method, scaler=scaler)
    assert not result.skipped
    assert scaler.state_dict()["_growth_tracker"] == 1  # update() after one finite, scaled step
    assert scaler.get_scale() == 2.0**16
    # the loss within 2 % of fp32's; the update within the bound and no farther from fp32's than bf16's (the
    # attack's sign steps differ on some pixels, which moves x' and so the whole update; bf16 keeps 3 fewer bits)
    assert abs(result.loss.item() - ref_result.loss.item()) < 0.02 * abs(ref_result.loss.item())
    _, bf16, _ = _step(x, y, precision="bf16", method=method)
    fp32_update = _update(before, ref)
    fp16_error = (_update(before, low) - fp32_update).norm() / fp32_update.norm()
    bf16_error = (_update(before, bf16) - fp32_update).norm() / fp32_update.norm()
    assert _update(before, low).norm() > 0.5 * fp32_update.norm()
    assert fp16_error < bound and fp16_error <= bf16_error + 0.01, (fp16_error, bf16_error)


def test_fp16_step_with_overflowing_gradients_is_skipped(digits, cpu_fp16):
    x, y = _batch(digits)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # scaled fp16 gradients overflow
    before, after, result = _step(x, y, precision="fp16", method="at", scaler=scaler)
    assert result.skipped and torch.isfinite(result.loss)
    assert _update(before, after).abs().max() == 0  # the optimiser did not step
    assert scaler.get_scale() == 2.0**99


def test_fp16_attack_scales_its_objective_against_underflow(digits, cpu_fp16, monkeypatch):
    x, y = _batch(digits)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    seen = []
    monkeypatch.setattr(attacks, "fp16_active", lambda device: seen.append(fast.fp16_active(device)) or seen[-1])
    with autocast("cpu", "fp16"):
        x_adv = attacks.pgd(model, x, y, eps=0.1, alpha=0.03, steps=2)
    attacks.pgd(model, x, y, eps=0.1, alpha=0.03, steps=2)
    assert seen == [True, True, False, False]  # scaled under fp16 only: fp32 stays the plain path
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and (x_adv != x).float().mean() > 0.5


# --------------------------------------------------------------------------------------------- fit
def _fit_fp16(digits, folder, epochs):
    x, y = _batch(digits, 96)
    images = (x * 255).round().to(torch.uint8)
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    loader = DeviceLoader(images, y, batch_size=32, shuffle=True, augment=True, seed=0)
    fit(model, loader, method="at+awp+s2o", epochs=epochs, checkpoint_dir=folder, progress=False,
        **fit_options(lr=0.05, eps=0.1, alpha=0.03, attack_steps=2, awp_warmup=1, precision="fp16"))
    return model.state_dict()


def test_fp16_fit_resumes_exactly_with_the_scalers_state(tmp_path, digits, cpu_fp16, monkeypatch):
    # growth every 2 steps: the scale after 6 steps differs from one that restarted after 3
    monkeypatch.setattr("s2o_lib.train.grad_scaler",
                        lambda device, precision: torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=2))
    straight = _fit_fp16(digits, tmp_path / "straight", 2)
    _fit_fp16(digits, tmp_path / "cut", 1)
    halfway = load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)["scaler"]
    assert halfway["scale"] == 16.0 and halfway["_growth_tracker"] == 1
    resumed = _fit_fp16(digits, tmp_path / "cut", 2)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    final = load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)
    assert final["scaler"] == load_checkpoint(tmp_path / "straight" / CHECKPOINT_NAME)["scaler"]
    assert final["scaler"]["scale"] == 64.0 and final["meta"]["settings"]["precision"] == "fp16"


def test_an_epoch_whose_fp16_steps_are_all_skipped_stops_the_run(tmp_path, digits, cpu_fp16, monkeypatch):
    monkeypatch.setattr("s2o_lib.train.grad_scaler",
                        lambda device, precision: torch.amp.GradScaler("cpu", init_scale=2.0**100))
    with pytest.raises(S2OError, match="skipped them all; train with precision='fp32'"):
        _fit_fp16(digits, tmp_path, 1)
    assert not (tmp_path / CHECKPOINT_NAME).exists()
