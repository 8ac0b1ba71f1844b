"""`vaeinv invert` on a problem with a [decomposition] table, end to end on a tiny problem
(16 x 16 cells, 2 x 2 subdomains of 12 x 12 cells, a tiny untrained VAE as the local prior):
the run, its report with the partition, the same draws on Dask workers, --global, and the
table's errors."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from test_problems import write_tiny_problem
from vaeinv import Grid, results
from vaeinv.cli import main
from vaeinv.vae import VAEConfig, init_vae, save_checkpoint

TOML = """
name = "tiny-dd"
description = "a 16 x 16 decomposed test problem"

[grid]
nx = 16
ny = 16

[physics]
dirichlet = { left = 0.0, right = 0.0 }
source = 3.0

[sensors]
lattice = 8

[prior]
kind = "gaussian-field"
mean = 1.0
std = 0.75
length_scale = 0.3
num_modes = 12

[truth]
file = "truth.txt"
format = "log_k"
seed = 5

[truth.generator]
kind = "gaussian"
grid = { nx = 16, ny = 16 }
mean = 1.0
std = 0.75
length_scale = 0.3

[data]
file = "data.csv"
noise_kind = "absolute"
noise_fraction = 0.05
seed = 6

[decomposition]
parts = [2, 2]
overlap = 4
prior = "local"

[decomposition.interface]
fit_steps = 20
map_steps = 20
max_points = 8

[sampler]
method = "pcn"
num_chains = 2
num_draws = 40
num_warmup = 20
seed = 3
chunk_size = 20
"""


def _write(folder, toml=TOML):
    folder = write_tiny_problem(folder, toml)
    config = VAEConfig(ny=12, nx=12, channels=(4, 8), norm_groups=2)
    save_checkpoint(folder / "local", init_vae(config, seed=1), grid=Grid(12, 12, lx=0.75, ly=0.75))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("dd") / "tiny-dd")


@pytest.fixture(scope="module")
def finished(tiny):
    out = tiny.parent / "run.nc"
    assert main(["invert", str(tiny), "--out", str(out), "--no-progress"]) == 0
    return out


def test_invert_samples_the_subdomains_and_report_draws_the_partition(finished, capsys):
    idata = results.load(finished)
    assert idata.posterior["log_k"].shape == (2, 40, 16, 16)
    assert idata.sample_stats["lp"].dims == ("chain", "draw", "subdomain")
    assert idata.attrs["problem"] == "tiny-dd" and idata.attrs["subdomains"] == 4
    assert main(["report", str(finished)]) == 0
    shown = capsys.readouterr().out
    assert "per subdomain" in shown and "| 3 |" in shown
    assert re.search(r"posterior mean rel\. L2 \d\.\d{3} -> \d\.\d{3}", shown)
    folder = finished.with_name("run_report")
    assert (folder / "fields.png").is_file() and (folder / "traces.png").is_file()


@pytest.mark.slow
def test_two_workers_give_the_draws_of_one_process(tiny, finished):
    out = tiny.parent / "workers.nc"
    assert main(["invert", str(tiny), "--out", str(out), "--no-progress", "--workers", "2"]) == 0
    a, b = results.load(finished), results.load(out)
    np.testing.assert_array_equal(a.posterior["z"].values, b.posterior["z"].values)
    np.testing.assert_array_equal(a.posterior["log_k"].values, b.posterior["log_k"].values)


def test_global_samples_the_problem_prior_on_the_whole_grid(tiny):
    out = tiny.parent / "global.nc"
    assert main(["invert", str(tiny), "--out", str(out), "--no-progress", "--global"]) == 0
    idata = results.load(out)
    assert idata.posterior["z"].dims == ("chain", "draw", "latent")
    assert idata.posterior["z"].shape[-1] == 12


def test_a_local_gaussian_field_prior_is_built_on_each_subdomains_cells(tiny, tmp_path):
    """``[decomposition.prior]`` as a table: the Gaussian field on each subdomain's cells
    (local Karhunen-Loeve expansions), whose decoded fields are the whole-grid field's
    restrictions in distribution: the same pointwise mean and variance."""
    from vaeinv.priors.gaussian_field import GaussianFieldPrior
    from vaeinv.problems import load_problem

    folder = tmp_path / "kl"
    shutil.copytree(tiny, folder)
    table = (
        '[decomposition.prior]\nkind = "gaussian-field"\nmean = 1.0\nstd = 0.75\n'
        "length_scale = 0.3\nnum_modes = 20\n"
    )
    toml = TOML.replace('prior = "local"\n', "").replace(
        "[decomposition.interface]", table + "\n[decomposition.interface]"
    )
    (folder / "problem.toml").write_text(toml)
    problem = load_problem(str(folder))
    assert problem.decomposition.config()["prior"]["kind"] == "gaussian-field"
    partition = problem.decomposition.partition(problem.grid)
    priors = problem.decomposition.local_priors(partition)
    assert len(priors) == 4 and all(p is priors[0] for p in priors)  # one size, built once
    prior = priors[0]
    assert isinstance(prior, GaussianFieldPrior) and prior.latent_dim == 20
    assert prior.grid.same_cells(partition.subdomains[0].grid)
    whole = GaussianFieldPrior(problem.grid, mean=1.0, std=0.75, length_scale=0.3)
    s = partition.subdomains[3]
    cov = whole.covariance_matrix().reshape(16, 16, 16, 16)[s.rows, s.cols][:, :, s.rows, s.cols]
    local = prior.covariance_matrix().reshape(12, 12, 12, 12)
    torch.testing.assert_close(local, cov, rtol=0, atol=1e-12)
    out = tmp_path / "kl.nc"
    assert main(["invert", str(folder), "--out", str(out), "--no-progress"]) == 0
    idata = results.load(out)
    assert idata.posterior["z"].shape == (2, 40, 4, 20)
    assert "gaussian-field" in str(idata.attrs["local_prior"])


def test_only_chains_is_refused_for_a_decomposed_run(tiny, capsys):
    out = tiny.parent / "part.nc"
    code = main(["invert", str(tiny), "--out", str(out), "--only-chains", "0"])
    assert code != 0 and "--only-chains is not available" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("parts = [2, 2]", "parts = [3, 2]", "nx_parts = 3 does not divide the grid's 16 cells"),
        ("overlap = 4", "overlap = 8", "overlap 8 is as wide as a subdomain's core"),
        ("parts = [2, 2]", "parts = 2", r"parts must be \[nx_parts, ny_parts\]"),
        ("max_points = 8", "max_points = 8\nfoo = 1", "unknown key 'foo'"),
        ('prior = "local"', 'prior = ["local", "local"]', "lists 2 priors for 4 subdomains"),
        ("max_points = 8", "max_points = -1", "max_points must be an integer >= 0"),
        ('prior = "local"', "prior = 3", "prior must be a local prior's name or folder"),
        (
            'prior = "local"',
            'prior = { kind = "gaussian-field", std = 0.5, foo = 1 }',
            r"unknown key 'foo' in \[decomposition\.prior\]",
        ),
    ],
)
def test_bad_decomposition_tables_are_refused(tiny, tmp_path, capsys, old, new, match):
    folder = tmp_path / "bad"
    shutil.copytree(tiny, folder)
    (folder / "problem.toml").write_text(TOML.replace(old, new))
    code = main(["invert", str(folder), "--out", str(tmp_path / "x.nc")])
    assert code != 0
    assert re.search(match, capsys.readouterr().err)
