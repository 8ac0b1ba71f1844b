"""NUTS via Pyro: exactness on a linear-Gaussian posterior, per-draw statistics, determinism,
chunked continuation, failures as divergences, errors. Kept small (2-d latent, few hundred
draws) because Pyro's NUTS costs about a millisecond per leapfrog step here."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinv.kernels.nuts import NUTSResult, chain_seed
from vaeinv.kernels.nuts import nuts_run as _nuts_run
from vaeinv.kernels.nuts_chain import ChainSettings
from vaeinv.physics import SolverError

from linear_gaussian import assert_moments, linear_gaussian


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian()


@pytest.fixture(scope="module")
def short_run(problem):
    z0 = torch.tensor([[1.0, -1.0], [-1.5, 0.5]], dtype=torch.float64)
    return nuts_run(problem.posterior, z0, num_draws=40, num_warmup=30, seed=3)


@pytest.mark.parametrize("full_mass", [False, True])
def test_linear_gaussian_moments(problem, full_mass):
    assert abs(float(problem.correlation[0, 1])) > 0.5  # a correlated posterior
    z0 = 1.5 * torch.randn(2, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    result = nuts_run(
        problem.posterior, z0, num_draws=250, num_warmup=120, seed=5, full_mass=full_mass
    )
    print("\n".join(assert_moments(result.z, problem.mean, problem.cov)))
    assert not result.diverging.any()
    # the adapted inverse mass matrix estimates the posterior covariance (roughly: 120
    # warm-up draws)
    expected = problem.cov if full_mass else problem.cov.diagonal()
    assert result.inverse_mass_matrix.shape == (2, *expected.shape)
    assert torch.allclose(
        result.inverse_mass_matrix,
        expected.expand_as(result.inverse_mass_matrix),
        rtol=0.6,
        atol=0.1,
    )
    # the adapted step size reaches about the target acceptance (Pyro's dual averaging
    # overshoots on easy targets; this is a loose check, not an MCSE one)
    assert 0.6 < float(result.acceptance_rate.mean()) < 0.99


def test_per_draw_statistics(problem, short_run):
    r = short_run
    assert isinstance(r, NUTSResult)
    assert r.z.shape == (2, 40, 2) and r.z.dtype == torch.float64
    for name in ("lp", "acceptance_rate", "step_size", "diverging", "tree_depth", "n_steps"):
        assert getattr(r, name).shape == (2, 40), name
    assert r.diverging.dtype == torch.bool and r.tree_depth.dtype == torch.int64
    # lp is the log density of each draw
    assert torch.allclose(r.lp, problem.posterior.log_density(r.z), rtol=0, atol=1e-10)
    assert ((r.acceptance_rate >= 0) & (r.acceptance_rate <= 1)).all()
    # after warm-up the step size is the adapted one, fixed
    assert torch.equal(r.step_size, r.adapted_step_size[:, None].expand(2, 40))
    # a tree of depth j took between 2^j - 1 and 2^(j+1) - 1 leapfrog steps
    j = r.tree_depth
    assert ((2**j - 1 <= r.n_steps) & (r.n_steps <= 2 ** (j + 1) - 1)).all()
    assert (r.n_steps >= 1).all()
    # every leapfrog step is one evaluation; warm-up and the step-size search add more
    assert (r.num_evaluations > r.n_steps.sum(1)).all()
    assert r.rng_state.dtype == torch.uint8 and r.rng_state.shape[0] == 2


def test_same_seed_same_draws_and_global_rng_untouched(problem, short_run):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    z0 = torch.tensor([[1.0, -1.0], [-1.5, 0.5]], dtype=torch.float64)
    again = nuts_run(problem.posterior, z0, num_draws=40, num_warmup=30, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())
    for name in ("z", "lp", "step_size", "tree_depth", "n_steps", "rng_state"):
        assert torch.equal(getattr(again, name), getattr(short_run, name)), name
    other = nuts_run(problem.posterior, z0, num_draws=40, num_warmup=30, seed=4)
    assert not torch.equal(other.z, short_run.z)


def test_a_chain_does_not_depend_on_the_number_of_chains(problem, short_run):
    """Chain c draws from the stream chain_seed(seed, c): changing chain 0's start (and so
    how much of its stream it uses) leaves chain 1 unchanged."""
    assert chain_seed(3, 0) != chain_seed(3, 1)
    z0 = torch.tensor([[0.0, 0.0], [-1.5, 0.5]], dtype=torch.float64)
    other = nuts_run(problem.posterior, z0, num_draws=40, num_warmup=30, seed=3)
    assert not torch.equal(other.z[0], short_run.z[0])
    assert torch.equal(other.z[1], short_run.z[1])


def test_chunked_continuation_is_bit_identical(problem):
    z0 = torch.tensor([[0.5, 0.5], [-1.0, 1.0]], dtype=torch.float64)
    posterior = problem.posterior
    whole = nuts_run(posterior, z0, num_draws=30, num_warmup=25, seed=9, full_mass=True)
    first = nuts_run(posterior, z0, num_draws=12, num_warmup=25, seed=9, full_mass=True)
    rest = nuts_run(
        posterior,
        first.z[:, -1],
        num_draws=18,
        num_warmup=0,
        seed=9,
        full_mass=True,
        adapt=False,
        step_size=first.adapted_step_size,
        inverse_mass_matrix=first.inverse_mass_matrix,
        rng_state=first.rng_state,
    )
    for name in ("z", "lp", "acceptance_rate", "step_size", "diverging", "tree_depth", "n_steps"):
        joined = torch.cat([getattr(first, name), getattr(rest, name)], 1)
        assert torch.equal(joined, getattr(whole, name)), name
    assert torch.equal(rest.rng_state, whole.rng_state)
    assert torch.equal(rest.inverse_mass_matrix, whole.inverse_mass_matrix)


def test_nan_region_is_a_divergence_not_a_crash():
    """The forward returns NaN where the first field cell exceeds 0.3: the posterior is the
    linear-Gaussian one truncated there. Trajectories that enter it diverge, and no draw
    lies in it."""

    def hook(field, prediction):
        bad = field.reshape(*field.shape[:-2], -1)[..., 0] > 0.3
        return torch.where(bad[..., None], torch.full_like(prediction, math.nan), prediction)

    problem = linear_gaussian(forward_hook=hook)
    a_row, b0 = problem.A[0], problem.b[0]
    z0 = (-(b0 + 0.5) * a_row / (a_row @ a_row)).expand(2, 2)  # first cell -0.5
    result = nuts_run(problem.posterior, z0, num_draws=100, num_warmup=50, seed=2)
    assert result.diverging.any() or result.num_warmup_divergences.sum() > 0
    assert ((result.z @ a_row + b0) <= 0.3).all()
    assert torch.isfinite(result.lp).all()


def test_solver_error_is_a_divergence(problem):
    raised = [0]

    def hook(field, prediction):
        if (field.reshape(*field.shape[:-2], -1)[..., 0] > 0.3).any():
            raised[0] += 1
            raise SolverError("no convergence")
        return prediction

    posterior = linear_gaussian(forward_hook=hook).posterior
    a_row, b0 = problem.A[0], problem.b[0]
    z0 = (-(b0 + 0.5) * a_row / (a_row @ a_row))[None]
    result = nuts_run(posterior, z0, num_draws=60, num_warmup=40, seed=2)
    assert raised[0] > 0
    assert result.diverging.any() or result.num_warmup_divergences.sum() > 0


def test_max_tree_depth_is_respected(problem):
    result = nuts_run(
        problem.posterior,
        torch.zeros(1, 2),
        num_draws=20,
        num_warmup=0,
        seed=1,
        adapt=False,
        step_size=0.01,
        max_tree_depth=3,
    )
    # tiny steps: trees grow to the cap (a few stop earlier on the U-turn criterion)
    assert (result.tree_depth <= 3).all() and (result.n_steps <= 7).all()
    assert (result.tree_depth == 3).float().mean() > 0.5
    assert (result.step_size == 0.01).all()


_SETTINGS = ("target_accept", "max_tree_depth", "full_mass", "adapt", "adapt_mass_matrix")


def nuts_run(posterior, z0, **kwargs):
    """``nuts_run`` with the chain settings given by name, as ``ChainSettings`` fields."""
    settings = {k: kwargs.pop(k) for k in _SETTINGS if k in kwargs}
    return _nuts_run(posterior, z0, settings=ChainSettings(**settings), **kwargs)


def _bad(**kwargs):
    base = dict(num_draws=5, num_warmup=5, seed=0)
    base.update(kwargs)
    return base


@pytest.mark.parametrize(
    ("z0", "kwargs", "match"),
    [
        (torch.zeros(2), _bad(), r"z0 has shape \(2,\), expected \(num_chains, 2\)"),
        (torch.zeros(1, 3), _bad(), r"z0 has shape \(1, 3\), expected \(num_chains, 2\)"),
        (torch.zeros(1, 2), _bad(num_draws=0, num_warmup=0), r"num_draws \+ num_warmup >= 1"),
        (torch.zeros(1, 2), _bad(num_warmup=-1), r"num_warmup must be an integer >= 0, got -1"),
        (torch.zeros(1, 2), _bad(num_draws=2.5), r"num_draws must be an integer >= 0, got 2.5"),
        (torch.zeros(1, 2), _bad(target_accept=1.0), r"target_accept must be in \(0, 1\)"),
        (torch.zeros(1, 2), _bad(max_tree_depth=0), r"max_tree_depth must be an integer >= 1"),
        (torch.zeros(1, 2), _bad(seed=-1), r"seed must be a non-negative integer, got -1"),
        (torch.zeros(1, 2), _bad(adapt=False), r"adapt=False needs a step_size"),
        (torch.zeros(1, 2), _bad(step_size=-0.1), r"step_size must be positive and finite"),
        (torch.zeros(2, 2), _bad(step_size=[0.1, 0.2, 0.3]), r"step_size has shape \(3,\)"),
        (
            torch.zeros(1, 2),
            _bad(inverse_mass_matrix=torch.ones(3)),
            r"inverse_mass_matrix has shape \(3,\), expected \(2,\) or \(1, 2\) for a diagonal",
        ),
        (
            torch.zeros(1, 2),
            _bad(inverse_mass_matrix=torch.ones(2), full_mass=True),
            r"expected \(2, 2\) or \(1, 2, 2\) for a dense",
        ),
        (
            torch.zeros(1, 2),
            _bad(inverse_mass_matrix=torch.tensor([1.0, 0.0])),
            r"inverse_mass_matrix must be positive and finite",
        ),
        (
            torch.zeros(1, 2),
            _bad(inverse_mass_matrix=torch.tensor([[1.0, 2.0], [2.0, 1.0]]), full_mass=True),
            r"inverse_mass_matrix must be symmetric positive definite",
        ),
        (
            torch.zeros(1, 2),
            _bad(rng_state=torch.zeros(1, 7, dtype=torch.uint8)),
            r"rng_state has shape \(1, 7\) and dtype torch.uint8, expected \(1, \d+\) uint8",
        ),
    ],
)
def test_errors(problem, z0, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nuts_run(problem.posterior, z0, **kwargs)


def test_non_finite_start_is_an_error():
    bad = linear_gaussian(forward_hook=lambda field, prediction: prediction + math.nan)
    with pytest.raises(ValueError, match=r"chain 0 starts at a point with log density -inf"):
        nuts_run(bad.posterior, torch.zeros(2, 2), num_draws=2, num_warmup=0, seed=0)
