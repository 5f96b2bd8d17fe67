"""Named training settings that reproduce the paper's CIFAR-10 runs, with the authors' published numbers.

Example:
    >>> from s2o_lib.presets import PRESETS
    >>> PRESETS["paper-at-prn18"].method
    'at+s2o'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import unknown_name


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
        eval: evaluation protocol (ε, step size, steps).
        published: the authors' released CIFAR-10 results in percent (clean, PGD-20, AutoAttack).
    """

    name: str
    arch: str
    method: str
    dataset: str = "cifar10"
    batch_size: int = 128
    fit: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The released scripts: SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, 200 epochs, ×0.1 at 100 and 150,
# PGD-10 with ε = 8/255 and step 2/255 (TRADES and AWP: the KL attack from x + 0.001·N(0, 1)).
_PAPER_FIT: dict[str, Any] = dict(
    epochs=200, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="piecewise", milestones=(100, 150),
    eps=8 / 255, alpha=2 / 255, attack_steps=10, beta=6.0, awp_gamma=5e-3, awp_warmup=10,
)
# Evaluation: PGD-20 and CW∞-20 with ε = 0.031 and step 0.003, random start; standard AutoAttack.
_PAPER_EVAL: dict[str, Any] = dict(eps=0.031, alpha=0.003, steps=20, autoattack_version="standard")

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("paper-at-prn18", "preact-resnet18", "at+s2o", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               published={"clean": 83.65, "pgd20": 55.11, "autoattack": 48.3}),
        Preset("paper-trades-wrn", "wrn-34-10", "trades+s2o", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               published={"clean": 85.67, "pgd20": 58.34, "autoattack": 54.1}),
        Preset("paper-mart-wrn", "wrn-34-10", "mart+s2o", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               published={"clean": 83.91, "pgd20": 59.29, "autoattack": 54.1}),
        Preset("paper-trades-awp-wrn", "wrn-34-10", "trades+awp+s2o", fit=_PAPER_FIT, eval=_PAPER_EVAL,
               published={"clean": 86.01, "pgd20": 61.12, "autoattack": 55.9}),
    )
}

#: RobustBench entries for context (clean / AutoAttack, percent), as listed in the reference sheet.
ROBUSTBENCH_CONTEXT: dict[str, dict[str, float]] = {
    "PGD-AT WRN-34-10": {"clean": 87.14, "autoattack": 44.04},
    "TRADES WRN-34-10": {"clean": 84.92, "autoattack": 53.08},
    "TRADES-AWP WRN-34-10": {"clean": 85.36, "autoattack": 56.17},
    "FGSM-RS PreAct ResNet-18": {"clean": 83.34, "autoattack": 43.21},
}


def get_preset(name: str) -> Preset:
    """Look a preset up by name, with a clear error listing the valid ones."""
    if name not in PRESETS:
        raise unknown_name("preset", name, PRESETS)
    return PRESETS[name]
