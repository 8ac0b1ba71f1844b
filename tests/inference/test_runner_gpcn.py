"""gpCN through the runner: the closed-form posterior, resume, accounting, problems and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vaeinv.approx.laplace import laplace_approximation
from vaeinv.kernels.starts import derived_seed as _derived_seed
from vaeinv.problems import check_sampler_options
from vaeinv.results.report import summary_table
from vaeinv.runs.checkpoint import RunCheckpoint
from vaeinv.runs.sampling import sample

from interrupt import Stop, stop_after
from linear_gaussian import assert_moments, linear_gaussian

QUICK = {"num_chains": 3, "num_draws": 14, "num_warmup": 10, "chunk_size": 4, "progress": False}
FAST_LAPLACE = {"laplace_steps": 30, "laplace_lr": 0.1}


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=11)


def test_gpcn_run_matches_the_closed_form_posterior(problem):
    """On a linear-Gaussian posterior the Laplace approximation is exact, so gpCN mixes fast:
    moments within 4 MCSE, acceptance near 1 for beta near 1."""
    seed = 20261122
    print(f"seed {seed}")
    idata = sample(
        problem.posterior, "gpcn", num_chains=4, num_draws=600, num_warmup=100, thin=1,
        seed=seed, progress=False, **FAST_LAPLACE,
    )  # fmt: skip
    draws = torch.as_tensor(idata.posterior["z"].values)
    assert_moments(draws, problem.mean, problem.cov)
    assert float(idata.sample_stats["acceptance_rate"].mean()) > 0.2
    # forward solves: one per chain per iteration plus the start, plus the Laplace fit's
    solves = idata.attrs["forward_solves"]
    assert solves > 4 * (1 + 700)
    assert idata.attrs["gradient_evaluations"] > 0


def test_resumed_gpcn_run_is_bit_identical(problem, tmp_path):
    settings = {**QUICK, **FAST_LAPLACE}
    reference = sample(problem.posterior, "gpcn", seed=3, **settings)
    folder = tmp_path / "run"
    stop = stop_after(3)
    with pytest.raises(Stop):
        sample(
            problem.posterior, "gpcn", seed=3, checkpoint=folder, **{**settings, "progress": stop}
        )
    tensors, _ = RunCheckpoint(folder).read_state()
    assert tensors["pcn.scale_tril"].shape == (3, 3)  # the Laplace approximation is saved
    resumed = sample(problem.posterior, "gpcn", seed=3, checkpoint=folder, resume=True, **settings)
    for group in reference.groups():
        for name in reference[group].data_vars:
            np.testing.assert_array_equal(
                reference[group][name].values, resumed[group][name].values
            )
    assert resumed.attrs["forward_solves"] == reference.attrs["forward_solves"]
    # where the Laplace fit's ascents ended, one per chain's start, survives the resume
    ends = json.loads(reference.attrs["laplace_start_log_density"])
    assert json.loads(resumed.attrs["laplace_start_log_density"]) == ends
    z0 = 1.5 * torch.randn(
        3, 3, generator=torch.Generator().manual_seed(_derived_seed(3, 0)), dtype=torch.float64
    )
    laplace = laplace_approximation(problem.posterior, z0, steps=30, lr=0.1)
    assert ends == laplace.start_log_density.tolist()
    assert all(v <= float(laplace.log_density_at_mean) + 1e-9 for v in ends)
    head = summary_table({}, dict(reference.attrs)).splitlines()[0]
    assert "the best of 3 ascents from the over-dispersed starts (log density at their ends" in head
    assert f"ends {max(ends):.1f} to {min(ends):.1f})" in head
    failed = {"laplace_start_log_density": json.dumps([-math.inf, math.nan, -14.44])}
    assert "(log density at their ends -14.4 to -14.4; 2 failed)" in summary_table({}, failed)


def test_gpcn_options_are_checked():
    with pytest.raises(ValueError, match="unknown sampler option"):
        sample(linear_gaussian().posterior, "gpcn", max_tree_depth=3, **QUICK)
    with pytest.raises(ValueError, match=r"inflation must be a positive number \(finite\), got 0"):
        check_sampler_options("gpcn", {"inflation": 0}, "[sampler.gpcn]")
    with pytest.raises(ValueError, match="laplace_steps must be an integer >= 0, got -1"):
        check_sampler_options("gpcn", {"laplace_steps": -1}, "[sampler.gpcn]")
    assert check_sampler_options("gpcn", {"laplace_lr": 0.1}) == {"laplace_lr": 0.1}


def test_nuts_with_the_laplace_mass_matrix(problem, tmp_path):
    """mass='laplace': the Gauss-Newton covariance as a fixed dense inverse mass matrix; the
    closed-form moments within 4 MCSE, and a chunked, resumed run equals an uninterrupted one."""
    settings = {"num_chains": 2, "num_draws": 150, "num_warmup": 60, "thin": 1, "chunk_size": 50}
    idata = sample(
        problem.posterior,
        "nuts",
        seed=5,
        progress=False,
        mass="laplace",
        **settings,
        **FAST_LAPLACE,
    )
    draws = torch.as_tensor(idata.posterior["z"].values)
    assert_moments(draws, problem.mean, problem.cov)
    assert float(idata.sample_stats["n_steps"].mean()) <= 7  # a well-conditioned, exact metric
    stop = stop_after(2)
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(
            problem.posterior, "nuts", seed=5, checkpoint=folder, progress=stop, mass="laplace",
            **settings, **FAST_LAPLACE,
        )  # fmt: skip
    resumed = sample(
        problem.posterior, "nuts", seed=5, checkpoint=folder, resume=True, progress=False,
        mass="laplace", **settings, **FAST_LAPLACE,
    )  # fmt: skip
    np.testing.assert_array_equal(idata.posterior["z"].values, resumed.posterior["z"].values)
    with pytest.raises(ValueError, match=r"NUTS mass must be one of \(.*\), got 'dense'"):
        sample(problem.posterior, "nuts", mass="dense", **QUICK)
