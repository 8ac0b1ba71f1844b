"""Same seed, same draws: the draws a seed gives are pinned, so that moving code never changes
them. The digests were computed with the samplers as they stood before the inference layer was
reorganised; a change that alters any digest changes the numbers users get from a seed.

The digests cover the draws and every sampler statistic; the work counters are checked
against their definitions instead (every decode-and-solve and every gradient counted once).

The problem is a small mildly non-linear one (the linear-Gaussian helper with a quadratic term
on the predictions), run through ``vaeinv.sample`` with every sampler option at a small value.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import vaeinv

from linear_gaussian import linear_gaussian

OPTIONS = {
    "pcn": {},
    "gpcn": {"laplace_steps": 5},
    "tpcn": {"laplace_steps": 5, "flow_steps": 10, "flow_layers": 2, "flow_hidden": 8},
    "hmc": {"laplace_steps": 5, "trajectory_length": 1.5},
}

DIGESTS = {
    "gpcn": "88a6b8168215f50ec0e66fd635f02ff099ed37d2cc5b18550fddf7f8f20b8133",
    "hmc": "d75440b997ff3474d0c82791819caa4c966f0882ff87a17ac625788cc73f4231",
    "pcn": "b9bf7c2ab755a9f1d31c99bee44485278b22fc2a049779d23a0b7f591324cbe0",
    "tpcn": "c9c74ed48d736b3d22a6dd305245320d9f4f0628a61048fdbe4b20a672f16886",
}
DARCY_DIGESTS = {
    "hmc": "0ac8b23b55ce4d9c9796ffebc6fc2e9b7689659d98dd62a86ea0f6100a6b7e4a",
    "pcn": "bfb3641fcf33a82afc36cca68554cafcde32b53372e78bce57b75c2dfc0d6e08",
}


def _posterior():
    def quadratic(field, prediction):
        return prediction + 0.1 * prediction**2

    return linear_gaussian(latent_dim=3, num_data=4, forward_hook=quadratic).posterior


def _darcy_posterior():
    """A Gaussian-field prior (8 KL modes) on an 8 x 8 Darcy problem with 9 sensors: the
    posterior's prior-object path (``Posterior(prior, physics, sensors, data, noise)``)."""
    grid = vaeinv.Grid(8, 8)
    prior = vaeinv.GaussianFieldPrior(grid, length_scale=0.3, num_modes=8)
    flow = vaeinv.DarcyFlow(grid, dirichlet={"left": 1.0, "right": 0.0}, source=0.5)
    sensors = vaeinv.PointSensors.lattice(grid, 3)
    truth = prior.decode(torch.linspace(-1.0, 1.0, 8, dtype=torch.float64))
    data = sensors(flow.solve(truth[None]))[0]
    return vaeinv.Posterior(prior, flow, sensors, data, 0.02, truth=truth)


def draws_digest(idata) -> str:
    """sha256 over every draw and statistic (float64, C order)."""
    h = hashlib.sha256()
    for group in ("posterior", "sample_stats", "log_likelihood"):
        data = getattr(idata, group)
        for name in sorted(data.data_vars):
            h.update(name.encode())
            h.update(np.ascontiguousarray(data[name].values, dtype=np.float64).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_a_seed_gives_the_pinned_draws(method):
    idata = _run(_posterior(), method)
    assert draws_digest(idata) == DIGESTS[method]


@pytest.mark.parametrize("method", ["pcn", "hmc"])
def test_a_seed_gives_the_pinned_draws_on_a_darcy_problem(method):
    idata = _run(_darcy_posterior(), method)
    assert draws_digest(idata) == DARCY_DIGESTS[method]


def _run(posterior, method):
    return vaeinv.sample(
        posterior,
        method=method,
        num_chains=3,
        num_draws=24,
        num_warmup=24,
        thin=1,
        chunk_size=10,
        seed=7,
        progress=False,
        **OPTIONS[method],
    )


def test_work_is_counted_once_per_solve_and_gradient():
    """pCN solves each chain once at its start and once per iteration, and nothing more for its
    kept draws (its state carries their fields). HMC without warm-up and with a fixed mass (no
    Laplace start) solves with a gradient once per chain at its start and once per chain per
    leapfrog, and once more without one per kept draw (decoded again for its field)."""
    chains, warmup, draws = 3, 24, 24
    pcn = _run(_posterior(), "pcn")
    assert pcn.attrs["forward_solves"] == chains * (1 + warmup + draws)
    assert pcn.attrs["gradient_evaluations"] == 0
    hmc = vaeinv.sample(
        _posterior(),
        "hmc",
        num_chains=chains,
        num_draws=draws,
        num_warmup=0,
        thin=1,
        seed=7,
        progress=False,
        inverse_mass_matrix=torch.eye(3, dtype=torch.float64),
        trajectory_length=1.5,
    )
    leapfrogs = int(hmc.sample_stats["n_steps"].sum())  # summed over chains and draws
    assert leapfrogs > 0
    assert hmc.attrs["gradient_evaluations"] == chains + leapfrogs
    assert hmc.attrs["forward_solves"] == chains + leapfrogs + chains * draws
