"""Levels that share the fine latent: a prior's fields coarsened onto a coarser grid
(``CoarsenedPrior``), problem files with ``[multilevel] latent = "shared"``, and MLDA on them
from the command line with a coarse kernel."""

from __future__ import annotations

import pytest
import torch

import vaeinv
from test_problems import TINY, write_tiny_problem
from vaeinv.cli import main
from vaeinv.fields.coarsen import coarsen
from vaeinv.priors import CoarsenedPrior, GaussianFieldPrior


def _fine_prior():
    return GaussianFieldPrior(vaeinv.Grid(8, 8), num_modes=5, length_scale=0.3)


def test_a_coarsened_prior_decodes_the_block_log_mean_exp_of_the_fine_field():
    prior = _fine_prior()
    coarse = CoarsenedPrior(prior, vaeinv.Grid(4, 4))
    z = torch.randn(3, prior.latent_dim, generator=torch.Generator().manual_seed(0))
    z = z.to(torch.float64)
    torch.testing.assert_close(coarse.decode(z), coarsen(prior.decode(z), 2), rtol=0, atol=0)
    assert coarse.latent_dim == prior.latent_dim and coarse.grid.shape == (4, 4)
    # arithmetic mean of k over each 2 x 2 block, checked on one block by hand
    field = prior.decode(z)
    block = field[0, 2:4, 4:6].exp().mean().log()
    torch.testing.assert_close(coarse.decode(z)[0, 1, 2], block)
    z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: coarse.decode(v).sum(-1).sum(-1), (z,))


def test_a_coarsened_prior_refuses_a_grid_that_does_not_nest():
    prior = _fine_prior()
    with pytest.raises(ValueError, match=r"coarse grid 3 x 3 .* does not nest in the prior's"):
        CoarsenedPrior(prior, vaeinv.Grid(3, 3))
    with pytest.raises(ValueError, match=r"grid must be a vaeinv\.Grid, got tuple"):
        CoarsenedPrior(prior, (4, 4))


def _shared_problem(folder, table="levels = [4, 8]", method="mlda"):
    toml = TINY.replace('method = "pcn"', f'method = "{method}"')
    toml += f'\n[multilevel]\nlatent = "shared"\n{table}\n'
    return write_tiny_problem(folder, toml)


def test_shared_levels_decode_the_whole_latent_on_each_grid(tmp_path):
    from vaeinv.problems import load_problem

    problem = load_problem(_shared_problem(tmp_path / "p"))
    levels = problem.level_posteriors()
    assert [p.grid.shape for p in levels] == [(4, 4), (8, 8)]
    assert [p.latent_dim for p in levels] == [6, 6]  # the problem's own prior, all of it
    torch.testing.assert_close(levels[0].data, levels[1].data)
    torch.testing.assert_close(levels[0].truth, coarsen(levels[1].truth, 2))
    z = torch.randn(2, 6, dtype=torch.float64)
    torch.testing.assert_close(levels[0].decode(z), coarsen(levels[1].decode(z), 2))
    fine, inputs = problem.sampling_inputs("mlda")
    assert fine.latent_dim == 6 and [c.grid.shape for c in inputs["coarse"]] == [(4, 4)]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("", r'latent = "shared" needs levels'),
        ("levels = [3, 8]", "level 3 does not divide the grid 8 x 8"),
    ],
)
def test_bad_shared_levels_are_named(tmp_path, table, message):
    from vaeinv.problems import load_problem

    with pytest.raises(ValueError, match=message):
        load_problem(_shared_problem(tmp_path / "p", table)).level_posteriors()


def test_an_unknown_latent_layout_is_named(tmp_path):
    from vaeinv.problems import load_problem

    folder = _shared_problem(tmp_path / "p")
    text = (folder / "problem.toml").read_text().replace('"shared"', '"joint"')
    (folder / "problem.toml").write_text(text)
    with pytest.raises(ValueError, match=r"latent must be one of \['levels', 'shared'\], got 'j"):
        load_problem(folder)


def test_invert_runs_mlda_on_shared_levels_with_a_coarse_kernel(tmp_path, capsys):
    from vaeinv import results

    folder = _shared_problem(tmp_path / "p")
    out = tmp_path / "mlda.nc"
    args = ["invert", str(folder), "--out", str(out), "--no-progress", "--draws", "20"]
    assert main([*args, "--warmup", "40", "--option", "coarse_kernel=hmc"]) == 0
    assert "coarse levels 4 x 4" in capsys.readouterr().out
    idata = results.load(out)
    assert idata.posterior["z"].shape == (2, 20, 6)
    assert idata.attrs["gradient_evaluations_level_0"] > 0
