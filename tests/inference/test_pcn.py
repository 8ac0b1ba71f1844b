"""pCN: exactness on a linear-Gaussian posterior, prior invariance, adaptation, determinism,
bit-identical resume, failed predictions as rejections, one decode and one solve per step, the
cached field of the state, errors."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load, save

from vaeinv.kernels.pcn import (
    PCNInfo,
    PCNState,
    freeze_adaptation,
    pcn_init,
    pcn_step,
)
from vaeinv.physics import SolverError
from vaeinv.posterior.target import Posterior

from linear_gaussian import assert_moments, linear_gaussian


def run(posterior, z0, generator, num_warmup, num_draws, target_accept=0.25, step_size=0.25):
    """Warm-up (adapting), freeze, then sample; returns (state, z (C, N, d), infos)."""
    state = pcn_init(posterior, z0, step_size)
    for _ in range(num_warmup):
        state, _ = pcn_step(posterior, state, generator, adapt=True, target_accept=target_accept)
    state = freeze_adaptation(state)
    draws, infos = [], []
    for _ in range(num_draws):
        state, info = pcn_step(posterior, state, generator, adapt=False)
        draws.append(state.z)
        infos.append(info)
    stacked = PCNInfo(*(torch.stack(x, 1) for x in zip(*infos, strict=True)))
    return state, torch.stack(draws, 1), stacked


def overdispersed(num_chains, d, generator):
    return 1.5 * torch.randn(num_chains, d, generator=generator, dtype=torch.float64)


def flat_posterior(latent_dim: int, num_data: int = 2) -> Posterior:
    """A forward map that ignores the field: the likelihood is exactly flat."""

    def decode(z):
        return z.reshape(*z.shape[:-1], 1, latent_dim)

    def forward(field):
        return torch.zeros(*field.shape[:-2], num_data, dtype=torch.float64, device=field.device)

    return Posterior.from_callables(decode, forward, torch.zeros(num_data), 1.0, latent_dim)


def test_linear_gaussian_moments_and_target_acceptance(generator):
    problem = linear_gaussian(latent_dim=3, num_data=4)
    assert problem.correlation.abs().fill_diagonal_(0).max() > 0.5  # a correlated posterior
    z0 = overdispersed(8, 3, generator)
    _, z, info = run(problem.posterior, z0, generator, num_warmup=800, num_draws=2500)
    report = assert_moments(z, problem.mean, problem.cov)
    print("\n".join(report))
    # the averaged, frozen step size gives the target acceptance (MCSE of a mean of
    # probabilities in [0, 1] over 20000 correlated draws is well below 0.02)
    assert abs(float(info.acceptance_rate.mean()) - 0.25) < 0.03
    assert not info.failed.any()
    # the acceptance probability is the likelihood ratio: empirical accept frequency agrees
    assert abs(float(info.accepted.double().mean() - info.acceptance_rate.mean())) < 0.02


@pytest.mark.parametrize("target", [0.1, 0.5])
def test_adaptation_reaches_other_targets(generator, target):
    problem = linear_gaussian(latent_dim=3, num_data=4)
    z0 = overdispersed(8, 3, generator)
    state, _, info = run(
        problem.posterior, z0, generator, num_warmup=600, num_draws=800, target_accept=target
    )
    assert abs(float(info.acceptance_rate.mean()) - target) < 0.05
    assert state.adapt_count.item() == 600
    # smaller targets take bigger steps
    assert (state.log_step_size <= 0).all()


def test_flat_likelihood_leaves_standard_normal_invariant(generator):
    """Start many independent chains exactly at N(0, I); after any number of steps each chain
    is still an exact N(0, I) draw, and independent across chains (so plain iid errors)."""
    d, num_chains = 3, 4000
    posterior = flat_posterior(d)
    z0 = torch.randn(num_chains, d, generator=generator, dtype=torch.float64)
    state = pcn_init(posterior, z0, step_size=0.6)
    for _ in range(15):
        state, info = pcn_step(posterior, state, generator, adapt=False)
        assert info.accepted.all() and (info.acceptance_rate == 1).all()
    z = state.z
    assert not torch.equal(z, z0)
    se = 1 / math.sqrt(num_chains)
    assert (z.mean(0).abs() < 4 * se).all(), z.mean(0)
    cov = torch.cov(z.T)
    # sd of a sample variance of N(0,1) is sqrt(2/n), of a covariance sqrt(1/n)
    assert ((cov.diagonal() - 1).abs() < 4 * math.sqrt(2) * se).all(), cov
    assert (cov.fill_diagonal_(0).abs() < 4 * se).all(), cov
    # fourth moment of N(0, 1) is 3 (sd of the estimate sqrt(96 / n))
    assert ((z**4).mean(0) - 3).abs().max() < 4 * math.sqrt(96) * se


def test_flat_likelihood_chain_from_a_point_converges_to_standard_normal(generator):
    """One long AR(1) chain per dimension: mean 0 and variance 1 within 4 MCSE."""
    posterior = flat_posterior(2)
    z0 = torch.full((4, 2), 3.0, dtype=torch.float64)
    _, z, info = run(posterior, z0, generator, num_warmup=200, num_draws=3000)
    assert info.accepted.all()
    assert_moments(z, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))


def test_same_seed_same_draws_other_seed_other_draws():
    problem = linear_gaussian()
    z0 = torch.zeros(3, 2, dtype=torch.float64)
    runs = [
        run(problem.posterior, z0, torch.Generator().manual_seed(s), 20, 30)[1] for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_global_rng_untouched():
    problem = linear_gaussian()
    before = torch.random.get_rng_state()
    run(problem.posterior, torch.zeros(2, 2), torch.Generator().manual_seed(0), 5, 5)
    assert torch.equal(before, torch.random.get_rng_state())


def _serialise(state: PCNState, generator: torch.Generator) -> bytes:
    tensors = {name: t.contiguous() for name, t in state._asdict().items()}
    tensors["generator_state"] = generator.get_state()
    return save(tensors)


def _deserialise(blob: bytes) -> tuple[PCNState, torch.Generator]:
    tensors = load(blob)
    generator = torch.Generator()
    generator.set_state(tensors.pop("generator_state"))
    return PCNState(**tensors), generator


@pytest.mark.parametrize("split", [7, 20, 33])  # in warm-up, at its end, while sampling
def test_resume_is_bit_identical(split):
    """N steps in one go == k steps, a checkpoint (safetensors round trip of the state and the
    generator state, through a fresh generator), then the rest."""
    problem = linear_gaussian(latent_dim=3, num_data=4)
    posterior = problem.posterior
    num_warmup, total = 20, 45
    z0 = overdispersed(5, 3, torch.Generator().manual_seed(1))

    def steps(state, generator, start, stop, trace):
        for i in range(start, stop):
            if i == num_warmup:
                state = freeze_adaptation(state)
            state, info = pcn_step(posterior, state, generator, adapt=i < num_warmup)
            trace.append((state, info))
        return state

    full = []
    steps(pcn_init(posterior, z0), torch.Generator().manual_seed(42), 0, total, full)
    parts = []
    first = torch.Generator().manual_seed(42)
    state = steps(pcn_init(posterior, z0), first, 0, split, parts)
    state, generator = _deserialise(_serialise(state, first))
    del first
    steps(state, generator, split, total, parts)
    assert len(parts) == len(full) == total
    for (s1, i1), (s2, i2) in zip(full, parts, strict=True):
        for a, b in zip(s1, s2, strict=True):
            assert torch.equal(a, b)
        for a, b in zip(i1, i2, strict=True):
            assert torch.equal(a, b)


def _nan_posterior(threshold: float, counter: list[int] | None = None):
    """The linear-Gaussian problem whose forward returns NaN for the rows whose first field
    cell ``A[0] z + b[0]`` exceeds ``threshold``; also returns ``(A[0], b[0])``."""
    base = linear_gaussian()
    a_row, b0 = base.A[0], base.b[0]

    def hook(field, prediction):
        if counter is not None:
            counter[0] += 1
        bad = field.reshape(*field.shape[:-2], -1)[..., 0] > threshold
        return torch.where(bad[..., None], torch.full_like(prediction, math.nan), prediction)

    problem = linear_gaussian(forward_hook=hook)
    return problem, (a_row, b0)


def test_failed_prediction_is_a_counted_rejection(generator):
    problem, (a_row, b0) = _nan_posterior(threshold=0.0)
    posterior = problem.posterior
    z0 = torch.zeros(6, 2, dtype=torch.float64)
    z0[:, :] = -(b0 + 1.0) * a_row / (a_row @ a_row)  # first cell value -1: a safe start
    state = pcn_init(posterior, z0, step_size=1.0)  # beta = 1: fresh prior draws
    assert torch.isfinite(state.log_likelihood).all()
    num_failed = 0
    for _ in range(40):
        new, info = pcn_step(posterior, state, generator, adapt=True)
        num_failed += int(info.failed.sum())
        f = info.failed
        assert not info.accepted[f].any()
        assert (info.acceptance_rate[f] == 0).all()
        assert (info.log_likelihood_proposed[f] == -math.inf).all()
        assert torch.equal(new.z[f], state.z[f])
        assert torch.equal(new.log_likelihood[f], state.log_likelihood[f])
        assert torch.equal(new.prediction[f], state.prediction[f])
        assert torch.equal(new.field[f], state.field[f])
        assert torch.isfinite(new.prediction).all()
        state = new
    assert num_failed > 0
    first_cell = state.z @ a_row + b0
    assert (first_cell <= 0).all()


def test_one_batched_prediction_per_step_and_rejections_never_resolve(generator):
    calls = [0]
    problem, _ = _nan_posterior(threshold=math.inf, counter=calls)
    posterior = problem.posterior
    state = pcn_init(posterior, torch.zeros(7, 2, dtype=torch.float64))
    calls[0] = 0
    rejected = 0
    for _ in range(25):
        state, info = pcn_step(posterior, state, generator, adapt=False)
        rejected += int((~info.accepted).sum())
    assert calls[0] == 25
    assert rejected > 0
    # the cached likelihood and prediction are those of the current z
    assert torch.allclose(state.prediction, posterior.predict(state.z), rtol=0, atol=1e-12)
    assert torch.allclose(state.log_likelihood, posterior.log_likelihood(state.z), atol=1e-12)


def _counting(problem):
    """The problem's posterior rebuilt with decode and forward calls counted (rows per call)."""
    decodes, solves = [], []
    base = problem.posterior

    def decode(z):
        decodes.append(z.shape[0])
        return base.decode(z)

    def forward(field):
        solves.append(field.shape[0])
        return base.forward(field)

    posterior = Posterior.from_callables(
        decode, forward, base.data, base.noise_std, base.latent_dim, grid=base.grid
    )
    decodes.clear()
    solves.clear()
    return posterior, decodes, solves


def test_state_caches_the_field_of_its_z(generator):
    """The state's field is the decode of its z (the proposal's decode where accepted, the
    previous field where rejected): one decode and one solve of all chains per step."""
    problem = linear_gaussian(latent_dim=3, num_data=4)
    posterior, decodes, solves = _counting(problem)
    state = pcn_init(posterior, overdispersed(5, 3, generator), step_size=0.8)
    assert decodes == solves == [5]
    assert state.field.shape == (5, *problem.posterior.field_shape)
    rejected = 0
    for i in range(30):
        state, info = pcn_step(posterior, state, generator, adapt=i < 15)
        rejected += int((~info.accepted).sum())
        with torch.no_grad():
            torch.testing.assert_close(
                state.field, problem.posterior.decode(state.z), rtol=0, atol=1e-14
            )
            torch.testing.assert_close(
                state.prediction, problem.posterior.forward(state.field), rtol=0, atol=0
            )
    assert decodes == solves == [5] * 31
    assert rejected > 0
    assert torch.equal(freeze_adaptation(state).field, state.field)


def test_a_state_without_its_field_gets_it_on_the_next_step(generator):
    """A state built without the cache (``field=None``) decodes its z once, then caches."""
    problem = linear_gaussian(latent_dim=3, num_data=4)
    posterior, decodes, _ = _counting(problem)
    full = pcn_init(posterior, overdispersed(4, 3, generator))
    bare = full._replace(field=None)
    assert PCNState(*bare[:6]).field is None  # the field is optional
    twin = torch.Generator().manual_seed(5)
    a, _ = pcn_step(posterior, full, torch.Generator().manual_seed(5), adapt=False)
    decodes.clear()
    b, _ = pcn_step(posterior, bare, twin, adapt=False)
    assert decodes == [4, 4]  # the proposals, then the current z once
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-14)


def test_failed_start_accepts_first_finite_proposal(generator):
    problem, (a_row, b0) = _nan_posterior(threshold=0.0)
    z0 = torch.stack([-(b0 + 1) * a_row, (4 - b0) * a_row]) / (a_row @ a_row)  # safe, failed
    state = pcn_init(problem.posterior, z0, step_size=1.0)  # proposals: fresh prior draws
    assert state.log_likelihood[1] == -math.inf and torch.isnan(state.prediction[1]).all()
    for _ in range(100):
        state, info = pcn_step(problem.posterior, state, generator, adapt=False)
        if not info.failed[1]:
            assert info.accepted[1] and info.acceptance_rate[1] == 1
            break
    assert torch.isfinite(state.log_likelihood).all()


def test_solver_error_fails_the_batch_without_raising(generator):
    fail = [False]

    def hook(field, prediction):
        if fail[0]:
            raise SolverError("factorisation broke down")
        return prediction

    posterior = linear_gaussian(forward_hook=hook).posterior
    state = pcn_init(posterior, torch.zeros(3, 2))
    fail[0] = True
    new, info = pcn_step(posterior, state, generator, adapt=False)
    assert info.failed.all() and not info.accepted.any()
    assert torch.equal(new.z, state.z)


def test_adaptation_bookkeeping_and_freeze(generator):
    posterior = linear_gaussian().posterior
    state = pcn_init(posterior, torch.zeros(4, 2), step_size=torch.tensor([0.1, 0.2, 0.5, 1.0]))
    assert torch.allclose(state.log_step_size.exp(), torch.tensor([0.1, 0.2, 0.5, 1.0]).double())
    assert state.z.dtype == torch.float64 and state.adapt_count.item() == 0
    fixed, info = pcn_step(posterior, state, generator, adapt=False)
    assert torch.equal(fixed.log_step_size, state.log_step_size)
    assert torch.equal(fixed.log_step_avg, state.log_step_avg)
    assert fixed.adapt_count.item() == 0
    assert torch.equal(info.step_size, state.log_step_size.exp())
    for _ in range(30):
        state, _ = pcn_step(posterior, state, generator, adapt=True)
    assert state.adapt_count.item() == 30
    assert (state.log_step_size <= 0).all()
    assert not torch.equal(state.log_step_size, state.log_step_avg)
    frozen = freeze_adaptation(state)
    assert torch.equal(frozen.log_step_size, state.log_step_avg)
    assert torch.equal(frozen.z, state.z)


@pytest.mark.parametrize(
    ("z0", "step_size", "match"),
    [
        (torch.zeros(3), 0.25, r"z0 has shape \(3,\), expected \(num_chains, 2\)"),
        (torch.zeros(2, 3), 0.25, r"z0 has shape \(2, 3\), expected \(num_chains, 2\)"),
        (torch.zeros(0, 2), 0.25, r"num_chains >= 1"),
        (torch.tensor([[0.0, math.nan]]), 0.25, r"z0 must be finite, got nan at index \(0, 1\)"),
        (torch.zeros(2, 2), 0.0, r"step_size \(beta\) must be in \(0, 1\], got 0.0"),
        (torch.zeros(2, 2), 1.5, r"step_size \(beta\) must be in \(0, 1\], got 1.5"),
        (torch.zeros(2, 2), torch.ones(3) / 2, r"step_size has shape \(3,\), expected"),
    ],
)
def test_init_errors(z0, step_size, match):
    with pytest.raises(ValueError, match=match):
        pcn_init(linear_gaussian().posterior, z0, step_size)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1])
def test_step_rejects_bad_target(generator, target):
    posterior = linear_gaussian().posterior
    state = pcn_init(posterior, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"target_accept must be in \(0, 1\)"):
        pcn_step(posterior, state, generator, adapt=True, target_accept=target)
