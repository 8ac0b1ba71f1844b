"""gpCN and the Laplace approximation: exactness on a linear-Gaussian posterior, agreement with
grid quadrature on a nonlinear one, invariance for any reference Gaussian, evaluation counts,
determinism, bit-identical resume, failed predictions as rejections, errors."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load, save

from vaeinv.kernels.gpcn import (
    GPCNState,
    LaplaceApproximation,
    freeze_adaptation,
    gpcn_init,
    gpcn_step,
    laplace_approximation,
)
from vaeinv.kernels.pcn import PCNInfo
from vaeinv.physics import SolverError
from vaeinv.posterior.target import Posterior

from linear_gaussian import assert_moments, ess, linear_gaussian


def run(posterior, z0, laplace, generator, num_warmup, num_draws, step_size=0.5, target=0.25):
    """Warm-up (adapting), freeze, then sample; returns (state, z (C, N, d), infos)."""
    state = gpcn_init(posterior, z0, laplace, step_size)
    for _ in range(num_warmup):
        state, _ = gpcn_step(posterior, state, generator, adapt=True, target_accept=target)
    state = freeze_adaptation(state)
    draws, infos = [], []
    for _ in range(num_draws):
        state, info = gpcn_step(posterior, state, generator, adapt=False)
        draws.append(state.z)
        infos.append(info)
    stacked = PCNInfo(*(torch.stack(x, 1) for x in zip(*infos, strict=True)))
    return state, torch.stack(draws, 1), stacked


def gaussian(mean, cov) -> LaplaceApproximation:
    """A reference Gaussian for gpCN given by its mean and covariance."""
    nan = torch.tensor(math.nan, dtype=torch.float64)
    return LaplaceApproximation(
        mean=mean,
        scale_tril=torch.linalg.cholesky(cov),
        precision=torch.linalg.inv(cov),
        log_density_at_mean=nan,
        start_log_density=nan[None],
        jacobian=torch.zeros(0, mean.shape[0], dtype=torch.float64),
        num_forward_solves=0,
        num_gradient_evaluations=0,
    )


def flat_posterior(latent_dim: int, num_data: int = 2) -> Posterior:
    """A forward map that ignores the field: the likelihood is exactly flat."""

    def decode(z):
        return z.reshape(*z.shape[:-1], 1, latent_dim)

    def forward(field):
        return torch.zeros(*field.shape[:-2], num_data, dtype=torch.float64, device=field.device)

    return Posterior.from_callables(decode, forward, torch.zeros(num_data), 1.0, latent_dim)


# A mildly nonlinear 2-D problem: prediction = sinh(W z + c), three data, noise 0.3. The map
# grows faster than linearly, so the posterior tails are lighter than those of its Laplace
# approximation and pi / N(m, C) stays bounded: the regime gpCN is made for. (A saturating map
# such as tanh leaves prior-like tails in the posterior, far heavier than N(m, C) in the q-metric;
# gpCN is still exact there but under-visits those tails for a very long time, so a short-run
# MCSE test would be meaningless.)
_W = torch.tensor([[1.0, 0.6], [-0.4, 1.2], [0.8, -0.9]], dtype=torch.float64)
_C = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
_NOISE = 0.3
_Z_TRUE = torch.tensor([0.8, 0.4], dtype=torch.float64)
_DATA = torch.sinh(_W @ _Z_TRUE + _C) + _NOISE * torch.tensor([0.5, -1.0, 0.7]).double()


def sinh_posterior(hook=None) -> Posterior:
    def decode(z):
        return z.reshape(*z.shape[:-1], 1, 2)

    def forward(field):
        prediction = torch.sinh(field.reshape(*field.shape[:-2], 2) @ _W.T + _C)
        return prediction if hook is None else hook(field, prediction)

    return Posterior.from_callables(decode, forward, _DATA, _NOISE, 2, name="sinh")


def quadrature_moments(posterior, lo=-8.0, hi=8.0, n=1001):
    """Posterior mean and covariance of a 2-D latent by the trapezoid-free midpoint rule on a
    fine grid (the density is negligible outside the box)."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        log_p = posterior.log_density(zz)
    w = (log_p - log_p.max()).exp()
    w = w / w.sum()
    mean = w @ zz
    centred = zz - mean
    cov = (w[:, None] * centred).T @ centred
    edge = w.reshape(n, n)
    assert float(torch.cat([edge[0], edge[-1], edge[:, 0], edge[:, -1]]).max()) < 1e-12
    return mean, cov


# ---------------------------------------------------------------------------- Laplace
def test_laplace_is_exact_on_linear_gaussian(generator):
    problem = linear_gaussian(latent_dim=3, num_data=4)
    starts = 1.5 * torch.randn(3, 3, generator=generator, dtype=torch.float64)
    laplace = laplace_approximation(problem.posterior, starts, steps=50, lr=0.1)
    assert torch.allclose(laplace.mean, problem.mean, rtol=0, atol=1e-6)
    assert torch.allclose(laplace.covariance, problem.cov, rtol=0, atol=1e-6)
    assert torch.allclose(laplace.precision, torch.linalg.inv(problem.cov), rtol=1e-6)
    assert torch.equal(laplace.scale_tril, laplace.scale_tril.tril())
    assert torch.allclose(laplace.jacobian, problem.H, atol=1e-10)
    expected = problem.posterior.log_density(problem.mean)
    assert torch.allclose(laplace.log_density_at_mean, expected, atol=1e-9)
    assert laplace.start_log_density.shape == (3,)
    assert (laplace.start_log_density <= laplace.log_density_at_mean + 1e-9).all()


def test_laplace_counts_every_forward_solve_and_reverse_pass(generator):
    counts = {"forward": 0, "gradient": 0}

    def hook(field, prediction):
        counts["forward"] += field.shape[0]
        if prediction.requires_grad:

            def count_rows(grad):
                counts["gradient"] += grad.shape[0]

            prediction.register_hook(count_rows)
        return prediction

    problem = linear_gaussian(latent_dim=3, num_data=4, forward_hook=hook)
    counts.update(forward=0, gradient=0)  # the posterior's probe
    starts = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    laplace = laplace_approximation(problem.posterior, starts, steps=7, newton_steps=2)
    assert laplace.num_forward_solves == counts["forward"]
    assert laplace.num_gradient_evaluations == counts["gradient"]
    assert laplace.num_evaluations == counts["forward"] + counts["gradient"]
    # Adam: 7 x 2 rows each way; then Jacobians (1 forward + 4 reverse) and line searches (4)
    assert counts["forward"] >= 14 + 1 and counts["gradient"] >= 14 + 4


def test_laplace_survives_nan_starts_and_failed_evaluations(generator):
    """A start with NaN entries and a start in the failing region are dropped; an Adam step into
    the failing region backs off; the result equals the exact answer."""
    base = linear_gaussian()
    a_row, b0 = base.A[0], base.b[0]
    first_cell = float(base.mean @ a_row + b0)
    threshold = first_cell + 0.05  # the MAP is just inside the safe region

    def hook(field, prediction):
        bad = field.reshape(*field.shape[:-2], -1)[..., 0] > threshold
        return torch.where(bad[..., None], torch.full_like(prediction, math.nan), prediction)

    problem = linear_gaussian(forward_hook=hook)
    unsafe = (threshold + 2 - b0) * a_row / (a_row @ a_row)
    safe = (threshold - 3 - b0) * a_row / (a_row @ a_row)
    starts = torch.stack([torch.tensor([math.nan, 0.0], dtype=torch.float64), unsafe, safe])
    laplace = laplace_approximation(problem.posterior, starts, steps=300, lr=0.2)
    assert laplace.start_log_density[0] == -math.inf and laplace.start_log_density[1] == -math.inf
    assert torch.isfinite(laplace.start_log_density[2])
    assert torch.allclose(laplace.mean, problem.mean, atol=1e-6)
    assert torch.allclose(laplace.covariance, problem.cov, atol=1e-6)


def test_laplace_all_starts_failing_is_an_error():
    problem = linear_gaussian()
    starts = torch.full((2, 2), math.nan, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"every one of the 2 start\(s\) failed"):
        laplace_approximation(problem.posterior, starts)
    with pytest.raises(ValueError, match=r"every one of the 2 start\(s\) failed"):
        laplace_approximation(problem.posterior, starts, steps=0)


def test_laplace_on_nonlinear_problem_is_a_stationary_point():
    posterior = sinh_posterior()
    laplace = laplace_approximation(
        posterior, torch.zeros(2, dtype=torch.float64), steps=100, newton_steps=30
    )
    z = laplace.mean.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(posterior.log_density(z), z)
    assert grad.abs().max() < 1e-7
    # Gauss-Newton precision: J^T J / sd^2 + I with J of sinh(W z + c)
    jac = torch.cosh(_W @ laplace.mean + _C)[:, None] * _W
    expected = jac.T @ jac / _NOISE**2 + torch.eye(2, dtype=torch.float64)
    assert torch.allclose(laplace.precision, expected, atol=1e-8)


def test_laplace_sample_draws_its_gaussian(generator):
    problem = linear_gaussian(latent_dim=3, num_data=4)
    laplace = laplace_approximation(problem.posterior, torch.zeros(3), steps=0)
    z = laplace.sample(20000, generator, inflation=2.0)
    assert z.shape == (20000, 3) and z.dtype == torch.float64
    se = (2 * problem.cov.diagonal() / 20000).sqrt()
    assert ((z.mean(0) - problem.mean).abs() < 4 * se).all()
    # sd of a sample (co)variance entry <= max variance * sqrt(2 / n)
    tol = 4 * 2 * float(problem.cov.diagonal().max()) * math.sqrt(2 / 20000)
    assert torch.allclose(torch.cov(z.T), 2 * problem.cov, rtol=0, atol=tol)
    again = laplace.sample(5, torch.Generator().manual_seed(3))
    assert torch.equal(again, laplace.sample(5, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match=r"num_samples must be an integer >= 1, got 0"):
        laplace.sample(0, generator)


# ---------------------------------------------------------------------------- gpCN
def test_beta_one_on_linear_gaussian_gives_exact_independent_draws(generator):
    problem = linear_gaussian(latent_dim=3, num_data=4)
    laplace = laplace_approximation(problem.posterior, torch.zeros(1, 3), steps=0)
    z0 = 1.5 * torch.randn(4, 3, generator=generator, dtype=torch.float64)
    state = gpcn_init(problem.posterior, z0, laplace, step_size=1.0)
    draws = []
    for _ in range(1500):
        state, info = gpcn_step(problem.posterior, state, generator, adapt=False)
        assert (info.acceptance_rate > 1 - 1e-9).all() and info.accepted.all()
        draws.append(state.z)
    z = torch.stack(draws, 1)
    print("\n".join(assert_moments(z, problem.mean, problem.cov)))


def test_nonlinear_draws_match_quadrature(generator):
    posterior = sinh_posterior()
    mean, cov = quadrature_moments(posterior)
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=100)
    assert (laplace.mean - mean).abs().max() > 0.01  # the Laplace mean is not the answer
    z0 = laplace.sample(8, generator)  # chains start at draws of the approximation
    _, z, info = run(posterior, z0, laplace, generator, 300, 2000, target=0.5)
    print("\n".join(assert_moments(z, mean, cov)))
    print("acceptance", float(info.acceptance_rate.mean()), "beta", info.step_size[:, 0])
    assert min(ess(z[..., 0]), ess(z[..., 1])) > 1000  # an informative test, not a lucky MCSE
    assert not info.failed.any()


def test_flat_likelihood_any_reference_gaussian_leaves_standard_normal_invariant(generator):
    """The correction term makes gpCN exact for an arbitrary (m, C): chains started exactly at
    N(0, I) stay N(0, I) draws, independent across chains."""
    d, num_chains = 3, 4000
    posterior = flat_posterior(d)
    m = torch.tensor([0.8, -0.5, 0.3], dtype=torch.float64)
    a = torch.tensor([[0.6, 0.0, 0.0], [0.3, 0.5, 0.0], [-0.2, 0.1, 0.9]], dtype=torch.float64)
    z0 = torch.randn(num_chains, d, generator=generator, dtype=torch.float64)
    state = gpcn_init(posterior, z0, gaussian(m, a @ a.T), step_size=0.8, inflation=1.3)
    accepted = 0.0
    for _ in range(15):
        state, info = gpcn_step(posterior, state, generator, adapt=False)
        accepted += float(info.accepted.double().mean()) / 15
    assert 0.2 < accepted < 0.95  # a genuine Metropolis correction is at work
    z = state.z
    se = 1 / math.sqrt(num_chains)
    assert (z.mean(0).abs() < 4 * se).all(), z.mean(0)
    cov = torch.cov(z.T)
    assert ((cov.diagonal() - 1).abs() < 4 * math.sqrt(2) * se).all(), cov
    assert (cov.fill_diagonal_(0).abs() < 4 * se).all(), cov
    assert ((z**4).mean(0) - 3).abs().max() < 4 * math.sqrt(96) * se


def test_weight_cache_and_one_prediction_per_step(generator):
    calls = [0]

    def hook(field, prediction):
        calls[0] += 1
        return prediction

    posterior = sinh_posterior(hook)
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=20)
    state = gpcn_init(posterior, torch.zeros(5, 2), laplace, step_size=0.9, inflation=1.5)
    assert torch.allclose(state.scale_tril, math.sqrt(1.5) * laplace.scale_tril)
    calls[0] = 0
    rejected = 0
    for _ in range(30):
        state, info = gpcn_step(posterior, state, generator, adapt=False)
        rejected += int((~info.accepted).sum())
    assert calls[0] == 30 and rejected > 0
    with torch.no_grad():
        assert torch.allclose(state.prediction, posterior.predict(state.z), atol=1e-12)
        cov = state.scale_tril @ state.scale_tril.T
        ref = torch.distributions.MultivariateNormal(state.mean, cov).log_prob(state.z)
        weight = posterior.log_density(state.z) - ref
    assert torch.allclose(state.log_weight, weight, atol=1e-10)


def test_same_seed_same_draws_and_global_rng_untouched():
    posterior = sinh_posterior()
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=10)
    z0 = torch.zeros(3, 2)
    before = torch.random.get_rng_state()
    runs = [
        run(posterior, z0, laplace, torch.Generator().manual_seed(s), 10, 20)[1] for s in (7, 7, 8)
    ]
    assert torch.equal(before, torch.random.get_rng_state())
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("split", [7, 20, 33])  # in warm-up, at its end, while sampling
def test_resume_is_bit_identical(split):
    posterior = sinh_posterior()
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=10)
    num_warmup, total = 20, 45
    z0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def steps(state, generator, start, stop, trace):
        for i in range(start, stop):
            if i == num_warmup:
                state = freeze_adaptation(state)
            state, info = gpcn_step(posterior, state, generator, adapt=i < num_warmup)
            trace.append((state, info))
        return state

    full = []
    steps(gpcn_init(posterior, z0, laplace), torch.Generator().manual_seed(42), 0, total, full)
    parts = []
    first = torch.Generator().manual_seed(42)
    state = steps(gpcn_init(posterior, z0, laplace), first, 0, split, parts)
    tensors = {name: t.contiguous() for name, t in state._asdict().items()}
    tensors["generator_state"] = first.get_state()
    tensors = load(save(tensors))
    generator = torch.Generator()
    generator.set_state(tensors.pop("generator_state"))
    steps(GPCNState(**tensors), generator, split, total, parts)
    assert len(parts) == len(full) == total
    for (s1, i1), (s2, i2) in zip(full, parts, strict=True):
        for a, b in zip((*s1, *i1), (*s2, *i2), strict=True):
            assert torch.equal(a, b)


def test_adaptation_and_freeze(generator):
    posterior = sinh_posterior()
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=50)
    # a deliberately poor reference (shifted, 3x too wide) makes beta = 1 accept too rarely
    bad = gaussian(laplace.mean + 0.5, 9 * laplace.covariance)
    state, _, info = run(posterior, torch.zeros(6, 2), bad, generator, 600, 600, target=0.4)
    assert state.adapt_count.item() == 600
    assert (state.log_step_size < 0).all()
    assert torch.equal(info.step_size[:, 0], state.log_step_size.exp())
    assert abs(float(info.acceptance_rate.mean()) - 0.4) < 0.06


def _nan_sinh(threshold):
    def hook(field, prediction):
        bad = field[..., 0, 0] > threshold
        return torch.where(bad[..., None], torch.full_like(prediction, math.nan), prediction)

    return sinh_posterior(hook)


def test_failed_prediction_is_a_counted_rejection(generator):
    posterior = _nan_sinh(threshold=0.6)
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=50)
    state = gpcn_init(posterior, torch.zeros(6, 2), laplace, step_size=1.0)
    num_failed = 0
    for _ in range(40):
        new, info = gpcn_step(posterior, state, generator, adapt=True)
        f = info.failed
        num_failed += int(f.sum())
        assert not info.accepted[f].any() and (info.acceptance_rate[f] == 0).all()
        assert (info.log_likelihood_proposed[f] == -math.inf).all()
        assert torch.equal(new.z[f], state.z[f])
        assert torch.equal(new.log_weight[f], state.log_weight[f])
        assert torch.isfinite(new.prediction).all() and torch.isfinite(new.log_weight).all()
        state = new
    assert num_failed > 0
    assert (state.z[:, 0] <= 0.6).all()


def test_failed_start_accepts_first_finite_proposal(generator):
    posterior = _nan_sinh(threshold=0.6)
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=50)
    z0 = torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    state = gpcn_init(posterior, z0, laplace, step_size=1.0)
    assert state.log_weight[1] == -math.inf and torch.isnan(state.prediction[1]).all()
    for _ in range(100):
        state, info = gpcn_step(posterior, state, generator, adapt=False)
        if not info.failed[1]:
            assert info.accepted[1] and info.acceptance_rate[1] == 1
            break
    assert torch.isfinite(state.log_weight).all()


def test_solver_error_fails_the_batch_without_raising(generator):
    fail = [False]

    def hook(field, prediction):
        if fail[0]:
            raise SolverError("factorisation broke down")
        return prediction

    posterior = sinh_posterior(hook)
    laplace = laplace_approximation(posterior, torch.zeros(1, 2), steps=5)
    state = gpcn_init(posterior, torch.zeros(3, 2), laplace)
    fail[0] = True
    new, info = gpcn_step(posterior, state, generator, adapt=False)
    assert info.failed.all() and not info.accepted.any()
    assert torch.equal(new.z, state.z)
    with pytest.raises(ValueError, match=r"every one of the 1 start\(s\) failed"):
        laplace_approximation(posterior, torch.zeros(1, 2), steps=3)


# ---------------------------------------------------------------------------- errors
_I2 = torch.eye(2, dtype=torch.float64)
_Z2 = torch.zeros(2, dtype=torch.float64)


@pytest.mark.parametrize(
    ("z0", "laplace", "kwargs", "match"),
    [
        (torch.zeros(3), None, {}, r"z0 has shape \(3,\), expected \(num_chains, 2\)"),
        (torch.zeros(0, 2), None, {}, r"num_chains >= 1"),
        (torch.tensor([[0.0, math.nan]]), None, {}, r"z0 must be finite, got nan at index"),
        (torch.zeros(2, 2), None, {"step_size": 0.0}, r"step_size \(beta\) must be in \(0, 1\]"),
        (torch.zeros(2, 2), None, {"step_size": torch.ones(3) / 2}, r"step_size has shape"),
        (torch.zeros(2, 2), None, {"inflation": 0.0}, r"inflation must be positive"),
        (torch.zeros(2, 2), (torch.zeros(3), _I2), {}, r"laplace.mean has shape \(3,\)"),
        (torch.zeros(2, 2), (_Z2, torch.eye(3)), {}, r"laplace.scale_tril has shape \(3, 3\)"),
        (torch.zeros(2, 2), (_Z2, torch.ones(2, 2)), {}, r"must be lower triangular"),
        (torch.zeros(2, 2), (_Z2, -_I2), {}, r"diagonal entry -1.0 at 0; expected > 0"),
    ],
)
def test_init_errors(z0, laplace, kwargs, match):
    posterior = sinh_posterior()
    mean, tril = (_Z2, _I2) if laplace is None else laplace
    reference = LaplaceApproximation(mean, tril, None, None, None, None, 0, 0)
    with pytest.raises(ValueError, match=match):
        gpcn_init(posterior, z0, reference, **kwargs)


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_step_rejects_bad_target(generator, target):
    posterior = sinh_posterior()
    state = gpcn_init(posterior, torch.zeros(1, 2), gaussian(_Z2, _I2))
    with pytest.raises(ValueError, match=r"target_accept must be in \(0, 1\)"):
        gpcn_step(posterior, state, generator, adapt=True, target_accept=target)


@pytest.mark.parametrize(
    ("starts", "kwargs", "match"),
    [
        (torch.zeros(2, 3), {}, r"z_starts has shape \(2, 3\), expected \(num_starts, 2\)"),
        (torch.zeros(0, 2), {}, r"z_starts has shape \(0, 2\)"),
        (torch.zeros(1, 2), {"steps": -1}, r"steps must be an integer >= 0, got -1"),
        (torch.zeros(1, 2), {"steps": 1.5}, r"steps must be an integer >= 0"),
        (torch.zeros(1, 2), {"newton_steps": -2}, r"newton_steps must be an integer >= 0"),
        (torch.zeros(1, 2), {"lr": 0.0}, r"lr must be positive and finite, got 0.0"),
        (torch.zeros(1, 2), {"tolerance": -1.0}, r"tolerance must be >= 0"),
    ],
)
def test_laplace_errors(starts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        laplace_approximation(sinh_posterior(), starts, **kwargs)
