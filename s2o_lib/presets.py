"""Named training settings: the paper's CIFAR-10 runs with the authors' published numbers, and the baselines.

Each preset names the released script whose settings it follows (``source``). `PRESETS` holds the S²O runs
of the authors' README (``Alexkael/S2O``), with their published clean / PGD-20 / AutoAttack accuracies.
`BASELINES` holds recipes for the base methods without S²O, which have no published S²O figure:

- ``at-prn18`` is ``paper-at-prn18`` without the S²O term (PGD-AT, PreAct ResNet-18, the S²O AT script's
  schedule): the only published S²O row on the suite's own architecture gets a baseline trained the same way.
- ``trades-wrn`` and ``mart-wrn`` follow **the S²O scripts' schedule** (``CIFAR10_TRADES_S2O/train_S2O.py``,
  ``CIFAR10_MART_S2O/train_S2O.py``: 200 epochs, weight decay 5e-4, ×0.1 at epochs 100 and 150, ε = 8/255,
  step 2/255), so that each S²O run has a baseline trained the same way. They are *not* the original papers'
  schedules: TRADES' ``train_trades_cifar10.py`` trains 76 epochs with weight decay 2e-4 (×0.1 at 75, 90,
  100) and ε = 0.031, step 0.007; MART's ``train_wideresnet.py`` trains 90 epochs with weight decay 7e-4
  (×0.1 at 75, 90, 100), step 0.007.
- ``at-awp-prn18`` and ``trades-awp-wrn`` follow the AWP authors' ``AT_AWP/train_cifar10.py`` and
  ``trades_AWP/train_trades_cifar.py``; their AWP γ, warm-up and proxy learning rate are
  `s2o_lib.awp.AWP_DEFAULTS` (AT: 1e-2, none, 0.01; TRADES: 5e-3, 10 epochs, 0.1). The AT-AWP script
  normalises inputs with CIFAR-10's mean and std inside its model; the library's PreAct ResNet-18 takes
  inputs in [0, 1] unnormalised, as the S²O scripts do. Two more departures from that script: it lowers the
  learning rate per iteration, reaching 0.01 at the last batch of epoch 100, where the library's piecewise
  schedule drops it to 0.01 from epoch 100 on; and it crops with reflect padding, where the library zero-pads
  (``RandomCrop(32, padding=4)``).
- ``avmixup-wrn`` follows AVMixup's official ``Saehyung-Lee/cifar10_challenge`` (``config.json``, ``train.py``):
  80 000 steps of batch 128 (≈ 205 epochs; the library counts epochs), SGD lr 0.1 ×0.1 after 40 000 and
  60 000 steps (≈ epochs 103 and 154), momentum 0.9, weight decay 2e-4, PGD-10 with ε = 8/255, step 2/255,
  uniform start; AVMixup's γ = 2, λ₁ = 1.0, λ₂ = 0.1 are `AVMIXUP_SETTINGS` (the defaults of
  `s2o_lib.defenses.DefenseConfig`). The official model is Madry's 'w32-10' ResNet with per-image
  standardisation (``model.py``); the preset uses WRN-34-10, as the PyTorch port the S²O README cites
  (``hirokiadachi/Adversarial-vertex-mixup-pytorch``) does. The official code applies weight decay to the
  convolution and linear kernels only (no biases, no batch-norm parameters); the library's SGD decays every
  parameter (`s2o_lib.train.make_optimizer`).

Example:
    >>> from s2o_lib.presets import PRESETS, get_preset
    >>> PRESETS["paper-at-prn18"].method
    'at+s2o'
    >>> get_preset("avmixup-wrn").fit["weight_decay"]
    0.0002
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .awp import AWP_DEFAULTS
from .defenses import DefenseConfig
from .errors import unknown_name

__all__ = [
    "ARCH_NAMES", "AUTHORS_SOURCE", "AVMIXUP_SETTINGS", "BASELINES", "PRESETS", "PUBLISHED_ATTACKS",
    "RELEASED_LOG_BASES", "RELEASED_LOG_SOURCE", "ROBUSTBENCH_CONTEXT", "ROBUSTBENCH_SOURCE", "Preset",
    "get_preset", "published_table",
]



@dataclass(frozen=True)
class Preset:
    """A full training and evaluation recipe.

    Attributes:
        name: the preset's name.
        arch: architecture for `s2o_lib.models.build_model`.
        method: training method for `s2o_lib.train.fit`.
        dataset: dataset for `s2o_lib.data.load_dataset`.
        fit: keyword arguments for `fit` (schedule, attack, AWP settings).
        batch_size: training batch size.
        eval: evaluation protocol: ``eps`` and ``alpha`` of PGD/CW, ``steps``, ``autoattack_version`` and
            ``aa_eps``, AutoAttack's own radius (8/255; PGD/CW use 0.031).
        published: the authors' released CIFAR-10 results in percent (clean, PGD-20, AutoAttack).
        source: the released script(s) whose settings the preset follows.
    """

    name: str
    arch: str
    method: str
    dataset: str = "cifar10"
    batch_size: int = 128
    fit: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The S²O scripts: SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, 200 epochs, ×0.1 at 100 and 150, PGD-10 with
# ε = 8/255 and step 2/255 (AT: uniform start; TRADES: the KL attack and MART: CE, both from x + 0.001·N(0, I)).
_PAPER_FIT: dict[str, Any] = {
    "epochs": 200, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "piecewise",
    "milestones": (100, 150), "eps": 8 / 255, "alpha": 2 / 255, "attack_steps": 10, "beta": 6.0,
    # best.pt as the authors pick it: the best PGD-20 (the evaluation's, below) on the full test set, counted on
    # x′ over all images, among epochs 100–110 (AT, TRADES; "we got the best performance between epoch 100-110")
    "eval_n": None, "eval_counting": "adversarial", "eval_window": (100, 110),
}
#: The AWP and MART runs' window, "between epoch 100-200" in the authors' README.
_LONG_WINDOW: dict[str, Any] = {"eval_window": (100, 200)}
# Evaluation: PGD-20 and CW∞-20 with ε = 0.031 and step 0.003, random start; standard AutoAttack at ε = 8/255
# (``aa_eps``; not 0.031): the default of AutoAttack's own example and of the AWP evaluation script (the S²O
# repository has no AutoAttack script). The released S²O loops count PGD/CW accuracy on x′ over all images;
# `robust_accuracy` counts right-on-clean-and-under-attack unless ``counting="adversarial"``.
_PAPER_EVAL: dict[str, Any] = {"eps": 0.031, "alpha": 0.003, "steps": 20, "autoattack_version": "standard",
                               "aa_eps": 8 / 255}


def _awp_fit(base: str) -> dict[str, Any]:
    """The `fit` keywords of a base method's AWP settings (γ and warm-up; the proxy lr is the base's default)."""
    return {"awp_gamma": AWP_DEFAULTS[base].gamma, "awp_warmup": AWP_DEFAULTS[base].warmup}


_S2O = "Alexkael/S2O "
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("paper-at-prn18", "preact-resnet18", "at+s2o", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               published={"clean": 83.65, "pgd20": 55.11, "autoattack": 48.3},
               source=_S2O + "CIFAR10_AT_S2O/train_S2O.py"),
        Preset("paper-trades-wrn", "wrn-34-10", "trades+s2o", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               published={"clean": 85.67, "pgd20": 58.34, "autoattack": 54.1},
               source=_S2O + "CIFAR10_TRADES_S2O/train_S2O.py, trades_s2o.py"),
        Preset("paper-mart-wrn", "wrn-34-10", "mart+s2o", fit={**_PAPER_FIT, **_LONG_WINDOW}, eval=_PAPER_EVAL,
               published={"clean": 83.91, "pgd20": 59.29, "autoattack": 54.1},
               source=_S2O + "CIFAR10_MART_S2O/train_S2O.py, mart_soso.py"),
        Preset("paper-trades-awp-wrn", "wrn-34-10", "trades+awp+s2o", fit={**_PAPER_FIT, **_awp_fit("trades"), **_LONG_WINDOW},
               eval=_PAPER_EVAL, published={"clean": 86.01, "pgd20": 61.12, "autoattack": 55.9},
               source=_S2O + "CIFAR10_AWP_S2O/train_S2O.py, utils_awp.py"),
    )
}

#: AVMixup's own settings, γ = 2, λ₁ = 1.0, λ₂ = 0.1 (``Saehyung-Lee/cifar10_challenge`` ``config.json``; the
#: mixing weight α ~ U(0, 1) is drawn per sample, ``pgd_attack.py`` line 91), read from their one home, the
#: defaults of `s2o_lib.defenses.DefenseConfig`.
AVMIXUP_SETTINGS: dict[str, float] = {
    "gamma": DefenseConfig().avmixup_gamma, "lambda1": DefenseConfig().avmixup_lambda1,
    "lambda2": DefenseConfig().avmixup_lambda2,
}

#: Recipes for the base methods without S²O (no published S²O figure): see the module docstring.
BASELINES: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("at-prn18", "preact-resnet18", "at", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               source=_S2O + "CIFAR10_AT_S2O/train_S2O.py schedule without the S²O term: the like-for-like "
               "baseline of paper-at-prn18"),
        Preset("trades-wrn", "wrn-34-10", "trades", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               source=_S2O + "CIFAR10_TRADES_S2O/train_S2O.py schedule (not TRADES' 76 epochs, wd 2e-4)"),
        Preset("mart-wrn", "wrn-34-10", "mart", fit={**_PAPER_FIT, **_LONG_WINDOW}, eval=_PAPER_EVAL,
               source=_S2O + "CIFAR10_MART_S2O/train_S2O.py schedule (not MART's 90 epochs, wd 7e-4)"),
        Preset("at-awp-prn18", "preact-resnet18", "at+awp", fit={**_PAPER_FIT, **_awp_fit("at"), **_LONG_WINDOW},
               eval=_PAPER_EVAL,
               source="csdongxian/AWP AT_AWP/train_cifar10.py, utils_awp.py"),
        Preset("trades-awp-wrn", "wrn-34-10", "trades+awp", fit={**_PAPER_FIT, **_awp_fit("trades"), **_LONG_WINDOW},
               eval=_PAPER_EVAL, source="csdongxian/AWP trades_AWP/train_trades_cifar.py, utils_awp.py"),
        Preset("avmixup-wrn", "wrn-34-10", "avmixup",
               fit={**_PAPER_FIT, "epochs": 205, "milestones": (103, 154), "weight_decay": 2e-4,
                    "eval_window": None},  # the S²O authors give no window for AVMixup: any epoch
               eval=_PAPER_EVAL, source="Saehyung-Lee/cifar10_challenge config.json, train.py, pgd_attack.py"),
    )
}

#: RobustBench entries for context (clean / AutoAttack, percent), as listed in the reference sheet.
ROBUSTBENCH_CONTEXT: dict[str, dict[str, float]] = {
    "PGD-AT WRN-34-10": {"clean": 87.14, "autoattack": 44.04},
    "TRADES WRN-34-10": {"clean": 84.92, "autoattack": 53.08},
    "TRADES-AWP WRN-34-10": {"clean": 85.36, "autoattack": 56.17},
    "FGSM-RS PreAct ResNet-18": {"clean": 83.34, "autoattack": 43.21},
}

#: A base read off a released training log, for the published S²O row RobustBench has no like-for-like base for
#: (clean / PGD-10 on the full CIFAR-10 test set, percent; no AutoAttack was run on it). Rice, Wong & Kolter's
#: PGD-AT PreAct ResNet-18, the code the released AT+S²O script builds on: ``locuslab/robust_overfitting``
#: (commit c47a25c) ``experiments/cifar10_standard/preactresnet18/output.log``, the epoch with the best test
#: robust accuracy among epochs 100–110 (the S²O authors' own window): epoch 106. Its PGD is 10 steps of 2/255
#: at ε = 8/255 with one random start, counted on x′ over all images (the authors count PGD-20, 0.003 steps).
#: No public MART WRN-34-10 base without extra data was found: the AutoAttack leaderboard's only MART entry
#: (``fra31/auto-attack`` README) is trained with 500K extra images.
RELEASED_LOG_BASES: dict[str, dict[str, float]] = {
    "PGD-AT PreAct ResNet-18": {"clean": 82.92, "pgd10": 53.49},
}


#: Display names of the architectures that appear in the published numbers.
ARCH_NAMES: dict[str, str] = {"preact-resnet18": "PreAct ResNet-18", "wrn-34-10": "WRN-34-10",
                              "small-cnn": "small CNN", "small-cnn-w24": "small CNN (width 24)",
                              "preact-resnet18-w32": "PreAct ResNet-18 (width 32)"}
AUTHORS_SOURCE = "authors' figures (Jin et al., released S²O results)"
ROBUSTBENCH_SOURCE = "RobustBench (context, not S²O)"
RELEASED_LOG_SOURCE = "Rice et al. 2020, released training log (PGD-10, no AutoAttack)"
PUBLISHED_ATTACKS: tuple[str, ...] = ("clean", "pgd20", "autoattack")


def _split_robustbench(entry: str) -> tuple[str, str]:
    """``"TRADES WRN-34-10"`` → ``("TRADES", "WRN-34-10")`` (the architecture is the entry's known suffix)."""
    for arch in ARCH_NAMES.values():
        if entry.endswith(" " + arch):
            return entry[: -len(arch) - 1].strip(), arch
    return entry, ""


def published_table(*, include_context: bool = True) -> list[dict[str, Any]]:
    """The authors' released CIFAR-10 results of S²O, and optionally RobustBench entries for context.

    Every number comes from this module (``Preset.published``, ``ROBUSTBENCH_CONTEXT`` and
    ``RELEASED_LOG_BASES``): CIFAR-10, L∞ ε = 8/255, in percent. They are the authors', RobustBench's and Rice et
    al.'s figures, not reproduced here.

    Args:
        include_context: also add the base rows: RobustBench's (clean and AutoAttack; PGD-20 is ``None``) and the
            one read off a released training log (clean and ``pgd10``; AutoAttack is ``None``).

    Returns:
        One dict per row: ``source``, ``method``, ``arch``, ``dataset``, ``clean``, ``pgd20``, ``autoattack``
        (and ``pgd10`` on the released-log row).

    Example:
        >>> rows = published_table(include_context=False)
        >>> rows[0]["method"], rows[0]["arch"], rows[0]["source"].startswith("authors")
        ('at+s2o', 'PreAct ResNet-18', True)
    """
    rows = []
    for preset in PRESETS.values():
        rows.append({"source": AUTHORS_SOURCE, "method": preset.method,
                     "arch": ARCH_NAMES.get(preset.arch, preset.arch), "dataset": preset.dataset,
                     **{attack: preset.published.get(attack) for attack in PUBLISHED_ATTACKS}})
    if include_context:
        for entry, numbers in ROBUSTBENCH_CONTEXT.items():
            method, arch = _split_robustbench(entry)
            rows.append({"source": ROBUSTBENCH_SOURCE, "method": method, "arch": arch, "dataset": "cifar10",
                         **{attack: numbers.get(attack) for attack in PUBLISHED_ATTACKS}})
        for entry, numbers in RELEASED_LOG_BASES.items():
            method, arch = _split_robustbench(entry)
            rows.append({"source": RELEASED_LOG_SOURCE, "method": method, "arch": arch, "dataset": "cifar10",
                         **{attack: numbers.get(attack) for attack in PUBLISHED_ATTACKS}, "pgd10": numbers["pgd10"]})
    return rows


def get_preset(name: str) -> Preset:
    """Look a preset up by name (`PRESETS`, then `BASELINES`), with a clear error listing the valid ones."""
    known = {**PRESETS, **BASELINES}
    if name not in known:
        raise unknown_name("preset", name, known)
    return known[name]
