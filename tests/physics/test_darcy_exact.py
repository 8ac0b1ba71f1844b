"""The torch Darcy solver against exact mathematics: manufactured solutions, layered media,
mass conservation, batching and precision."""

import math

import pytest
import torch

from vaeinv import Grid
from vaeinv.physics import DarcyFlow

from conftest import random_log_k

SOLVERS = ["direct", "multigrid"]
PI = math.pi


def manufactured(n: int, solver: str):
    """p = sin(pi x) cos(pi y) + x with log k = 0.5 sin(2 pi x) + 0.3 cos(pi y) on the unit square.

    dp/dy = 0 on y = 0 and y = 1, so top and bottom are no-flow; left and right take p's values;
    f = -div(k grad p) = -k (a_x p_x + p_xx + a_y p_y + p_yy) with a = log k.
    """
    grid = Grid(n, n)
    x, y = grid.cell_centers()

    def a(x, y):
        return 0.5 * torch.sin(2 * PI * x) + 0.3 * torch.cos(PI * y)

    def p(x, y):
        return torch.sin(PI * x) * torch.cos(PI * y) + x

    a_x = PI * torch.cos(2 * PI * x)
    a_y = -0.3 * PI * torch.sin(PI * y)
    p_x = PI * torch.cos(PI * x) * torch.cos(PI * y) + 1
    p_y = -PI * torch.sin(PI * x) * torch.sin(PI * y)
    lap = -2 * PI**2 * torch.sin(PI * x) * torch.cos(PI * y)
    f = -torch.exp(a(x, y)) * (a_x * p_x + a_y * p_y + lap)
    yc = grid.y_centers()
    flow = DarcyFlow(
        grid,
        dirichlet={"left": p(torch.zeros_like(yc), yc), "right": p(torch.ones_like(yc), yc)},
        source=f,
        solver=solver,
        rtol=1e-13,
    )
    error = flow.solve(a(x, y)) - p(x, y)
    return float(error.abs().max())


@pytest.mark.parametrize("solver", SOLVERS)
def test_manufactured_solution_converges_at_second_order(solver):
    errors = [manufactured(n, solver) for n in (16, 32, 64)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    print("max errors", errors, "observed orders", orders)
    assert errors[-1] < 2e-3
    assert all(1.8 < q < 2.3 for q in orders), orders


@pytest.mark.parametrize("solver", SOLVERS)
def test_series_layers_give_the_harmonic_mean_flux(solver, generator):
    """Layers across the flow (k varies with x only): the resistance of the column is
    sum_i dx / k_i, so the total flux is exactly (pL - pR) * ly / sum_i (dx / k_i)."""
    grid = Grid(12, 5, lx=2.0, ly=0.7)
    layers = 3 * torch.randn(grid.nx, generator=generator, dtype=torch.float64)
    log_k = layers.expand(grid.ny, grid.nx)
    flow = DarcyFlow(grid, dirichlet={"left": 2.5, "right": -1.0}, solver=solver, rtol=1e-13)
    qx, qy = flow.fluxes(log_k)
    exact = 3.5 * grid.ly / (grid.dx * torch.exp(-layers)).sum()
    torch.testing.assert_close(qx.sum(0), exact.expand(grid.nx + 1), rtol=1e-11, atol=0)
    assert float(qy.abs().max()) < 1e-10 * float(exact)


@pytest.mark.parametrize("solver", SOLVERS)
def test_parallel_layers_give_the_arithmetic_mean_flux(solver, generator):
    """Layers along the flow (k varies with y only): flux = (pL - pR) / lx * sum_j k_j dy."""
    grid = Grid(9, 14, lx=1.5, ly=1.2)
    layers = 3 * torch.randn(grid.ny, generator=generator, dtype=torch.float64)
    log_k = layers[:, None].expand(grid.ny, grid.nx)
    flow = DarcyFlow(grid, dirichlet={"left": 1.0, "right": 0.0}, solver=solver, rtol=1e-13)
    qx, _ = flow.fluxes(log_k)
    exact = 1.0 / grid.lx * (torch.exp(layers) * grid.dy).sum()
    torch.testing.assert_close(qx.sum(0), exact.expand(grid.nx + 1), rtol=1e-11, atol=0)
    # and the pressure is linear in x in every layer
    p = flow.solve(log_k)
    x, _ = grid.cell_centers()
    torch.testing.assert_close(p, 1.0 - x / grid.lx, rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_mass_is_conserved_to_round_off(solver, generator):
    grid = Grid(23, 17, lx=1.0, ly=0.8)
    flow = DarcyFlow(
        grid,
        dirichlet={"left": 1.0, "top": 0.5},
        source=torch.rand(grid.shape, generator=generator, dtype=torch.float64) - 0.3,
        wells=[(0.5, 0.4, 2.0), (0.9, 0.1, -0.7)],
        solver=solver,
        rtol=1e-13,
    )
    log_k = random_log_k((3, *grid.shape), generator)
    qx, qy = flow.fluxes(log_k)
    rates = flow.cell_rates()
    divergence = qx[..., 1:] - qx[..., :-1] + qy[..., 1:, :] - qy[..., :-1, :]
    scale = float(qx.abs().max() + qy.abs().max())
    assert float((divergence - rates).abs().max()) < 1e-11 * scale
    # inflow = outflow + sources, over the whole domain
    outflow = (
        qx[..., -1].sum(-1) - qx[..., 0].sum(-1) + qy[..., -1, :].sum(-1) - qy[..., 0, :].sum(-1)
    )
    torch.testing.assert_close(outflow, rates.sum().expand(3), rtol=1e-10, atol=0)
    # no-flow sides carry nothing
    assert float(qx[..., -1].abs().max()) == 0.0 and float(qy[..., 0, :].abs().max()) == 0.0


@pytest.mark.parametrize("solver", SOLVERS)
def test_batched_equals_one_by_one(solver, generator):
    grid = Grid(10, 8)
    flow = DarcyFlow(grid, source=1.0, solver=solver, rtol=1e-13)
    log_k = random_log_k((2, 3, *grid.shape), generator)
    batched = flow.solve(log_k)
    assert batched.shape == log_k.shape
    singles = torch.stack([torch.stack([flow.solve(f) for f in row]) for row in log_k])
    torch.testing.assert_close(batched, singles, rtol=1e-12, atol=1e-14)


def test_direct_and_multigrid_agree(generator):
    grid = Grid(40, 24)
    log_k = random_log_k((4, *grid.shape), generator)
    direct = DarcyFlow(grid, source=2.0, solver="direct").solve(log_k)
    multigrid = DarcyFlow(grid, source=2.0, solver="multigrid", rtol=1e-12).solve(log_k)
    torch.testing.assert_close(multigrid, direct, rtol=1e-9, atol=1e-12)


def test_float32_in_float32_out_accurate_to_rounding(generator):
    """Stated accuracy: the solve runs in float64, so float32 input gives the float64 solution of
    that input rounded to float32 (relative error at most 2**-24 per entry)."""
    grid = Grid(16, 12)
    flow = DarcyFlow(grid, source=1.0)
    log_k32 = random_log_k(grid.shape, generator).float()
    p32 = flow.solve(log_k32)
    p64 = flow.solve(log_k32.double())
    assert p32.dtype == torch.float32
    assert float(((p32.double() - p64).abs() / p64.abs()).max()) <= 2.0**-24


def test_output_keeps_device_and_dtype():
    grid = Grid(5, 4)
    p = DarcyFlow(grid).solve(torch.zeros(4, 5, dtype=torch.float64))
    assert p.dtype == torch.float64 and p.device.type == "cpu" and p.shape == (4, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(generator):
    grid = Grid(32, 32)
    log_k = random_log_k((3, *grid.shape), generator)
    flow = DarcyFlow(grid, source=1.0)
    torch.testing.assert_close(
        flow.solve(log_k.cuda()).cpu(), flow.solve(log_k), rtol=1e-9, atol=1e-12
    )
