"""Bad input is refused before any work, with a message naming the value and what was expected;
a failed solve is reported, never hidden."""

import pytest
import torch

from vaeinv import Grid
from vaeinv.physics import DarcyFlow, SolverError, SolverWarning


@pytest.fixture
def grid():
    return Grid(6, 4)


def test_field_of_the_wrong_shape(grid):
    with pytest.raises(ValueError, match=r"log_k has shape \(6, 4\), expected \(\.\.\., 4, 6\)"):
        DarcyFlow(grid).solve(torch.zeros(6, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_log_k(grid, bad):
    log_k = torch.zeros(2, 4, 6)
    log_k[1, 2, 3] = bad
    with pytest.raises(
        ValueError, match=r"1 non-finite value\(s\), the first at index \(1, 2, 3\)"
    ):
        DarcyFlow(grid).solve(log_k)


def test_integer_log_k(grid):
    with pytest.raises(ValueError, match="floating-point"):
        DarcyFlow(grid).solve(torch.zeros(4, 6, dtype=torch.int64))


def test_unknown_side(grid):
    with pytest.raises(ValueError, match="unknown side 'west'; expected one of left, right"):
        DarcyFlow(grid, dirichlet={"west": 1.0})


def test_no_dirichlet_side(grid):
    with pytest.raises(ValueError, match="pressure is undetermined"):
        DarcyFlow(grid, dirichlet={})


def test_dirichlet_profile_of_the_wrong_length(grid):
    with pytest.raises(
        ValueError, match=r"dirichlet\['top'\] has shape \(4,\); expected a scalar or 6"
    ):
        DarcyFlow(grid, dirichlet={"top": [0.0, 1.0, 2.0, 3.0]})


def test_negative_grid_size():
    with pytest.raises(ValueError, match="nx must be a positive integer, got -3"):
        DarcyFlow(Grid(-3, 4))


def test_source_of_the_wrong_shape(grid):
    with pytest.raises(
        ValueError,
        match=r"source has shape \(6, 4\); expected a scalar or an array of shape \(4, 6\)",
    ):
        DarcyFlow(grid, source=torch.zeros(6, 4))


@pytest.mark.parametrize(
    ("wells", "match"),
    [
        ([(1.5, 0.5, 1.0)], r"wells\[0\] at \(1.5, 0.5\) lies outside the domain"),
        ([(0.5, 0.5)], r"wells\[0\] = \(0.5, 0.5\); expected \(x, y, rate\)"),
        ([(0.5, 0.5, float("nan"))], "non-finite"),
    ],
)
def test_bad_wells(grid, wells, match):
    with pytest.raises(ValueError, match=match):
        DarcyFlow(grid, wells=wells)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(solver="lu"), "unknown solver 'lu'"),
        (dict(rtol=0.0), "rtol must be in"),
        (dict(max_iter=0), "max_iter must be a positive integer"),
        (dict(on_failure="ignore"), "unknown on_failure 'ignore'"),
    ],
)
def test_bad_options(grid, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DarcyFlow(grid, **kwargs)


def test_non_converged_solve_is_nan_and_warned():
    # big enough for several multigrid levels, so one CG iteration cannot reach 1e-15
    flow = DarcyFlow(Grid(24, 16), source=1.0, solver="multigrid", rtol=1e-15, max_iter=1)
    log_k = torch.randn(3, 16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.warns(SolverWarning, match=r"3 of 3 Darcy solve\(s\) failed"):
        p = flow.solve(log_k)
    assert bool(torch.isnan(p).all())
    assert not bool(flow.last_info.converged.any())


def test_non_converged_solve_can_raise():
    flow = DarcyFlow(Grid(24, 16), solver="multigrid", rtol=1e-15, max_iter=1, on_failure="raise")
    log_k = torch.randn(16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with pytest.raises(SolverError, match="1 of 1 Darcy solve"):
        flow.solve(log_k)


def test_converged_solve_reports_its_residual(grid):
    flow = DarcyFlow(grid, source=1.0, solver="multigrid")
    flow.solve(torch.zeros(2, 4, 6))
    info = flow.last_info
    assert bool(info.converged.all()) and float(info.relative_residual.max()) <= 1e-9


def test_auto_solver_choice_follows_the_measured_crossovers():
    assert DarcyFlow(Grid(32, 32)).resolved_solver(64) == "direct"
    assert DarcyFlow(Grid(64, 64)).resolved_solver(1) == "direct"
    assert DarcyFlow(Grid(64, 64)).resolved_solver(64) == "multigrid"
    assert DarcyFlow(Grid(128, 96)).resolved_solver(1) == "multigrid"
    assert DarcyFlow(Grid(16, 16)).resolved_solver(1, "cuda") == "multigrid"
    assert DarcyFlow(Grid(128, 128), solver="direct").resolved_solver(64) == "direct"
