"""The prior protocol: what a posterior asks of a prior over a latent space.

A prior for vaeinv is anything with

- ``latent_dim``: the number of latents ``d``;
- ``grid``: the [`Grid`][vaeinv.grid.Grid] of the fields it decodes to (``None`` when the
  "field" is not on a grid);
- ``decode(z)``: latents ``(..., d) -> log_k (..., ny, nx)``, batched over leading dimensions
  and differentiable in ``z``;
- ``log_prior(z)``: the latent log density ``(...)``, float64, with its constant;
- ``sample(n, generator)``: ``n`` prior draws of ``log_k``;
- ``device`` and ``name``; optionally ``to(device)`` and ``weights_sha256`` (recorded with
  results).

[`LatentPrior`][vaeinv.priors.base.LatentPrior] is the base class of the shipped priors: it
supplies the standard-normal latent (``log_prior``, ``latent_distribution``, ``sample``), so a
prior with a white latent only implements ``decode``. The samplers of the pCN family propose
moves that leave ``N(0, I)`` invariant and run only on priors whose ``standard_normal`` is
true.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro.distributions as dist
import torch

from ..grid import Grid

__all__ = ["CallablePrior", "LatentPrior", "standard_normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` over the last dimension, with its constant: ``(...)`` float64."""
    z = z.to(torch.float64)
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    if generator is None:
        fresh = torch.Generator()
        fresh.seed()
        return fresh
    return generator


class LatentPrior:
    """A prior over a standard-normal latent ``z ~ N(0, I_d)``, ``log_k = decode(z)``.

    Subclasses set ``latent_dim``, ``grid`` and ``name`` and implement ``decode`` (and
    ``device`` when they hold tensors); the rest of the protocol comes from here.
    """

    #: the latent prior is ``N(0, I)`` (pCN, gpCN and tpCN need it).
    standard_normal = True
    latent_dim: int
    grid: Grid | None
    name: str | None = None
    weights_sha256: str | None = None

    @property
    def device(self) -> torch.device:
        """Where decoded fields live (the CPU unless a subclass says otherwise)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype latents are drawn in."""
        return torch.float64

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z (..., latent_dim) -> log_k (..., ny, nx)``, differentiable in ``z``."""
        raise NotImplementedError

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, I)`` with its constant, ``(...)`` float64."""
        return standard_normal_log_prob(z)

    def latent_distribution(self) -> dist.Distribution:
        """``N(0, I)`` over the latent as one event: ``Normal(0, 1).to_event(1)``."""
        zeros = torch.zeros(self.latent_dim, device=self.device, dtype=self.dtype)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def sample_latents(self, n: int, generator: torch.Generator | int | None = None):
        """``n`` latent draws ``(n, latent_dim)`` from ``generator`` (a CPU generator or a
        seed; ``None`` draws a fresh OS-entropy seed, never the global RNG)."""
        return torch.randn(n, self.latent_dim, generator=_generator(generator), dtype=self.dtype)

    def sample(self, n: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """``n`` prior draws ``log_k (n, ...)``, without gradient."""
        z = self.sample_latents(n, generator)
        with torch.no_grad():
            return self.decode(z.to(self.device))

    def to(self, device: str | torch.device) -> LatentPrior:
        """This prior on ``device`` (a prior without tensors is returned as it is)."""
        return self


class CallablePrior(LatentPrior):
    """A standard-normal latent decoded by a plain function (see
    [`Posterior.from_callables`][vaeinv.posterior.target.Posterior.from_callables]).

    Args:
        decode: ``z (B, latent_dim) float64 -> field (B, *field_shape)``; it must follow its
            input's device.
        latent_dim: ``d``, a positive integer.
        grid: the fields' grid, or ``None``.
        name: a label (default ``"custom"``).
        device: the device latents are drawn for.

    Raises:
        ValueError: a ``latent_dim`` that is not a positive integer.
    """

    def __init__(
        self,
        decode: Callable[[torch.Tensor], torch.Tensor],
        latent_dim: int,
        grid: Grid | None = None,
        name: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        self._decode = decode
        self.latent_dim = latent_dim
        self.grid = grid
        self.name = "custom" if name is None else str(name)
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``decode(z)`` of the flattened float64 latents, leading dimensions restored."""
        lead = z.shape[:-1]
        field = self._decode(z.reshape(-1, self.latent_dim).to(torch.float64))
        return field.reshape(*lead, *field.shape[1:])

    def to(self, device: str | torch.device) -> CallablePrior:
        out = CallablePrior(self._decode, self.latent_dim, self.grid, self.name, device)
        return out
