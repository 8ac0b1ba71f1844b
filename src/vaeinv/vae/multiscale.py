"""Multiscale VAEs (the multiscale deep generative model of Xia & Zabaras 2022): a VAE of the
coarsest field and, per finer level, a conditional VAE that sees the coarser level.

Levels are numbered from the coarsest (0). Level ``k`` models the training field coarsened to
its grid by block log-mean-exp ([`coarsen`][vaeinv.fields.coarsen.coarsen]). The conditional
VAE of level ``k >= 1`` takes as ``cond`` (``cond_channels = latent_channels[k-1] + 1``):

- the latent map of level ``k - 1`` (its decoder-space latent, ``latent_channels`` channels on
  the coarser latent grid), and
- the field level ``k - 1`` decodes from it (normalised with level ``k``'s shift and scale),

both repeated (nearest neighbour) up to level ``k``'s grid ([`level_cond`]). The decoder
therefore copies the coarse structure and spends its own latent on the detail; its KL term
involves its own latent only. For training, the coarser latent is the frozen coarser
encoder's mean (eval mode) and the coarser field its decode, so that at sampling time, where
the coarser latent is a prior draw, the conditioning has the distribution it was trained on
(after each level's latent Gaussian is fitted to its aggregate posterior).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..fields.coarsen import coarsen
from .config import VAEConfig
from .networks import VAE

__all__ = ["cond_channels", "decode_levels", "encode_levels", "level_cond", "repeat_to"]


def repeat_to(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``(B, C, h, w) -> (B, C, ny, nx)`` by repeating each cell (``ny / h``, ``nx / w``
    integers)."""
    h, w = x.shape[-2:]
    ny, nx = shape
    if ny % h or nx % w:
        raise ValueError(f"a {h} x {w} map does not nest in a {ny} x {nx} grid")
    return x.repeat_interleave(ny // h, dim=-2).repeat_interleave(nx // w, dim=-1)


def level_cond(
    coarse: VAEConfig, z: torch.Tensor, field: torch.Tensor, fine: VAEConfig
) -> torch.Tensor:
    """The conditioning of the finer level from the coarser one: ``(B, C + 1, ny, nx)``.

    Args:
        coarse: the coarser level's architecture (its ``latent_shape`` shapes ``z``).
        z: ``(B, latent_dim)`` the coarser level's decoder-space latent.
        field: ``(B, ny_c, nx_c)`` the field the coarser level decodes from ``z``.
        fine: the finer level's architecture.
    """
    shape = (fine.ny, fine.nx)
    latent = z.reshape(z.shape[0], *coarse.latent_shape)
    if latent.dim() == 2:  # a vector latent: one constant map per entry
        latent = latent[:, :, None, None]
    normal = ((field - fine.field_shift) / fine.field_scale).unsqueeze(1)
    return torch.cat([repeat_to(latent, shape), repeat_to(normal, shape)], dim=1)


def decode_levels(models: Sequence[VAE], latents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Decode decoder-space latents ``(z_0, ..., z_k)`` level by level; the fields of every
    level, coarsest first (``(B, ny_l, nx_l)`` each)."""
    fields: list[torch.Tensor] = []
    for level, z in enumerate(latents):
        model = models[level]
        cond = None
        if level:
            cond = level_cond(
                models[level - 1].config, latents[level - 1], fields[-1], model.config
            )
        fields.append(model.decoder(z, cond))
    return fields


def cond_channels(coarse: VAEConfig) -> int:
    """The ``cond_channels`` of the level after ``coarse``: its latent channels plus one."""
    return (coarse.latent_channels if coarse.latent == "spatial" else coarse.latent_dim) + 1


@torch.no_grad()
def encode_levels(
    models: Sequence[VAE], fine_fields: torch.Tensor, batch_size: int = 256
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Encode fine fields at every level of ``models`` (trained, coarsest first), each
    level conditioned on the coarser level's encoder mean and its decode.

    Returns:
        ``(means, decoded)``: per level, the encoder means ``(N, d_l)`` and their decodes
        ``(N, ny_l, nx_l)``, on the CPU.
    """
    ny = fine_fields.shape[-2]
    means: list[list[torch.Tensor]] = [[] for _ in models]
    decoded: list[list[torch.Tensor]] = [[] for _ in models]
    for start in range(0, fine_fields.shape[0], batch_size):
        chunk = fine_fields[start : start + batch_size]
        prev = None
        for level, model in enumerate(models):
            param = next(model.parameters())
            x = coarsen(chunk.to(param.device, param.dtype), ny // model.config.ny)
            cond = None
            if prev is not None:
                cond = level_cond(models[level - 1].config, prev[0], prev[1], model.config)
            mu, _ = model.encode(x, cond)
            prev = (mu, model.decoder(mu, cond))
            means[level].append(mu.cpu())
            decoded[level].append(prev[1].cpu())
    return [torch.cat(m) for m in means], [torch.cat(f) for f in decoded]
