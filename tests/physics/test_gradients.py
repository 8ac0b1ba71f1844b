"""The discrete-adjoint gradient of the Darcy solve, checked three independent ways."""

import pytest
import torch

from vaeinv import Grid
from vaeinv.physics import DarcyFlow, PointSensors

from conftest import random_log_k

SOLVERS = ["direct", "multigrid"]


def flow_on(grid, solver):
    return DarcyFlow(
        grid,
        dirichlet={"left": 1.0, "bottom": [0.2, 0.1, 0.0, -0.1, 0.3]},
        source=0.7,
        wells=[(0.35, 0.55, 0.5)],
        solver=solver,
        rtol=1e-12,
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_gradcheck_on_a_small_non_square_grid(solver, generator):
    grid = Grid(5, 4, lx=1.0, ly=0.8)
    flow = flow_on(grid, solver)
    log_k = random_log_k((2, *grid.shape), generator, contrast=3.0).requires_grad_()
    assert torch.autograd.gradcheck(flow.solve, (log_k,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_taylor_remainder_decays_at_second_order(solver, generator):
    """J(m + e v) - J(m) - e <grad J, v> = O(e^2): halving e divides the remainder by ~4."""
    grid = Grid(12, 9)
    flow = DarcyFlow(grid, source=1.0, solver=solver, rtol=1e-12)
    sensors = PointSensors.lattice(grid, 3)
    weights = torch.randn(sensors.num_sensors, generator=generator, dtype=torch.float64)

    def objective(m):
        return (weights * sensors(flow.solve(m))).sum()

    m = random_log_k(grid.shape, generator, contrast=6.0).requires_grad_()
    (grad,) = torch.autograd.grad(objective(m), m)
    v = torch.randn(grid.shape, generator=generator, dtype=torch.float64)
    base = float(objective(m.detach()))
    slope = float((grad * v).sum())
    eps = [1e-2 / 2**i for i in range(5)]
    remainders = [abs(float(objective(m.detach() + e * v)) - base - e * slope) for e in eps]
    rates = [remainders[i] / remainders[i + 1] for i in range(len(eps) - 1)]
    print("remainders", remainders, "ratios", rates)
    assert all(3.5 < r < 4.5 for r in rates), rates


@pytest.mark.parametrize("solver", SOLVERS)
def test_adjoint_matches_autograd_through_a_dense_solve(solver, generator):
    grid = Grid(7, 6)
    flow = DarcyFlow(
        grid, dirichlet={"left": 1.0, "top": 0.0}, source=1.0, solver=solver, rtol=1e-12
    )
    log_k = random_log_k((3, *grid.shape), generator, contrast=8.0)
    target = torch.randn(3, *grid.shape, generator=generator, dtype=torch.float64)

    def dense_solve(m):
        from vaeinv.physics._linalg import FluxOperator

        tx, ty = flow.transmissibilities(m)
        a = FluxOperator(tx, ty).dense()  # assembled by autograd-tracked operations
        b = flow.rhs(tx, ty).flatten(-2)
        return torch.linalg.solve(a, b[..., None])[..., 0].reshape(m.shape)

    m1 = log_k.clone().requires_grad_()
    m2 = log_k.clone().requires_grad_()
    ((flow.solve(m1) - target) ** 2).sum().backward()
    ((dense_solve(m2) - target) ** 2).sum().backward()
    torch.testing.assert_close(m1.grad, m2.grad, rtol=1e-8, atol=1e-12)


def test_gradient_flows_to_float32_input(generator):
    grid = Grid(6, 6)
    log_k = random_log_k(grid.shape, generator).float().requires_grad_()
    DarcyFlow(grid, source=1.0).solve(log_k).sum().backward()
    assert log_k.grad.dtype == torch.float32 and bool(torch.isfinite(log_k.grad).all())


def test_second_derivatives_are_refused_not_wrong(generator):
    """The adjoint backward is first-order only: double backward must raise, never return a
    silently wrong Hessian-vector product."""
    grid = Grid(4, 3)
    flow = DarcyFlow(grid, source=1.0)
    m = random_log_k(grid.shape, generator, contrast=2.0).requires_grad_()
    (grad,) = torch.autograd.grad(flow.solve(m).square().sum(), m, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|not have been used|require grad"):
        torch.autograd.grad(grad.sum(), m)
