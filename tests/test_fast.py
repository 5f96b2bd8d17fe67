"""The fast path: device-resident loader and augmentation, autocast switches, resume with it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from s2o_lib.awp import AWP
from s2o_lib.config import seed_everything
from s2o_lib.data import load_dataset, tensors
from s2o_lib.defenses import DefenseConfig, training_step
from s2o_lib.errors import S2OError
from s2o_lib.fast import DeviceLoader, autocast, random_crop_flip, training_loader
from s2o_lib.models import build_model
from s2o_lib.settings import AttackConfig, OptimConfig, SpeedConfig, fit_options
from s2o_lib.train import fit

from .conftest import write_fake_cifar10


def test_crop_flip_returns_windows_of_the_padded_image():
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (2, 2, 2, 2))
    flips = 0
    for b in range(len(x)):
        windows = [padded[b, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        plain = any(torch.equal(out[b], w) for w in windows)
        flipped = any(torch.equal(out[b], w.flip(-1)) for w in windows)
        assert plain or flipped, b
        flips += flipped and not plain
    assert 10 < flips < 54  # about half are flipped


def test_device_loader_batches_shuffles_and_scales():
    images = torch.randint(0, 256, (100, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(100) % 10
    loader = DeviceLoader(images, labels, batch_size=32, shuffle=True, augment=False, seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    x, y = batches[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == sorted(labels.tolist())
    # Each image still matches its label (the same permutation indexes both).
    first = images[(labels == y[0]).nonzero().flatten()].float() / 255
    assert any(torch.equal(x[0], f) for f in first)
    again = list(DeviceLoader(images, labels, batch_size=32, shuffle=True, seed=1))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    with pytest.raises(S2OError, match="batch_size"):
        DeviceLoader(images, labels, batch_size=0, shuffle=True)


def test_training_loader_picks_the_device_loader_where_it_pays(digits, tmp_path, skip_md5):
    # On a CPU the default is the plain DataLoader (exactly what make_loader gives); on_device=True forces it.
    plain = training_loader(digits[0], batch_size=64, seed=3, device="cpu")
    assert isinstance(plain, DataLoader) and plain.batch_size == 64
    forced = training_loader(digits[0], batch_size=64, seed=3, device="cpu", on_device=True)
    assert isinstance(forced, DeviceLoader) and not forced.augment
    _, y = tensors(digits[0])
    batches = list(forced)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(y.tolist())
    assert all(b[0].dtype == torch.float32 and 0 <= b[0].min() and b[0].max() <= 1 for b in batches)
    # A CIFAR training set: the raw uint8 pixels go to the device, and the dataset's crop-and-flip is kept.
    write_fake_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path)
    cifar = training_loader(train, batch_size=16, device="cpu", on_device=True)
    assert isinstance(cifar, DeviceLoader) and cifar.augment and cifar.images.dtype == torch.uint8
    assert not training_loader(load_dataset("cifar10", "test", root=tmp_path), batch_size=16, on_device=True).augment
    # A DeviceLoader also serves as fit's eval_loader: tensors() takes the first n of any loader's batches.
    x_all, y_all = tensors(digits[0])
    ordered = DeviceLoader(x_all, y_all, batch_size=64, shuffle=False)
    assert torch.equal(tensors(ordered, n=100)[0], x_all[:100])


def test_fp32_autocast_switch_is_bitwise_the_plain_path(digits):
    x, y = tensors(digits[0], n=64)
    config = DefenseConfig(eps=0.1, alpha=0.03, steps=2)
    results = []
    for ctx in (None, "fp32"):
        seed_everything(0)
        model = build_model("small-cnn", num_classes=10, in_channels=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if ctx is None:
            training_step(model, x, y, method="at+s2o", config=config, optimizer=opt)
        else:
            with autocast("cpu", ctx):
                training_step(model, x, y, method="at+s2o", config=config, optimizer=opt)
        results.append(model.state_dict())
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name


def test_bf16_autocast_runs_and_stays_close(digits):
    x, _ = tensors(digits[0], n=64)
    model = build_model("small-cnn", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        ref = model(x)
        with autocast("cpu", "bf16"):
            low = model(x)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
    with pytest.raises(S2OError, match="unknown precision"):
        autocast("cpu", "fp8")


def test_awp_under_autocast_perturbs_the_weights_the_forward_sees(digits):
    """Autocast caches each weight's low-precision copy until its context ends: AWP's in-place perturbation
    must clear it, or the perturbed forward runs at the unperturbed weights (AWP silently off in bf16)."""
    x, y = tensors(digits[0], n=64)
    losses = {}
    for method, precision in (("at", "fp32"), ("at+awp", "fp32"), ("at+awp", "bf16")):
        seed_everything(0)
        model = build_model("small-cnn", num_classes=10, in_channels=1)
        config = DefenseConfig(eps=0.1, alpha=0.03, steps=1, awp_warmup=0).for_method(method)
        awp = AWP(model, gamma=config.awp_gamma, lr=config.awp_lr) if "awp" in method else None
        torch.manual_seed(1)
        with autocast("cpu", precision):
            result = training_step(model, x, y, method=method, config=config,
                                   optimizer=torch.optim.SGD(model.parameters(), lr=0.1), awp=awp)
        losses[method, precision] = result.loss.item()
    effect = losses["at+awp", "fp32"] - losses["at", "fp32"]
    assert abs(effect) > 1e-3
    assert abs(losses["at+awp", "bf16"] - losses["at+awp", "fp32"]) < 0.2 * abs(effect)


def test_fit_with_device_loader_resumes_exactly(tmp_path, digits):
    x, y = tensors(digits[0], n=192)
    images = (x * 255).round().to(torch.uint8)

    def run(epochs, folder):
        seed_everything(0)
        model = build_model("small-cnn", num_classes=10, in_channels=1)
        loader = DeviceLoader(images, y, batch_size=64, shuffle=True, augment=True, seed=0)
        fit(model, loader, method="at", epochs=epochs, optim=OptimConfig(lr=0.05),
            attack=AttackConfig(eps=0.1, alpha=0.03, steps=2), checkpoint_dir=folder, progress=False,
            speed=SpeedConfig(channels_last=True))
        return model.state_dict()

    straight = run(2, None)
    run(1, tmp_path)
    resumed = run(2, tmp_path)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_pgd_loop_has_no_per_step_host_sync(monkeypatch, digits):
    """``.item()``/``bool(tensor)`` stall a GPU; PGD may sync a fixed number of times, not once per step."""
    x, y = tensors(digits[1], n=32)
    model = build_model("small-cnn", num_classes=10, in_channels=1).eval()
    counts = {"n": 0}
    real_item, real_bool = torch.Tensor.item, torch.Tensor.__bool__

    def counting(real):
        def wrapper(self, *args):
            counts["n"] += 1
            return real(self, *args)
        return wrapper

    monkeypatch.setattr(torch.Tensor, "item", counting(real_item))
    monkeypatch.setattr(torch.Tensor, "__bool__", counting(real_bool))
    from s2o_lib.attacks import pgd

    syncs = []
    for steps in (1, 10):
        counts["n"] = 0
        pgd(model, x, y, eps=0.1, alpha=0.02, steps=steps)
        syncs.append(counts["n"])
    assert syncs[0] == syncs[1], syncs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_path_matches_plain_path_on_gpu(digits):
    """bf16 + channels-last + device loader reach the plain fp32 path's accuracy within noise."""
    from s2o_lib.data import make_loader
    from s2o_lib.evaluate import robust_accuracy

    x, y = tensors(digits[0])
    results = {}
    for fast in (False, True):
        seed_everything(0)
        model = build_model("small-cnn", num_classes=10, in_channels=1).cuda()
        if fast:
            loader = DeviceLoader((x * 255).round().to(torch.uint8), y, batch_size=64, shuffle=True, device="cuda")
        else:
            loader = make_loader(digits[0], batch_size=64, shuffle=True)
        fit(model, loader, method="at", epochs=6, progress=False,
            **fit_options(lr=0.05, milestones=(4,), eps=0.15, alpha=0.05, attack_steps=5,
                          precision="bf16" if fast else "fp32", channels_last=fast))
        result = robust_accuracy(model, make_loader(digits[1], batch_size=256, shuffle=False),
                                 attacks=("clean", "pgd20"), eps=0.15, alpha=0.02)
        results[fast] = result["clean"], result["pgd20"]
    (clean_plain, pgd_plain), (clean_fast, pgd_fast) = results[False], results[True]
    assert abs(clean_plain - clean_fast) < 0.05 and abs(pgd_plain - pgd_fast) < 0.06, results
