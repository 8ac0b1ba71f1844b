"""Local posteriors: the interface sensitivity is the exact derivative of the readings, the
whitened likelihood is the Gaussian density with the interface covariance, a subdomain with
no sensors is prior-only (with a warning), and a prior on other cells is refused."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeinv import Grid, Partition
from vaeinv.decomposition import (
    Decomposition,
    InterfaceSettings,
    PriorOnlyWarning,
    build_local,
    interface_sensitivity,
)
from vaeinv.physics.sensors import PointSensors
from vaeinv.priors.gaussian_field import GaussianFieldPrior

sys.path.insert(0, str(Path(__file__).resolve().parent))

from manufactured import FIELD, manufactured


@pytest.fixture(scope="module")
def problem():
    return manufactured()


QUICK = InterfaceSettings(pilot_rounds=0, fit_steps=20)


def _prepare(problem, noise=0.01, **kwargs):
    return Decomposition.prepare(
        problem.partition, problem.prior, problem.flow, problem.sensors, problem.data, noise,
        interface=kwargs.pop("interface", QUICK), **kwargs,
    )  # fmt: skip


def test_the_sensitivity_is_the_derivative_in_the_interface_values(problem):
    """The pressure is affine in the boundary values: a finite difference of any step is the
    derivative, so H must match it to round-off."""
    spec = _prepare(problem).specs[0]
    flow = spec.flow()
    sensors = PointSensors(flow.grid, spec.sensor_xy)
    field = problem.truth[
        problem.partition.subdomains[0].rows, problem.partition.subdomains[0].cols
    ]
    h = interface_sensitivity(flow, sensors, field, spec.interfaces)
    base = sensors(flow.solve(field[None]))[0].numpy()
    column = 0
    for side in spec.interfaces:
        for j in (0, 5):
            shifted = {k: np.array(v, dtype=float) for k, v in spec.dirichlet.items()}
            shifted[side][j] += 0.3
            moved = dataclasses.replace(spec, dirichlet=shifted).flow()
            diff = (sensors(moved.solve(field[None]))[0].numpy() - base) / 0.3
            np.testing.assert_allclose(h[:, column + j], diff, rtol=1e-8, atol=1e-12)
        column += len(spec.dirichlet[side])
    assert h.shape == (spec.num_sensors, column)


def test_the_local_likelihood_is_the_gaussian_with_the_interface_covariance(problem):
    spec = _prepare(problem).specs[3]
    assert float(np.abs(spec.interface_cov).max()) > 0 and spec.sensitivity.any()
    posterior, _ = build_local(spec)
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(3, posterior.latent_dim, generator=gen, dtype=torch.float64)
    got = posterior.log_likelihood(z)
    clean = spec.flow().solve(posterior.decode(z))
    readings = PointSensors(spec.local_grid(), spec.sensor_xy)(clean)
    cov = torch.as_tensor(spec.likelihood_covariance())
    mvn = torch.distributions.MultivariateNormal(readings, covariance_matrix=cov)
    expected = mvn.log_prob(torch.as_tensor(spec.data))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-8)


def test_a_subdomain_without_sensors_warns_and_is_prior_only(problem):
    keep = problem.sensors.xy[:, 0] < 0.5  # none on the right half
    sensors = PointSensors(problem.grid, problem.sensors.xy[keep])
    part = Partition(problem.grid, 4, 1, overlap=0)
    local = GaussianFieldPrior(Grid(4, 16, lx=0.25, ly=1.0), num_modes=10, **FIELD)
    with pytest.warns(PriorOnlyWarning) as caught:
        dd = Decomposition.prepare(
            part, local, problem.flow, sensors, problem.data[keep], 0.01, interface=QUICK
        )
    said = [str(w.message) for w in caught]
    assert len(said) == 2 and all("holds no sensor" in m for m in said)
    assert said[0].startswith("subdomain 2 ") and said[1].startswith("subdomain 3 ")
    posterior, _ = build_local(dd.specs[3])
    z = torch.randn(5, posterior.latent_dim, dtype=torch.float64)
    ll = posterior.log_likelihood(z)
    torch.testing.assert_close(ll, torch.full_like(ll, -0.5 * math.log(2 * math.pi)))


def test_a_local_prior_on_other_cells_is_refused(problem):
    wrong = GaussianFieldPrior(Grid(8, 8, lx=0.5, ly=0.5), num_modes=10, **FIELD)
    with pytest.raises(ValueError, match=r"has 8 x 8 cells .* subdomain 0 has 10 x 10 cells"):
        Decomposition.prepare(
            problem.partition, wrong, problem.flow, problem.sensors, problem.data, 0.01
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": np.zeros(5)}, "data must be 64 finite values"),
        ({"noise_std": 0.0}, "noise_std must be > 0"),
    ],
)
def test_bad_data_is_refused_before_any_work(problem, change, message):
    args = {"data": problem.data.numpy(), "noise_std": 0.01, **change}
    with pytest.raises(ValueError, match=message):
        Decomposition.prepare(
            problem.partition, problem.prior, problem.flow, problem.sensors, args["data"],
            args["noise_std"],
        )  # fmt: skip


def test_bad_interface_settings_are_refused():
    with pytest.raises(ValueError, match="target_fraction must be a number > 0"):
        InterfaceSettings(target_fraction=0)
    with pytest.raises(ValueError, match="max_points must be an integer >= 0"):
        InterfaceSettings(max_points=-1)


def test_one_prior_per_subdomain(problem):
    local = problem.prior.grid
    priors = [
        GaussianFieldPrior(local, num_modes=10 + k, **{**FIELD, "mean": 0.1 * k}) for k in range(4)
    ]
    dd = Decomposition.prepare(
        problem.partition, priors, problem.flow, problem.sensors, problem.data, 0.01,
        interface=QUICK,
    )  # fmt: skip
    for k, spec in enumerate(dd.specs):
        posterior, _ = build_local(spec)
        assert posterior.latent_dim == 10 + k
        z = torch.zeros(1, 10 + k, dtype=torch.float64)
        expected = torch.full((1, 10, 10), 0.1 * k, dtype=torch.float64)
        torch.testing.assert_close(posterior.decode(z), expected)
    with pytest.raises(ValueError, match=r"expected one local prior or 4 \(one per subdomain\)"):
        Decomposition.prepare(
            problem.partition, priors[:3], problem.flow, problem.sensors, problem.data, 0.01
        )
