"""Multigrid CG: the float32 V-cycle, the tolerance tied to the noise, the adjoint tolerance."""

import math

import pytest
import torch

from vaeinv import DarcyFlow, Grid
from vaeinv.physics import noise_tied_rtol
from vaeinv.physics.tolerance import (
    LOOSEST_RTOL,
    NOISE_FRACTION_OF_ERROR,
    RESIDUAL_TO_ERROR,
)


def smooth_fields(generator, batch, ny, nx, sd=1.5):
    """Random log k with a correlation length of a few cells (high contrast: sd 1.5)."""
    noise = torch.randn(batch, 1, ny, nx, generator=generator, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(noise, 5, 1, 2, count_include_pad=False)[:, 0]
    return sd * smooth / smooth.std(dim=(-2, -1), keepdim=True)


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (13, 9), (1, 17)])
@pytest.mark.parametrize("precision", ["single", "double"])
def test_both_v_cycle_precisions_reach_a_tight_tolerance(generator, shape, precision, monkeypatch):
    """The float32 V-cycle is only a preconditioner: flexible CG in float64 still reaches
    1e-12 and agrees with the exact block Cholesky, on even, odd and one-row grids."""
    from vaeinv.physics import darcy

    monkeypatch.setattr(darcy, "MULTIGRID_PRECISION", precision)
    grid = Grid(shape[1], shape[0])
    log_k = smooth_fields(generator, 3, *shape)
    kw = dict(dirichlet={"left": 1.0, "right": 0.0}, source=1.0)
    flow = DarcyFlow(grid, **kw, solver="multigrid", rtol=1e-12)
    p = flow.solve(log_k)
    assert bool(flow.last_info.converged.all())
    assert float(flow.last_info.relative_residual.max()) <= 1e-11
    exact = DarcyFlow(grid, **kw, solver="direct").solve(log_k)
    torch.testing.assert_close(p, exact, rtol=0, atol=1e-9 * float(exact.abs().max()))


def test_the_float32_v_cycle_needs_no_more_iterations(generator, monkeypatch):
    from vaeinv.physics import darcy

    log_k = smooth_fields(generator, 4, 64, 64)
    counts = {}
    for precision in ("single", "double"):
        monkeypatch.setattr(darcy, "MULTIGRID_PRECISION", precision)
        flow = DarcyFlow(Grid(64, 64), source=1.0, solver="multigrid", rtol=1e-10)
        flow.solve(log_k)
        counts[precision] = flow.last_info.iterations
    assert counts["single"] <= counts["double"] + 1, counts


def test_noise_tied_rtol_follows_its_formula_and_clips():
    data = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64)
    sd = torch.tensor([1e-4, 2e-4, 3e-4], dtype=torch.float64)
    expected = NOISE_FRACTION_OF_ERROR * 1e-4 / (RESIDUAL_TO_ERROR * 2.0)
    assert math.isclose(noise_tied_rtol(sd, data), expected, rel_tol=1e-12)
    assert noise_tied_rtol(10.0, data) == LOOSEST_RTOL  # noisy data: the loosest tolerance
    assert noise_tied_rtol(1e-30, data) == 1e-12  # near-exact data: the tightest
    assert noise_tied_rtol(sd, torch.zeros(3)) == 1e-10  # nothing to scale by: the default
    assert noise_tied_rtol(float("nan"), data) == 1e-10
    assert noise_tied_rtol(sd, torch.zeros(0)) == 1e-10  # no data at all


@pytest.mark.parametrize("units", [1e-40, 1e40])
def test_the_float32_v_cycle_works_in_any_units(generator, units):
    """A right-hand side far outside float32's range (pressures in odd units) converges as
    one of order 1 does: each residual is scaled before the V-cycle's cast."""
    grid = Grid(32, 32)
    log_k = smooth_fields(generator, 2, 32, 32)
    flow = DarcyFlow(grid, dirichlet={"left": units, "right": 0.0}, solver="multigrid")
    flow_one = DarcyFlow(grid, dirichlet={"left": 1.0, "right": 0.0}, solver="multigrid")
    p, p_one = flow.solve(log_k), flow_one.solve(log_k)
    assert bool(flow.last_info.converged.all())
    assert flow.last_info.iterations == flow_one.last_info.iterations
    torch.testing.assert_close(p / units, p_one, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("noise", [1e-2, 1e-4])
def test_a_noise_tied_solve_errs_by_less_than_a_thousandth_of_the_noise(generator, noise):
    """The claim the tolerance rests on: pressure error <= 1e-3 sd on high-contrast fields."""
    grid = Grid(48, 48)
    log_k = smooth_fields(generator, 8, 48, 48, sd=3.0)
    kw = dict(dirichlet={"left": 1.0, "right": 0.0}, source=1.0)
    exact = DarcyFlow(grid, **kw, solver="direct").solve(log_k)
    scale = float(exact.abs().max())
    sd = noise * scale
    rtol = noise_tied_rtol(sd, exact.flatten())
    p = DarcyFlow(grid, **kw, solver="multigrid", rtol=rtol).solve(log_k)
    assert float((p - exact).abs().max()) <= NOISE_FRACTION_OF_ERROR * sd


def test_a_loose_adjoint_tolerance_gives_the_gradient_to_its_accuracy(generator):
    grid = Grid(32, 32)
    log_k = smooth_fields(generator, 2, 32, 32)
    weights = torch.randn(2, 32, 32, generator=generator, dtype=torch.float64)
    grads = {}
    for adjoint in (1e-12, 1e-3):
        flow = DarcyFlow(grid, source=1.0, solver="multigrid", rtol=1e-12, adjoint_rtol=adjoint)
        x = log_k.clone().requires_grad_()
        (flow.solve(x) * weights).sum().backward()
        grads[adjoint] = x.grad
        assert flow.adjoint_rtol == adjoint
    exact, loose = grads[1e-12], grads[1e-3]
    error = (loose - exact).norm(dim=(-2, -1)) / exact.norm(dim=(-2, -1))
    assert float(error.max()) < 1e-2
    assert float(error.max()) > 0  # it did stop early


@pytest.mark.parametrize("bad", [0.0, 1.0, -1e-3, "1e-3"])
def test_bad_adjoint_rtol_is_refused(bad):
    with pytest.raises(ValueError, match="adjoint_rtol must be None or in"):
        DarcyFlow(Grid(8, 8), adjoint_rtol=bad)


def test_testing_for_the_end_less_often_gives_the_same_bits(generator, monkeypatch):
    """On an accelerator CG reads its convergence flags every few iterations only: the extra
    iterations leave converged systems unchanged, so the result is bit for bit the same."""
    from vaeinv.physics import _multigrid

    grid = Grid(32, 32)
    log_k = smooth_fields(generator, 3, 32, 32)
    flow = DarcyFlow(grid, source=1.0, solver="multigrid", rtol=1e-9)
    every_one = flow.solve(log_k)
    iterations = flow.last_info.iterations
    monkeypatch.setattr(_multigrid, "CHECK_EVERY_ON_CPU", 4)
    every_four = flow.solve(log_k)
    assert torch.equal(every_one, every_four)
    assert flow.last_info.iterations == 4 * math.ceil(iterations / 4)
