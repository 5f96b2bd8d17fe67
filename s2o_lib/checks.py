"""Checks of user input: each raises a one-line `S2OError` that says what was wrong and what to give instead.

Every public function of the library checks its arguments with these before any tensor work, so that bad
input never surfaces as a traceback from deep inside torch.

Example:
    >>> from s2o_lib.checks import check_int
    >>> check_int(3, "steps", minimum=1)
    >>> check_int(0, "steps", minimum=1)
    Traceback (most recent call last):
    ...
    s2o_lib.errors.S2OError: steps must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .errors import S2OError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(value: Any, name: str, *, minimum: int) -> None:
    """Raise `S2OError` unless ``value`` is an integer (not a bool) ≥ ``minimum``.

    Args:
        value: the value given.
        name: how the message names it, e.g. ``"steps"``.
        minimum: the smallest value allowed.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise S2OError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_eps(eps: float, *, name: str = "eps") -> None:
    """Raise `S2OError` unless ``eps`` is a finite number ≥ 0.

    Args:
        eps: the value given (a radius or a step size).
        name: how the message names it.
    """
    if not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise S2OError(f"{name} must be a finite number >= 0 (e.g. 8/255 for CIFAR-10), got {eps!r}")


def _check_number(value: Any, name: str, *, within: Callable[[float], bool], requirement: str) -> None:
    if not _is_number(value) or not math.isfinite(value) or not within(value):
        raise S2OError(f"{name} must be {requirement}, got {value!r}")


def check_fraction(value: Any, name: str) -> None:
    """Raise `S2OError` unless ``value`` is a number in [0, 1] (an accuracy, a drop, a tolerance).

    Args:
        value: the value given.
        name: how the message names it.
    """
    _check_number(value, name, within=lambda v: 0 <= v <= 1, requirement="a fraction in [0, 1]")


def check_open_unit(value: Any, name: str, *, example: str) -> None:
    """Raise `S2OError` unless ``value`` is a number strictly between 0 and 1 (a probability, a quantile).

    Args:
        value: the value given.
        name: how the message names it.
        example: a sensible value, shown in the message.
    """
    _check_number(value, name, within=lambda v: 0 < v < 1,
                  requirement=f"a number strictly between 0 and 1 (e.g. {example})")


def check_positive(value: Any, name: str, *, example: str) -> None:
    """Raise `S2OError` unless ``value`` is a finite number > 0.

    Args:
        value: the value given.
        name: how the message names it.
        example: a sensible value, shown in the message.
    """
    _check_number(value, name, within=lambda v: v > 0, requirement=f"> 0 (e.g. {example})")


def check_images(x: Tensor, y: Tensor | None = None) -> None:
    """Raise `S2OError` unless ``x`` is a float batch in [0, 1] and ``y`` holds one label per image.

    Args:
        x: images, shape (B, ...) with values in [0, 1].
        y: optional integer labels, shape (B,).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise S2OError("images must be a floating-point torch.Tensor with values in [0, 1]")
    if x.ndim < 2:
        raise S2OError(f"images must have a batch dimension, shape (B, C, H, W); got shape {tuple(x.shape)}")
    lo, hi = torch.aminmax(x)
    if lo < 0 or hi > 1:
        raise S2OError(
            f"images must lie in [0, 1] but range over [{lo.item():.3g}, {hi.item():.3g}]; "
            "keep inputs in [0, 1] and put normalisation inside the model (s2o_lib.models.Normalize)"
        )
    if y is not None:
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise S2OError(
                f"labels must have shape (B,) = ({x.shape[0]},), one per image; got {tuple(y.shape)}"
            )
        if y.is_floating_point():
            raise S2OError("labels must be integer class indices (torch.long), not floats")
