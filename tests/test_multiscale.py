"""Multiscale priors (MDGM): recipes, level-by-level training, the joint latent and each level's
prior, conditional decoding, loading (and refusing broken folders), problem files with a
[multilevel] table, and staged and MLDA inversions from the command line.

A tiny multiscale prior (8 x 8 fields, levels 4 x 4 and 8 x 8, one epoch) is trained once per
session; the shipped priors are checked for conditional decoding.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import vaeinv
from test_problems import TINY, write_tiny_problem
from vaeinv.cli import main
from vaeinv.fields.coarsen import coarsen
from vaeinv.priors import MultiscalePrior
from vaeinv.priors.multiscale_recipe import load_multiscale_recipe, train_multiscale

RECIPE = """
name = "tiny-ms"
description = "a tiny two-level test prior"

[data]
num = 96
seed = 3

[data.generator]
kind = "gaussian"
grid = { nx = 8, ny = 8 }
mean = 1.0
std = 0.75
length_scale = [0.2, 0.4]

[[levels]]
vae = { ny = 4, nx = 4, channels = [8, 8], field_shift = 1.0, field_scale = 0.75 }
training = { epochs = 1, batch_size = 32, beta = 0.05, seed = 1, val_fraction = 0.0 }

[[levels]]
vae = { ny = 8, nx = 8, channels = [8, 8], field_shift = 1.0, field_scale = 0.75 }
training = { epochs = 1, batch_size = 32, beta = 0.05, seed = 2, val_fraction = 0.0 }
"""


def _train(folder: Path) -> Path:
    from vaeinv.fields import generate_dataset

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.toml").write_text(RECIPE)
    recipe = load_multiscale_recipe(folder / "recipe.toml")
    data = generate_dataset(recipe.field_generator(), recipe.num, recipe.seed, folder / "d.st")
    return train_multiscale(recipe, data.fields, data.grid, folder, progress=False, log=print)


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("ms"))


def test_the_joint_latent_decodes_level_by_level_with_gradients_through_every_level(tiny_prior):
    prior = MultiscalePrior.load(tiny_prior)
    assert prior.levels == 2 and prior.latent_dims == (4, 16) and prior.latent_dim == 20
    assert [g.shape for g in prior.grids] == [(4, 4), (8, 8)]
    z = torch.randn(3, 5, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z.requires_grad_(True)
    fields = prior.decode_levels(z)
    assert [tuple(f.shape) for f in fields] == [(3, 5, 4, 4), (3, 5, 8, 8)]
    torch.testing.assert_close(prior.decode(z), fields[-1])
    fields[-1].sum().backward()
    assert (z.grad[..., :4].abs().sum(-1) > 0).all(), "the fine field depends on the coarse latent"
    assert (z.grad[..., 4:].abs().sum(-1) > 0).all()
    coarse = prior.level(0)
    assert coarse.latent_dim == 4 and coarse.grid.shape == (4, 4)
    torch.testing.assert_close(coarse.decode(z[..., :4].detach()), fields[0].detach())
    assert prior.level(-1) is prior
    assert prior.encode(fields[-1].detach()).shape == (3, 5, 20)


def test_a_coarse_decode_does_not_depend_on_the_fine_latent(tiny_prior):
    prior = MultiscalePrior.load(tiny_prior)
    z = torch.randn(4, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    other = torch.cat([z[:, :4], -z[:, 4:]], dim=1)
    torch.testing.assert_close(prior.decode_levels(z)[0], prior.decode_levels(other)[0])
    assert not torch.allclose(prior.decode(z), prior.decode(other))


def test_bad_multiscale_input_is_refused(tiny_prior, tmp_path):
    prior = MultiscalePrior.load(tiny_prior)
    with pytest.raises(ValueError, match=r"latent z has 7 entries; .* one of \[4, 20\]"):
        prior.decode_levels(torch.zeros(1, 7))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 20\)"):
        prior.decode(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"level must be an integer in \[0, 2\)"):
        prior.level(2)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_prior, broken)
    (broken / "level1.safetensors").unlink()
    with pytest.raises(ValueError, match=r"missing level 1: level1\.safetensors not found"):
        MultiscalePrior.load(broken)
    (broken / "multiscale.json").write_text(json.dumps({"format": "other", "levels": []}))
    with pytest.raises(ValueError, match="is not a multiscale prior description"):
        MultiscalePrior.load(broken)
    models = list(prior.models)
    with pytest.raises(ValueError, match="level 1: the network is 8 x 8 but its grid is 6 x 6"):
        MultiscalePrior(models, [prior.grids[0], vaeinv.Grid(6, 6)])
    with pytest.raises(ValueError, match="level 0: cond_channels is 2, expected 0"):
        MultiscalePrior(models[::-1], prior.grids[::-1])
    with pytest.raises(ValueError, match="does not nest"):
        MultiscalePrior(models, [prior.grids[0], vaeinv.Grid(8, 8, lx=2.0)])
    with pytest.raises(ValueError, match="unknown prior 'no-such-prior'"):
        MultiscalePrior.load("no-such-prior")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("ny = 4, nx = 4", "ny = 3, nx = 3"), "does not divide the generator"),
        (lambda t: t.replace("ny = 8, nx = 8, channels", "ny = 4, nx = 4, channels"),
         "levels must grow from coarse to fine"),
        (lambda t: t.split("[[levels]]")[0] + "[[levels]]" + t.split("[[levels]]")[1],
         "at least two"),
        (lambda t: t.replace("[8, 8], field_shift = 1.0, field_scale = 0.75 }\ntraining = "
                             "{ epochs = 1, batch_size = 32, beta = 0.05, seed = 2",
                             "[8, 8], cond_channels = 1 }\ntraining = { epochs = 1, seed = 2"),
         "cond_channels is 1, but the coarser level gives 2"),
        (lambda t: "extra = 1\n" + t, "unknown key 'extra'"),
        (lambda t: t + "\nextra = 1\n", r"\[\[levels\]\] entry 1 must have exactly the keys"),
    ],
)  # fmt: skip
def test_bad_multiscale_recipes_are_named(tmp_path, edit, message):
    path = tmp_path / "r.toml"
    path.write_text(edit(RECIPE))
    with pytest.raises(ValueError, match=message):
        load_multiscale_recipe(path)


def test_prior_load_and_shipped_priors_know_multiscale_folders(tiny_prior):
    assert isinstance(vaeinv.Prior.load(tiny_prior), MultiscalePrior)
    assert {"gaussian16-64", "channel16-32-64"} <= set(vaeinv.priors.shipped_priors())
    assert isinstance(vaeinv.Prior.load("gaussian16-64"), MultiscalePrior)


# ------------------------------------------------------------------ shipped multiscale priors
SHIPPED = ("gaussian16-64", "channel16-32-64")


@pytest.mark.parametrize("name", SHIPPED)
def test_a_fine_decode_of_a_fixed_coarse_latent_block_averages_to_the_coarse_decode(name):
    """Conditional decoding: for prior draws of the joint latent, the finest field coarsened to
    each coarser grid follows that level's decode (correlation of their deviations from the
    mean above 0.8) and is at most half as far from it as from the decode of another draw's
    coarse latent. (The fine levels do change the coarse structure somewhat: the rms difference
    is a third to a half of the coarse fields' spread, docs/results/priors.md.)"""
    prior = vaeinv.Prior.load(name)
    z = torch.randn(64, prior.latent_dim, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        fields = prior.decode_levels(z)
    fine = fields[-1]
    for level, coarse in enumerate(fields[:-1]):
        blocks = coarsen(fine, fine.shape[-1] // coarse.shape[-1])
        error = (blocks - coarse).pow(2).mean().sqrt()
        spread = (coarse - coarse.mean(0)).pow(2).mean().sqrt()
        mismatched = (blocks - coarse.roll(1, dims=0)).pow(2).mean().sqrt()
        deviations = torch.stack(
            [(blocks - blocks.mean(0)).flatten(), (coarse - coarse.mean(0)).flatten()]
        )
        corr = float(torch.corrcoef(deviations)[0, 1])
        print(f"{name} level {level}: rms {float(error):.3f}, spread {float(spread):.3f}, "
              f"other latent {float(mismatched):.3f}, correlation {corr:.3f}")  # fmt: skip
        assert corr > 0.8 and error < 0.5 * mismatched


# ------------------------------------------------------------------ problems and the CLI
def _multilevel_problem(folder: Path, prior: Path, method: str) -> Path:
    toml = TINY.replace('method = "pcn"', f'method = "{method}"')
    toml += f'\n[multilevel]\nprior = "{prior}"\nlevels = [4, 8]\n'
    toml += "\n[sampler.staged]\nstage_iterations = 10\n"
    return write_tiny_problem(folder, toml)


def test_a_problem_builds_one_posterior_per_level(tiny_prior, tmp_path):
    from vaeinv.problems import load_problem

    problem = load_problem(_multilevel_problem(tmp_path / "p", tiny_prior, "mlda"))
    levels = problem.level_posteriors()
    assert [p.grid.shape for p in levels] == [(4, 4), (8, 8)]
    assert [p.latent_dim for p in levels] == [4, 20]
    for level in levels:
        torch.testing.assert_close(level.data, levels[-1].data)
        torch.testing.assert_close(level.noise_std, levels[-1].noise_std)
    fine, inputs = problem.sampling_inputs("mlda")
    assert fine.latent_dim == 20 and [c.grid.shape for c in inputs["coarse"]] == [(4, 4)]
    posterior, none = problem.sampling_inputs("pcn")
    assert none == {} and posterior.latent_dim == 6  # the problem's own Gaussian-field prior


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('prior = "P"\nlevels = [8]', "two or more growing grid sizes"),
        ('prior = "P"\nlevels = [4, 6]', "must end with the problem's grid size 8"),
        ('prior = "P"\nsizes = [4, 8]', "unknown key 'sizes'"),
        ("levels = [4, 8]", "no 'prior'"),
    ],
)
def test_bad_multilevel_tables_are_named(tiny_prior, tmp_path, table, message):
    from vaeinv.problems import load_problem

    folder = _multilevel_problem(tmp_path / "p", tiny_prior, "pcn")
    text = (folder / "problem.toml").read_text().split("[multilevel]")[0]
    table = table.replace('"P"', f'"{tiny_prior}"')
    (folder / "problem.toml").write_text(text + "[multilevel]\n" + table + "\n")
    with pytest.raises(ValueError, match=message):
        load_problem(folder)


def test_a_multilevel_method_without_levels_is_named(tmp_path):
    from vaeinv.problems import load_problem

    folder = write_tiny_problem(tmp_path / "p")
    text = (folder / "problem.toml").read_text().replace('method = "pcn"', 'method = "mlda"')
    (folder / "problem.toml").write_text(text)
    with pytest.raises(ValueError, match=r"method 'mlda' runs on the levels .* \[multilevel\]"):
        load_problem(folder)


@pytest.mark.parametrize("method", ["mlda", "staged"])
def test_invert_runs_multilevel_methods_from_a_problem_file(tiny_prior, tmp_path, method, capsys):
    from vaeinv import results

    folder = _multilevel_problem(tmp_path / "p", tiny_prior, method)
    out = tmp_path / f"{method}.nc"
    args = ["invert", str(folder), "--out", str(out), "--no-progress", "--draws", "20"]
    assert main([*args, "--warmup", "10"]) == 0
    assert "coarse levels 4 x 4" in capsys.readouterr().out
    idata = results.load(out)
    assert idata.posterior["z"].shape == (2, 20, 20)
    assert idata.attrs["method"] == method
    assert idata.attrs["forward_solves_level_0"] > 0
    assert idata.attrs["coarse_forward_solves"] == idata.attrs["forward_solves_level_0"]
