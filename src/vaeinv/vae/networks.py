"""The convolutional encoder, decoder and VAE, every shape derived from a config.

Shapes come from a [`VAEConfig`][vaeinv.vae.VAEConfig]; nothing is hard-coded.

Layout (``channels = (c0, c1, ..., cL)``, factor ``f = 2**L``):

- encoder: a 3x3 convolution to ``c0`` at full resolution, then per following width a
  stride-2 3x3 convolution (halving the resolution), each followed by GroupNorm and the
  activation, plus ``blocks_per_stage`` same-resolution convolutions per stage; the head is a
  1x1 convolution (spatial latent) or a linear layer (vector latent) giving ``(mu, logvar)``.
- decoder: the mirror image, upsampling with stride-2 transposed convolutions (kernel 4), and
  a final 3x3 convolution to one channel (three for ``output="facies"``: the blend
  ``sigmoid(a) * u1 + (1 - sigmoid(a)) * u0`` of two facies maps ``u1, u0`` by the map ``a``).

**Conditioning.** With ``cond_channels > 0``, both networks take a conditioning field
``cond`` shaped ``(B, cond_channels, ny, nx)`` (or ``(B, ny, nx)`` for one channel), e.g. a
coarse field upsampled to this grid in a multiscale prior. It is area-resampled to every
stage's resolution and concatenated to that stage's input channels, so the decoder can copy
large-scale structure from it and spend its latent on the rest.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .calibration import LatentGaussian
from .config import VAEConfig

__all__ = ["VAE", "Decoder", "Encoder", "init_vae"]

_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _conv_block(config: VAEConfig, cin: int, cout: int, conv: type = nn.Conv2d, **kw) -> nn.Module:
    layers = [conv(cin, cout, **kw)]
    if config.norm_groups:
        layers.append(nn.GroupNorm(math.gcd(config.norm_groups, cout), cout))
    layers.append(_ACTIVATIONS[config.activation]())
    return nn.Sequential(*layers)


def _as_channels(cond: torch.Tensor | None, config: VAEConfig, batch: int) -> torch.Tensor | None:
    """Check ``cond`` against the config and return it as ``(B, C, py, px)`` (padded)."""
    if config.cond_channels == 0:
        if cond is not None:
            raise ValueError("this network has cond_channels=0 but a cond input was given")
        return None
    if cond is None:
        raise ValueError(f"this network needs cond (cond_channels={config.cond_channels})")
    if cond.dim() == 3 and config.cond_channels == 1:
        cond = cond.unsqueeze(1)
    expected = (batch, config.cond_channels, config.ny, config.nx)
    if tuple(cond.shape) != expected:
        raise ValueError(f"cond has shape {tuple(cond.shape)}, expected {expected}")
    return _pad(cond, config)


def _pad(x: torch.Tensor, config: VAEConfig) -> torch.Tensor:
    py, px = config.padded_shape
    if (py, px) == (config.ny, config.nx):
        return x
    return F.pad(x, (0, px - config.nx, 0, py - config.ny), mode="replicate")


def _join(h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    if cond is None:
        return h
    if cond.shape[-2:] != h.shape[-2:]:
        cond = F.interpolate(cond, size=h.shape[-2:], mode="area")
    return torch.cat([h, cond], dim=1)


class Encoder(nn.Module):
    """``x (B, ny, nx) -> (mu, logvar)``, each ``(B, latent_dim)``, in network units.

    Args:
        config: the architecture.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c, k = config.cond_channels, {"kernel_size": 3, "padding": 1}
        widths = config.channels
        self.stem = _conv_block(config, 1 + c, widths[0], **k)
        self.stages = nn.ModuleList()
        for cin, cout in itertools.pairwise(widths):
            layers = [_conv_block(config, cin + c, cout, stride=2, **k)]
            layers += [_conv_block(config, cout, cout, **k) for _ in range(config.blocks_per_stage)]
            self.stages.append(nn.Sequential(*layers))
        if config.latent == "spatial":
            self.head = nn.Conv2d(widths[-1] + c, 2 * config.latent_channels, kernel_size=1)
        else:
            h, w = config.latent_grid
            self.head = nn.Linear((widths[-1] + c) * h * w, 2 * config.latent_dim)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode normalized fields ``x (B, ny, nx)``; returns ``(mu, logvar)``."""
        cond = _as_channels(cond, self.config, x.shape[0])
        h = self.stem(_join(_pad(x.unsqueeze(1), self.config), cond))
        for stage in self.stages:
            h = stage(_join(h, cond))
        h = _join(h, cond)
        out = self.head(h if self.config.latent == "spatial" else h.flatten(1))
        mu, logvar = out.chunk(2, dim=1)
        return mu.flatten(1), logvar.flatten(1)


class Decoder(nn.Module):
    """``z -> field``: ``forward`` gives fields in field units, ``raw`` in network units.

    ``z`` is ``(B, latent_dim)`` or ``(B, *latent_shape)``; ``cond`` as in the module docstring.

    Args:
        config: the architecture.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c, k = config.cond_channels, {"kernel_size": 3, "padding": 1}
        widths = config.channels[::-1]
        if config.latent == "spatial":
            self.head = _conv_block(config, config.latent_channels + c, widths[0], **k)
        else:
            h, w = config.latent_grid
            self.head = nn.Sequential(
                nn.Linear(config.latent_dim, widths[0] * h * w),
                _ACTIVATIONS[config.activation](),
                nn.Unflatten(1, (widths[0], h, w)),
            )
        self.stages = nn.ModuleList()
        up = {"kernel_size": 4, "stride": 2, "padding": 1}
        for cin, cout in itertools.pairwise(widths):
            layers = [_conv_block(config, cin, cin, **k) for _ in range(config.blocks_per_stage)]
            layers.append(_conv_block(config, cin + c, cout, conv=nn.ConvTranspose2d, **up))
            self.stages.append(nn.Sequential(*layers))
        self.out = nn.Conv2d(widths[-1] + c, 3 if config.output == "facies" else 1, **k)

    def raw(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Network-space output ``(B, ny, nx)``: normalized values, or logits."""
        z = z.reshape(z.shape[0], *self.config.latent_shape)
        cond = _as_channels(cond, self.config, z.shape[0])
        h = self.head(_join(z, cond) if self.config.latent == "spatial" else z)
        for stage in self.stages:
            h = stage[-1](_join(stage[:-1](h), cond))
        h = self.out(_join(h, cond))[..., : self.config.ny, : self.config.nx]
        if self.config.output == "facies":
            a, u1, u0 = h.unbind(1)
            return torch.lerp(u0, u1, torch.sigmoid(a))
        return h[:, 0]

    def to_field(self, raw: torch.Tensor) -> torch.Tensor:
        """Map network output to field units (``sigmoid`` first for ``"logits"``)."""
        if self.config.output == "logits":
            raw = torch.sigmoid(raw)
        return self.config.field_shift + self.config.field_scale * raw

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``z (B, latent_dim)`` to fields ``(B, ny, nx)`` in field units."""
        return self.to_field(self.raw(z, cond))


class VAE(nn.Module):
    """Encoder + decoder with the reparameterisation trick (explicit ``torch.Generator``).

    Args:
        config: the architecture.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # the latent prior to sample from: identity (N(0, I)) until fitted after training
        self.latent_prior = LatentGaussian(config.latent_dim)

    def normalize(self, fields: torch.Tensor) -> torch.Tensor:
        """Fields in network units, ``(fields - field_shift) / field_scale``."""
        return (fields - self.config.field_shift) / self.config.field_scale

    def encode(
        self, fields: torch.Tensor, cond: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z | fields)``, each ``(B, latent_dim)``."""
        return self.encoder(self.normalize(fields), cond)

    def forward(
        self,
        fields: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, draw ``z = mu + sigma * eps``, decode.

        Args:
            fields: ``(B, ny, nx)`` in field units.
            cond: optional conditioning field (see the module docstring).
            generator: source of ``eps``; ``None`` decodes the mean ``z = mu`` (no noise).

        Returns:
            ``(raw, mu, logvar)``: the network-space reconstruction ``(B, ny, nx)`` and the
            encoder's mean and log-variance ``(B, latent_dim)``.
        """
        mu, logvar = self.encode(fields, cond)
        z = mu
        if generator is not None:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device="cpu")
            z = mu + torch.exp(0.5 * logvar) * eps.to(mu.device)
        return self.decoder.raw(z, cond), mu, logvar


def init_vae(config: VAEConfig, seed: int) -> VAE:
    """A fresh [`VAE`][vaeinv.vae.VAE] whose initial weights depend only on ``seed``.

    The weights are drawn inside ``torch.random.fork_rng``, so the global RNG is untouched.

    Args:
        config: the architecture.
        seed: the seed of the initial weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(config)
