"""Poisson blending of local fields: exact for restrictions of one field, seams between
subdomains that disagree by constants removed, and the blend's constant fixed by the mean."""

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


def test_constant_disagreements_between_subdomains_leave_no_seam():
    """Local fields ``f + c_k``: every guidance difference is ``f``'s own, so the blend is
    ``f`` plus one constant, while gathering leaves a jump of ``c_k - c_l`` on every seam."""
    grid = Grid(12, 12)
    part = Partition(grid, 2, 2, overlap=2)
    field = _smooth_field(grid)
    shifts = [0.0, 0.5, -0.7, 0.2]
    local = [f + c for f, c in zip(part.scatter(field), shifts, strict=True)]
    blended = PoissonBlend(part)(local)
    offset = blended - field
    torch.testing.assert_close(offset, offset.mean() * torch.ones_like(offset), rtol=0, atol=1e-10)
    gathered = part.gather(local)
    torch.testing.assert_close(blended.mean((-2, -1)), gathered.mean((-2, -1)))
    print(f"seam error: gathered {seam_error(part, local, field):.3f}, "
          f"blended {seam_error(part, blended, field):.2e}")  # fmt: skip
    assert seam_error(part, local, field) > 0.3
    assert seam_error(part, blended, field) < 1e-10


def test_a_blend_refuses_foreign_input():
    part = Partition(Grid(8, 8), 2, 2, overlap=1)
    with pytest.raises(ValueError, match=r"partition must be a vaeinv\.Partition"):
        PoissonBlend(Grid(8, 8))
    with pytest.raises(ValueError, match="expected 4 local fields, got 2"):
        PoissonBlend(part)([torch.zeros(5, 5), torch.zeros(5, 5)])
