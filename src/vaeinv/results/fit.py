"""How well a run's predictions fit the data: the predicted-against-observed figure, and for
several experiments on one field (`vaeinv.results.layout`) each experiment's own fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["experiment_fits", "experiment_table", "plot_predictive"]


def _values(idata) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Observed ``(m,)``, noise sd ``(m,)``, predictions ``(S, m)`` and each value's
    experiment name (empty strings without experiments), flattened in the file's order."""
    observed_y = idata.observed_data["y"]
    observed = np.asarray(observed_y.values, dtype=np.float64).reshape(-1)
    noise = np.asarray(idata.constant_data["noise_std"].values, dtype=np.float64).reshape(-1)
    pred = np.asarray(idata.posterior_predictive["y"].values, dtype=np.float64)
    pred = pred.reshape(-1, observed.size)
    names = [""] * observed.size
    if "experiment" in observed_y.coords:
        experiment = observed_y.coords["experiment"]
        if "experiment" in observed_y.dims:
            per = observed_y.sizes["sensor"]
            names = [str(n) for n in experiment.values for _ in range(per)]
        else:
            names = [str(n) for n in experiment.values]
    return observed, noise, pred, names


def experiment_fits(idata) -> dict[str, dict[str, Any]]:
    """Per experiment: its number of values and its normalised misfit, the mean over draws of
    ``mean(((predicted - observed) / sd)^2)`` (1 = at the noise level); empty without
    experiments or without a ``posterior_predictive`` group."""
    if getattr(idata, "posterior_predictive", None) is None:
        return {}
    if "experiment" not in idata.observed_data["y"].coords:
        return {}
    observed, noise, pred, names = _values(idata)
    residual = ((pred - observed) / noise) ** 2
    fits = {}
    for name in dict.fromkeys(names):
        mask = np.array([n == name for n in names])
        fits[name] = {
            "num_values": int(mask.sum()),
            "normalised_misfit": float(residual[:, mask].mean()),
        }
    return fits


def experiment_table(fits: dict[str, dict[str, Any]]) -> str:
    """`experiment_fits` as a markdown table."""
    lines = ["| experiment | values | normalised misfit |", "|---|---:|---:|"]
    for name, fit in fits.items():
        lines.append(f"| {name} | {fit['num_values']} | {fit['normalised_misfit']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_predictive(idata, path: str | Path) -> Path:
    """Posterior-mean predicted against observed values, one colour per experiment; bars: 2 sd
    of the noise-free prediction (vertical) and 2 noise sd (horizontal)."""
    from .report import _pyplot

    plt = _pyplot()
    observed, noise, pred, names = _values(idata)
    fig, ax = plt.subplots(figsize=(4.6, 4.2), constrained_layout=True)
    lo, hi = float(min(observed.min(), pred.min())), float(max(observed.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="predicted = observed")
    for name in dict.fromkeys(names):
        mask = np.array([n == name for n in names])
        ax.errorbar(
            observed[mask], pred[:, mask].mean(axis=0), xerr=2 * noise[mask],
            yerr=2 * pred[:, mask].std(axis=0), fmt="o", ms=3, lw=0.8,
            label=name or "posterior mean +- 2 sd",
        )  # fmt: skip
    ax.set_xlabel("observed (+- 2 noise sd)")
    ax.set_ylabel("predicted (posterior mean +- 2 sd)")
    ax.set_title("observed values", fontsize=10)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
