"""A Gaussian fit of the aggregate posterior: the latent prior a trained VAE is sampled from.

A VAE trained with ``beta < 1`` (sharp reconstructions) leaves its aggregate posterior
``q(z) = E_x q(z | x)`` far from ``N(0, I)``: decoding ``z ~ N(0, I)`` then gives fields with
the wrong variance and texture. The second stage of a two-stage VAE (Dai & Wipf 2019, here in its
simplest, Gaussian form) fits ``q(z)`` by a Gaussian ``N(loc, S S^T)`` with
``S S^T = Cov_x[mu(x)] + E_x[diag sigma^2(x)]`` (the exact covariance of the mixture ``q(z)``)
and reparameterises the latent as ``z = loc + S w`` with ``w ~ N(0, I)``. Samplers keep working
in the white latent ``w``; the VAE's weights are untouched. The identity (``loc = 0``,
``S = I``) is the plain VAE prior.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LatentGaussian", "fit_latent_gaussian", "with_latent_prior"]


class LatentGaussian(nn.Module):
    """``z = loc + scale_tril @ w``: the map from the white latent ``w`` to the VAE's latent.

    Args:
        latent_dim: the latent dimension.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim))

    @property
    def is_identity(self) -> bool:
        eye = torch.eye(self.loc.numel(), dtype=self.scale_tril.dtype, device=self.loc.device)
        return bool((self.loc == 0).all()) and bool((self.scale_tril == eye).all())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``(..., latent_dim)`` white latents to VAE latents."""
        return self.loc + w @ self.scale_tril.mT

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents to white latents, ``S^{-1} (z - loc)``."""
        centred = (z - self.loc).unsqueeze(-1)
        return torch.linalg.solve_triangular(self.scale_tril, centred, upper=False)[..., 0]


@torch.no_grad()
def fit_latent_gaussian(
    model, fields: torch.Tensor, batch_size: int = 256, cond: torch.Tensor | None = None
) -> LatentGaussian:
    """Fit the aggregate posterior of ``model`` on ``fields`` and store it in ``model``.

    Args:
        model: a trained [`VAE`][vaeinv.vae.VAE]; its ``latent_prior`` is overwritten.
        fields: ``(num, ny, nx)`` fields, typically the training set (``num > latent_dim``),
            or a [`FieldStack`][vaeinv.fields.FieldStack] read in batches.
        batch_size: fields encoded at a time.
        cond: the conditioning of each field, for a conditional VAE (``cond_channels > 0``).

    Returns:
        The fitted ``model.latent_prior``.

    Raises:
        ValueError: fewer fields than latent dimensions + 1 (the covariance would be singular).
    """
    dim = model.config.latent_dim
    if fields.shape[0] <= dim:
        raise ValueError(
            f"fitting a {dim}-dimensional latent Gaussian needs more than {dim} fields, "
            f"got {fields.shape[0]}"
        )
    param = next(model.parameters())
    mus, variances = [], []
    model.eval()
    for start in range(0, fields.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        chunk = fields.read(rows) if hasattr(fields, "read") else fields[rows]
        chunk = chunk.to(param.device, param.dtype)
        c = None if cond is None else cond[start : start + batch_size].to(param.device, param.dtype)
        mu, logvar = model.encode(chunk, c)
        mus.append(mu.double())
        variances.append(logvar.double().exp())
    mu = torch.cat(mus)
    loc = mu.mean(0)
    cov = torch.cov(mu.T, correction=0) + torch.diag(torch.cat(variances).mean(0))
    prior = model.latent_prior
    prior.loc.copy_(loc.to(prior.loc))
    prior.scale_tril.copy_(torch.linalg.cholesky(cov).to(prior.scale_tril))
    return prior


def with_latent_prior(state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """``state`` completed with the identity latent prior when it has none.

    Checkpoints written before the latent prior existed lack exactly the two
    ``latent_prior.*`` buffers; they mean the plain ``N(0, I)`` prior. Any other missing or
    unexpected key is still an error of the strict load that follows.
    """
    keys = {f"latent_prior.{name}" for name, _ in model.latent_prior.named_buffers()}
    if keys.isdisjoint(state):
        identity = LatentGaussian(model.config.latent_dim)
        state = {**state, **{f"latent_prior.{k}": v for k, v in identity.state_dict().items()}}
    return state
