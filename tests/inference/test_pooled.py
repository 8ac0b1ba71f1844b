"""NUTS's pooled cross-chain mass adaptation (``mass="pooled"``): the eigenvalue-clipped
covariance estimate, the warm-up schedule, the corrected mass on a posterior whose start mass
is wrong, and runs through ``vaeinv.sample`` (closed-form moments, resume, parts, errors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vaeinv.approx.pooled import MIN_POOLED_WARMUP, pooled_schedule, spiked_covariance
from vaeinv.kernels.nuts_pooled import pooled_warmup
from vaeinv.problems import check_sampler_options
from vaeinv.runs.merge import merge_runs
from vaeinv.runs.sampling import sample

from interrupt import Stop, stop_after
from linear_gaussian import assert_moments, linear_gaussian

FAST_LAPLACE = {"laplace_steps": 30, "laplace_lr": 0.1}
SEED = 20261130


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=11)


def _whitened_eigenvalues(cov: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    chol = torch.linalg.cholesky(reference)
    inv = torch.linalg.inv(chol)
    return torch.linalg.eigvalsh(inv @ cov @ inv.T)


def test_spiked_covariance_finds_a_planted_direction_and_keeps_the_rest():
    """Draws of N(0, R + 24 u u^T) against the reference R (d = 20, 4000 draws): exactly one
    direction is corrected and the estimate's variance along it is the sample variance; draws
    of N(0, R) itself correct nothing (every sample eigenvalue lies inside the noise edges)."""
    print(f"seed {SEED}")
    g = torch.Generator().manual_seed(SEED)
    d, n = 20, 4000
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    reference = a @ a.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    chol = torch.linalg.cholesky(reference)
    u = torch.randn(d, generator=g, dtype=torch.float64)
    u = chol @ (u / u.norm())  # a unit vector in the whitened coordinates, mapped back
    truth = reference + 24.0 * torch.outer(u, u)
    draws = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(truth).T
    estimate, corrected = spiked_covariance(draws, reference)
    assert corrected == 1
    assert torch.allclose(estimate, estimate.T)
    lam = _whitened_eigenvalues(estimate, reference)
    assert torch.allclose(lam[:-1], torch.ones(d - 1, dtype=torch.float64), atol=1e-9)
    # the corrected eigenvalue is the whitened sample variance, 25 within its sampling error
    # (sd of a sample variance of n / 2 effective draws is sqrt(4 / n) of it)
    assert abs(float(lam[-1]) - 25.0) < 4 * 25.0 * math.sqrt(4.0 / n)
    plain = torch.randn(n, d, generator=g, dtype=torch.float64) @ chol.T
    same, none = spiked_covariance(plain, reference)
    assert none == 0
    torch.testing.assert_close(same, reference)


def test_spiked_covariance_trusts_narrow_directions_only_with_enough_draws():
    """A direction with a twentieth of the reference variance is corrected when the effective
    draws outnumber the dimension (lower noise edge above zero), never from too few draws."""
    g = torch.Generator().manual_seed(SEED + 1)
    d = 5
    scale = torch.ones(d, dtype=torch.float64)
    scale[2] = 0.05**0.5
    reference = torch.eye(d, dtype=torch.float64)
    many = torch.randn(2000, d, generator=g, dtype=torch.float64) * scale
    estimate, corrected = spiked_covariance(many, reference)
    assert corrected == 1
    assert abs(float(estimate[2, 2]) - 0.05) < 0.01
    few = torch.randn(12, d, generator=g, dtype=torch.float64) * scale  # n_eff = 3 < d
    _, corrected = spiked_covariance(few, reference)
    assert corrected == 0


def test_spiked_covariance_checks_its_input():
    with pytest.raises(ValueError, match=r"reference has shape \(2, 2\), expected \(3, 3\)"):
        spiked_covariance(torch.zeros(10, 3), torch.eye(2))
    with pytest.raises(ValueError, match="at least 2 draws, got 1"):
        spiked_covariance(torch.zeros(1, 3), torch.eye(3))
    with pytest.raises(ValueError, match="non-finite draws"):
        spiked_covariance(torch.full((4, 3), math.nan), torch.eye(3))
    with pytest.raises(ValueError, match=r"draws_per_effective must be >= 1, got 0\.5"):
        spiked_covariance(torch.zeros(4, 3), torch.eye(3), draws_per_effective=0.5)


@pytest.mark.parametrize("num_warmup", [MIN_POOLED_WARMUP, 21, 150, 1000])
def test_pooled_schedule_splits_the_whole_warmup(num_warmup):
    stages, final = pooled_schedule(num_warmup)
    assert len(stages) == 2
    assert all(a >= 1 and b >= 2 for a, b in stages) and final >= 1
    assert sum(a + b for a, b in stages) + final == num_warmup


def test_pooled_schedule_refuses_a_short_warmup():
    with pytest.raises(ValueError, match=r"needs num_warmup >= 20 .* got 19"):
        pooled_schedule(19)


def test_pooled_warmup_repairs_a_mass_that_is_far_too_narrow(problem):
    """Started with the exact covariance shrunk 64-fold along its widest direction (what the
    Laplace fit does to a wide direction of a non-Gaussian posterior), the pooled estimate
    corrects that direction: every whitened variance of the true covariance relative to the
    final mass lies within [1/3, 3], where the start's was 1/64 along one direction."""
    print(f"seed {SEED}")
    cov = problem.cov
    lam, vec = torch.linalg.eigh(cov)
    narrow = cov - (1 - 1 / 64) * lam[-1] * torch.outer(vec[:, -1], vec[:, -1])
    start = _whitened_eigenvalues(cov, narrow)
    assert float(start.max()) == pytest.approx(64.0, rel=1e-6)
    g = torch.Generator().manual_seed(SEED)
    z0 = problem.mean + torch.randn(4, 3, generator=g, dtype=torch.float64)
    warm = pooled_warmup(
        problem.posterior,
        z0,
        narrow,
        num_warmup=400,
        seeds=[SEED, SEED + 1],
        target_accept=0.8,
        max_tree_depth=8,
    )
    assert warm.corrected[0] >= 1
    final = _whitened_eigenvalues(cov, warm.inverse_mass_matrix)
    assert float(final.min()) > 1 / 3 and float(final.max()) < 3, final
    assert warm.z.shape == (4, 3) and warm.step_size.shape == (4,)
    assert warm.num_evaluations > 4 * (400 - pooled_schedule(400)[1])


def test_nuts_pooled_run_matches_the_closed_form_and_resumes(problem, tmp_path):
    """mass='pooled' through vaeinv.sample: the closed-form moments within 4 MCSE, the
    estimates recorded as ``mass_corrections``, and a chunked, interrupted and resumed run
    equal to an uninterrupted one."""
    print(f"seed {SEED}")
    settings = {"num_chains": 3, "num_draws": 150, "num_warmup": 60, "thin": 1, "chunk_size": 50}
    opts = {"mass": "pooled", **FAST_LAPLACE}
    idata = sample(problem.posterior, "nuts", seed=SEED, progress=False, **settings, **opts)
    assert_moments(torch.as_tensor(idata.posterior["z"].values), problem.mean, problem.cov)
    assert len(json.loads(idata.attrs["mass_corrections"])) == 2
    assert json.loads(idata.attrs["sampler_options"])["mass"] == "pooled"
    stop = stop_after(2)
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(problem.posterior, "nuts", seed=SEED, checkpoint=folder, progress=stop,
               **settings, **opts)  # fmt: skip
    resumed = sample(problem.posterior, "nuts", seed=SEED, checkpoint=folder, resume=True,
                     progress=False, **settings, **opts)  # fmt: skip
    for group in ("posterior", "sample_stats"):
        for name in idata[group].data_vars:
            np.testing.assert_array_equal(idata[group][name].values, resumed[group][name].values)
    assert resumed.attrs["mass_corrections"] == idata.attrs["mass_corrections"]
    assert resumed.attrs["forward_solves"] == idata.attrs["forward_solves"]


def test_nuts_pooled_parts_merge_with_their_own_estimates(problem):
    """Parts of a pooled run pool within themselves; merging keeps each part's estimates."""
    settings = {"num_chains": 4, "num_draws": 20, "num_warmup": 24, "thin": 1, "progress": False}
    opts = {"mass": "pooled", **FAST_LAPLACE}
    parts = [
        sample(problem.posterior, "nuts", seed=SEED, chains=c, **settings, **opts)
        for c in ([0, 1], [2, 3])
    ]
    merged = merge_runs(parts)
    assert list(merged.posterior["chain"].values) == [0, 1, 2, 3]
    assert json.loads(merged.attrs["mass_corrections_parts"]) == [
        json.loads(p.attrs["mass_corrections"]) for p in parts
    ]
    assert "mass_corrections" not in merged.attrs


def test_nuts_mass_option_is_checked(problem):
    """A problem file's [sampler.nuts] mass takes the same values as vaeinv.sample's."""
    assert check_sampler_options("nuts", {"mass": "pooled"}) == {"mass": "pooled"}
    with pytest.raises(ValueError, match=r"\[sampler.nuts\]: NUTS mass must be one of .*'dense'"):
        check_sampler_options("nuts", {"mass": "dense"}, "[sampler.nuts]")
    quick = {"num_chains": 2, "num_draws": 5, "progress": False}
    with pytest.raises(ValueError, match=r"mass must be one of .* got 'dense'"):
        sample(problem.posterior, "nuts", mass="dense", num_warmup=30, **quick)
    with pytest.raises(ValueError, match="needs num_warmup >= 20"):
        sample(problem.posterior, "nuts", mass="pooled", num_warmup=10, **quick)
