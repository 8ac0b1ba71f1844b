"""results: the InferenceData layout (groups, dims, names, attrs), the netCDF round trip, every
error path, and the diagnostics against cases with known answers (iid and AR(1) chains,
separated chains, exact misfit, exact L2 error and coverage)."""

from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr

from vaeinv import Grid, PointSensors, results
from vaeinv.results.report import summary_table
from vaeinv.results.verdict import convergence_verdict

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

GRID = Grid(nx=4, ny=3, lx=2.0, ly=1.5)
C, N, D, M = 2, 12, 3, 4  # chains, draws, latents, sensors


def fake_posterior(truth: bool = True, sensors: bool = True, grid: Grid | None = GRID):
    """The attributes of a Posterior that ``to_inference_data`` reads."""
    return SimpleNamespace(
        data=torch.arange(1.0, M + 1, dtype=torch.float64),
        noise_std=torch.full((M,), 0.5, dtype=torch.float64),
        sensors=PointSensors(GRID, [[0.1, 0.2], [1.0, 0.5], [1.5, 1.0], [1.9, 1.4]])
        if sensors
        else None,
        grid=grid,
        truth=torch.linspace(-1, 1, GRID.num_cells).reshape(GRID.shape) if truth else None,
    )


def fake_draws(rng: np.random.Generator, method: str = "pcn") -> dict:
    draws = {
        "z": rng.normal(size=(C, N, D)),
        "prediction": rng.normal(size=(C, N, M)),
        "log_likelihood": rng.normal(size=(C, N, M)),
        "log_k": rng.normal(size=(C, N, *GRID.shape)).astype(np.float32),
        "lp": rng.normal(size=(C, N)),
        "acceptance_rate": rng.uniform(size=(C, N)),
        "step_size": np.full((C, N), 0.3),
    }
    if method == "pcn":
        draws.update(accepted=rng.uniform(size=(C, N)) < 0.3, failed=np.zeros((C, N), bool))
    else:
        draws.update(
            diverging=np.zeros((C, N), bool),
            tree_depth=np.full((C, N), 3),
            n_steps=np.full((C, N), 7),
        )
    return draws


@pytest.fixture
def rng(generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(2**31, (), generator=generator)))


@pytest.mark.parametrize("method", ["pcn", "nuts"])
def test_groups_dims_names_and_attrs(rng, method):
    draws = fake_draws(rng, method)
    idata = results.to_inference_data(
        fake_posterior(), draws, attrs={"seed": 7, "method": method, "problem": "demo"}
    )
    assert set(idata.groups()) == {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "posterior_predictive",
        "observed_data",
        "constant_data",
    }
    post = idata.posterior
    assert post["z"].dims == ("chain", "draw", "latent")
    assert post["log_k"].dims == ("chain", "draw", "y", "x")
    assert dict(post.sizes) == {"chain": C, "draw": N, "latent": D, "y": 3, "x": 4}
    np.testing.assert_array_equal(post["draw"], np.arange(N))
    np.testing.assert_array_equal(post["log_k"], draws["log_k"])
    np.testing.assert_allclose(post["x"], [0.25, 0.75, 1.25, 1.75])
    np.testing.assert_allclose(post["y"], [0.25, 0.75, 1.25])
    np.testing.assert_array_equal(post["z"], draws["z"])
    assert post["log_k"].dtype == np.float32
    stats = results.PCN_STATS if method == "pcn" else results.NUTS_STATS
    assert set(idata.sample_stats.data_vars) == set(stats)
    for name in stats:
        assert idata.sample_stats[name].dims == ("chain", "draw")
    for group in ("log_likelihood", "posterior_predictive"):
        assert idata[group]["y"].dims == ("chain", "draw", "sensor")
    np.testing.assert_array_equal(idata.posterior_predictive["y"], draws["prediction"])
    np.testing.assert_array_equal(idata.log_likelihood["y"], draws["log_likelihood"])
    obs = idata.observed_data
    np.testing.assert_array_equal(obs["y"], [1, 2, 3, 4])
    np.testing.assert_allclose(obs["sensor_x"], [0.1, 1.0, 1.5, 1.9])
    np.testing.assert_allclose(obs["sensor_y"], [0.2, 0.5, 1.0, 1.4])
    const = idata.constant_data
    assert set(const.data_vars) == {"noise_std", "sensor_x", "sensor_y", "log_k"}
    assert const["log_k"].dims == ("y", "x")
    np.testing.assert_allclose(const["noise_std"], 0.5)
    for attrs in (idata.attrs, post.attrs):
        assert attrs["seed"] == 7 and attrs["method"] == method and attrs["problem"] == "demo"
        assert attrs["inference_library"] == "vaeinv"
        assert set(json.loads(attrs["versions"])) == {
            "vaeinv",
            "torch",
            "pyro-ppl",
            "arviz",
            "xarray",
            "safetensors",
        }
        assert "created_at" in attrs


def test_optional_parts_are_left_out(rng):
    draws = {"z": rng.normal(size=(C, N, D))}
    idata = results.to_inference_data(fake_posterior(truth=False, sensors=False), draws)
    assert set(idata.groups()) == {"posterior", "observed_data", "constant_data"}
    assert set(idata.posterior.data_vars) == {"z"}
    assert set(idata.constant_data.data_vars) == {"noise_std"}
    assert "sensor_x" not in idata.observed_data.coords
    np.testing.assert_array_equal(idata.posterior["draw"], np.arange(N))


def test_fields_without_a_grid_get_index_coordinates(rng):
    draws = {"z": rng.normal(size=(C, N, D)), "log_k": rng.normal(size=(C, N, 5))}
    idata = results.to_inference_data(fake_posterior(truth=False, grid=None), draws)
    assert idata.posterior["log_k"].dims == ("chain", "draw", "field_dim_0")
    draws["log_k"] = rng.normal(size=(C, N, 2, 3))
    idata = results.to_inference_data(fake_posterior(truth=False, grid=None), draws)
    np.testing.assert_array_equal(idata.posterior["x"], [0, 1, 2])


def test_attrs_are_made_netcdf_safe(rng, tmp_path):
    attrs = {"none": None, "flag": True, "opts": {"a": 1}, "seq": (1, 2), "np": np.int64(3)}
    idata = results.to_inference_data(fake_posterior(), fake_draws(rng), attrs=attrs)
    assert idata.attrs["none"] == "" and idata.attrs["flag"] == 1 and idata.attrs["np"] == 3
    assert json.loads(idata.attrs["opts"]) == {"a": 1} and json.loads(idata.attrs["seq"]) == [1, 2]
    back = results.load(results.save(idata, tmp_path / "r.nc"))
    assert back.attrs["flag"] == 1 and back.attrs["opts"] == '{"a": 1}'


def test_netcdf_round_trip(rng, tmp_path):
    draws = fake_draws(rng, "nuts")
    draws["diverging"][0, 3] = True
    idata = results.to_inference_data(fake_posterior(), draws, attrs={"seed": 3})
    path = results.save(idata, tmp_path / "out" / "run.nc")
    assert path == tmp_path / "out" / "run.nc" and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.nc"]  # no temporary left
    for back in (results.load(path), az.from_netcdf(str(path))):
        assert set(back.groups()) == set(idata.groups())
        for group in idata.groups():
            left, right = idata[group], back[group]
            assert set(left.data_vars) == set(right.data_vars), group
            for name in left.data_vars:
                np.testing.assert_array_equal(left[name].values, right[name].values)
                assert left[name].dims == right[name].dims
                assert left[name].dtype == right[name].dtype, (group, name)
        assert back.attrs["seed"] == 3 and back.posterior.attrs["seed"] == 3
    # saving over an existing file replaces it
    results.save(results.to_inference_data(fake_posterior(), {"z": np.zeros((1, 5, 2))}), path)
    assert results.load(path).posterior.sizes["draw"] == 5


def test_to_inference_data_errors(rng):
    post = fake_posterior()
    good = fake_draws(rng)
    with pytest.raises(ValueError, match=r"unknown draws keys \['zz'\]"):
        results.to_inference_data(post, {**good, "zz": 1})
    with pytest.raises(ValueError, match="must hold 'z'"):
        results.to_inference_data(post, {"lp": good["lp"]})
    with pytest.raises(ValueError, match=r"draws\['z'\] has shape \(2, 12\)"):
        results.to_inference_data(post, {"z": good["z"][..., 0]})
    with pytest.raises(ValueError, match=r"draws\['lp'\] has shape \(2, 11\), expected \(2, 12\)"):
        results.to_inference_data(post, {**good, "lp": good["lp"][:, 1:]})
    with pytest.raises(ValueError, match=r"draws\['prediction'\] has shape"):
        results.to_inference_data(post, {**good, "prediction": good["prediction"][..., :2]})
    with pytest.raises(ValueError, match=r"draws\['log_k'\] has shape \(1, 12, 3, 4\)"):
        results.to_inference_data(post, {**good, "log_k": good["log_k"][:1]})
    with pytest.raises(
        ValueError,
        match=r"draws\['log_k'\] has shape \(2, 4, 3, 4\), expected \(2, 12, ny, nx\): one field",
    ):
        results.to_inference_data(post, {**good, "log_k": good["log_k"][:, ::3]})
    with pytest.raises(ValueError, match=r"unknown draws keys \['field_draw'\]"):
        results.to_inference_data(post, {**good, "field_draw": np.arange(N)})
    with pytest.raises(ValueError, match=r"draws\['draw'\] has shape \(5,\)"):
        results.to_inference_data(post, {**good, "draw": np.arange(5)})
    with pytest.raises(ValueError, match=r"fields have shape \(4, 3\), but the grid"):
        results.to_inference_data(post, {**good, "log_k": good["log_k"].swapaxes(2, 3)})
    with pytest.raises(ValueError, match="attribute 'bad' has type object"):
        results.to_inference_data(post, good, attrs={"bad": object()})


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        results.load(tmp_path / "missing.nc")
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"not a netcdf file at all")
    with pytest.raises(ValueError, match="is not an InferenceData netCDF file"):
        results.load(junk)
    empty = tmp_path / "empty.nc"
    observed = xr.Dataset({"y": (("sensor",), fake_posterior().data.numpy())})
    az.InferenceData(observed_data=observed).to_netcdf(str(empty))
    with pytest.raises(ValueError, match="has no posterior group"):
        results.load(empty)


# ---------------------------------------------------------------------------- diagnostics
def idata_from(z: np.ndarray, **extra) -> az.InferenceData:
    draws = {"z": z, "lp": z[..., 0] if z.ndim == 3 else z, **extra}
    if draws["z"].ndim == 2:
        draws["z"] = z[..., None]
    return results.to_inference_data(fake_posterior(truth=False), draws)


def ar1(rng, phi: float, shape: tuple[int, ...]) -> np.ndarray:
    """Stationary AR(1) chains with unit marginal variance along axis 1."""
    noise = rng.normal(size=shape) * math.sqrt(1 - phi**2)
    x = np.empty(shape)
    x[:, 0] = rng.normal(size=(shape[0], *shape[2:]))
    for t in range(1, shape[1]):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def test_iid_chains_have_rhat_one_and_full_ess(rng):
    z = rng.normal(size=(4, 1000, 3))
    diag = results.diagnostics(idata_from(z))
    assert diag["num_chains"] == 4 and diag["num_draws"] == 1000
    assert diag["max_rhat_latent"] < 1.01
    assert 0.8 * 4000 < diag["min_ess_bulk_latent"] <= 1.2 * 4000
    assert 0.8 * 4000 < diag["min_ess_tail_latent"] <= 1.2 * 4000
    assert diag["min_ess_bulk"] == min(diag["min_ess_bulk_latent"], diag["min_ess_bulk_field"])


def test_ar1_chains_have_the_known_ess(rng):
    """ESS of AR(1) with coefficient phi is N (1 - phi) / (1 + phi)."""
    phi = 0.8
    z = ar1(rng, phi, (4, 5000, 1))
    expected = 4 * 5000 * (1 - phi) / (1 + phi)
    diag = results.diagnostics(idata_from(z))
    assert abs(diag["min_ess_bulk_latent"] / expected - 1) < 0.2, (diag, expected)


def test_the_log_likelihood_trace_has_the_known_ess(rng):
    """The summed pointwise log-likelihood (MDGM's ESS measure) is an AR(1) trace split unevenly
    over the 4 sensors: its ESS is that of AR(1); chains offset from each other give a large
    R-hat; without the group both are NaN."""
    phi = 0.5
    trace = ar1(rng, phi, (4, 4000))
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    z = rng.normal(size=(4, 4000, 2))
    diag = results.diagnostics(idata_from(z, log_likelihood=trace[..., None] * weights))
    expected = 4 * 4000 * (1 - phi) / (1 + phi)
    assert abs(diag["ess_bulk_log_likelihood"] / expected - 1) < 0.2, (diag, expected)
    assert diag["rhat_log_likelihood"] < 1.01
    offset = trace + 3.0 * np.arange(4)[:, None]
    diag = results.diagnostics(idata_from(z, log_likelihood=offset[..., None] * weights))
    assert diag["rhat_log_likelihood"] > 2
    idata = idata_from(z)
    assert "log_likelihood" not in idata.groups()
    diag = results.diagnostics(idata)
    assert math.isnan(diag["ess_bulk_log_likelihood"]) and math.isnan(diag["rhat_log_likelihood"])


def test_separated_chains_have_large_rhat(rng):
    z = rng.normal(size=(4, 500, 2)) + np.arange(4)[:, None, None] * 3.0
    diag = results.diagnostics(idata_from(z))
    assert diag["max_rhat_latent"] > 2 and diag["max_rhat"] > 2


def test_field_quantities_enter_the_field_diagnostics(rng):
    """Fields that differ between chains show up in the field R-hat, not the latent one."""
    z = rng.normal(size=(2, 400, 2))
    log_k = rng.normal(size=(2, 400, *GRID.shape))
    log_k[1] += 5.0
    idata = idata_from(z, log_k=log_k)
    diag = results.diagnostics(idata)
    # rank-normalised R-hat of two fully separated chains is about 1.8, whatever the gap
    assert diag["max_rhat_latent"] < 1.02 and diag["max_rhat_field"] > 1.5
    assert diag["max_rhat"] == diag["max_rhat_field"]


def test_sample_stat_counts_and_misfit(rng):
    z = rng.normal(size=(2, 10, 2))
    sd, data = 0.5, fake_posterior().data.numpy()
    residual = np.tile([1.0, -1.0, 2.0, 0.0], (2, 10, 1))  # in units of sd: mean r^2 = 1.5
    diverging = np.zeros((2, 10), bool)
    diverging[0, [1, 4]] = diverging[1, 9] = True
    failed = np.zeros((2, 10), bool)
    failed[1, :4] = True
    rate = np.tile(np.linspace(0, 1, 10), (2, 1))
    idata = idata_from(
        z,
        prediction=data + sd * residual,
        diverging=diverging,
        failed=failed,
        acceptance_rate=rate,
    )
    diag = results.diagnostics(idata)
    assert diag["divergences"] == 3 and diag["failed"] == 4
    assert diag["acceptance_rate"] == pytest.approx(0.5)
    assert diag["normalised_misfit"] == pytest.approx(1.5, rel=1e-12)
    assert diag["rel_l2_error"] is None and diag["coverage_2sd"] is None
    assert diag["expected_rel_l2_error"] is None


def test_l2_error_and_coverage_against_the_truth():
    """Draws mu +- 1 (exact mean mu, sd sqrt(n/(n-1))); the truth is mu on 5 cells and
    mu + 3 sd on the other 7: coverage 5/12, error ||3 sd|| / ||truth||."""
    mu = np.linspace(1.0, 2.0, GRID.num_cells).reshape(GRID.shape)
    signs = np.where(np.arange(20) % 2 == 0, 1.0, -1.0).reshape(2, 10, 1, 1)
    log_k = mu + signs
    sd = math.sqrt(20 / 19)
    offset = np.where(np.arange(GRID.num_cells) < 5, 0.0, 3 * sd).reshape(GRID.shape)
    truth = mu + offset
    post = fake_posterior()
    post.truth = torch.as_tensor(truth)
    draws = {"z": np.zeros((2, 10, 1)), "log_k": log_k}
    diag = results.diagnostics(results.to_inference_data(post, draws))
    assert diag["coverage_2sd"] == pytest.approx(5 / 12)
    expected = np.linalg.norm(offset) / np.linalg.norm(truth)
    assert diag["rel_l2_error"] == pytest.approx(expected, rel=1e-12)
    # every cell has posterior variance n / (n - 1) = 20 / 19
    own = math.sqrt(GRID.num_cells * 20 / 19) / np.linalg.norm(truth)
    assert diag["expected_rel_l2_error"] == pytest.approx(own, rel=1e-12)
    # the report's markdown rows keep two cells (a '|' in a label or value would split one)
    rows = [line for line in summary_table(diag).splitlines() if line.startswith("|")]
    assert any("posterior expects" in row for row in rows)
    assert all(row.count("|") == 3 for row in rows), rows


def test_too_few_draws_give_nan_convergence_figures(rng):
    diag = results.diagnostics(idata_from(rng.normal(size=(2, 3, 2))))
    for key in ("max_rhat", "min_ess_bulk", "min_ess_tail", "max_rhat_latent"):
        assert math.isnan(diag[key]), key
    assert math.isnan(diag["normalised_misfit"])


def test_arviz_functions_take_the_whole_result(rng, tmp_path):
    """z and log_k share (chain, draw): summary, R-hat, ESS and trace plots on everything,
    before and after a netCDF round trip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draws = fake_draws(rng)
    idata = results.to_inference_data(fake_posterior(), draws)
    back = az.from_netcdf(str(results.save(idata, tmp_path / "run.nc")))
    for data in (idata, back):
        summary = az.summary(data)
        assert len(summary) == D + GRID.num_cells
        rhat, ess = az.rhat(data), az.ess(data)
        assert set(rhat.data_vars) == set(ess.data_vars) == {"z", "log_k"}
        assert ess["log_k"].dims == ("y", "x") and np.isfinite(ess["log_k"].values).all()
        with warnings.catch_warnings():  # ArviZ 0.23 calls a deprecated matplotlib helper
            warnings.simplefilter("ignore", DeprecationWarning)
            axes = az.plot_trace(data, var_names=["z"])
        assert axes.shape == (1, 2)
        plt.close("all")


def test_the_verdict_holds_the_run_against_arviz_thresholds():
    good = {
        "max_rhat_latent": 1.004,
        "max_rhat_field": 1.006,
        "min_ess_bulk_latent": 900.0,
        "min_ess_bulk_field": 700.0,
        "min_ess_tail_latent": 800.0,
        "min_ess_tail_field": 650.0,
        "divergences": 0,
    }
    line = convergence_verdict(good, {"num_draws": 500}, "out/demo.nc")
    assert line.startswith("converged: max R-hat 1.0060 <= 1.01, min bulk ESS 700 >= 400")
    assert "extend" not in line and "\n" not in line
    short = dict(good, max_rhat_latent=1.06, min_ess_bulk_latent=100.0)
    hmc = {"num_draws": 2000, "method": "hmc"}
    line = convergence_verdict(short, hmc, "out/demo.nc")
    assert line.startswith("NOT converged: max R-hat 1.0600 > 1.01, min bulk ESS 100 < 400")
    # ESS grows with the draws: 4x the ESS needs 3x more draws, times 1.2
    assert line.endswith("run longer: vaeinv extend out/demo.nc --draws 7200")
    line = convergence_verdict(dict(good, max_rhat_field=1.02), dict(hmc, num_draws=500), "r.nc")
    assert "NOT converged: max R-hat 1.0200 > 1.01" in line and "--draws 250" in line
    # divergences alone: a smaller step, not more draws
    line = convergence_verdict(dict(good, divergences=3), {"num_draws": 500}, "r.nc")
    assert line.startswith("NOT converged: 3 divergences") and "target_accept=0.9" in line
    assert "extend" not in line
    # a figure ArviZ could not compute fails the run
    nan = dict(good, max_rhat_latent=float("nan"))
    line = convergence_verdict(nan, {"num_draws": 500}, "r.nc")
    assert line.startswith("NOT converged: max R-hat not computable")
    # gpCN runs cannot be extended: a longer run instead
    line = convergence_verdict(short, {"num_draws": 2000, "method": "gpcn", "problem": "demo"})
    assert line.endswith("run longer: vaeinv invert demo --method gpcn --draws 9200")
    line = convergence_verdict(short, {"num_draws": 2000}, "r.nc")  # method unknown
    assert line.endswith("run longer: 9200 iterations per chain")
