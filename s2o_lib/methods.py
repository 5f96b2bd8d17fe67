"""Training methods by name: a base method, then optionally ``+awp`` and one of ``+s2o``, ``+s2o-kfac``, ``+ls``.

The one method list (`METHODS`, every valid name) and the subsets the suite uses (`BASES`, `COMPARISON_METHODS`)
live here; `parse_method` turns a name into a `Method` and refuses an unknown one with the valid names.

Example:
    >>> from s2o_lib.methods import parse_method
    >>> m = parse_method("trades+awp+s2o")
    >>> m.base, m.awp, m.s2o, m.name
    ('trades', True, 'official', 'trades+awp+s2o')
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from .errors import S2OError

__all__ = [
    "BASES", "BASE_INPUTS", "COMPARISON_METHODS", "METHODS", "SOFT_TARGET_VARIANTS", "Base", "Method", "S2OVariant",
    "parse_method",
]

Base = Literal["standard", "at", "trades", "mart", "avmixup"]
S2OVariant = Literal["official", "kfac", "ls"]
BASES: tuple[str, ...] = ("standard", "at", "trades", "mart", "avmixup")
_SUFFIX = {"s2o": "official", "s2o-kfac": "kfac", "ls": "ls"}
#: The variants whose term reweights the primary loss with soft targets built from the clean logits: the released
#: S²O and its label-smoothing control (`s2o_lib.s2o`).
SOFT_TARGET_VARIANTS: tuple[str, ...] = ("official", "ls")
# The inputs each base loss is computed on: "clean" (x) and/or "adv" (x′; AVMixup: the mixture x̃).
BASE_INPUTS: dict[str, tuple[str, ...]] = {
    "standard": ("clean",), "at": ("adv",), "trades": ("clean", "adv"), "mart": ("clean", "adv"),
    "avmixup": ("adv",),
}


@dataclass(frozen=True)
class Method:
    """A parsed training method.

    Attributes:
        base: ``standard``, ``at``, ``trades``, ``mart`` or ``avmixup``.
        awp: whether adversarial weight perturbation wraps the step.
        s2o: ``None``, ``"official"`` (the released regulariser), ``"kfac"`` (the library's KFAC-Laplace
            reading of the paper's objective) or ``"ls"`` (the label-smoothing control of the released one).
    """

    base: str
    awp: bool = False
    s2o: str | None = None

    @property
    def name(self) -> str:
        """The canonical name, e.g. ``trades+awp+s2o``."""
        parts = [self.base] + (["awp"] if self.awp else [])
        if self.s2o is not None:
            parts.append({v: k for k, v in _SUFFIX.items()}[self.s2o])
        return "+".join(parts)

    @property
    def adversarial(self) -> bool:
        """Whether the step needs adversarial examples."""
        return self.base != "standard"

    @property
    def needs_clean_logits(self) -> bool:
        """Whether the step forwards the clean batch (the base loss uses it, or the released S²O term or its
        control)."""
        return "clean" in BASE_INPUTS[self.base] or self.s2o in SOFT_TARGET_VARIANTS


def _all_method_names() -> tuple[str, ...]:
    names = ["standard"]
    for base, awp, s2o in itertools.product(BASES[1:], (False, True), (None, "official", "kfac", "ls")):
        names.append(Method(base, awp, s2o).name)
    return tuple(names)


METHODS: tuple[str, ...] = _all_method_names()


def parse_method(name: str | Method) -> Method:
    """Parse a method name such as ``"trades+awp+s2o"`` (order of suffixes does not matter).

    Args:
        name: the method name, or an already parsed `Method`.
    """
    if isinstance(name, Method):
        return name
    parts = [p.strip().lower() for p in str(name).split("+") if p.strip()]
    error = S2OError(
        f"unknown training method {name!r}; valid methods are: {', '.join(METHODS)} "
        "(a base method, then optionally +awp and +s2o or +s2o-kfac)"
    )
    if not parts or parts[0] not in BASES:
        raise error
    base, suffixes = parts[0], parts[1:]
    if len(set(suffixes)) != len(suffixes) or any(s not in ("awp", *_SUFFIX) for s in suffixes):
        raise error
    variants = [_SUFFIX[s] for s in suffixes if s in _SUFFIX]
    if len(variants) > 1 or (base == "standard" and suffixes):
        raise error
    return Method(base=base, awp="awp" in suffixes, s2o=variants[0] if variants else None)


#: The methods notebook 09 compares: each base method, then the same with S²O.
COMPARISON_METHODS: tuple[str, ...] = (
    "standard",
    "at", "at+s2o",
    "trades", "trades+s2o",
    "mart", "mart+s2o",
    "avmixup", "avmixup+s2o",
    "at+awp", "at+awp+s2o",
    "trades+awp", "trades+awp+s2o",
)
