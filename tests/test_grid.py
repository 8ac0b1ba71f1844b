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


def test_an_origin_shifts_centres_containment_and_sensors():
    from vaeinv.physics import PointSensors

    g = Grid(4, 2, lx=2.0, ly=1.0, origin=(3.0, -1.0))
    torch.testing.assert_close(g.x_centers(), 3.0 + Grid(4, 2, lx=2.0, ly=1.0).x_centers())
    torch.testing.assert_close(g.y_centers(), torch.tensor([-0.75, -0.25], dtype=torch.float64))
    assert g.corner == (5.0, 0.0) and g.domain == "[3, 5] x [-1, 0]"
    assert g.contains(3.0, -1.0) and g.contains(5.0, 0.0) and not g.contains(2.9, -0.5)
    # a sensor reads the same cell values at the same position relative to the origin
    field = torch.arange(8, dtype=torch.float64).reshape(1, 2, 4)
    here = PointSensors(g, [[3.75, -0.75], [4.6, -0.3]])(field)
    there = PointSensors(Grid(4, 2, lx=2.0, ly=1.0), [[0.75, 0.25], [1.6, 0.7]])(field)
    torch.testing.assert_close(here, there)
    with pytest.raises(ValueError, match=r"domain \[3, 5\] x \[-1, 0\]"):
        PointSensors(g, [[0.5, 0.5]])
    assert Grid(4, 2) != Grid(4, 2, origin=(1.0, 0.0))


@pytest.mark.parametrize("origin", [(0.0,), (0.0, float("nan")), "ab", None])
def test_bad_origins(origin):
    with pytest.raises(ValueError, match="Grid origin must be two finite numbers"):
        Grid(4, 4, origin=origin)
