"""A prior's fields coarsened onto a coarser grid: the same latent, decoded by the prior and
upscaled by block log-mean-exp ([`coarsen`][vaeinv.fields.coarsen.coarsen]).

A coarse posterior over the *whole* latent of a fine one is what multilevel delayed acceptance
uses when the levels differ only in the solver's resolution (Lykkegaard et al. 2023): every
coarse step moves every latent, with a solve on the coarse grid, and each fine decision
compares two models of the same field. ``vaeinv.sample(fine, "mlda", coarse=[...])`` takes such
posteriors as they are (their latent is the fine latent, all of it).
"""

from __future__ import annotations

import torch

from ..fields.coarsen import coarsen
from ..grid import Grid, check_nested
from .base import LatentPrior

__all__ = ["CoarsenedPrior"]


class CoarsenedPrior(LatentPrior):
    """``prior``'s fields on ``grid``, a grid that nests in ``prior.grid`` (each coarse cell the
    arithmetic mean of the permeability over its block of fine cells).

    Args:
        prior: a prior with a standard-normal latent and a ``grid``.
        grid: the coarse grid: the same extent, each side a divisor of the fine one's.

    Raises:
        ValueError: a prior without a grid or with another latent prior, or a grid that does
            not nest in the prior's.
    """

    def __init__(self, prior, grid: Grid) -> None:
        fine = getattr(prior, "grid", None)
        if not isinstance(fine, Grid):
            raise ValueError(f"the prior {prior!r} has no grid to coarsen from")
        if not getattr(prior, "standard_normal", False):
            raise ValueError(f"the prior {prior!r} has no standard-normal latent to share")
        if not isinstance(grid, Grid):
            raise ValueError(f"grid must be a vaeinv.Grid, got {type(grid).__name__}")
        check_nested(grid, fine, "coarse", "prior's")
        self.prior = prior
        self.grid = grid
        self.latent_dim = int(prior.latent_dim)
        self.factor = (fine.ny // grid.ny, fine.nx // grid.nx)
        base = getattr(prior, "name", None) or "custom"
        self.name = f"{base}@{grid.ny}x{grid.nx}"
        self.weights_sha256 = getattr(prior, "weights_sha256", None)

    @property
    def device(self) -> torch.device:
        return torch.device(self.prior.device)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self.prior, "dtype", torch.float64)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z (..., latent_dim) -> log_k (..., ny, nx)`` on the coarse grid, differentiable."""
        return coarsen(self.prior.decode(z), self.factor)

    def to(self, device: str | torch.device) -> CoarsenedPrior:
        """This prior with the fine prior on ``device``."""
        return CoarsenedPrior(self.prior.to(device), self.grid)

    def __repr__(self) -> str:
        return f"CoarsenedPrior({self.name!r}, latent_dim={self.latent_dim})"
