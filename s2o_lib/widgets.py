"""Interactive widgets for the notebooks, each with a static fallback where widgets do not render.

Example:
    >>> from s2o_lib.widgets import epsilon_explorer            # doctest: +SKIP
    >>> epsilon_explorer(model, x, y, max_eps=0.3)
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from torch import nn

from .attacks import fgsm, pgd


def _adversarial(model: nn.Module, x, y, eps: float, attack: str):
    if eps == 0:
        return x
    if attack == "fgsm":
        return fgsm(model, x, y, eps=eps)
    return pgd(model, x, y, eps=eps, alpha=eps / 4, steps=10)


def epsilon_figure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, attack: str = "fgsm", n: int = 6):
    """Clean images and their adversarial versions at one ε, titled with the predictions."""
    x, y = x[:n], y[:n]
    x_adv = _adversarial(model, x, y, eps, attack)
    with torch.no_grad():
        pred_clean, pred_adv = model(x).argmax(1), model(x_adv).argmax(1)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3), squeeze=False)
    for i in range(n):
        for row, (img, pred) in enumerate(((x[i], pred_clean[i]), (x_adv[i], pred_adv[i]))):
            ax = axes[row, i]
            ax.imshow(img.detach().permute(1, 2, 0).squeeze(-1).cpu(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{int(pred)}", color="green" if pred == y[i] else "red", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{attack.upper()} at ε = {eps:.3f}: top clean, bottom adversarial (red = wrong)", fontsize=9)
    fig.tight_layout()
    return fig


def epsilon_explorer(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_eps: float = 0.3, attack: str = "fgsm",
    static_eps: Sequence[float] = (0.0, 0.1, 0.2),
):
    """An ipywidgets slider over ε; where widgets cannot render, static figures at ``static_eps``.

    Args:
        model: the classifier.
        x: images (B, C, H, W) in [0, 1].
        y: labels (B,).
        max_eps: right end of the slider.
        attack: ``"fgsm"`` or ``"pgd"``.
        static_eps: the radii drawn when there is no widget front-end.
    """
    try:
        import ipywidgets as widgets
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets is a dependency
        widgets = None
    if widgets is not None and get_ipython() is not None:
        slider = widgets.FloatSlider(value=0.0, min=0.0, max=max_eps, step=max_eps / 30, description="ε",
                                     readout_format=".3f", continuous_update=False)
        return widgets.interactive(lambda eps: (epsilon_figure(model, x, y, eps=eps, attack=attack), plt.show()), eps=slider)
    for eps in static_eps:
        epsilon_figure(model, x, y, eps=eps, attack=attack)
    return None
