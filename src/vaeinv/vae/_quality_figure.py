"""The figure of a prior's quality report (`vaeinv.vae.quality`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_quality"]

AXES = ("x", "y")


def plot_quality(report: dict[str, Any], path: Path) -> None:
    """The report's figure: the two-point curves, held-out fields and prior samples."""
    import numpy as np
    from matplotlib.figure import Figure  # Agg canvas; never touches pyplot's global state
    from matplotlib.ticker import MaxNLocator

    names = {"held_out": "held-out", "samples": "prior samples"}
    curves = [("semivariogram", report["variogram"])]
    if report["facies"] is not None:
        curves.append(("connectivity", report["facies"]["connectivity"]))
    fig = Figure(figsize=(11, 8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.5))
    axes = iter(top.subplots(1, 2 * len(curves), squeeze=False)[0])
    for (name, section), axis in ((c, a) for c in curves for a in AXES):
        ax = next(axes)
        for key, style in (("held_out", "o-"), ("samples", "s--")):
            values = np.array(section[key][axis], dtype=float)  # None -> nan
            ax.plot(report["lags"], values, style, label=names[key])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=f"{name} along {axis}", xlabel="lag (cells)")
        ax.legend()
    examples = {k: np.array(v, dtype=float) for k, v in report["examples"].items()}
    vmin, vmax = min(e.min() for e in examples.values()), max(e.max() for e in examples.values())
    images = bottom.subplots(2, len(report["examples"]["held_out"]), squeeze=False)
    for row, (label, data) in enumerate(examples.items()):
        for col, ax in enumerate(images[row]):
            ax.set(xticks=[], yticks=[], title=f"{names[label].removesuffix('s')} {col + 1}")
            if col < len(data):
                im = ax.imshow(data[col], origin="lower", vmin=vmin, vmax=vmax)
            else:
                ax.set_visible(False)
    bottom.colorbar(im, ax=images, shrink=0.8)
    fig.savefig(path, dpi=100)
