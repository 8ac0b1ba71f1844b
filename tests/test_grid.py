import pytest
import torch

from vaeinv import Grid


def test_spacing_and_centres():
    g = Grid(4, 2, lx=2.0, ly=1.0)
    assert g.shape == (2, 4) and g.num_cells == 8
    assert g.dx == 0.5 and g.dy == 0.5 and g.cell_area == 0.25
    x, y = g.cell_centers()
    assert x.shape == (2, 4) and y.shape == (2, 4)
    torch.testing.assert_close(x[0], torch.tensor([0.25, 0.75, 1.25, 1.75], dtype=torch.float64))
    torch.testing.assert_close(y[:, 0], torch.tensor([0.25, 0.75], dtype=torch.float64))
    # iy = 0 is y = 0: rows increase with y
    assert bool((y[1] > y[0]).all())


def test_side_lengths_and_containment():
    g = Grid(3, 5)
    assert g.side_length("left") == 5 and g.side_length("top") == 3
    assert g.contains(0.0, 1.0) and not g.contains(1.0 + 1e-9, 0.5)


@pytest.mark.parametrize("kwargs", [dict(nx=-4, ny=4), dict(nx=0, ny=4), dict(nx=4, ny=2.5)])
def test_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="positive integer"):
        Grid(**kwargs)


@pytest.mark.parametrize("lx", [0.0, -1.0, float("nan"), float("inf"), "one"])
def test_bad_lengths(lx):
    with pytest.raises(ValueError, match="lx must be a positive finite length"):
        Grid(4, 4, lx=lx)


def test_check_field_names_the_shape():
    g = Grid(4, 3)
    g.check_field(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"shape \(2, 4, 3\), expected \(\.\.\., 3, 4\)"):
        g.check_field(torch.zeros(2, 4, 3))


def test_unknown_side():
    with pytest.raises(ValueError, match="unknown side 'north'"):
        Grid(3, 3).side_length("north")
