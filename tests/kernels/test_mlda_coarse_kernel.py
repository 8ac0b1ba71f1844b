"""MLDA's error model and its coarsest kernel (``coarse_kernel``): the corrected likelihood in
closed form, an exactly shifted coarse model made exact by the error model, the closed-form
posterior with HMC, gpCN or pCN running the coarsest subchains, their solves counted, resume
bit for bit, and bad input refused before any solve."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vaeinv
from vaeinv.posterior import with_model_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_mlda import QUICK, SEED, _coarse, _problem, _starts, sample_against_closed_form

from interrupt import Stop, stop_after


def test_the_model_error_posterior_has_the_shifted_widened_likelihood():
    problem = _problem()
    post = problem.posterior
    mean = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    var = torch.tensor([0.01, 0.0, 0.04, 0.2], dtype=torch.float64)
    corrected = with_model_error(post, mean, var)
    pred = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sd2 = post.noise_std**2 + var
    r = pred + mean - post.data
    expected = (-0.5 * r * r / sd2 - 0.5 * torch.log(2 * math.pi * sd2)).sum(-1)
    torch.testing.assert_close(corrected.log_likelihood_of(pred), expected, rtol=0, atol=1e-12)
    # the original is untouched; the work counter is shared
    torch.testing.assert_close(
        post.log_likelihood_of(pred),
        with_model_error(post, torch.zeros(4), torch.zeros(4)).log_likelihood_of(pred),
        rtol=0,
        atol=1e-12,
    )
    before = post.work.forward_solves
    corrected.evaluate(torch.zeros(2, 3, dtype=torch.float64))
    assert post.work.forward_solves == before + 2


def test_bad_model_errors_are_refused():
    post = _problem().posterior
    with pytest.raises(ValueError, match=r"model error mean has shape \(3,\), expected \(4,\)"):
        with_model_error(post, torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="model error variance of datum 2 is nan; expected finite"):
        with_model_error(post, torch.zeros(4), torch.tensor([0.0, 0.0, math.nan, 0.0]))
    with pytest.raises(ValueError, match=r"datum 1 is -0\.5; expected >= 0"):
        with_model_error(post, torch.zeros(4), torch.tensor([0.0, -0.5, 0.0, 0.0]))


def test_the_error_model_corrects_an_exactly_shifted_coarse_model():
    """A coarse model that is the fine one minus 0.7 on every datum: the error model learns the
    shift with zero variance, the corrected coarse likelihood is the fine one, and every fine
    decision after warm-up accepts (the two-stage ratio is 1)."""
    problem = _problem()
    settings = {**QUICK, "num_chains": 8, "num_warmup": 40, "num_draws": 50}
    idata = vaeinv.sample(
        problem.posterior,
        "mlda",
        coarse=[_coarse(problem, 3, 1.0, -0.7)],
        init=_starts(problem, 8),
        seed=SEED,
        **settings,
    )
    acceptance = idata.sample_stats["acceptance_rate"].values
    assert acceptance.min() > 1 - 1e-9, acceptance.min()


@pytest.mark.parametrize(
    ("kernel", "levels"),
    [
        ("hmc", [(2, 0.9, 0.2)]),
        ("gpcn", [(3, 0.8, 0.3)]),
        ("pcn", [(2, 0.9, 0.2)]),
        ("hmc", [(2, 0.9, 0.1), (3, 0.95, -0.1)]),
    ],
)
def test_mlda_with_a_coarse_kernel_matches_the_closed_form_posterior(kernel, levels):
    """With the error model (the default). gpCN on this problem is an almost independent
    sampler of the coarse posterior, and the delayed decision then an independence sampler,
    whose chains stick where the fine-to-coarse weight is large: its coarse model covers the
    whole latent, so that the weight stays bounded (with the third latent left to the fine
    level's own moves, such runs converge, but too slowly for this test's few thousand draws,
    and their MCSE estimates are not to be trusted)."""
    idata = sample_against_closed_form(levels, coarse_kernel=kernel)
    rates = idata.sample_stats["coarse_acceptance_rate"].values
    assert ((rates >= 0) & (rates <= 1)).all()


def test_the_coarse_kernels_solves_are_counted_on_its_level():
    """Every coarsest evaluation HMC makes (Laplace start, leapfrogs, re-evaluations while the
    error model learns) is in ``forward_solves_level_0``; per draw, ``coarse_solves`` holds
    the leapfrogs of the subchain's steps."""
    problem = _problem()
    coarse = _coarse(problem, 2, 0.9, 0.2)
    settings = {**QUICK, "num_chains": 4, "num_warmup": 60, "num_draws": 20}
    idata = vaeinv.sample(
        problem.posterior, "mlda", coarse=[coarse], seed=3, coarse_kernel="hmc",
        subchain_length=2, **settings,
    )  # fmt: skip
    attrs = idata.attrs
    assert attrs["forward_solves_level_0"] >= coarse.work.forward_solves > 0
    assert attrs["coarse_forward_solves"] == attrs["forward_solves_level_0"]
    # the leapfrogs' gradients, and the Laplace start's
    assert 0 < coarse.work.gradient_evaluations < attrs["gradient_evaluations_level_0"]
    assert attrs["forward_solves"] == 4 * (1 + 60 + 20)
    per_draw = idata.sample_stats["coarse_solves"].values[..., 0]  # (chain, draw)
    assert (per_draw >= 2).all()  # at least a leapfrog per HMC step
    assert (per_draw == per_draw[:1]).all()  # the chains share HMC's trajectory lengths
    assert int(per_draw.sum()) < attrs["forward_solves_level_0"]


def test_an_interrupted_run_with_a_coarse_kernel_resumes_bit_for_bit(tmp_path):
    problem = _problem()
    coarse = [_coarse(problem, 1, 0.9, 0.1), _coarse(problem, 2, 1.1, 0.1)]
    settings = {**QUICK, "num_chains": 6, "num_warmup": 30, "num_draws": 30, "chunk_size": 10}
    run = {"coarse": coarse, "coarse_kernel": "hmc", "subchain_length": 2, "seed": 4}
    whole = vaeinv.sample(problem.posterior, "mlda", **run, **settings)
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        vaeinv.sample(
            problem.posterior, "mlda", checkpoint=folder, **run,
            **{**settings, "progress": stop_after(3)},
        )  # fmt: skip
    resumed = vaeinv.sample(
        problem.posterior, "mlda", checkpoint=folder, resume=True, **run, **settings
    )
    for group in ("posterior", "sample_stats"):
        for name in whole[group].data_vars:
            np.testing.assert_array_equal(whole[group][name].values, resumed[group][name].values)
    assert resumed.attrs["forward_solves_level_0"] == whole.attrs["forward_solves_level_0"]


@pytest.mark.parametrize("name", ["nuts", "mlda", "staged", "tpcn", "rwm"])
def test_a_coarse_kernel_that_cannot_run_inside_mlda_is_refused(name):
    problem = _problem()
    coarse = _coarse(problem, 2, 1.0, 0.0)
    before = coarse.work.forward_solves
    quick = {**QUICK, "num_warmup": 0, "num_draws": 2}
    with pytest.raises(ValueError, match=rf"coarse_kernel must name .* got '{name}'"):
        vaeinv.sample(problem.posterior, "mlda", coarse=[coarse], coarse_kernel=name, **quick)
    assert coarse.work.forward_solves == before
