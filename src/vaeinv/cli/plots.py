"""Figures (matplotlib). Every function takes tensors or arrays and a path, and returns the path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..grid import Grid

__all__ = ["plot_fields"]


def _as_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=float)


def plot_fields(grid: Grid, fields: dict, path, sensors_xy=None, title: str | None = None) -> Path:
    """Draw named ``(ny, nx)`` fields side by side (``y = 0`` at the bottom) and save to ``path``.

    Args:
        grid: the grid the fields live on (sets the axes' extent).
        fields: ``{label: field}``, each ``(ny, nx)``.
        path: output image file; parent folders are created.
        sensors_xy: optional ``(m, 2)`` sensor coordinates drawn on every panel.
        title: optional figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(fields)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, constrained_layout=True)
    (x0, y0), (x1, y1) = grid.origin, grid.corner
    extent = (x0, x1, y0, y1)
    for ax, (label, field) in zip(axes[0], fields.items(), strict=True):
        data = _as_numpy(field)
        if data.shape != grid.shape:
            raise ValueError(f"field {label!r} has shape {data.shape}, expected {grid.shape}")
        im = ax.imshow(data, origin="lower", extent=extent, cmap="viridis", aspect="equal")
        fig.colorbar(im, ax=ax, shrink=0.85)
        if sensors_xy is not None:
            xy = _as_numpy(sensors_xy)
            ax.plot(xy[:, 0], xy[:, 1], "w.", ms=3)
        ax.set_title(label)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
