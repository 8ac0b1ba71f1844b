"""Affine coupling layers (RealNVP, Dinh et al. 2017): the one flow implementation of vaeinv,
used by the VAE's second stage (`vaeinv.vae.flow`) and by transport-map pCN's map
(`vaeinv.approx.transport`). It imports nothing of vaeinv.

Layer ``i`` keeps the coordinates where its mask ``m_i`` is 1 and maps the others,

    x <- x * exp(s) + t * (1 - m_i),    (s, t) = net_i(m_i * x),
    s <- scale_limit * tanh(s / scale_limit) * (1 - m_i),

so ``log |det| = sum s``; each ``net_i`` is an MLP of ``depth`` GELU hidden layers of width
``hidden`` whose last layer starts at zero, so an untrained flow is the identity.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AffineCouplings", "coupling_net"]


def coupling_net(dim: int, hidden: int, depth: int) -> nn.Sequential:
    """``x (..., dim) -> (s, t) (..., 2 dim)``: ``depth`` GELU layers, the last layer zero."""
    layers: list[nn.Module] = []
    width = dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    last = nn.Linear(width, 2 * dim)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


class AffineCouplings(nn.Module):
    """A stack of affine couplings with fixed masks (module docstring).

    Args:
        masks: ``(layers, dim)`` of 0 and 1: the coordinates each layer keeps.
        hidden: width of each coupling network's hidden layers.
        depth: hidden layers per coupling network.
        scale_limit: the bound of the log-scale ``s``.

    Raises:
        ValueError: masks that are not a ``(layers, dim)`` 0/1 array with ``dim >= 2``.
    """

    def __init__(self, masks: torch.Tensor, hidden: int, depth: int, scale_limit: float) -> None:
        super().__init__()
        if masks.dim() != 2 or masks.shape[1] < 2 or not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError(
                f"masks must be a (layers, dim >= 2) array of 0 and 1, got {tuple(masks.shape)}"
            )
        self.scale_limit = float(scale_limit)
        self.register_buffer("masks", masks)
        self.nets = nn.ModuleList(
            coupling_net(masks.shape[1], hidden, depth) for _ in range(masks.shape[0])
        )

    def _st(self, net: nn.Module, mask: torch.Tensor, x: torch.Tensor):
        s, t = net(x * mask).chunk(2, dim=-1)
        limit = self.scale_limit
        return limit * torch.tanh(s / limit) * (1.0 - mask), t * (1.0 - mask)

    def forward_and_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g(x), log |det dg/dx|)`` for ``x (..., dim)``."""
        log_det = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for mask, net in zip(self.masks, self.nets, strict=True):
            s, t = self._st(net, mask, x)
            x = x * torch.exp(s) + t
            log_det = log_det + s.sum(-1)
        return x, log_det

    def inverse_and_logdet(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g^-1(y), log |det dg^-1/dy|)`` (each layer undone, last first)."""
        log_det = torch.zeros(y.shape[:-1], dtype=y.dtype, device=y.device)
        for mask, net in zip(reversed(self.masks), reversed(self.nets), strict=True):
            s, t = self._st(net, mask, y)  # the kept half is unchanged by the layer
            y = (y - t) * torch.exp(-s)
            log_det = log_det - s.sum(-1)
        return y, log_det
