"""Observation types (heads, head differences, side fluxes) and several experiments on one
field: batched solves against separate ones, adjoint gradients against finite differences,
mass balance, and the bad inputs."""

from __future__ import annotations

import pytest
import torch

from vaeinv import DarcyFlow, Grid
from vaeinv.physics import PointSensors
from vaeinv.physics.base import SensorReadings
from vaeinv.physics.experiments import ExperimentReadings
from vaeinv.physics.observations import Observations

GRID = Grid(12, 10, 1.2, 1.0)
HEADS = [[0.15, 0.2], [0.6, 0.55], [1.05, 0.85]]
PAIRS = [[0.15, 0.2, 1.05, 0.85], [0.3, 0.7, 0.9, 0.3]]


def _log_k(generator, batch=3):
    noise = torch.randn(batch, 1, *GRID.shape, generator=generator, dtype=torch.float64)
    return torch.nn.functional.avg_pool2d(noise, 3, 1, 1, count_include_pad=False)[:, 0] * 2


def _flows(solver="direct", **shared):
    """Two pumping tests and an injection test, two with other boundary conditions."""
    return [
        DarcyFlow(GRID, dirichlet={"left": 1.0, "right": 0.0}, wells=[(0.35, 0.45, -0.2)],
                  solver=solver, **shared),
        DarcyFlow(GRID, dirichlet={"left": 1.0, "right": 0.0}, wells=[(0.85, 0.55, -0.3)],
                  solver=solver, **shared),
        DarcyFlow(GRID, dirichlet={"top": 0.5}, source=0.4, wells=[(0.6, 0.2, 0.25)],
                  solver=solver, **shared),
    ]  # fmt: skip


def _observations():
    return [
        Observations(GRID, heads=HEADS, differences=PAIRS, fluxes=["left", "right"]),
        Observations(GRID, heads=HEADS[:2], fluxes=["right"]),
        Observations(GRID, differences=PAIRS[:1], fluxes=["top"]),
    ]


def test_one_experiment_of_heads_is_the_sensor_readings(generator):
    flow = DarcyFlow(GRID, dirichlet={"left": 1.0, "right": 0.0}, solver="direct")
    log_k = _log_k(generator)
    readings = ExperimentReadings([flow], [Observations(GRID, heads=HEADS)])
    expected = SensorReadings(flow, PointSensors(GRID, HEADS))(log_k)
    torch.testing.assert_close(readings(log_k), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("solver", ["direct", "multigrid"])
def test_the_batched_experiments_equal_separate_solves(generator, solver):
    """B fields x 3 experiments in one batch (two share their no-flow sides, one not) give
    what each experiment's own flow and observations give."""
    flows, seen = _flows(solver, rtol=1e-12), _observations()
    readings = ExperimentReadings(flows, seen, names=["pump-A", "pump-B", "inject"])
    log_k = _log_k(generator)
    values = readings(log_k)
    assert values.shape == (3, readings.num_outputs) and readings.sizes == [7, 3, 2]
    for part, flow, obs in zip(readings.split(values), flows, seen, strict=True):
        torch.testing.assert_close(part, obs(flow, log_k, flow.solve(log_k)), rtol=1e-9, atol=1e-11)
    assert readings.cost == 3 and readings.last_info.converged.shape == (9,)


def test_a_head_difference_is_the_difference_of_the_heads(generator):
    flow = _flows()[0]
    log_k = _log_k(generator)
    p = flow.solve(log_k)
    diff = Observations(GRID, differences=PAIRS)(flow, log_k, p)
    heads = PointSensors(GRID, [xy for pair in PAIRS for xy in (pair[:2], pair[2:])])(p)
    torch.testing.assert_close(diff, heads[:, 0::2] - heads[:, 1::2], rtol=0, atol=1e-14)


def test_side_fluxes_balance_the_wells_and_the_source(generator):
    """Steady state: what leaves through the open sides is what the wells and the source put in
    (the other sides are no-flow)."""
    log_k = _log_k(generator)
    for flow in _flows():
        sides = sorted(flow.setup.dirichlet)
        out = Observations(GRID, fluxes=sides)(flow, log_k, flow.solve(log_k)).sum(-1)
        injected = float(flow.cell_rates().sum())
        torch.testing.assert_close(out, torch.full_like(out, injected), rtol=1e-9, atol=1e-12)


def test_gradients_of_every_observation_kind_match_finite_differences(generator):
    """The adjoint gradient of a weighted sum of all values of all experiments against central
    differences along a random direction."""
    readings = ExperimentReadings(_flows(rtol=1e-12), _observations())
    log_k = _log_k(generator, batch=2)
    weights = torch.randn(2, readings.num_outputs, generator=generator, dtype=torch.float64)
    direction = torch.randn(log_k.shape, generator=generator, dtype=torch.float64)
    x = log_k.clone().requires_grad_()
    (readings(x) * weights).sum().backward()
    analytic = float((x.grad * direction).sum())
    h = 1e-5
    with torch.no_grad():
        plus = (readings(log_k + h * direction) * weights).sum()
        minus = (readings(log_k - h * direction) * weights).sum()
    numeric = float((plus - minus) / (2 * h))
    assert analytic == pytest.approx(numeric, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"heads": [[5.0, 0.5]]}, "outside the domain"),
        ({"differences": [[0.2, 0.3, 0.2, 0.3]]}, "reads one point twice"),
        ({"differences": [[0.2, 0.3, 0.5]]}, r"rows \(x1, y1, x2, y2\)"),
        ({"fluxes": ["east"]}, "unknown side 'east'"),
        ({"fluxes": ["left", "left"]}, "name a side twice"),
        ({}, "nothing to observe"),
    ],
)
def test_bad_observations_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Observations(GRID, **kwargs)


def test_bad_experiments_are_refused():
    flows = _flows()
    seen = _observations()
    with pytest.raises(ValueError, match=r"no-flow side\(s\) \['left'\]"):
        ExperimentReadings([flows[2]], [Observations(GRID, fluxes=["left"])])
    with pytest.raises(ValueError, match="one flow, observations and name per experiment"):
        ExperimentReadings(flows, seen[:2])
    with pytest.raises(ValueError, match="names must differ"):
        ExperimentReadings(flows, seen, names=["a", "a", "b"])
    other = DarcyFlow(GRID, dirichlet={"left": 1.0, "right": 0.0}, solver="direct", rtol=1e-6)
    with pytest.raises(ValueError, match=r"has rtol 1e-06.*one solver runs them all"):
        ExperimentReadings([flows[0], other], seen[:2])
