"""extend_run: a finished run continued from its last draws, the new draws appended. The old
draws stay bit for bit, the extension targets the posterior (closed-form moments within 4 MCSE),
the counters add up, extensions are seeded and resumable, parts of a NUTS run extend and merge,
and every refusal names what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_runner import arrays, assert_same_draws

from vaeinv import results
from vaeinv.kernels import registry
from vaeinv.runs.extend import draws_covariance, extend_run
from vaeinv.runs.merge import merge_runs
from vaeinv.runs.sampling import sample

from interrupt import Stop, stop_after
from linear_gaussian import assert_moments, linear_gaussian

QUICK = {"num_chains": 3, "num_draws": 12, "num_warmup": 10, "chunk_size": 4, "progress": False}


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=11)


@pytest.fixture
def seed(request) -> int:
    value = (20261201 + sum(map(ord, request.node.name))) % 2**31
    print(f"run seed for {request.node.name}: {value}")
    return value


@pytest.mark.parametrize("method", ["nuts", "hmc", "pcn"])
def test_the_run_is_kept_and_the_extension_appended(problem, seed, method, tmp_path):
    quick = {**QUICK, "num_warmup": 20} if method == "hmc" else QUICK  # HMC's mass windows
    run = sample(problem.posterior, method, seed=seed, thin=2, **quick)
    results.save(run, tmp_path / "run.nc")
    run = results.load(tmp_path / "run.nc")  # as the CLI reads it: attributes as text
    longer = extend_run(run, problem.posterior, num_draws=8, num_warmup=6, progress=False)
    old = run.posterior.sizes["draw"]
    assert old == 6 and longer.posterior.sizes["draw"] == old + 4  # thinned as the run: 8 // 2
    assert longer.posterior["draw"].values.tolist() == list(range(10))
    before, after = arrays(run), arrays(longer)
    assert before.keys() == after.keys()
    for key, value in before.items():
        if "draw" in run[key.split("/")[0]][key.split("/")[1]].dims:
            np.testing.assert_array_equal(after[key][:, :old], value, err_msg=key)
        else:
            np.testing.assert_array_equal(after[key], value, err_msg=key)
    # the extension's groups agree with each other as a run's do
    z_new = torch.as_tensor(longer.posterior["z"].values[:, old:])
    pred = problem.posterior.predict(z_new)
    np.testing.assert_allclose(longer.posterior_predictive["y"].values[:, old:], pred)
    attrs = longer.attrs
    assert int(attrs["num_draws"]) == 12 + 8
    extension = json.loads(attrs["extensions"])
    assert len(extension) == 1 and extension[0]["num_draws"] == 8
    assert extension[0]["num_warmup"] == 6
    assert ("mass" in extension[0]) == (method != "pcn")
    counters = ("forward_solves", "gradient_evaluations")
    added = {k: int(attrs[k]) - int(run.attrs[k]) for k in counters}
    if method != "pcn":  # at least one leapfrog per iteration, each a gradient and a solve
        assert added["gradient_evaluations"] >= 3 * (6 + 8)
        assert added["forward_solves"] >= added["gradient_evaluations"]
    else:  # pCN: one solve per chain for the start and per iteration, no gradient
        assert added == {"forward_solves": 3 * (1 + 6 + 8), "gradient_evaluations": 0}
    assert float(attrs["wall_time_s"]) > float(run.attrs["wall_time_s"])
    results.save(longer, tmp_path / "longer.nc")
    again = extend_run(results.load(tmp_path / "longer.nc"), problem.posterior, num_draws=2,
                       progress=False)  # fmt: skip
    records = json.loads(again.attrs["extensions"])
    assert len(records) == 2 and records[1]["num_warmup"] == registry.get(method).extension_warmup
    assert records[0]["seed"] != records[1]["seed"]  # each extension its own stream
    assert again.posterior.sizes["draw"] == 11


@pytest.mark.parametrize("method", ["nuts", "hmc", "pcn"])
def test_the_extension_samples_the_linear_gaussian_posterior(problem, seed, method):
    """A short, badly mixed run, then a long extension: the extension's draws have the closed-
    form moments within 4 MCSE."""
    warmup = 20 if method == "hmc" else QUICK["num_warmup"]  # HMC's mass windows need 20
    run = sample(
        problem.posterior, method, seed=seed, **{**QUICK, "num_draws": 200, "num_warmup": warmup}
    )
    longer = extend_run(run, problem.posterior, num_draws=1500 if method == "pcn" else 400,
                        progress=False)  # fmt: skip
    draws = torch.as_tensor(longer.posterior["z"].values[:, 200:])
    assert_moments(draws, problem.mean, problem.cov)


def test_nuts_continues_with_the_draws_covariance(problem, seed):
    run = sample(problem.posterior, "nuts", seed=seed, **{**QUICK, "num_draws": 40})
    z = run.posterior["z"].values
    mass, kind = draws_covariance(z)
    flat = z.reshape(-1, 3)
    assert kind == "dense"
    np.testing.assert_allclose(mass.numpy(), np.cov(flat, rowvar=False), rtol=1e-12)
    # a latent that never moved: the dense estimate is singular, so the diagonal is used
    stuck = z.copy()
    stuck[..., 2] = 0.5
    diag, kind = draws_covariance(stuck)
    assert kind == "diagonal"
    assert float(diag[2, 2]) == pytest.approx(float(diag.diagonal()[:2].mean()))
    # fewer draws than 2 d: the variances only; a latent that never moved gets the mean
    few = np.zeros((1, 4, 3))
    few[0, :, 0] = [0.0, 1.0, 2.0, 3.0]
    few[0, :, 1] = [0.0, 2.0, 4.0, 6.0]
    diag, kind = draws_covariance(few)
    assert kind == "diagonal"
    expected = [np.var([0, 1, 2, 3], ddof=1), np.var([0, 2, 4, 6], ddof=1)]
    np.testing.assert_allclose(diag.diagonal().numpy(), [*expected, np.mean(expected)])
    assert torch.count_nonzero(diag - torch.diag(diag.diagonal())) == 0


@pytest.mark.parametrize("method", ["nuts", "hmc"])
def test_the_same_extension_gives_the_same_draws_and_resumes(problem, seed, method, tmp_path):
    run = sample(problem.posterior, method, seed=seed, **{**QUICK, "num_warmup": 20})
    settings = {"num_draws": 12, "num_warmup": 5, "chunk_size": 4}
    first = extend_run(run, problem.posterior, progress=False, **settings)
    second = extend_run(run, problem.posterior, progress=False, **settings)
    assert_same_draws(first, second)
    folder = tmp_path / "extension"
    with pytest.raises(Stop):
        extend_run(run, problem.posterior, checkpoint=folder, progress=stop_after(2), **settings)
    resumed = extend_run(
        run, problem.posterior, checkpoint=folder, resume=True, progress=False, **settings
    )
    assert_same_draws(first, resumed)


def test_parts_of_a_nuts_run_extend_and_merge(problem, seed, tmp_path):
    parts = []
    for chains in ([0, 2], [1]):
        part = sample(problem.posterior, "nuts", seed=seed, chains=chains, **QUICK)
        longer = extend_run(part, problem.posterior, num_draws=6, num_warmup=5, progress=False)
        assert longer.posterior["chain"].values.tolist() == chains
        results.save(longer, tmp_path / f"part{chains[0]}.nc")
        parts.append(results.load(tmp_path / f"part{chains[0]}.nc"))
    merged = merge_runs(parts)
    assert merged.posterior["z"].shape == (3, 18, 3)
    assert int(merged.attrs["num_draws"]) == 18
    assert int(merged.attrs["forward_solves"]) == sum(int(p.attrs["forward_solves"]) for p in parts)


def test_refusals(problem, seed):
    run = sample(problem.posterior, "nuts", seed=seed, **QUICK)
    with pytest.raises(ValueError, match="num_draws"):
        extend_run(run, problem.posterior, num_draws=0, progress=False)
    with pytest.raises(ValueError, match="num_warmup"):
        extend_run(run, problem.posterior, num_draws=4, num_warmup=-1, progress=False)
    other_data = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=12)
    with pytest.raises(ValueError, match="data_sha256"):
        extend_run(run, other_data.posterior, num_draws=4, progress=False)
    wider = linear_gaussian(latent_dim=4, num_data=4, noise_std=0.3, seed=11)
    with pytest.raises(ValueError, match="latent has 3 dimensions, the posterior's 4"):
        extend_run(run, wider.posterior, num_draws=4, progress=False)
    thinned = sample(problem.posterior, "pcn", seed=seed, thin=4, **QUICK)
    with pytest.raises(ValueError, match="keeps no draw at the run's thin of 4"):
        extend_run(thinned, problem.posterior, num_draws=3, progress=False)
    gpcn = sample(problem.posterior, "gpcn", seed=seed, laplace_steps=5, **QUICK)
    with pytest.raises(ValueError, match=r"method 'gpcn'.*Laplace approximation"):
        extend_run(gpcn, problem.posterior, num_draws=4, progress=False)


def test_sample_with_a_fixed_mass(problem, seed):
    """``inverse_mass_matrix=`` (mass='fixed'): the chains start at init, the mass stays."""
    init = torch.tensor([[0.1, 0.2, 0.3], [-0.1, 0.0, 0.4], [0.5, -0.5, 0.0]])
    run = sample(
        problem.posterior, "nuts", seed=seed, init=init, inverse_mass_matrix=problem.cov, **QUICK
    )
    assert json.loads(run.attrs["sampler_options"])["mass"] == "fixed"
    with pytest.raises(ValueError, match="cannot be combined with mass='pooled'"):
        sample(problem.posterior, "nuts", inverse_mass_matrix=problem.cov, mass="pooled", **QUICK)
    hmc = sample(problem.posterior, "hmc", seed=seed, init=init, inverse_mass_matrix=problem.cov,
                 **QUICK)  # fmt: skip
    # HMC with a fixed mass: no Laplace start, no mass windows (QUICK's 10 warm-up iterations
    # are below the 20 the windows need, which a run without the fixed mass refuses)
    assert "laplace_start_log_density" not in hmc.attrs
    assert "mass" not in json.loads(hmc.attrs["sampler_options"])
    with pytest.raises(ValueError, match="num_warmup >= 20"):
        sample(problem.posterior, "hmc", seed=seed, init=init, **QUICK)
    with pytest.raises(ValueError, match="has no mass matrix"):
        sample(problem.posterior, "pcn", inverse_mass_matrix=problem.cov, **QUICK)
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(3, 3\)"):
        sample(problem.posterior, "nuts", inverse_mass_matrix=torch.eye(2), **QUICK)
    with pytest.raises(ValueError, match="symmetric positive definite"):
        sample(problem.posterior, "nuts", inverse_mass_matrix=-torch.eye(3), **QUICK)
    with pytest.raises(ValueError, match="mass='fixed' needs inverse_mass_matrix"):
        sample(problem.posterior, "nuts", mass="fixed", **QUICK)
