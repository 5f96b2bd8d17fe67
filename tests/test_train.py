"""Training: AT beats standard, exact resume, atomic checkpoints, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from s2o_lib.attacks import pgd
from s2o_lib.checkpoint import load_checkpoint, load_model, save_checkpoint
from s2o_lib.config import seed_everything
from s2o_lib.data import make_loader, tensors
from s2o_lib.errors import S2OError
from s2o_lib.methods import parse_method
from s2o_lib.models import build_model
from s2o_lib.settings import AttackConfig, AWPConfig, EvalConfig, LossConfig, OptimConfig, fit_options
from s2o_lib.train import _defense_config, fit, make_optimizer, make_scheduler
from s2o_lib.zoo import fit_settings

from .conftest import SMOKE


def _pgd_accuracy(model, x, y):
    torch.manual_seed(0)
    x_adv = pgd(model, x, y, eps=SMOKE.eval_eps, alpha=SMOKE.eval_alpha, steps=20)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item(), (model(x).argmax(1) == y).float().mean().item()


def test_adversarial_training_beats_standard_under_pgd(at_model, standard_model, digits_test_tensors):
    x, y = digits_test_tensors
    at_robust, at_clean = _pgd_accuracy(at_model, x, y)
    std_robust, std_clean = _pgd_accuracy(standard_model, x, y)
    assert std_clean > 0.9 and at_clean > 0.8
    assert at_robust > std_robust + 0.2, (at_robust, std_robust)
    assert at_robust < at_clean


def test_paper_schedule_is_piecewise():
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    opt = make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = make_scheduler(opt, schedule="piecewise", milestones=(100, 150))
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # Epochs counted from 1: 0.1 up to 99, 0.01 from 100, 0.001 from 150 (as the released code does).
    assert lrs[98] == pytest.approx(0.1) and lrs[99] == pytest.approx(0.01)
    assert lrs[148] == pytest.approx(0.01) and lrs[149] == pytest.approx(0.001)


def _run(tmp: Path | None, epochs: int, method: str, train):
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    loader = make_loader(train, batch_size=64, shuffle=True, seed=0)
    history = fit(
        model, loader, method=method, epochs=epochs, optim=OptimConfig(lr=0.05, milestones=(2,)),
        attack=AttackConfig(eps=SMOKE.eps, alpha=SMOKE.alpha, steps=2), awp=AWPConfig(warmup=1),
        checkpoint_dir=tmp, progress=False,
    )
    return model, history


@pytest.mark.parametrize("method", ["at+s2o", "trades+awp+s2o"])
def test_resume_ends_with_the_same_weights(tmp_path, digits, method):
    train = torch.utils.data.TensorDataset(*tensors(digits[0], n=256))
    straight, h_straight = _run(None, 3, method, train)
    _run(tmp_path, 2, method, train)  # "stopped" after epoch 2
    torch.manual_seed(1234)  # whatever happened in between must not matter
    resumed, h_resumed = _run(tmp_path, 3, method, train)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert h_resumed.epoch == [1, 2, 3]
    assert h_resumed.train_loss == pytest.approx(h_straight.train_loss)


def test_checkpoint_metadata_and_best_model(tmp_path, digits):
    train = torch.utils.data.TensorDataset(*tensors(digits[0], n=256))
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    history = fit(model, make_loader(train, batch_size=64, shuffle=True), method="at", epochs=2,
                  eval_loader=make_loader(train, batch_size=128, shuffle=False), checkpoint_dir=tmp_path,
                  progress=False, metadata={"dataset": "digits"},
                  **fit_options(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=2, eval_n=128))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    meta = state["meta"]
    assert meta["model"]["arch"] == "small-cnn" and meta["method"] == "at" and meta["dataset"] == "digits"
    assert meta["epoch"] == 2 and state["library_version"]
    assert {"optimizer", "scheduler", "rng", "history"} <= set(state)
    _, best_meta = load_model(tmp_path / "best.pt")
    assert best_meta["epoch"] == history.best_epoch
    assert history.best_robust == max(history.eval_robust)
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"


def test_checkpoints_load_with_weights_only(tmp_path):
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "meta": {"model": model.spec}})
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(state["model"]) == set(model.state_dict())


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    small = build_model("small-cnn", num_classes=10, in_channels=3)
    save_checkpoint(tmp_path / "m.pt", {"model": small.state_dict(), "meta": {"model": small.spec}})
    other = build_model("preact-resnet18", num_classes=10, in_channels=3)
    with pytest.raises(S2OError, match="holds a small-cnn model.*preact-resnet18"):
        load_checkpoint(tmp_path / "m.pt", model=other)
    # Without metadata the state dict itself is checked.
    save_checkpoint(tmp_path / "bare.pt", {"model": small.state_dict()})
    with pytest.raises(S2OError, match="different architecture"):
        load_checkpoint(tmp_path / "bare.pt", model=other)


def test_corrupted_and_missing_checkpoints(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(S2OError, match="corrupted"):
        load_checkpoint(bad)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    save_checkpoint(tmp_path / "good.pt", {"model": model.state_dict()})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "good.pt").read_bytes()[:200])
    with pytest.raises(S2OError, match="corrupted"):
        load_checkpoint(truncated)
    with pytest.raises(S2OError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_refuses_another_method(tmp_path, digits):
    train = torch.utils.data.TensorDataset(*tensors(digits[0], n=64))
    _run(tmp_path, 1, "at", train)
    with pytest.raises(S2OError, match="trained with method 'at', not 'trades'"):
        _run(tmp_path, 2, "trades", train)


def test_fit_argument_errors(digits):
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    loader = make_loader(digits[0], batch_size=64, shuffle=True)
    with pytest.raises(S2OError, match="unknown training method"):
        fit(model, loader, method="pgd-at", epochs=1)
    with pytest.raises(S2OError, match="eps must be"):
        fit(model, loader, method="at", epochs=1, attack=AttackConfig(eps=-1.0))
    with pytest.raises(S2OError, match="unknown learning-rate schedule"):
        fit(model, loader, method="at", epochs=1, optim=OptimConfig(schedule="cosine"))
    with pytest.raises(S2OError, match=r"optim must be OptimConfig\(...\).*got dict.*fit_options"):
        fit(model, loader, method="at", epochs=1, optim={"lr": 0.1})
    with pytest.raises(S2OError, match="unknown fit setting 'learning_rate'"):
        fit_options(learning_rate=0.1)


def test_keep_every_writes_the_weights_of_each_kept_epoch(tmp_path, digits):
    train = torch.utils.data.TensorDataset(*tensors(digits[0], n=128))

    def run(folder, epochs, keep_every):
        seed_everything(0)
        model = build_model("small-cnn", num_classes=10, in_channels=1)
        fit(model, make_loader(train, batch_size=64, shuffle=True, seed=0), method="at", epochs=epochs,
            checkpoint_dir=folder, keep_every=keep_every, progress=False,
            **fit_options(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=1))
        return model

    final = run(tmp_path / "kept", 2, 1)
    after_one = run(None, 1, 0)
    kept = sorted(p.name for p in (tmp_path / "kept").glob("epoch_*.pt"))
    assert kept == ["epoch_001.pt", "epoch_002.pt"]
    first, meta = load_model(tmp_path / "kept" / "epoch_001.pt")
    last, _ = load_model(tmp_path / "kept" / "epoch_002.pt")
    assert meta["epoch"] == 1
    for (name, a), b in zip(after_one.state_dict().items(), first.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    for (name, a), b in zip(final.state_dict().items(), last.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    run(tmp_path / "every2", 2, 2)
    assert [p.name for p in (tmp_path / "every2").glob("epoch_*.pt")] == ["epoch_002.pt"]
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    with pytest.raises(S2OError, match="keep_every must be"):
        fit(model, make_loader(train, batch_size=64, shuffle=False), method="at", epochs=1, keep_every=-1)
    with pytest.raises(S2OError, match="needs a checkpoint_dir"):
        fit(model, make_loader(train, batch_size=64, shuffle=False), method="at", epochs=1, keep_every=1)


def test_fit_options_put_flat_settings_into_their_configs():
    options = fit_options(lr=0.05, milestones=(4,), eps=0.15, attack_steps=5, beta=3.0, awp_gamma=0.02,
                          eval_n=200, epochs=6, keep_every=2)
    assert options["optim"] == OptimConfig(lr=0.05, milestones=(4,))
    assert options["attack"] == AttackConfig(eps=0.15, steps=5)
    assert options["loss"] == LossConfig(beta=3.0)
    assert options["awp"] == AWPConfig(gamma=0.02)
    assert options["evaluation"] == EvalConfig(n=200)
    assert (options["epochs"], options["keep_every"]) == (6, 2)
    assert set(options) == {"optim", "attack", "loss", "awp", "evaluation", "epochs", "keep_every"}
    # A flat setting replaces one field of a config given whole and keeps the others.
    assert fit_options(optim=OptimConfig(lr=0.2, momentum=0.5), lr=0.01)["optim"] == OptimConfig(lr=0.01, momentum=0.5)


def test_one_mapping_from_a_profile_to_fit(monkeypatch, tmp_path):
    """`s2o train` and the notebooks' `trained_model` both train with `fit_settings(profile)`."""
    settings = fit_settings(SMOKE)
    assert settings["epochs"] == SMOKE.epochs and settings["optim"].milestones == SMOKE.milestones
    assert settings["attack"] == AttackConfig(eps=SMOKE.eps, alpha=SMOKE.alpha, steps=SMOKE.attack_steps)
    assert settings["awp"] == AWPConfig(warmup=SMOKE.awp_warmup)
    assert settings["evaluation"] == EvalConfig(eps=SMOKE.eval_eps, alpha=SMOKE.eval_alpha,
                                                steps=min(SMOKE.eval_steps, 10), n=min(SMOKE.eval_n, 500))
    assert fit_settings(SMOKE, beta=3.0, attack_steps=1)["attack"].steps == 1
    import s2o_lib.suite.cli
    import s2o_lib.train
    import s2o_lib.zoo

    seen = []

    def fake_fit(model, loader, **kwargs):
        seen.append({k: v for k, v in kwargs.items() if k in settings})
        raise KeyboardInterrupt  # stop before training

    monkeypatch.setattr(s2o_lib.train, "fit", fake_fit)
    monkeypatch.setattr(s2o_lib.zoo, "fit", fake_fit)
    with pytest.raises(KeyboardInterrupt):
        s2o_lib.zoo.trained_model("at", profile="smoke", root=tmp_path, progress=False)
    assert s2o_lib.suite.cli.main(["train", "--method", "at", "--profile", "smoke", "--out", str(tmp_path / "cli")]) == 130
    assert seen[0] == seen[1] == settings


def test_awp_none_means_the_base_methods_default():
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    resolve = lambda method, awp: _defense_config(model, parse_method(method), AttackConfig(), LossConfig(), awp)
    assert (resolve("at+awp", AWPConfig()).awp_gamma, resolve("at+awp", AWPConfig()).awp_warmup) == (1e-2, 0)
    assert (resolve("trades+awp", AWPConfig()).awp_gamma, resolve("trades+awp", AWPConfig()).awp_warmup) == (5e-3, 10)
    chosen = resolve("trades+awp", AWPConfig(gamma=0.02, warmup=0))
    assert (chosen.awp_gamma, chosen.awp_warmup) == (0.02, 0)


@pytest.mark.parametrize(("method", "awp", "first_awp_epoch"),
                         [("at+awp", None, 1), ("trades+awp", AWPConfig(warmup=2), 2), ("at+awp", AWPConfig(warmup=3), 3)])
def test_awp_starts_at_the_epoch_the_scripts_start_it(monkeypatch, digits, method, awp, first_awp_epoch):
    """The scripts' rule ``epoch >= awp_warmup`` with epochs counted from 1: warm-up 0 and 1 both start at epoch 1."""
    import s2o_lib.train

    active: list[bool] = []
    real_step = s2o_lib.train.training_step

    def recording_step(*args, awp=None, **kwargs):
        active.append(awp is not None)
        return real_step(*args, awp=awp, **kwargs)

    monkeypatch.setattr(s2o_lib.train, "training_step", recording_step)
    train = torch.utils.data.TensorDataset(*tensors(digits[0], n=32))
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    fit(model, make_loader(train, batch_size=32, shuffle=False), method=method, epochs=3, awp=awp, progress=False,
        **fit_options(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=1))
    assert active == [epoch >= first_awp_epoch for epoch in (1, 2, 3)]


def test_the_per_epoch_evaluation_leaves_training_unchanged(digits):
    """The evaluation draws its PGD starts from its own seeded generator, never from torch's global one."""
    train = torch.utils.data.TensorDataset(*tensors(digits[0], n=128))

    def run(eval_loader):
        seed_everything(0)
        model = build_model("small-cnn", num_classes=10, in_channels=1)
        history = fit(model, make_loader(train, batch_size=64, shuffle=True, seed=0), method="at", epochs=2,
                      eval_loader=eval_loader, progress=False,
                      **fit_options(lr=0.05, eps=SMOKE.eps, alpha=SMOKE.alpha, attack_steps=1, eval_n=64))
        return model.state_dict(), history

    plain, _ = run(None)
    evaluated, history = run(make_loader(train, batch_size=32, shuffle=False))
    assert all(v is not None for v in history.eval_robust)
    for name, value in plain.items():
        assert torch.equal(value, evaluated[name]), name


def test_eval_window_picks_best_pt_among_its_epochs_only(tmp_path, digits, monkeypatch):
    """The authors' model selection: the best PGD accuracy among a window of epochs, not over every epoch."""
    from s2o_lib import train as train_module

    scripted = iter([0.9, 0.1, 0.5, 0.3])  # epoch 1 is the best overall; epoch 3 the best of epochs 2-4
    counted = []

    def fake_accuracy(model, loader, *, attacks, counting, **kwargs):
        counted.append(counting)
        return {"clean": 1.0, attacks[1]: next(scripted)}

    monkeypatch.setattr(train_module, "robust_accuracy", fake_accuracy)
    data = torch.utils.data.TensorDataset(*tensors(digits[0], n=64))
    seed_everything(0)
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    history = fit(model, make_loader(data, batch_size=32, shuffle=True, seed=0), method="standard", epochs=4,
                  eval_loader=make_loader(data, batch_size=32, shuffle=False), checkpoint_dir=tmp_path, keep_every=1,
                  progress=False, **fit_options(lr=0.05, eval_window=(2, 4), eval_counting="adversarial"))
    assert (history.best_epoch, history.best_robust) == (3, 0.5) and counted == ["adversarial"] * 4
    best, meta = load_model(tmp_path / "best.pt")
    third, _ = load_model(tmp_path / "epoch_003.pt")
    assert meta["epoch"] == 3
    for (name, a), b in zip(best.state_dict().items(), third.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("window", "match"), [((5, 6), "starts after the run's last epoch"),
                                               ((0, 2), "1 <= first <= last"), ((3, 2), "1 <= first <= last"),
                                               ("100", "two epochs")])
def test_eval_window_errors_say_what_to_do(digits, window, match):
    data = torch.utils.data.TensorDataset(*tensors(digits[0], n=32))
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    with pytest.raises(S2OError, match=match):
        fit(model, make_loader(data, batch_size=32, shuffle=False), method="standard", epochs=3, progress=False,
            **fit_options(eval_window=window))
    with pytest.raises(S2OError, match="eval_counting"):
        fit(model, make_loader(data, batch_size=32, shuffle=False), method="standard", epochs=3, progress=False,
            **fit_options(eval_counting="x′"))


def test_one_diff_of_two_runs_settings():
    """Resume, the zoo and the bundles compare settings through `settings_diff`: JSON round trips are equal."""
    from s2o_lib.settings import settings_diff

    recorded = {"lr": 0.1, "milestones": [100, 150], "beta": 6.0, "eval_window": [100, 110]}
    asked = {"lr": 0.1 + 1e-13, "milestones": (100, 150), "beta": 3.0, "eval_window": (100, 200), "new": 1}
    assert settings_diff(recorded, asked) == [("beta", 6.0, 3.0), ("eval_window", [100, 110], (100, 200))]


def test_fit_checks_each_batch_once_not_again_inside_the_training_attack(digits, monkeypatch):
    """Inputs are checked at the entry (fit's batch check), not again in every PGD of every step (host syncs)."""
    from s2o_lib import attacks, checks
    from s2o_lib import train as train_module
    from s2o_lib.defenses import DefenseConfig, training_step

    calls = []
    real = checks.check_images
    counting = lambda *a, **k: calls.append(1) or real(*a, **k)
    monkeypatch.setattr(attacks, "check_images", counting)
    monkeypatch.setattr(train_module, "check_images", counting)
    data = torch.utils.data.TensorDataset(*tensors(digits[0], n=64))
    model = build_model("small-cnn", num_classes=10, in_channels=1)
    fit(model, make_loader(data, batch_size=32, shuffle=False), method="at", epochs=1, progress=False,
        **fit_options(attack_steps=1))
    assert len(calls) == 2  # two CPU batches, each checked once by fit; the training PGD did not check again
    calls.clear()
    x, y = tensors(digits[0], n=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    training_step(model, x, y, method="at", config=DefenseConfig(steps=1), optimizer=opt)
    assert len(calls) == 1  # called alone, the step's attack checks its inputs
    training_step(model, x, y, method="trades", config=DefenseConfig(steps=1), optimizer=opt, checked=True)
    assert len(calls) == 1
