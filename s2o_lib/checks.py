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

__all__ = [
    "check_eps", "check_fraction", "check_images", "check_int", "check_integer_labels", "check_labels",
    "check_linf_eps", "check_model_input", "check_open_unit", "check_positive", "check_step_size",
]



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


def check_linf_eps(eps: Any, *, name: str = "eps") -> None:
    """Raise `S2OError` unless ``eps`` is a finite number in [0, 1], an L∞ radius on [0, 1] images.

    A radius above 1 covers the whole pixel range: it is almost always 8 meant as 8/255.

    Args:
        eps: the value given.
        name: how the message names it.
    """
    check_eps(eps, name=name)
    if eps > 1:
        raise S2OError(f"{name}={eps!r} is larger than the whole [0, 1] pixel range: 8 meant as 8/255? "
                       "pass 8/255 ≈ 0.031")


def check_step_size(alpha: Any, *, steps: int, name: str = "alpha (step size)") -> None:
    """Raise `S2OError` unless ``alpha`` is a finite number ≥ 0, and > 0 whenever ``steps`` ≥ 1.

    A step size of 0 never leaves the start point, so the "attack" is a random start and robust accuracy is
    inflated.

    Args:
        alpha: the step size given.
        steps: the number of steps it is used for.
        name: how the message names it.
    """
    check_eps(alpha, name=name)
    if steps >= 1 and alpha == 0:
        raise S2OError(f"{name} must be > 0 with {steps} step(s): a step of 0 never moves and inflates robust "
                       "accuracy; e.g. eps/4")


def _image_shape_hint(x: Tensor) -> str:
    """What is wrong with the shape of a batch of images, or "" when it looks like (B, C, H, W) (or (B, D))."""
    shape = tuple(x.shape)
    if x.ndim == 3:
        return (f"images must be a batch of shape (B, C, H, W); got {shape}, one image (C, H, W)? "
                "add the batch dimension with x.unsqueeze(0)")
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        return (f"images must have shape (B, C, H, W), channels first; got {shape}, which looks like (B, H, W, C): "
                "use x.permute(0, 3, 1, 2)")
    if x.ndim < 2 or x.ndim > 4:
        return f"images must have shape (B, C, H, W); got shape {shape}"
    if x.shape[0] == 0:
        return f"the batch of images is empty (shape {shape}); give at least one image"
    return ""


def check_images(x: Tensor, y: Tensor | None = None) -> None:
    """Raise `S2OError` unless ``x`` is a non-empty float batch, finite and in [0, 1], and ``y`` holds one integer
    label per image.

    Args:
        x: images, shape (B, C, H, W) (or (B, D) for models on flat inputs) with values in [0, 1].
        y: optional integer labels (any integer dtype), shape (B,).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise S2OError(f"images must be a floating-point torch.Tensor with values in [0, 1]; got {got} "
                       "(uint8 images: x.float() / 255)")
    hint = _image_shape_hint(x)
    if hint:
        raise S2OError(hint)
    lo, hi = (v.item() for v in torch.aminmax(x.detach()))
    if math.isnan(lo) or math.isnan(hi):
        raise S2OError("images contain NaN; find where the data pipeline makes them (e.g. a division by zero)")
    if lo < 0 or hi > 1:
        raise S2OError(
            f"images must lie in [0, 1] but range over [{lo:.3g}, {hi:.3g}]; "
            "keep inputs in [0, 1] and put normalisation inside the model (s2o_lib.models.Normalize)"
        )
    if y is not None:
        if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise S2OError(f"labels must have shape (B,) = ({x.shape[0]},), one per image; got {got}")
        check_integer_labels(y)


def check_integer_labels(y: Tensor) -> None:
    """Raise `S2OError` unless ``y`` holds integer class indices (any integer dtype; not floats, not bools).

    Args:
        y: labels.
    """
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise S2OError(f"labels must be integer class indices (e.g. torch.long), not {y.dtype}")


def check_labels(y: Tensor, *, num_classes: int) -> None:
    """Raise `S2OError` unless every label is an integer with ``0 <= y < num_classes``.

    Args:
        y: labels, shape (B,), any integer dtype.
        num_classes: the number of classes, e.g. the width of the model's logits.
    """
    check_integer_labels(y)
    if y.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(y.detach()))
    if lo < 0 or hi >= num_classes:
        shifted = " (labels counted from 1? subtract 1)" if lo >= 1 and hi == num_classes else ""
        raise S2OError(f"labels must lie in 0..{num_classes - 1} for a model with {num_classes} classes; "
                       f"got labels from {lo} to {hi}{shifted}")


def check_model_input(x: Tensor, *, in_channels: int | None, dtype: torch.dtype) -> None:
    """Raise `S2OError` unless images fit a model: ``in_channels`` channels and the model's floating type.

    Args:
        x: images, shape (B, C, H, W).
        in_channels: the channels the model takes (``None``: unknown, not checked).
        dtype: the floating type of the model's parameters.
    """
    if x.ndim == 4 and in_channels is not None and x.shape[1] != in_channels:
        raise S2OError(f"the model takes {in_channels}-channel images but the data has {x.shape[1]} channel(s) "
                       f"(shape {tuple(x.shape)}); evaluate it on the dataset it was trained on")
    if x.is_floating_point() and x.dtype != dtype:
        raise S2OError(f"images are {x.dtype} but the model computes in {dtype}; convert them with x.to({dtype})")
