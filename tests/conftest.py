"""Shared fixtures. Every random test draws from an explicit, logged seed."""

from __future__ import annotations

import math

import pytest
import torch

SEED = 20261121


@pytest.fixture
def generator(request) -> torch.Generator:
    """A torch.Generator seeded from SEED and the test's name (printed on failure)."""
    seed = (SEED + sum(map(ord, request.node.name))) % 2**31
    print(f"seed for {request.node.name}: {seed}")
    return torch.Generator().manual_seed(seed)


def random_log_k(shape, generator, contrast: float = 8.0, smooth: int = 2) -> torch.Tensor:
    """Heterogeneous float64 log-k fields whose range (max - min) per field equals ``contrast``.

    White noise is smoothed by ``smooth`` passes of a 3 x 3 box filter, then rescaled, so the
    fields have both sharp and smooth variation.
    """
    *batch, ny, nx = shape
    z = torch.randn(
        math.prod(batch) if batch else 1, 1, ny, nx, generator=generator, dtype=torch.float64
    )
    box = torch.ones(1, 1, 3, 3, dtype=torch.float64) / 9
    for _ in range(smooth):
        z = torch.nn.functional.conv2d(
            torch.nn.functional.pad(z, (1, 1, 1, 1), mode="replicate"), box
        )
    z = z[:, 0]
    lo = z.amin((-2, -1), keepdim=True)
    hi = z.amax((-2, -1), keepdim=True)
    z = contrast * ((z - lo) / (hi - lo) - 0.5)
    return z.reshape(*batch, ny, nx)
