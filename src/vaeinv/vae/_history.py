"""The loss history of a training run: a JSON file and a PNG figure."""

from __future__ import annotations

from math import nan
from pathlib import Path
from typing import Any

from .checkpoint import write_json

__all__ = ["plot_history", "write_history"]

TERMS = ("total", "reconstruction", "kl", "fisher_penalty", "mmd")


def write_history(path: Path, history: list[dict[str, Any]], header: dict[str, Any]) -> None:
    """Write ``header`` (seed, configs, best epoch, ...) and the per-epoch records as JSON.

    Args:
        path: the JSON file.
        history: one record per epoch (``epoch``, ``train`` and ``val`` loss terms, ``seconds``).
        header: run-level information.
    """
    write_json({**header, "epochs": history}, path)


def plot_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Plot each loss term per epoch (training solid, validation dashed) to a PNG.

    Args:
        path: the PNG file.
        history: the per-epoch records.
    """
    from matplotlib.figure import Figure  # Agg canvas; never touches pyplot's global state

    fig = Figure(figsize=(4 * len(TERMS), 3.2))
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.16, top=0.9, wspace=0.3)
    axes = fig.subplots(1, len(TERMS))
    epochs = [record["epoch"] for record in history]
    for ax, term in zip(axes, TERMS, strict=True):
        # .get: a run resumed from an older version has no "mmd" in its first records
        ax.plot(epochs, [r["train"].get(term, nan) for r in history], label="train")
        if all(r["val"] is not None for r in history):
            ax.plot(epochs, [r["val"].get(term, nan) for r in history], "--", label="validation")
        ax.set_title(term)
        ax.set_xlabel("epoch")
        if all(r["train"].get(term, nan) > 0 for r in history):
            ax.set_yscale("log")
    axes[0].legend()
    fig.savefig(path, dpi=100)
