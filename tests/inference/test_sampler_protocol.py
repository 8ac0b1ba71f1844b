"""One protocol, every sampler: shapes and dtypes, ArviZ stat names, determinism under a seed,
finite statistics consistent with the posterior, and NaN predictions as counted failures."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from test_gpcn import gaussian
from test_transport import random_map

from vaeinv.kernels.gpcn import gpcn_init, gpcn_step
from vaeinv.kernels.hmc import freeze_hmc, hmc_init, hmc_step
from vaeinv.kernels.nuts import nuts_run
from vaeinv.kernels.pcn import freeze_adaptation, pcn_init, pcn_step
from vaeinv.kernels.tpcn import tpcn_init, tpcn_step

from linear_gaussian import linear_gaussian

NUM_CHAINS, NUM_WARMUP, NUM_DRAWS = 2, 30, 40


def _drive(posterior, state, generator, step, freeze=freeze_adaptation):
    """Warm-up (adapting), freeze, then the draws, as the runner drives the pCN family and
    HMC: ``(final state, z (C, N, d), stats {name: (C, N)})``."""
    for _ in range(NUM_WARMUP):
        state, _ = step(posterior, state, generator, adapt=True)
    state = freeze(state)
    z, stats = [], []
    for _ in range(NUM_DRAWS):
        state, info = step(posterior, state, generator, adapt=False)
        z.append(state.z)
        stats.append({**info._asdict(), "lp": posterior.log_prior(state.z) + state.log_likelihood})
    stacked = {k: torch.stack([s[k] for s in stats], 1) for k in stats[0]}
    return state, torch.stack(z, 1), stacked


def run_pcn(posterior, z0, seed):
    """pCN as a runner drives it: (z (C, N, d), stats {name: (C, N)}, failure stat name)."""
    generator = torch.Generator().manual_seed(seed)
    state, z, stats = _drive(posterior, pcn_init(posterior, z0), generator, pcn_step)
    # the state caches the field of its z (what the runner stores as log_k), on its device
    with torch.no_grad():
        field = posterior.decode(state.z)
    assert state.field.device == field.device
    assert torch.allclose(state.field, field, rtol=0, atol=1e-12)
    return z, stats, "failed"


def run_nuts(posterior, z0, seed):
    r = nuts_run(posterior, z0, num_draws=NUM_DRAWS, num_warmup=NUM_WARMUP, seed=seed)
    names = ("lp", "acceptance_rate", "step_size", "diverging", "tree_depth", "n_steps")
    return r.z, {k: getattr(r, k) for k in names}, "diverging"


def run_tpcn(posterior, z0, seed):
    """tpCN with a fixed transport map far from the identity, started at ``T^-1(z0)``."""
    transport = random_map(posterior.latent_dim, seed=11)
    generator = torch.Generator().manual_seed(seed)
    state = tpcn_init(posterior, transport.inverse(z0), transport)
    torch.testing.assert_close(state.z, z0.to(state.z), rtol=0, atol=1e-12)
    step = functools.partial(tpcn_step, transport=transport)
    _, z, stats = _drive(posterior, state, generator, step)
    return z, stats, "failed"


def run_gpcn(posterior, z0, seed):
    """gpCN around a fixed reference Gaussian that is not the posterior (the runner's Laplace
    fit is tested in test_runner_gpcn), so the importance weights are not constant."""
    mean = torch.tensor([0.3, -0.2], dtype=torch.float64, device=posterior.device)
    cov = torch.tensor([[1.5, 0.4], [0.4, 0.8]], dtype=torch.float64, device=posterior.device)
    generator = torch.Generator().manual_seed(seed)
    state = gpcn_init(posterior, z0.to(posterior.device), gaussian(mean, cov))
    _, z, stats = _drive(posterior, state, generator, gpcn_step)
    return z, stats, "failed"


def run_hmc(posterior, z0, seed):
    generator = torch.Generator().manual_seed(seed)
    state = hmc_init(posterior, z0.to(posterior.device), num_warmup=NUM_WARMUP)
    _, z, stats = _drive(posterior, state, generator, hmc_step, freeze=freeze_hmc)
    return z, stats, "diverging"


SAMPLERS = {
    "pcn": run_pcn,
    "gpcn": run_gpcn,
    "tpcn": run_tpcn,
    "hmc": run_hmc,
    "nuts": run_nuts,
}


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian()


@pytest.fixture(scope="module")
def z0():
    return torch.tensor([[1.0, -1.0], [-1.5, 0.5]], dtype=torch.float64)


@pytest.mark.parametrize("method", SAMPLERS)
def test_protocol(problem, z0, method):
    sample = SAMPLERS[method]
    posterior = problem.posterior
    before = torch.random.get_rng_state()
    z, stats, failure = sample(posterior, z0, seed=1)
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched

    # shapes, dtypes, ArviZ names
    assert z.shape == (NUM_CHAINS, NUM_DRAWS, posterior.latent_dim) and z.dtype == torch.float64
    for name in ("lp", "acceptance_rate", "step_size", failure):
        assert name in stats, name
    for name, value in stats.items():
        assert value.shape == (NUM_CHAINS, NUM_DRAWS), name
    assert stats[failure].dtype == torch.bool

    # finite statistics, consistent with the posterior
    assert torch.isfinite(z).all()
    assert torch.isfinite(stats["lp"]).all()
    lp = posterior.log_density(z.to(posterior.device)).cpu()
    assert torch.allclose(stats["lp"].cpu(), lp, rtol=0, atol=1e-10)
    rate = stats["acceptance_rate"]
    assert ((rate >= 0) & (rate <= 1)).all()
    assert (stats["step_size"] > 0).all()
    assert not stats[failure].any()
    assert z.std(1).min() > 0  # the chains move

    # determinism under the seed
    z_again, stats_again, _ = sample(posterior, z0, seed=1)
    assert torch.equal(z, z_again)
    for name in stats:
        assert torch.equal(stats[name], stats_again[name]), name
    z_other, _, _ = sample(posterior, z0, seed=2)
    assert not torch.equal(z, z_other)


@pytest.mark.parametrize("method", SAMPLERS)
def test_nan_prediction_is_a_counted_failure(problem, method):
    """Where the first field cell exceeds 0.3 the forward returns NaN (for those chains of
    the batch only): samplers count the failures and never step there."""

    def hook(field, prediction):
        bad = field.reshape(*field.shape[:-2], -1)[..., 0] > 0.3
        return torch.where(bad[..., None], torch.full_like(prediction, math.nan), prediction)

    posterior = linear_gaussian(forward_hook=hook).posterior
    a_row, b0 = problem.A[0], problem.b[0]
    # starts with first cell -0.5 (finite), near the boundary of the NaN region
    z0 = (-(b0 + 0.5) * a_row / (a_row @ a_row)).expand(NUM_CHAINS, 2).clone()
    z, stats, failure = SAMPLERS[method](posterior, z0, seed=3)
    assert ((z @ a_row + b0) <= 0.3).all()
    assert torch.isfinite(stats["lp"]).all()
    assert stats[failure].any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", SAMPLERS)
def test_protocol_on_cuda(z0, method):
    """The same samplers, unchanged, on a posterior living on the GPU (CPU generator for pCN,
    the forked CUDA RNG for Pyro): finite, deterministic, lp consistent."""
    posterior = linear_gaussian(device="cuda").posterior
    assert posterior.device.type == "cuda"
    z, stats, failure = SAMPLERS[method](posterior, z0, seed=1)
    z_again, _, _ = SAMPLERS[method](posterior, z0, seed=1)
    assert torch.equal(z.cpu(), z_again.cpu())
    assert torch.isfinite(z).all() and not stats[failure].any()
    lp = posterior.log_density(z.to(posterior.device)).cpu()
    assert torch.allclose(stats["lp"].cpu(), lp, rtol=0, atol=1e-10)
