"""Staged coarse-to-fine runs (``method="staged"``, MDGM's scheme): the coarse stage's average
is the coarse posterior's mean, the kept draws are exact pCN draws of the fine posterior
whatever the coarse model, the stages' solves are counted, and bad input is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import vaeinv
from vaeinv.kernels.staged import StagedOptions, _stage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mlda import QUICK, SEED, _coarse, _problem, _starts

from linear_gaussian import assert_moments


def _closed_form_mean(problem, latent_dim: int, scale: float, shift: float) -> torch.Tensor:
    """The coarse posterior's mean: its forward map is ``scale G (A z + b) + shift`` with the
    latents after the first ``latent_dim`` read as 0, noise sd 0.3."""
    H = scale * problem.G @ problem.A[:, :latent_dim]
    c = scale * problem.G @ problem.b + shift
    precision = torch.eye(latent_dim, dtype=torch.float64) + H.T @ H / 0.09
    return torch.linalg.solve(precision, H.T @ (problem.posterior.data - c) / 0.09)


def test_a_stage_averages_to_the_coarse_posterior_mean():
    print(f"seed {SEED}")
    problem = _problem()
    coarse = _coarse(problem, 2, 0.8, 0.3)
    generator = torch.Generator().manual_seed(SEED)
    start = torch.zeros(256, 2, dtype=torch.float64)
    options = StagedOptions(stage_iterations=400, target_accept=0.3)
    means = _stage(coarse, start, generator, options)
    exact = _closed_form_mean(problem, 2, 0.8, 0.3)
    # each chain's mean of 200 correlated draws; across 256 chains, the average is within
    # 4 standard errors of the exact mean, the standard error from the chains' spread
    error = means.mean(0) - exact
    se = means.std(0) / 256**0.5
    print(f"error {error.tolist()}, se {se.tolist()}")
    assert (error.abs() < 4 * se).all()


def test_staged_draws_match_the_fine_posterior_and_count_the_stages():
    print(f"seed {SEED}")
    problem = _problem()
    coarse = [_coarse(problem, 1, 0.7, 0.4), _coarse(problem, 2, 0.8, 0.3)]
    idata = vaeinv.sample(
        problem.posterior,
        "staged",
        coarse=coarse,
        init=_starts(problem, QUICK["num_chains"]),
        seed=SEED,
        stage_iterations=50,
        **QUICK,
    )
    z = torch.as_tensor(idata.posterior["z"].values)
    print("\n".join(assert_moments(z, problem.mean, problem.cov)))
    chains = QUICK["num_chains"]
    for level in (0, 1):
        assert idata.attrs[f"forward_solves_level_{level}"] == chains * (1 + 50)
    assert idata.attrs["coarse_forward_solves"] == 2 * chains * 51


def test_bad_staged_input_is_refused_before_any_solve():
    problem = _problem()
    quick = {**QUICK, "num_warmup": 0, "num_draws": 2}
    with pytest.raises(ValueError, match=r"needs coarse=\[coarsest_posterior, ...\]"):
        vaeinv.sample(problem.posterior, "staged", **quick)
    coarse = _coarse(problem, 2, 1.0, 0.0)
    with pytest.raises(ValueError, match="stage_iterations must be an integer >= 2"):
        vaeinv.sample(problem.posterior, "staged", coarse=[coarse], stage_iterations=1, **quick)
    other = _coarse(problem, 2, 1.0, 0.0, data=problem.posterior.data + 1.0)
    with pytest.raises(ValueError, match="fine posterior's data and noise"):
        vaeinv.sample(problem.posterior, "staged", coarse=[other], **quick)
    assert other.work.forward_solves == 0
