"""Problem files with wells, observation types and several experiments (hydraulic tomography):
loading, data generation, the likelihood as a sum over experiments, and every bad input."""

from __future__ import annotations

import math

import pytest
import torch

from test_problems import TINY, write_tiny_problem
from vaeinv.problems import load_problem, make_data

#: two pumping tests, heads at the 4 x 4 sensors, a head difference and the flux to the left
EXPERIMENTS = TINY.replace(
    """[data]
file = "data.csv"
noise_kind = "absolute"
noise_fraction = 0.05
seed = 11
""",
    """[observations]
differences = [[0.1, 0.5, 0.9, 0.5]]
fluxes = ["left"]

[[experiment]]
name = "pump-A"
wells = [{ x = 0.3, y = 0.3, rate = -0.5 }]
data = "pump-A.csv"
noise_fraction = 0.02
seed = 1

[[experiment]]
name = "pump-B"
wells = [{ x = 0.7, y = 0.6, rate = -0.5 }]
source = 0.0
data = "pump-B.csv"
noise_fraction = 0.03
seed = 2
""",
)


@pytest.fixture
def tomography(tmp_path):
    return write_tiny_problem(tmp_path / "tomo", EXPERIMENTS)


def test_experiments_load_with_their_data_in_order(tomography):
    problem = load_problem(tomography)
    a, b = problem.experiments
    assert (a.name, b.name) == ("pump-A", "pump-B")
    assert a.kinds == ["head"] * 16 + ["head-difference", "flux"]
    assert b.physics.source == 0.0 and a.physics.source == 3.0  # [physics]' unless overridden
    assert a.physics.wells == ((0.3, 0.3, -0.5),)
    assert problem.data.shape == (36,)
    torch.testing.assert_close(problem.data, torch.cat([a.data, b.data]))
    # make_data's noise: fraction x the largest |clean| of each kind, per experiment
    clean = problem.build_forward(accurate=True)(problem.truth[None])[0][:18]
    heads = a.noise_std[:16]
    torch.testing.assert_close(heads, torch.full_like(heads, 0.02 * clean[:16].abs().max()))


def test_the_likelihood_is_the_sum_over_experiments(tomography):
    """The posterior's log-likelihood at a latent is the sum of each experiment's Gaussian
    log-likelihood of its own values, computed here by hand."""
    problem = load_problem(tomography)
    posterior = problem.posterior()
    z = torch.randn(3, posterior.latent_dim, generator=torch.Generator().manual_seed(0))
    z = z.double()
    field = posterior.decode(z)
    readings = problem.build_forward()
    by_hand = torch.zeros(3, dtype=torch.float64)
    for part, experiment in zip(readings.split(readings(field)), problem.experiments, strict=True):
        r = (part - experiment.data) / experiment.noise_std
        norm = torch.log(experiment.noise_std).sum() + 0.5 * r.shape[-1] * math.log(2 * math.pi)
        by_hand += -0.5 * r.square().sum(-1) - norm
    torch.testing.assert_close(posterior.log_likelihood(z), by_hand, rtol=1e-9, atol=1e-9)
    evaluation = posterior.evaluate(z, grad=True)
    assert bool(torch.isfinite(evaluation.grad).all())
    assert posterior.work.forward_solves == 2 * 3  # evaluate counts: two experiments a field


def test_make_data_reproduces_the_files_and_a_seed_changes_them(tomography, tmp_path):
    problem = load_problem(tomography)
    before = [e.data_file.read_text() for e in problem.experiments]
    again = make_data(problem, path=tmp_path)
    assert [p.read_text() for p in again] == before
    other = make_data(problem, seed=40, path=tmp_path)
    assert other[0].read_text() != before[0]


def test_one_experiment_with_observations_and_wells_in_physics(tmp_path):
    toml = TINY.replace(
        "source = 3.0\n", "source = 0.0\nwells = [{ x = 0.45, y = 0.55, rate = 1.0 }]\n"
    ).replace("[data]\n", '[observations]\nfluxes = ["left", "right"]\n\n[data]\n')
    problem = load_problem(write_tiny_problem(tmp_path / "one", toml))
    (only,) = problem.experiments
    assert only.name == "tiny" and only.kinds[-2:] == ["flux", "flux"]
    # what the injection well puts in leaves through the two open sides
    clean = problem.build_forward(accurate=True)(problem.truth[None])[0]
    assert float(clean[-2:].sum()) == pytest.approx(1.0, rel=1e-9)
    assert problem.posterior().num_data == 18


def test_wells_alone_keep_the_classic_sensor_file(tmp_path):
    toml = TINY.replace("source = 3.0\n", "wells = [{ x = 0.45, y = 0.55, rate = -2.0 }]\n")
    problem = load_problem(write_tiny_problem(tmp_path / "wells", toml))
    assert problem.experiments == () and problem.physics.wells == ((0.45, 0.55, -2.0),)
    assert problem.data_file.read_text().splitlines()[2] == "x,y,value,noise_std"


def _broken(tmp_path, toml, match, *, data=True):
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    (folder / "problem.toml").write_text(toml)
    with pytest.raises(ValueError, match=match):
        load_problem(folder, require_data=data)


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("rate = -0.5 }]\ndata = \"pump-A", "rate = -0.5 }, { x = 0.32, y = 0.26, rate = 1.0 }]"
         "\ndata = \"pump-A", r"is in cell \(iy, ix\) = \(2, 2\), as wells\[0\]"),
        ("x = 0.3, y = 0.3", "x = 1.3, y = 0.3", r"wells\[0\] at \(1.3, 0.3\) lies outside"),
        ('fluxes = ["left"]', 'fluxes = ["top"]', r"no-flow side\(s\) \['top'\]"),
        ('fluxes = ["left"]', 'fluxes = ["east"]', "unknown side 'east'"),
        ("differences = [[0.1, 0.5, 0.9, 0.5]]", "differences = [[0.1, 0.5, 0.9]]",
         r"rows \(x1, y1, x2, y2\)"),
        ("[observations]\n", "[observations]\nwells = 3\n", "unknown key 'wells'"),
        ('name = "pump-B"', 'name = "pump-A"', "new non-empty string"),
        ("[[experiment]]\nname = \"pump-A\"", "[data]\nfile = \"x.csv\"\n\n[[experiment]]\n"
         "name = \"pump-A\"", "has no \\[data\\] table"),
        ("seed = 2\n", "seed = 2\ncolour = 3\n", "unknown key 'colour'"),
    ],
)  # fmt: skip
def test_bad_experiment_tables_are_named(tmp_path, old, new, match):
    assert old in EXPERIMENTS
    _broken(tmp_path, EXPERIMENTS.replace(old, new, 1), match, data=False)


def test_bad_data_files_of_an_experiment_are_named(tomography):
    path = tomography / "pump-A.csv"
    rows = path.read_text().splitlines()
    path.write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ValueError, match="has 17 data rows but the experiment observes 18"):
        load_problem(tomography)
    path.write_text("\n".join([*rows[:-1], rows[-1].replace("flux", "pressure")]) + "\n")
    with pytest.raises(ValueError, match="unknown kind 'pressure'; known kinds"):
        load_problem(tomography)
    path.write_text("\n".join([*rows[:-2], rows[-1], rows[-2]]) + "\n")
    with pytest.raises(ValueError, match="row 16 is a 'flux' but the experiment's value 16"):
        load_problem(tomography)


def test_a_run_carries_the_experiment_dimension_and_reports_each_fit(tomography, tmp_path):
    """``vaeinv invert`` then ``vaeinv report`` on two experiments of 18 values: the groups
    have ``(experiment, sensor)``; the report has a row per experiment."""
    import json

    from vaeinv import results
    from vaeinv.cli import main

    out = tmp_path / "tomo.nc"
    assert main(["invert", str(tomography), "--out", str(out), "--no-progress"]) == 0
    idata = results.load(out)
    for group in ("observed_data", "log_likelihood", "posterior_predictive"):
        y = idata[group]["y"]
        assert y.dims[-2:] == ("experiment", "sensor") and y.sizes["sensor"] == 18
        assert list(y.coords["experiment"].values) == ["pump-A", "pump-B"]
    assert str(idata.observed_data["kind"].sel(experiment="pump-B", sensor=17).values) == "flux"
    problem = load_problem(tomography)
    torch.testing.assert_close(
        torch.as_tensor(idata.observed_data["y"].values).reshape(-1), problem.data
    )
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| pump-A | 18 |" in summary and "| pump-B | 18 |" in summary
    fits = json.loads((tmp_path / "report" / "summary.json").read_text())["experiments"]
    assert set(fits) == {"pump-A", "pump-B"}


def test_experiments_of_different_lengths_keep_one_sensor_dimension(tomography):
    """Unequal experiments: one ``sensor`` dimension with ``experiment`` and ``kind`` per value."""
    from vaeinv.results import to_inference_data

    toml = (tomography / "problem.toml").read_text()
    toml = toml.replace('source = 0.0\ndata = "pump-B.csv"', 'source = 0.0\nobservations = '
                        '{ fluxes = ["right"] }\ndata = "pump-B.csv"')  # fmt: skip
    (tomography / "problem.toml").write_text(toml)
    (tomography / "pump-B.csv").unlink()
    problem = load_problem(tomography, require_data=False)
    make_data(problem)
    posterior = load_problem(tomography).posterior()
    z = torch.zeros(1, 2, posterior.latent_dim, dtype=torch.float64)
    idata = to_inference_data(posterior, {"z": z})
    y = idata.observed_data["y"]
    assert y.dims == ("sensor",) and y.sizes["sensor"] == 35  # 18 + 16 heads and a flux
    assert list(y.coords["experiment"].values) == ["pump-A"] * 18 + ["pump-B"] * 17
    assert list(y.coords["kind"].values[-2:]) == ["head", "flux"]


def test_the_shipped_tomography_problem(tmp_path):
    """Four pumping tests at four wells, each read at the 16 observation wells, the channel64
    prior; its data files are what make_data draws from its truth and seeds."""
    problem = load_problem("tomography")
    assert problem.prior.name == "channel64" and problem.grid.shape == (64, 64)
    assert [e.name for e in problem.experiments] == ["pump-SW", "pump-SE", "pump-NW", "pump-NE"]
    wells = {e.physics.wells for e in problem.experiments}
    assert len(wells) == 4 and all(len(w) == 1 and w[0][2] < 0 for w in wells)
    assert all(e.kinds == ["head"] * 16 for e in problem.experiments)
    assert problem.data.shape == (64,)
    fresh = make_data(problem, path=tmp_path)
    for path, experiment in zip(fresh, problem.experiments, strict=True):
        assert path.read_text() == experiment.data_file.read_text(), experiment.name
    readings = problem.build_forward()
    assert readings.num_experiments == 4 and readings.cost == 4
