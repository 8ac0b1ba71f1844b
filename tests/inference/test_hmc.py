"""Batched jittered HMC: exact on a linear-Gaussian posterior (closed form, MCSE-gated) and on a
nonlinear one (quadrature), the pooled mass windows learn the posterior covariance, one batched
evaluation per leapfrog, bit-identical continuation, failed evaluations as rejections, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_gpcn import quadrature_moments, sinh_posterior
from test_runner import assert_same_draws

from vaeinv.kernels.hmc import HMCInfo, freeze_hmc, hmc_init, hmc_step
from vaeinv.runs.extend import extend_run
from vaeinv.runs.sampling import sample

from interrupt import Stop, stop_after
from linear_gaussian import assert_moments, ess, linear_gaussian

QUICK = {"num_chains": 3, "num_draws": 12, "num_warmup": 20, "chunk_size": 4, "progress": False}


def run(posterior, z0, generator, num_warmup, num_draws, **init):
    state = hmc_init(posterior, z0, num_warmup=num_warmup, **init)
    for _ in range(num_warmup):
        state, _ = hmc_step(posterior, state, generator, adapt=True)
    state = freeze_hmc(state)
    draws, infos = [], []
    for _ in range(num_draws):
        state, info = hmc_step(posterior, state, generator)
        draws.append(state.z)
        infos.append(info)
    stacked = HMCInfo(*(torch.stack(x, 1) for x in zip(*infos, strict=True)))
    return state, torch.stack(draws, 1), stacked


def test_linear_gaussian_closed_form_and_learned_mass(generator):
    """Started far out with an identity mass on a correlated posterior whose scales differ by
    ~10: the mass windows learn its covariance and the draws match the closed form."""
    problem = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.1, seed=7)
    eig = torch.linalg.eigvalsh(problem.cov)
    assert eig[-1] / eig[0] > 20  # an ill-conditioned posterior for an identity mass
    z0 = 3.0 * torch.randn(4, 3, generator=generator, dtype=torch.float64)
    state, z, info = run(problem.posterior, z0, generator, 200, 1500)
    print("\n".join(assert_moments(z, problem.mean, problem.cov)))
    assert min(ess(z[..., i]) for i in range(3)) > 1000
    # the learned inverse mass is within a factor 2 of the posterior covariance in every
    # direction (whitened eigenvalues of cov against L L^T)
    tril = state.scale_tril
    w = torch.linalg.solve_triangular(tril, problem.cov, upper=False)
    whitened = torch.linalg.solve_triangular(tril, w.mT, upper=False)
    ratio = torch.linalg.eigvalsh(whitened)
    assert 0.5 < float(ratio.min()) and float(ratio.max()) < 2.0, ratio
    assert int(state.mass_corrections.sum()) > 0
    assert not info.failed.any()
    assert 0.6 < float(info.acceptance_rate.mean()) < 0.97


def test_nonlinear_draws_match_quadrature(generator):
    posterior = sinh_posterior()
    mean, cov = quadrature_moments(posterior)
    z0 = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    _, z, info = run(posterior, z0, generator, 200, 1500, trajectory_length=2.0)
    print("\n".join(assert_moments(z, mean, cov)))
    assert min(ess(z[..., 0]), ess(z[..., 1])) > 800
    assert not info.diverging.any()


def test_one_batched_evaluation_per_leapfrog_and_lengths_jittered(generator):
    problem = linear_gaussian()
    calls = []
    posterior = problem.posterior
    original = posterior.evaluate

    def counting(z, **kwargs):
        calls.append((tuple(z.shape), kwargs))
        return original(z, **kwargs)

    posterior.evaluate = counting
    state = hmc_init(posterior, torch.zeros(3, 2, dtype=torch.float64), step_size=0.2)
    assert calls == [((3, 2), {"grad": True})]
    assert posterior.work.gradient_evaluations == 3 == posterior.work.forward_solves
    lengths = []
    for _ in range(100):
        calls.clear()
        before = posterior.work.gradient_evaluations
        state, info = hmc_step(posterior, state, generator)
        assert len(calls) == int(info.n_steps[0]) and all(
            c == ((3, 2), {"grad": True}) for c in calls
        )
        assert posterior.work.gradient_evaluations - before == 3 * int(info.n_steps[0])
        assert (info.n_steps == info.n_steps[0]).all()
        lengths.append(int(info.n_steps[0]))
    # trees of 2^D - 1 leapfrogs, the smallest reaching u T / eps with u ~ U(0, 1), T = 3,
    # eps = 0.2 (15 steps): every depth from 1 to 4, in proportion to the range of u it covers
    assert set(lengths) == {1, 3, 7, 15}
    assert lengths.count(15) > lengths.count(1)


def test_continuation_is_bit_identical(generator):
    """Splitting a run (state and generator state carried over) gives the same draws."""
    posterior = linear_gaussian().posterior
    z0 = torch.randn(2, 2, generator=generator, dtype=torch.float64)
    g1 = torch.Generator().manual_seed(3)
    state = hmc_init(posterior, z0, num_warmup=30)
    for _ in range(30):
        state, _ = hmc_step(posterior, state, g1, adapt=True)
    state = freeze_hmc(state)
    saved_state, saved_rng = state, g1.get_state()
    whole = []
    for _ in range(20):
        state, _ = hmc_step(posterior, state, g1)
        whole.append(state.z)
    g2 = torch.Generator()
    g2.set_state(saved_rng)
    state = saved_state._replace(**{k: v.clone() for k, v in saved_state._asdict().items()})
    for i in range(20):
        state, _ = hmc_step(posterior, state, g2)
        assert torch.equal(state.z, whole[i])


def test_failed_evaluations_have_weight_zero(generator):
    """The forward returns NaN where the first cell exceeds 0.3: trajectories that enter the
    region are counted, their states there never drawn; the chains never stand there."""

    def hook(field, prediction):
        bad = field.reshape(*field.shape[:-2], -1)[..., 0] > 0.3
        return torch.where(bad[..., None], torch.full_like(prediction, math.nan), prediction)

    problem = linear_gaussian()
    posterior = linear_gaussian(forward_hook=hook).posterior
    a_row, b0 = problem.A[0], problem.b[0]
    z0 = (-(b0 + 0.5) * a_row / (a_row @ a_row)).expand(3, 2).clone()
    _, z, info = run(posterior, z0, generator, 30, 60)
    assert ((z @ a_row + b0) <= 0.3).all()
    assert info.failed.any() and (info.diverging | ~info.failed).all()
    assert info.accepted.float().mean() > 0.3  # trajectories that fail part-way still move


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step_size": 0.0}, "step_size"),
        ({"trajectory_length": math.inf}, "trajectory_length"),
        ({"max_steps": 0}, "max_steps"),
        ({"num_warmup": 5}, "num_warmup >= 20"),
        ({"scale_tril": torch.eye(3, dtype=torch.float64)}, "scale_tril has shape"),
        ({"scale_tril": -torch.eye(2, dtype=torch.float64)}, "positive diagonal"),
        ({"adapt_mass": 1}, "adapt_mass must be True or False"),
    ],
)
def test_bad_settings_are_errors(kwargs, match):
    posterior = linear_gaussian().posterior
    with pytest.raises(ValueError, match=match):
        hmc_init(posterior, torch.zeros(2, 2, dtype=torch.float64), **kwargs)


def test_a_fixed_mass_stays_through_the_warm_up(generator):
    """``adapt_mass=False``: any warm-up length, the step size adapts, the mass is the one given."""
    problem = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.1, seed=7)
    tril = torch.linalg.cholesky(problem.cov)
    z0 = problem.mean.expand(4, 3).clone()
    state, z, info = run(problem.posterior, z0, generator, 5, 400, scale_tril=tril,
                         adapt_mass=False)  # fmt: skip
    torch.testing.assert_close(state.scale_tril, tril, rtol=0, atol=0)
    assert int(state.mass_corrections.sum()) == 0
    assert state.log_step_size != math.log(0.05)  # the step size adapted
    assert not info.failed.any()
    print("\n".join(assert_moments(z, problem.mean, problem.cov)))


def test_bad_start_and_target_are_errors():
    posterior = linear_gaussian().posterior
    with pytest.raises(ValueError, match="z0 has shape"):
        hmc_init(posterior, torch.zeros(2, 3, dtype=torch.float64))
    state = hmc_init(posterior, torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="target_accept"):
        hmc_step(posterior, state, torch.Generator(), target_accept=1.0)


# ---------------------------------------------------------------------------- vaeinv.sample


def test_an_hmc_run_counts_its_solves_and_resumes_bit_for_bit(tmp_path):
    problem = linear_gaussian()
    reference = sample(problem.posterior, "hmc", seed=3, **QUICK)
    attrs = reference.attrs
    stats = reference.sample_stats
    assert set(stats.data_vars) == {
        "lp", "acceptance_rate", "step_size", "accepted", "failed", "diverging", "n_steps"
    }  # fmt: skip
    assert json.loads(attrs["sampler_options"])["trajectory_length"] == 3.0
    # gradients: one per chain at the start and per leapfrog (warm-up included), and the
    # Laplace fit's; solves: one per chain at the start and per leapfrog, the Laplace fit's,
    # and one per kept draw
    kept_steps = int(stats["n_steps"].values.sum())
    assert int(attrs["gradient_evaluations"]) > kept_steps + 3
    assert int(attrs["forward_solves"]) > kept_steps + 3 + 3 * 12
    assert int(attrs["divergences"]) == int(stats["diverging"].values.sum())
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(
            problem.posterior,
            "hmc",
            seed=3,
            checkpoint=folder,
            **{**QUICK, "progress": stop_after(7)},
        )
    resumed = sample(problem.posterior, "hmc", seed=3, checkpoint=folder, resume=True, **QUICK)
    assert_same_draws(reference, resumed)
    assert resumed.attrs["gradient_evaluations"] == attrs["gradient_evaluations"]
    # extended: the draws kept, the covariance of the kept draws as the fixed mass
    longer = extend_run(reference, problem.posterior, num_draws=4, num_warmup=2, progress=False)
    old = reference.posterior.sizes["draw"]
    np.testing.assert_array_equal(
        longer.posterior["z"].values[:, :old], reference.posterior["z"].values
    )
    assert longer.posterior.sizes["draw"] == old + 4
    record = json.loads(longer.attrs["extensions"])[0]
    assert record["mass"].endswith("covariance of the kept draws")


def test_an_hmc_run_matches_the_closed_form():
    problem = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.1, seed=7)
    idata = sample(problem.posterior, "hmc", seed=11, num_chains=4, num_warmup=150,
                   num_draws=1000, progress=False)  # fmt: skip
    z = torch.as_tensor(idata.posterior["z"].values)
    print("\n".join(assert_moments(z, problem.mean, problem.cov)))
    assert min(ess(z[..., i]) for i in range(3)) > 800


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"trajectory_length": 0.0}, "trajectory_length must be a positive number"),
        ({"step_size": -1.0}, "step_size must be a positive number"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"target_accept": 1.5}, "target_accept must be in"),
        ({"num_warmup": 10}, "num_warmup >= 20"),
        ({"mass": "pooled"}, "unknown sampler option"),
        ({"chains": [0]}, "draws all chains from one stream"),
    ],
)
def test_bad_hmc_settings_are_refused_before_any_work(option, message):
    problem = linear_gaussian()
    with pytest.raises(ValueError, match=message):
        sample(problem.posterior, "hmc", **{**QUICK, **option})


def test_exact_with_large_energy_errors(generator):
    """No warm-up, an identity mass and a step of 1.9 times the smallest posterior sd (the
    leapfrog's stability limit is 2): large energy errors on most trajectories, and still the
    closed-form moments, since the multinomial draw is exact for any step."""
    problem = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.1, seed=7)
    smallest = float(torch.linalg.eigvalsh(problem.cov)[0].sqrt())
    z0 = problem.mean + 0.1 * torch.randn(4, 3, generator=generator, dtype=torch.float64)
    state = hmc_init(problem.posterior, z0, step_size=1.9 * smallest, trajectory_length=3.0)
    draws, rates = [], []
    for _ in range(3000):
        state, info = hmc_step(problem.posterior, state, generator)
        draws.append(state.z)
        rates.append(info.acceptance_rate)
    z = torch.stack(draws, 1)
    print("\n".join(assert_moments(z, problem.mean, problem.cov)))
    assert float(torch.stack(rates).mean()) < 0.6  # the energy errors are large
    assert min(ess(z[..., i]) for i in range(3)) > 300
