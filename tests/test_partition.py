"""Domain decomposition: subdomains as grids of their own, scatter and gather, the overlaps,
interfaces, the sensors of each subdomain, and bad partitions refused."""

from __future__ import annotations

import pytest
import torch

from vaeinv import Grid, Partition


def _field(grid, lead=(3,)):
    g = torch.Generator().manual_seed(0)
    return torch.randn(*lead, *grid.shape, generator=g, dtype=torch.float64)


def test_scatter_then_gather_is_the_identity_and_overlaps_agree():
    grid = Grid(12, 8, lx=3.0, ly=2.0)
    part = Partition(grid, 3, 2, overlap=2)
    field = _field(grid)
    local = part.scatter(field)
    torch.testing.assert_close(part.gather(local), field, rtol=0, atol=0)
    torch.testing.assert_close(part.overlap_mean(local), field, rtol=0, atol=1e-15)
    # every cell of an overlap holds the same value in each subdomain that has it
    for a in part.subdomains:
        for b in part.subdomains:
            rows = range(max(a.rows.start, b.rows.start), min(a.rows.stop, b.rows.stop))
            cols = range(max(a.cols.start, b.cols.start), min(a.cols.stop, b.cols.stop))
            for iy in rows:
                for ix in cols:
                    va = local[a.index][..., iy - a.rows.start, ix - a.cols.start]
                    vb = local[b.index][..., iy - b.rows.start, ix - b.cols.start]
                    assert torch.equal(va, vb)


def test_subdomains_are_grids_of_their_own():
    grid = Grid(12, 8, lx=3.0, ly=2.0)
    part = Partition(grid, 3, 2, overlap=1)
    assert len(part) == 6 and part.core_shape == (4, 4)
    corner = part.subdomains[0]  # lower left: interfaces on its right and top
    assert corner.part == (0, 0) and corner.interfaces == ("right", "top")
    assert corner.grid.shape == (5, 5) and corner.grid.origin == (0.0, 0.0)
    middle = part.subdomains[4]  # upper middle: left, right and bottom interfaces
    assert middle.part == (1, 1) and middle.interfaces == ("left", "right", "bottom")
    assert middle.grid.shape == (5, 6)
    assert middle.grid.origin == pytest.approx((0.75, 0.75))
    # the local grid's cell centres are the global ones of the same cells
    x, y = grid.cell_centers()
    lx, ly = middle.grid.cell_centers()
    torch.testing.assert_close(lx, x[middle.rows, middle.cols])
    torch.testing.assert_close(ly, y[middle.rows, middle.cols])
    assert (part.copies() >= 1).all() and int(part.copies().max()) == 4
    points = middle.interface_points("left")
    assert points.shape == (5, 2) and torch.allclose(
        points[:, 0], torch.tensor(0.75, dtype=torch.float64)
    )
    cells = middle.interface_cells()
    assert len(cells) == len(set(cells)) == 5 + 5 + 6 - 2
    with pytest.raises(ValueError, match="side 'top' of subdomain 4 is on the global boundary"):
        middle.interface_points("top")


def test_each_subdomain_lists_the_sensors_in_it():
    grid = Grid(8, 8)
    part = Partition(grid, 2, 2, overlap=1)
    xy = [[0.1, 0.1], [0.9, 0.9], [0.55, 0.45], [0.3, 0.8]]
    inside = [list(s) for s in part.sensors_in(xy)]
    # (0.55, 0.45) is in the overlap of all four (overlap 1 cell = 0.125 each side of 0.5)
    assert inside == [[0, 2], [2], [2, 3], [1, 2]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((Grid(10, 8), 3, 2, 0), "nx_parts = 3 does not divide the grid's 10 cells along x"),
        ((Grid(8, 9), 2, 2, 0), "ny_parts = 2 does not divide the grid's 9 cells along y"),
        ((Grid(8, 8), 2, 2, 4), "overlap 4 is as wide as a subdomain's core"),
        ((Grid(8, 8), 2, 2, -1), "overlap must be an integer >= 0"),
        ((Grid(8, 8), 0, 2, 0), "nx_parts must be a positive integer, got 0"),
        (((8, 8), 2, 2, 0), "grid must be a vaeinv.Grid, got tuple"),
    ],
)
def test_bad_partitions_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        Partition(*args)


def test_gather_names_bad_local_fields():
    part = Partition(Grid(8, 8), 2, 2, overlap=1)
    local = part.scatter(_field(Grid(8, 8)))
    with pytest.raises(ValueError, match="expected 4 local fields, got 3"):
        part.gather(local[:3])
    with pytest.raises(ValueError, match=r"local field 1 has shape \(3, 4, 4\)"):
        part.gather([local[0], local[1][..., :4, :4], local[2], local[3]])


def test_a_local_prior_must_have_the_subdomains_cells():
    from vaeinv import GaussianFieldPrior

    part = Partition(Grid(16, 16), 2, 2, overlap=2)
    sub = part.subdomains[3]  # 10 x 10 cells of 1/16, origin (6/16, 6/16)
    ok = GaussianFieldPrior(Grid(10, 10, lx=10 / 16, ly=10 / 16), num_modes=4)
    sub.check_prior(ok)  # the origin differs; the cells are the same
    assert Grid(10, 10, lx=10 / 16, ly=10 / 16).same_cells(sub.grid)
    wrong = GaussianFieldPrior(Grid(10, 10), num_modes=4)
    with pytest.raises(
        ValueError, match=r"has 10 x 10 cells of 0.1 x 0.1; subdomain 3 has 10 x 10 cells of 0.0625"
    ):
        sub.check_prior(wrong)
