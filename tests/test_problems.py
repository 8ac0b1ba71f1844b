"""Problem files (`vaeinv.problems`): loading, validation, data generation, the shipped problems."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeinv.problems import (
    list_problems,
    load_problem,
    make_data,
    make_truth,
    problems_folder,
)

REPO = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
description = "an 8 x 8 test problem"

[grid]
nx = 8
ny = 8

[physics]
dirichlet = { left = 0.0, right = 0.0 }
source = 3.0

[sensors]
lattice = 4

[prior]
kind = "gaussian-field"
mean = 1.0
std = 0.75
length_scale = 0.3
num_modes = 6

[truth]
file = "truth.txt"
format = "log_k"
seed = 5

[truth.generator]
kind = "gaussian"
grid = { nx = 8, ny = 8 }
mean = 1.0
std = 0.75
length_scale = 0.3

[data]
file = "data.csv"
noise_kind = "absolute"
noise_fraction = 0.05
seed = 11

[sampler]
method = "pcn"
num_chains = 2
num_draws = 60
num_warmup = 30
chunk_size = 20

[sampler.pcn]
target_accept = 0.3
"""


def write_tiny_problem(folder: Path, toml: str = TINY, *, name: str | None = None) -> Path:
    """Write a tiny problem (truth drawn, data generated) into ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if name is not None:
        toml = toml.replace('name = "tiny"', f'name = "{name}"')
    (folder / "problem.toml").write_text(toml)
    problem = load_problem(folder, require_data=False)
    if problem.truth_spec and "generator" in problem.truth_spec:
        make_truth(problem)
        problem = load_problem(folder, require_data=False)
    make_data(problem)
    return folder


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny_problem(tmp_path / "tiny")


def _data_rows(folder: Path) -> list[str]:
    return (folder / "data.csv").read_text().splitlines()


def _edit_data(folder: Path, row: int, column: int, value: str) -> None:
    lines = _data_rows(folder)
    header = next(i for i, line in enumerate(lines) if line.startswith("x,"))
    cells = lines[header + 1 + row].split(",")
    cells[column] = value
    lines[header + 1 + row] = ",".join(cells)
    (folder / "data.csv").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------- the tiny problem


def test_tiny_problem_loads_with_its_settings(tiny):
    problem = load_problem(tiny)
    assert problem.name == "tiny" and problem.grid.shape == (8, 8)
    assert problem.num_sensors == 16 and problem.data.shape == (16,)
    assert problem.truth.shape == (8, 8) and problem.truth.dtype == torch.float64
    assert problem.prior.kind == "gaussian-field" and problem.prior.options["num_modes"] == 6
    s = problem.sampler_defaults
    assert (s.method, s.num_chains, s.num_draws, s.num_warmup, s.chunk_size) == (
        "pcn",
        2,
        60,
        30,
        20,
    )
    assert s.thin == "auto"  # the default
    assert s.options_for("pcn") == {"target_accept": 0.3} and s.options_for("nuts") == {}
    assert problem.attrs()["problem"] == "tiny" and problem.attrs()["data_seed"] == 11
    # the same problem by its problem.toml path
    assert load_problem(tiny / "problem.toml").name == "tiny"


def test_make_data_is_the_noisy_forward_solve_with_the_recorded_seed(tiny):
    """value = clean + 0.05 |clean| e, e ~ N(0, I) from torch.Generator(seed): exactly."""
    problem = load_problem(tiny)
    post = problem.posterior()
    with torch.no_grad():
        clean = post.forward(problem.truth)
    e = torch.randn(16, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    torch.testing.assert_close(problem.noise_std, 0.05 * clean.abs(), rtol=1e-15, atol=0)
    torch.testing.assert_close(problem.data, clean + problem.noise_std * e, rtol=1e-15, atol=0)
    # the Gaussian log-likelihood of the clean prediction is fixed by the noise draw
    expected = (
        -0.5 * float(e @ e) - float(problem.noise_std.log().sum()) - 8 * math.log(2 * math.pi)
    )
    assert float(post.log_likelihood_of(clean[None])[0]) == pytest.approx(expected, rel=1e-12)
    assert "seed 11" in (tiny / "data.csv").read_text()


def test_make_data_and_truth_are_reproducible(tiny, tmp_path):
    problem = load_problem(tiny)
    before = (tiny / "data.csv").read_text()
    assert make_data(problem, path=tmp_path / "again.csv").read_text() == before
    other = make_data(problem, seed=12, path=tmp_path / "other.csv").read_text()
    assert other != before and "seed 12" in other
    truth = (tiny / "truth.txt").read_text()
    assert make_truth(problem, tmp_path / "truth.txt").read_text() == truth


def test_relative_noise_is_a_fraction_of_the_data(tmp_path):
    folder = write_tiny_problem(
        tmp_path / "rel", TINY.replace('noise_kind = "absolute"', 'noise_kind = "relative"')
    )
    problem = load_problem(folder)
    torch.testing.assert_close(problem.noise_std, 0.05 * problem.data.abs())
    post = problem.posterior()
    torch.testing.assert_close(post.noise_std, 0.05 * problem.data.abs())


def test_sensors_from_a_file(tmp_path):
    from vaeinv import Grid, PointSensors

    xy = PointSensors.lattice(Grid(8, 8), 4).xy.numpy()[::3]
    folder = tmp_path / "file"
    folder.mkdir()
    np.savetxt(folder / "sensors.csv", xy, delimiter=",", header="x,y", comments="")
    write_tiny_problem(folder, TINY.replace("lattice = 4", 'file = "sensors.csv"'))
    problem = load_problem(folder)
    assert problem.num_sensors == len(xy) == problem.data.shape[0]
    np.testing.assert_allclose(problem.sensors_xy.numpy(), xy)


def test_prior_override_and_the_gaussian_field_prior(tiny):
    problem = load_problem(tiny)
    assert problem.posterior().latent_dim == 6
    assert problem.posterior(prior="gaussian-field").latent_dim == 64  # default: all modes


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ('name = "tiny"', 'name = "tiny"\ncolour = "red"', r"unknown key 'colour' in problem file"),
        (
            "nx = 8",
            "nx = 8\nnz = 3",
            r"unknown key 'nz' in \[grid\]; expected keys: nx, ny, lx, ly",
        ),
        ("source = 3.0", "source = 3.0\nsink = 1", r"unknown key 'sink' in \[physics\]"),
        ("left = 0.0", "west = 0.0", r"unknown key 'west' in \[physics\] dirichlet"),
        ("num_chains = 2", "chains = 2", r"unknown key 'chains' in \[sampler\]; expected keys"),
        (
            "target_accept = 0.3",
            "target_accept = 0.3\nmax_tree_depth = 5",
            r"unknown key 'max_tree_depth' in \[sampler.pcn\] \(options of 'pcn'\); "
            r"expected keys: step_size, target_accept",
        ),
        ("target_accept = 0.3", "target_accept = 1.5", r"target_accept must be in \(0, 1\)"),
        (
            'method = "pcn"',
            'method = "mala"',
            r"\[sampler\] method must be one of 'gpcn', 'hmc', 'mlda', 'nuts', 'pcn', 'staged', "
            r"'tpcn'",
        ),
        (
            "num_draws = 60",
            "num_draws = 0",
            r"\[sampler\] num_draws must be an integer >= 1, got 0",
        ),
        (
            "num_draws = 60",
            'num_draws = 60\nthin = "some"',
            r"\[sampler\] thin must be 'auto' or an integer >= 1, got 'some'",
        ),
        ("num_draws = 60", "num_draws = 60\nthin = 0", r"\[sampler\] thin must be an integer >= 1"),
        (
            "num_draws = 60",
            "num_draws = 60\nthin = 61",
            r"\[sampler\] thin = 61 is larger than num_draws = 60: no draw would be kept",
        ),
        (
            "num_draws = 60",
            "num_draws = 60\nfield_thin = 5",
            r"unknown key 'field_thin' in \[sampler\]; expected keys: .*thin",
        ),
        ("num_modes = 6", "num_modes = 6\nrange = 2", r"unknown key 'range' in \[prior\]"),
        ('kind = "gaussian-field"', 'kind = "gan"', r"\[prior\] kind must be one of 'vae'"),
        ("nx = 8", "nx = 0", r"Grid nx must be a positive integer, got 0"),
        (
            "lattice = 4",
            "lattice = 9",
            r"\[sensors\] lattice must be an integer in \[1, 8\], got 9",
        ),
        ("noise_fraction = 0.05", "noise_fraction = 0.0", r"noise_fraction must be a positive"),
        ("noise_fraction = 0.05", "noise_fraction = -1", r"noise_fraction must be a positive"),
        ('noise_kind = "absolute"', 'noise_kind = "both"', r"noise_kind must be one of"),
        ('format = "log_k"', 'format = "k"', r"\[truth\] format must be one of 'log_k', 'mdgm-k'"),
        ("[data]\n", "[observables]\n", r"unknown key 'observables' in problem file"),
        ("source = 3.0", "source = 3.0\nrtol = 0", r"\[physics\] rtol must be \"noise\" or a"),
        ("source = 3.0", 'source = 3.0\nrtol = "tight"', r"rtol must be \"noise\" or a number"),
    ],
)
def test_bad_problem_files_are_named(tiny, old, new, match):
    text = TINY.replace(old, new, 1)
    assert text != TINY
    (tiny / "problem.toml").write_text(text)
    with pytest.raises(ValueError, match=match):
        load_problem(tiny)


@pytest.mark.parametrize(("value", "expected"), [("3", 3), ('"auto"', "auto"), ("60", 60)])
def test_sampler_thin(tiny, value, expected):
    (tiny / "problem.toml").write_text(
        TINY.replace("num_draws = 60", f"num_draws = 60\nthin = {value}")
    )
    assert load_problem(tiny).sampler_defaults.thin == expected


def test_missing_table_and_unknown_problem(tiny):
    text = TINY[: TINY.index("[sampler]")].replace("[data]", "[sampler]").split("[sampler]")[0]
    (tiny / "problem.toml").write_text(text)
    with pytest.raises(ValueError, match=r"problem has no 'data'"):
        load_problem(tiny)
    with pytest.raises(ValueError, match=r"unknown problem 'no-such-problem'.*known problems: "):
        load_problem("no-such-problem")
    (tiny / "problem.toml").write_text("name = [")
    with pytest.raises(ValueError, match=r"is not valid TOML"):
        load_problem(tiny)


def test_data_length_not_matching_the_sensors(tiny):
    lines = _data_rows(tiny)
    (tiny / "data.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"data.csv has 15 data rows but \[sensors\] defines 16"):
        load_problem(tiny)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_data(tiny, value):
    _edit_data(tiny, 3, 2, value)
    with pytest.raises(
        ValueError, match=rf"row 3 \(sensor 3\): value is {value}; expected a finite"
    ):
        load_problem(tiny)


@pytest.mark.parametrize("value", ["0", "-0.01", "nan"])
def test_non_positive_noise(tiny, value):
    _edit_data(tiny, 5, 3, value)
    with pytest.raises(ValueError, match=r"row 5 \(sensor 5\): noise_std is .*expected a positive"):
        load_problem(tiny)


def test_bad_data_files(tiny):
    _edit_data(tiny, 2, 0, "0.9")
    with pytest.raises(ValueError, match=r"row 2 is at \(0.9, .*but sensor 2 of \[sensors\] is at"):
        load_problem(tiny)
    _edit_data(tiny, 2, 0, "abc")
    with pytest.raises(ValueError, match=r"row 2 \(sensor 2\): x = 'abc' is not a number"):
        load_problem(tiny)
    (tiny / "data.csv").write_text("x,y,value\n0.1,0.1,1.0\n")
    with pytest.raises(ValueError, match=r"data.csv has no column 'noise_std'"):
        load_problem(tiny)
    (tiny / "data.csv").unlink()
    with pytest.raises(ValueError, match=r"\[data\] file 'data.csv' does not exist"):
        load_problem(tiny)


def test_relative_noise_with_zero_data(tmp_path):
    folder = write_tiny_problem(
        tmp_path / "rel", TINY.replace('noise_kind = "absolute"', 'noise_kind = "relative"')
    )
    _edit_data(folder, 4, 2, "0.0")
    with pytest.raises(ValueError, match=r"row 4 \(sensor 4\): value 0 gives a relative noise sd"):
        load_problem(folder)


def test_truth_of_the_wrong_shape(tiny):
    np.savetxt(tiny / "truth.txt", np.zeros((8, 7)))
    with pytest.raises(ValueError, match=r"holds 8 x 7 values, expected 8 x 8 \(ny x nx\)"):
        load_problem(tiny)


def test_prior_whose_grid_does_not_match_the_physics(tiny):
    text = TINY.replace(
        TINY[TINY.index("[prior]") : TINY.index("[truth]")], '[prior]\nname = "gaussian64"\n\n'
    )
    (tiny / "problem.toml").write_text(text)
    problem = load_problem(tiny)
    with pytest.raises(
        ValueError, match=r"prior 'gaussian64' is on Grid\(nx=64, ny=64.*Grid\(nx=8"
    ):
        problem.posterior()
    with pytest.raises(ValueError, match=r"is on Grid\(nx=64, ny=64.*Grid\(nx=8"):
        load_problem(tiny).posterior(prior="channel64")


def test_problem_files_know_every_option_of_every_registered_kernel():
    """A problem's [sampler.<method>] table accepts exactly the kernel's declared options."""
    from vaeinv.kernels import registry
    from vaeinv.problems import check_sampler_options, problem_methods, sampler_option_names

    assert set(problem_methods()) == {
        m for m in registry.available() if set(registry.get(m).inputs) <= {"coarse"}
    }
    for method in problem_methods():
        assert set(sampler_option_names(method)) == set(registry.get(method).Options.names())
        check_sampler_options(method, registry.get(method).Options.defaults())
        with pytest.raises(ValueError, match="unknown key 'no_such_option'"):
            check_sampler_options(method, {"no_such_option": 1})


# ---------------------------------------------------------------------------- shipped problems


def test_shipped_problems_are_listed():
    assert {"demo", "mdgm-gaussian", "mdgm-channel"} <= set(list_problems())
    assert problems_folder() == REPO / "problems"


@pytest.mark.parametrize(
    ("name", "prior", "truth_file"),
    [
        ("mdgm-gaussian", "gaussian64", "gaussian_true_permeability.dat"),
        ("mdgm-channel", "channel64", "channel_true_permeability.dat"),
    ],
)
def test_mdgm_problems_match_the_benchmark(name, prior, truth_file):
    problem = load_problem(name)
    folder = REPO / "problems" / name
    assert (folder / "LICENSE.MH-MDGM").is_file() and (folder / "README.md").is_file()
    assert problem.grid.shape == (64, 64) and problem.prior.name == prior
    assert problem.physics.dirichlet == {"left": 0.0, "right": 0.0}
    assert problem.physics.source == 3.0
    # the 8 x 8 lattice at cells 4, 12, ..., 60, row by row
    cells = (np.arange(4, 64, 8) + 0.5) / 64
    yy, xx = np.meshgrid(cells, cells, indexing="ij")
    np.testing.assert_allclose(problem.sensors_xy.numpy(), np.stack([xx.ravel(), yy.ravel()], 1))
    # the truth is log K of MDGM's file, rows at y
    k = np.loadtxt(folder / truth_file)
    np.testing.assert_array_equal(problem.truth.numpy(), np.log(k))
    assert problem.noise_fraction == 0.05 and problem.noise_kind == "absolute"
    assert problem.data.shape == (64,) and bool(torch.isfinite(problem.data).all())


def test_demo_problem():
    problem = load_problem("demo")
    assert problem.grid.shape == (64, 64) and problem.prior.name == "gaussian64"
    assert problem.truth_spec["generator"]["kind"] == "gaussian"
    s = problem.sampler_defaults
    assert s.method == "hmc" and (s.num_chains, s.num_draws, s.thin) == (16, 190, "auto")
    assert (REPO / "problems" / "demo" / "README.md").is_file()


@pytest.mark.parametrize(
    ("name", "thin", "kept"),
    [("demo", 1, 190), ("mdgm-gaussian", 1, 1000), ("mdgm-channel", 1, 900)],
)
def test_shipped_problems_thin_automatically_under_100_mb(name, thin, kept):
    """The shipped defaults resolve thin='auto' to keep z and log k of every kept draw in a
    result under 100 MB (the 256-latent float32 VAE priors on 64 x 64 cells)."""
    from vaeinv.runs.sampling import RESULT_BUDGET_BYTES, resolve_thin

    problem = load_problem(name)
    s = problem.sampler_defaults
    assert s.thin == "auto"
    posterior = problem.posterior()
    got = resolve_thin(posterior, s.thin, num_chains=s.num_chains, num_draws=s.num_draws)
    assert (got, s.num_draws // got) == (thin, kept)
    per_draw = 64 * 64 * 4 + 8 * 256 + 16 * 64 + 48
    assert s.num_chains * kept * per_draw < RESULT_BUDGET_BYTES


def test_make_data_script_reproduces_every_shipped_data_file(capsys):
    spec = importlib.util.spec_from_file_location("make_data", REPO / "problems" / "make_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--check"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "mdgm-gaussian", "mdgm-channel"):
        assert f"{name}: data.csv matches" in out
    assert "demo: truth truth.txt matches" in out


def test_the_multigrid_tolerance_is_tied_to_the_noise_unless_set(tiny):
    """By default the flow of a problem stops multigrid CG where the pressure error is a
    thousandth of the smallest noise sd (noise_tied_rtol); [physics] rtol overrides it."""
    from vaeinv.physics import noise_tied_rtol

    problem = load_problem(tiny)
    flow = problem.build_physics()
    assert flow.rtol == noise_tied_rtol(problem.noise_std, problem.data)
    assert flow.adjoint_rtol == max(flow.rtol, 1e-3)
    assert problem.posterior().physics.rtol == flow.rtol
    (tiny / "problem.toml").write_text(TINY.replace("source = 3.0", "source = 3.0\nrtol = 1e-9"))
    problem = load_problem(tiny)
    assert problem.build_physics().rtol == 1e-9
    assert problem.physics.config()["rtol"] == 1e-9


@pytest.mark.parametrize(
    ("method", "budget"),
    [("hmc", (16, 150, 100)), ("pcn", (4, 1000, 1000)), (None, (16, 150, 100))],
)
def test_a_sampler_table_without_a_budget_gets_the_methods_own(tiny, method, budget):
    """pCN named without chains or draws gets pCN's long budget, not HMC's 150 draws."""
    text = TINY[: TINY.index("[sampler]")] + "[sampler]\n"
    if method is not None:
        text += f'method = "{method}"\n'
    (tiny / "problem.toml").write_text(text)
    s = load_problem(tiny).sampler_defaults
    assert (s.num_chains, s.num_draws, s.num_warmup) == budget
    assert s.method == (method or "hmc")
