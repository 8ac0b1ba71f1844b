"""The coarse posteriors of the multilevel kernels (``mlda``, ``staged``): their checks against
the fine posterior, and their record in a run's fingerprint."""

from __future__ import annotations

import torch

from ..grid import check_nested
from .pcn import check_standard_normal

__all__ = ["check_coarse_levels", "check_levels", "describe_levels"]


def check_levels(coarse, method: str = "mlda") -> list:
    levels = list(coarse) if isinstance(coarse, (list, tuple)) else [coarse]
    if not levels:
        raise ValueError(f"{method} needs at least one coarse posterior: coarse=[coarsest, ...]")
    for k, level in enumerate(levels):
        if not all(hasattr(level, a) for a in ("evaluate", "latent_dim", "log_likelihood_of")):
            raise ValueError(
                f"coarse[{k}] is {type(level).__name__}, expected a vaeinv.Posterior on a "
                "coarser grid"
            )
    return levels


def describe_levels(levels: list) -> dict:
    """The run-fingerprint record of coarse posteriors (``describe_inputs``)."""
    from ..provenance import tensor_sha256 as sha256

    return {
        "coarse": [
            {
                "name": c.name,
                "latent_dim": c.latent_dim,
                "grid": str(c.grid),
                "prior_weights_sha256": getattr(c.prior, "weights_sha256", None),
                "noise_std_sha256": sha256(c.noise_std),
            }
            for c in levels
        ]
    }


def check_coarse_levels(levels: list, target, method: str) -> None:
    """Refuse coarse levels that cannot serve ``target``: latents that are not standard normal
    or do not grow from level to level, other data or noise, grids that do not nest."""
    check_standard_normal(target, method)
    chain = [*levels, target]
    for k, c in enumerate(levels):
        where = f"coarse[{k}]"
        check_standard_normal(c, method)
        finer = chain[k + 1]
        if c.latent_dim > finer.latent_dim:
            raise ValueError(
                f"{where} has {c.latent_dim} latents, more than the next finer level's "
                f"{finer.latent_dim}; each level's latent must be the first coordinates of the "
                "next"
            )
        same = c.num_data == target.num_data and torch.equal(c.data.cpu(), target.data.cpu())
        if not same or not torch.equal(c.noise_std.cpu(), target.noise_std.cpu()):
            raise ValueError(
                f"{where} must have the fine posterior's data and noise (the same sensors read "
                "on the coarse grid)"
            )
        if c.grid is not None and finer.grid is not None:
            name = "fine" if k + 1 == len(levels) else f"coarse[{k + 1}]"
            check_nested(c.grid, finer.grid, where, name)
