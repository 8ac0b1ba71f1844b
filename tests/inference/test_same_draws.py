"""Same seed, same draws: the draws a seed gives are pinned, so that moving code never changes
them. The digests were computed with the samplers as they stood before the inference layer was
reorganised; a change that alters any digest changes the numbers users get from a seed.

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
    "gpcn": "5f11deb7afa825b16b7d175da07ceb7aff66f3420a11e2a2219f6605c1ce6a12",
    "hmc": "33b7f6da2e6d109c2cbbedff5df113f74f347387ada2a4dc5c3fcb5629b36ba2",
    "pcn": "72e3e6805606d5c28e9d63490f3433ff208e6e48a650e34e14082ebbbbb86f9c",
    "tpcn": "adbc5ec7a7a00a3d6f489bf1459440dba9fa217b9a9c3db213da035671f5144b",
}
DARCY_DIGESTS = {
    "hmc": "f764a282711e6c392cfb6a4bd2888f076c1bc498249a1967e1b6ac7ed6cacb0d",
    "pcn": "67bc25c9c114e0be5d12dd75a2608f3d49455a6f11a259777c2d05b429fb1751",
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
    """sha256 over every draw and statistic (float64, C order) and the solve count."""
    h = hashlib.sha256()
    for group in ("posterior", "sample_stats", "log_likelihood"):
        data = getattr(idata, group)
        for name in sorted(data.data_vars):
            h.update(name.encode())
            h.update(np.ascontiguousarray(data[name].values, dtype=np.float64).tobytes())
    h.update(str(idata.attrs["forward_solves"]).encode())
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
