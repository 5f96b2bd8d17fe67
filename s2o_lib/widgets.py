"""Interactive widgets for the notebooks; each reads as a sentence where widgets cannot render.

A widget needs a live kernel. In a saved notebook opened without one (an untrusted clone, GitHub, nbviewer)
the front-end shows the widget's ``text/plain``, so every widget here has a ``__repr__`` that says what it is
and how to use it, instead of ipywidgets' ``interactive(children=(FloatSlider(...``.

Example:
    >>> from s2o_lib.widgets import epsilon_explorer            # doctest: +SKIP
    >>> epsilon_explorer(model, x, y, max_eps=0.3, eps=0.15)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from torch import nn

from .attacks import fgsm, pgd
from .errors import S2OError
from .models import device_of

__all__ = [
    "EpsilonExplorer", "ExplorerAttack", "epsilon_explorer", "epsilon_figure",
]


ExplorerAttack = Literal["fgsm", "pgd"]
_STEPS = 30  # slider positions from 0 to max_eps


def _adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attack: ExplorerAttack):
    if eps == 0:
        return x
    if attack == "fgsm":
        return fgsm(model, x, y, eps=eps)
    return pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10)


def epsilon_figure(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, attack: ExplorerAttack = "fgsm", n: int = 6,
):
    """Clean images (top row) and their adversarial versions at one ε (bottom row), titled with the predictions.

    Args:
        model: the classifier.
        x: images (B, C, H, W) in [0, 1]; the first ``n`` are drawn (moved to the model's device).
        y: labels (B,).
        eps: the L∞ radius of the attack.
        attack: ``"fgsm"`` (one step) or ``"pgd"`` (10 steps of ε/4).
        n: how many images to draw.

    Returns:
        The matplotlib figure.
    """
    x, y = x[:n].to(device_of(model)), y[:n].to(device_of(model))
    x_adv = _adversarial(model, x, y, eps, attack)
    with torch.no_grad():
        pred_clean, pred_adv = model(x).argmax(1), model(x_adv).argmax(1)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3), squeeze=False)
    for i in range(n):
        for row, (img, pred) in enumerate(((x[i], pred_clean[i]), (x_adv[i], pred_adv[i]))):
            ax = axes[row, i]
            ax.imshow(img.detach().permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{int(pred)}", color="green" if pred == y[i] else "red", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{attack.upper()} at ε = {eps:.3f}: top clean, bottom adversarial (red = wrong)", fontsize=9)
    fig.tight_layout()
    return fig


class EpsilonExplorer(widgets.interactive):
    """A slider over the attack radius ε that redraws `epsilon_figure`; built by `epsilon_explorer`.

    Its ``repr`` (the ``text/plain`` a notebook shows when the widget cannot render) says what it is and that
    it needs a running kernel.

    Args:
        draw: called with the new ε whenever the slider is released.
        slider: the ε slider.
        attack: the attack's name, for the ``repr``.
    """

    def __init__(self, draw: Callable[[float], None], *, slider: widgets.FloatSlider, attack: str) -> None:
        self.attack = attack
        super().__init__(draw, eps=slider)

    def __repr__(self) -> str:
        slider = self.kwargs_widgets[0]
        return (f"ε-explorer: a slider over the {self.attack.upper()} radius ε (0–{slider.max:.3f}, shown at "
                f"{slider.value:.3f}); run the notebook to use it")


def epsilon_explorer(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    max_eps: float = 0.3,
    eps: float | None = None,
    attack: ExplorerAttack = "fgsm",
    n: int = 6,
    width: str = "48em",
) -> EpsilonExplorer:
    """An ipywidgets slider over ε (30 steps from 0 to ``max_eps``) that redraws `epsilon_figure`.

    Display it as a cell's last expression. Without a live kernel the notebook shows its ``repr``, a one-line
    sentence; the figure at the slider's initial ε is what a saved notebook keeps, so that ε is not 0 by
    default (at ε = 0 both rows of the figure are the same image).

    Args:
        model: the classifier.
        x: images (B, C, H, W) in [0, 1]; the first ``n`` are drawn (on any device: moved to the model's).
        y: labels (B,).
        max_eps: right end of the slider (> 0).
        eps: the slider's initial value, in [0, max_eps]; ``None`` for ``max_eps / 2``.
        attack: ``"fgsm"`` (one step) or ``"pgd"`` (10 steps of ε/4).
        n: how many images to draw.
        width: CSS width of the slider, description and readout included (the track gets most of it).

    Returns:
        The widget (an `EpsilonExplorer`, an ``ipywidgets.interactive``).
    """
    if not max_eps > 0:
        raise S2OError(f"max_eps must be > 0, got {max_eps}: pass the right end of the slider")
    eps = max_eps / 2 if eps is None else eps
    if not 0 <= eps <= max_eps:
        raise S2OError(f"eps must lie in [0, max_eps] = [0, {max_eps}], got {eps}")
    if attack not in ("fgsm", "pgd"):
        raise S2OError(f"attack must be 'fgsm' or 'pgd', got {attack!r}")
    slider = widgets.FloatSlider(
        value=eps, min=0.0, max=max_eps, step=max_eps / _STEPS, description="ε", readout_format=".3f",
        continuous_update=False, layout=widgets.Layout(width=width, max_width="100%"),
        style={"description_width": "initial"},
    )

    def draw(eps: float) -> None:
        epsilon_figure(model, x, y, eps=eps, attack=attack, n=n)
        plt.show()

    return EpsilonExplorer(draw, slider=slider, attack=attack)
