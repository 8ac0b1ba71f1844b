"""Poisson blending of local fields on the overlaps: exact for restrictions of one field, each
subdomain's own values kept outside the overlaps, and disagreements between subdomains spread
harmonically across the overlaps instead of sitting on a seam."""

from __future__ import annotations

import pytest
import torch

from vaeinv import Grid, Partition
from vaeinv.blending import PoissonBlend, seam_error


def _smooth_field(grid, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = grid.cell_centers()
    a = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return torch.stack(
        [
            a[i, 0] * torch.sin(3 * x + a[i, 1]) + a[i, 2] * torch.cos(2 * y * a[i, 3])
            for i in range(n)
        ]
    )


@pytest.mark.parametrize("overlap", [0, 1, 3])
def test_the_blend_of_copies_of_one_field_is_that_field(overlap):
    grid = Grid(12, 8)
    part = Partition(grid, 3, 2, overlap=overlap)
    field = _smooth_field(grid)
    blended = PoissonBlend(part)(part.scatter(field))
    torch.testing.assert_close(blended, field, rtol=0, atol=1e-10)


@pytest.mark.parametrize("overlap", [2, 4])
def test_constant_disagreements_are_spread_harmonically_over_the_overlaps(overlap):
    """Local fields ``f + c_k``: every guidance difference is ``f``'s own, so the blend minus
    ``f`` is discrete-harmonic on the overlaps with the constants ``c_k`` on their edges: it
    equals ``c_k`` where only subdomain ``k`` holds a cell, lies between the smallest and the
    largest constant (maximum principle), and the jump on the seams shrinks with the overlap."""
    grid = Grid(16, 16)
    part = Partition(grid, 2, 2, overlap=overlap)
    field = _smooth_field(grid)
    shifts = [0.0, 0.5, -0.7, 0.2]
    local = [f + c for f, c in zip(part.scatter(field), shifts, strict=True)]
    blend = PoissonBlend(part)
    offset = blend(local) - field
    copies = part.copies()
    for s, c in zip(part.subdomains, shifts, strict=True):
        own = offset[..., s.rows, s.cols][..., copies[s.rows, s.cols] == 1]
        torch.testing.assert_close(own, torch.full_like(own, c), rtol=0, atol=1e-10)
    assert offset.min() >= min(shifts) - 1e-10 and offset.max() <= max(shifts) + 1e-10
    lap = torch.zeros_like(offset)  # the graph Laplacian of the offset, Neumann at the border
    lap[..., :, 1:] += offset[..., :, 1:] - offset[..., :, :-1]
    lap[..., :, :-1] += offset[..., :, :-1] - offset[..., :, 1:]
    lap[..., 1:, :] += offset[..., 1:, :] - offset[..., :-1, :]
    lap[..., :-1, :] += offset[..., :-1, :] - offset[..., 1:, :]
    inside = lap[..., copies > 1]
    torch.testing.assert_close(inside, torch.zeros_like(inside), rtol=0, atol=1e-10)
    gathered, blended = seam_error(part, local, field), seam_error(part, blend(local), field)
    print(f"overlap {overlap}: seam error gathered {gathered:.3f}, blended {blended:.3f}")
    assert gathered > 0.3
    assert blended < gathered / overlap


def test_a_blend_refuses_foreign_input():
    part = Partition(Grid(8, 8), 2, 2, overlap=1)
    with pytest.raises(ValueError, match=r"partition must be a vaeinv\.Partition"):
        PoissonBlend(Grid(8, 8))
    with pytest.raises(ValueError, match="expected 4 local fields, got 2"):
        PoissonBlend(part)([torch.zeros(5, 5), torch.zeros(5, 5)])
