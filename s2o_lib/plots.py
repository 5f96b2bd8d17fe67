"""Figures the notebooks share: image grids, training curves, accuracy-versus-ε curves, heatmaps.

Every function draws on a matplotlib ``Axes`` (made if not given) and returns it, so notebooks can
compose figures. Nothing here computes results; pass in what the library computed. Tensors may live on any
device: they are copied to the CPU for drawing.

Example:
    >>> from s2o_lib.plots import plot_history                   # doctest: +SKIP
    >>> plot_history({"AT": history_at, "AT+S²O": history_s2o})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .train import History

__all__ = [
    "correlation_heatmap", "image_grid", "plot_accuracy_vs_eps", "plot_history",
]



def image_grid(
    rows: Mapping[str, torch.Tensor],
    *,
    titles: Mapping[str, Sequence[str]] | None = None,
    max_images: int = 8,
    scale: float = 1.2,
) -> Figure:
    """A grid with one row per named batch (e.g. clean, adversarial, perturbation).

    Args:
        rows: name → images (B, C, H, W) in [0, 1] (a perturbation row is rescaled to [0, 1] for display).
        titles: name → one short title per image (e.g. predicted labels).
        max_images: images per row.
        scale: inches per image.
    """
    n = min(max_images, min(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(rows), n, figsize=(scale * n, scale * 1.15 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        images = images[:n].detach().float().cpu()
        if images.min() < 0:  # a signed perturbation: centre zero at grey
            images = 0.5 + images / (2 * images.abs().max().clamp_min(1e-12))
        for c in range(n):
            ax = axes[r, c]
            img = images[c].permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if titles and name in titles:
                ax.set_title(titles[name][c], fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig


def plot_history(histories: Mapping[str, History], *, ax: Axes | None = None, robust: bool = True) -> Axes:
    """Clean (dashed) and PGD (solid) evaluation accuracy over epochs for several runs."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for i, (name, h) in enumerate(histories.items()):
        color = f"C{i}"
        if any(v is not None for v in h.eval_clean):
            ax.plot(h.epoch, h.eval_clean, "--", color=color, label=f"{name} clean")
        if robust and any(v is not None for v in h.eval_robust):
            ax.plot(h.epoch, h.eval_robust, "-", marker="o", ms=3, color=color, label=f"{name} PGD")
            if h.best_epoch is not None:
                ax.plot([h.best_epoch], [h.best_robust], "*", ms=12, color=color)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return ax


def plot_accuracy_vs_eps(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, ax: Axes | None = None, eps_marker: float | None = None
) -> Axes:
    """Accuracy against the attack radius, one line per model.

    Args:
        curves: name → (radii, accuracies).
        ax: axes to draw on.
        eps_marker: draw a vertical line at the training radius.
    """
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    for name, (eps, acc) in curves.items():
        ax.plot(eps, acc, marker="o", ms=3, label=name)
    if eps_marker is not None:
        ax.axvline(eps_marker, color="grey", ls=":", lw=1)
    ax.set_xlabel("ε (L∞)")
    ax.set_ylabel("accuracy under PGD")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def correlation_heatmap(matrix: torch.Tensor | np.ndarray, *, ax: Axes | None = None, title: str = "", labels=None) -> Axes:
    """A symmetric [-1, 1] heatmap (e.g. a weight-correlation matrix), with seaborn."""
    import seaborn as sns

    ax = ax or plt.subplots(figsize=(4, 3.5))[1]
    data = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    sns.heatmap(data, ax=ax, cmap="RdBu_r", vmin=-1, vmax=1, center=0, square=True,
                xticklabels=labels if labels is not None else False, yticklabels=labels if labels is not None else False,
                cbar_kws={"shrink": 0.8})
    ax.set_title(title, fontsize=10)
    return ax
