"""The interface model: a linear pressure is recovered exactly, conditioning shrinks the
variance where it observes, active learning stops at its target, and the face pressures of a
global solve make local solves reproduce it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeinv.decomposition import InterfaceGP, build_local, face_pressures, refine_interfaces
from vaeinv.decomposition.setup import Decomposition, InterfaceSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))

from manufactured import manufactured


@pytest.fixture(scope="module")
def problem():
    return manufactured()


def test_a_linear_pressure_is_recovered_exactly():
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=gen, dtype=torch.float64)
    plane = lambda p: 0.3 - 1.2 * p[:, 0] + 0.45 * p[:, 1]  # noqa: E731
    gp = InterfaceGP(xy, plane(xy), 1e-4)
    points = torch.rand(25, 2, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    mean, cov = gp.predict(points)
    torch.testing.assert_close(mean, plane(points), rtol=0, atol=1e-10)
    assert float(cov.diagonal().max()) < 1e-8  # no residual variance is left to model


def test_the_fit_does_not_depend_on_where_its_arrays_sit_in_memory():
    """The same observations give the same bits however the allocator lays the arrays out
    (a least-squares driver whose last bits did made runs on workers differ from runs in
    process)."""
    gen = np.random.default_rng(0)
    xy = gen.uniform(size=(16, 2))
    y = 2 * xy[:, 0] + 0.1 * np.sin(5 * xy[:, 1])
    fits, padding = set(), []
    for _ in range(20):
        padding.append(torch.empty(int(gen.integers(1, 5000)), dtype=torch.float64))
        gp = InterfaceGP(xy, y, np.full(16, 1e-4), fit_steps=10)
        fits.add((gp.trend.numpy().tobytes(), gp.length_scale, gp.kernel_variance))
    assert len(fits) == 1


def test_an_observation_brings_the_variance_under_its_own():
    gen = torch.Generator().manual_seed(2)
    xy = torch.rand(30, 2, generator=gen, dtype=torch.float64)
    values = torch.sin(3 * xy[:, 0]) * torch.cos(2 * xy[:, 1])
    gp = InterfaceGP(xy, values, 1e-4)
    point = torch.tensor([[1.3, 0.5]], dtype=torch.float64)  # outside the sensors
    _, before = gp.predict(point, full_cov=False)
    _, after = gp.with_points(point, [0.1], 1e-4).predict(point, full_cov=False)
    assert float(after) < 1e-4 < float(before)
    # the covariance is a covariance: symmetric positive semi-definite
    _, cov = gp.predict(torch.rand(12, 2, generator=gen, dtype=torch.float64))
    torch.testing.assert_close(cov, cov.T)
    assert float(torch.linalg.eigvalsh(cov).min()) > -1e-10


def test_active_learning_stops_at_its_target_or_its_budget():
    gen = torch.Generator().manual_seed(3)
    xy = torch.rand(30, 2, generator=gen, dtype=torch.float64) * 0.5
    values = torch.sin(5 * xy[:, 0]) + xy[:, 1] ** 2
    gp = InterfaceGP(xy, values, 1e-4)
    line = torch.stack([torch.full((20,), 0.9), torch.linspace(0, 1, 20)], 1).double()
    truth = torch.sin(5 * line[:, 0]) + line[:, 1] ** 2
    refined, added, history = refine_interfaces(
        gp, line, truth, 1e-4, target_variance=1e-3, max_points=20
    )
    assert history[-1] < 1e-3 <= history[-2] and len(added) == len(set(added)) > 0
    assert len(added) < 20 and refined.num_points == gp.num_points + len(added)
    _, capped, h = refine_interfaces(gp, line, truth, 1e-4, target_variance=0.0, max_points=2)
    assert len(capped) == 2 and len(h) == 3


def test_bad_observations_are_refused():
    xy = torch.rand(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"xy must have shape \(n >= 3, 2\)"):
        InterfaceGP(xy[:2], torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="values has shape"):
        InterfaceGP(xy, torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="variances must be > 0"):
        InterfaceGP(xy, torch.zeros(5), 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        InterfaceGP(xy, torch.tensor([0.0, 1, 2, float("nan"), 3]), 1.0)


def test_face_pressures_make_local_solves_reproduce_the_global_one(problem):
    """With the global solve's face pressures on its interfaces, a subdomain's own Darcy
    problem (global boundary conditions on its other sides) has the global solution."""
    dd = Decomposition.prepare(
        problem.partition, problem.prior, problem.flow, problem.sensors, problem.data, 0.01,
        interface=InterfaceSettings(pilot_rounds=0, fit_steps=0),
    )  # fmt: skip
    for s, spec in zip(problem.partition.subdomains, dd.specs, strict=True):
        faces = face_pressures(problem.truth, problem.pressure, s)
        dirichlet = {**spec.dirichlet, **{k: v.numpy() for k, v in faces.items()}}
        flow = dataclasses.replace(spec, dirichlet=dirichlet).flow()
        local = flow.solve(problem.truth[s.rows, s.cols][None])[0]
        torch.testing.assert_close(local, problem.pressure[s.rows, s.cols], rtol=0, atol=1e-12)


def test_zero_interface_variance_gives_the_global_likelihood_restricted(problem):
    """Exact interface pressures and no interface variance: each local likelihood of the
    true field equals the global Gaussian likelihood of the subdomain's sensors (noisy data)."""
    gen = torch.Generator().manual_seed(5)
    sd = 0.01
    noisy = problem.data + sd * torch.randn(problem.data.shape, generator=gen, dtype=torch.float64)
    dd = Decomposition.prepare(
        problem.partition, problem.prior, problem.flow, problem.sensors, noisy, sd,
        interface=InterfaceSettings(pilot_rounds=0, fit_steps=0),
    )  # fmt: skip
    clean = problem.sensors(problem.pressure[None])[0]
    for s, spec in zip(problem.partition.subdomains, dd.specs, strict=True):
        faces = {
            k: v.numpy() for k, v in face_pressures(problem.truth, problem.pressure, s).items()
        }
        exact = dataclasses.replace(
            spec,
            dirichlet={**spec.dirichlet, **faces},
            interface_cov=np.zeros_like(spec.interface_cov),
        )
        posterior, _ = build_local(exact)
        local = posterior.log_likelihood_of(posterior.forward(problem.truth[s.rows, s.cols][None]))
        idx = dd.sensor_index[s.index]
        r = (noisy[idx] - clean[idx]) / sd
        expected = float((-0.5 * r**2 - np.log(sd) - 0.5 * np.log(2 * np.pi)).sum())
        assert abs(float(local[0]) - expected) < 1e-9 * abs(expected)


def test_a_smooth_error_field_is_not_averaged_away():
    """Observing ``f + e`` at points far from the sensors, with ``e`` an error field of
    variance ``v`` and the kernel's correlation: the variance of ``f`` there is exactly
    ``s v / (s + v)`` (``s`` the kernel variance), however many points; with independent
    errors it falls below."""
    gen = torch.Generator().manual_seed(9)
    xy = torch.rand(20, 2, generator=gen, dtype=torch.float64)
    gp = InterfaceGP(xy, torch.sin(4 * xy[:, 0]), 1e-4, fit_steps=0, length_scale=0.3)
    s, v = gp.kernel_variance, 0.5 * gp.kernel_variance
    line = torch.stack([torch.full((12,), 30.0), torch.linspace(0, 1, 12)], 1).double()
    smooth = gp.with_points(line, torch.zeros(12), v, correlated=True)
    _, var = smooth.predict(line, full_cov=False)
    torch.testing.assert_close(var, torch.full_like(var, s * v / (s + v)), rtol=1e-5, atol=0)
    _, independent = gp.with_points(line, torch.zeros(12), v).predict(line, full_cov=False)
    assert float(independent.max()) < 0.8 * s * v / (s + v)
    with pytest.raises(ValueError, match="one variance for all of them"):
        smooth.with_points(line[:1] + 0.5, [0.0], 2 * v, correlated=True)
