import pytest
import torch

from vaeinv import Grid
from vaeinv.physics import PointSensors


def test_exact_at_cell_centres(generator):
    grid = Grid(6, 5, lx=1.2, ly=1.0)
    x, y = grid.cell_centers()
    pick = [(0, 0), (4, 5), (2, 3), (1, 4)]
    xy = torch.stack([torch.stack([x[i, j], y[i, j]]) for i, j in pick])
    field = torch.randn(3, *grid.shape, generator=generator, dtype=torch.float64)
    values = PointSensors(grid, xy)(field)
    expected = torch.stack([field[..., i, j] for i, j in pick], dim=-1)
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-14)


def test_reproduces_bilinear_functions_everywhere_in_the_domain(generator):
    """Bilinear interpolation (continued linearly into the edge strips) is exact for
    f = a + b x + c y + d x y, including points on the boundary and in corners."""
    grid = Grid(7, 4, lx=2.0, ly=1.0)
    x, y = grid.cell_centers()
    a, b, c, d = torch.randn(4, generator=generator, dtype=torch.float64)
    field = a + b * x + c * y + d * x * y
    pts = torch.rand(50, 2, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 1.0])
    pts = torch.cat(
        [pts, torch.tensor([[0.0, 0.0], [2.0, 1.0], [0.0, 0.6], [1.3, 1.0]], dtype=torch.float64)]
    )
    values = PointSensors(grid, pts)(field)
    px, py = pts[:, 0], pts[:, 1]
    torch.testing.assert_close(values, a + b * px + c * py + d * px * py, rtol=1e-12, atol=1e-12)


def test_lattice_matches_the_mdgm_layout():
    grid = Grid(64, 64)
    sensors = PointSensors.lattice(grid, 8)
    assert sensors.num_sensors == 64
    cells = torch.tensor([4, 12, 20, 28, 36, 44, 52, 60], dtype=torch.float64)
    torch.testing.assert_close(sensors.xy[:8, 0], (cells + 0.5) / 64)
    torch.testing.assert_close(sensors.xy[::8, 1], (cells + 0.5) / 64)
    # a lattice sensor reads its cell exactly
    field = torch.arange(64 * 64, dtype=torch.float64).reshape(64, 64)
    assert sensors(field)[9].item() == field[12, 12].item()


def test_batched_differentiable_and_equal_to_its_matrix(generator):
    grid = Grid(5, 6)
    sensors = PointSensors(grid, torch.rand(7, 2, generator=generator, dtype=torch.float64))
    field = torch.randn(2, 3, *grid.shape, generator=generator, dtype=torch.float64)
    values = sensors(field)
    assert values.shape == (2, 3, 7)
    torch.testing.assert_close(values, field.flatten(-2) @ sensors.matrix().T)
    f = field.clone().requires_grad_()
    assert torch.autograd.gradcheck(sensors, (f,))


def test_one_cell_wide_grid():
    grid = Grid(1, 4)
    field = torch.tensor([[1.0], [2.0], [3.0], [4.0]], dtype=torch.float64)
    values = PointSensors(grid, [[0.1, 0.375], [0.9, 0.625]])(field)
    torch.testing.assert_close(values, torch.tensor([2.0, 3.0], dtype=torch.float64))


@pytest.mark.parametrize(
    ("xy", "match"),
    [
        ([[0.5, 0.5], [1.2, 0.3]], r"sensor 1 at \(1.2, 0.3\) lies outside the domain"),
        ([[0.5, -0.01]], "sensor 0 .* outside"),
        ([[0.5, float("nan")]], "non-finite"),
        ([0.5, 0.5], r"shape \(num_sensors, 2\)"),
    ],
)
def test_bad_sensor_positions(xy, match):
    with pytest.raises(ValueError, match=match):
        PointSensors(Grid(4, 4), xy)


def test_bad_lattice_and_field():
    with pytest.raises(ValueError, match="lattice size n must be an integer in"):
        PointSensors.lattice(Grid(4, 4), 5)
    with pytest.raises(ValueError, match="expected"):
        PointSensors.lattice(Grid(4, 4), 2)(torch.zeros(3, 3))
