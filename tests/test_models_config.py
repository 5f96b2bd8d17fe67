"""Models and profiles: shapes, the head/features split, names, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from s2o_lib.config import PROFILES, get_device, get_profile, seed_everything
from s2o_lib.errors import S2OError
from s2o_lib.models import ARCHITECTURES, build_model, last_linear


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_has_features_and_head(arch):
    model = build_model(arch, num_classes=7, in_channels=3).eval()
    x = torch.rand(2, 3, 32, 32)
    feats = model.features(x)
    assert feats.ndim == 2 and model.head.in_features == feats.shape[1]
    assert torch.allclose(model(x), model.head(feats))
    assert model(x).shape == (2, 7) and last_linear(model) is model.head


def test_paper_architectures_have_standard_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(build_model("wrn-34-10")) == 46_160_474  # the usual WRN-34-10 figure
    assert 11.1e6 < count(build_model("preact-resnet18")) < 11.2e6


def test_normalisation_lives_inside_the_model():
    model = build_model("small-cnn", num_classes=10, in_channels=3, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert model.spec["normalize"] == [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(S2OError, match="unknown architecture 'resnet50'; choose one of: preact-resnet18, preact-resnet18-w32, small-cnn"):
        build_model("resnet50")


def test_profiles(monkeypatch):
    monkeypatch.setenv("S2O_PROFILE", "paper")
    paper = get_profile()
    assert paper.epochs == 200 and paper.milestones == (100, 150) and paper.attack_steps == 10
    assert paper.eval_eps == 0.031 and paper.eval_alpha == 0.003 and paper.eval_steps == 20
    monkeypatch.delenv("S2O_PROFILE")
    assert get_profile().name == ("class" if torch.cuda.is_available() else "smoke")
    assert set(PROFILES) == {"smoke", "class", "paper"}
    with pytest.raises(S2OError, match="unknown profile"):
        get_profile("huge")


def test_seeding_makes_runs_repeatable():
    seed_everything(3)
    a = torch.rand(5)
    seed_everything(3)
    assert torch.equal(a, torch.rand(5))
    with pytest.raises(S2OError):
        seed_everything(-1)


def test_seeding_asks_for_deterministic_kernels_without_importing_the_compiler():
    code = ("import sys, torch; from s2o_lib.config import seed_everything; seed_everything(0); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]


def test_compiling_after_seeding_sets_the_compilers_deterministic_option_too():
    code = ("import torch; from s2o_lib.config import seed_everything; from s2o_lib.fast import prepare_model; "
            "from s2o_lib.models import build_model; seed_everything(0); "
            "prepare_model(build_model('small-cnn', num_classes=10, in_channels=1), compile=True); "
            "import torch._inductor.config as c; print(c.deterministic, torch.is_deterministic_algorithms_warn_only_enabled())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]


def test_smoke_uses_the_width_24_small_cnn():
    model = build_model(get_profile("smoke").arch, num_classes=10, in_channels=1)
    assert model.body[0].out_channels == 24 and model.spec["arch"] == "small-cnn-w24"
    assert build_model("small-cnn", num_classes=10, in_channels=1).body[0].out_channels == 32  # the regime's model


def test_device_selection():
    assert get_device("cpu").type == "cpu"
    with pytest.raises(S2OError, match="unknown device"):
        get_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(S2OError, match="no CUDA GPU"):
            get_device("cuda")


def test_hidden_layer_is_the_last_layer_before_the_head():
    from s2o_lib.models import hidden_layer

    small = build_model("small-cnn", num_classes=10, in_channels=1)
    assert hidden_layer(small) is small.body[-2]                       # the hidden Linear, not the head
    resnet = build_model("preact-resnet18", num_classes=10, in_channels=3)
    assert isinstance(hidden_layer(resnet), nn.Conv2d)
    with pytest.raises(S2OError, match="no Linear or Conv2d layer before its head"):
        hidden_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
