"""`vaeinv invert` and `vaeinv report`, end to end on a tiny problem (8 x 8 cells, a 6-mode
Gaussian-field prior, 2 chains, a few dozen draws)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from test_problems import TINY, write_tiny_problem
from vaeinv import results
from vaeinv.cli import main
from vaeinv.physics import SolverWarning

# a short run: the tiny problem's defaults are 2 chains, 30 warm-up, 60 draws in chunks of 20
SHORT = ["--no-progress"]


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_problem(tmp_path / "tiny")


def _invert(problem, out, *extra) -> int:
    return main(["invert", str(problem), "--out", str(out), *SHORT, *extra])


def test_invert_then_report(tiny, tmp_path, capsys):
    out = tmp_path / "run" / "tiny.nc"
    assert _invert(tiny, out) == 0
    printed = capsys.readouterr().out
    assert "tiny: 16 data" in printed and f"wrote {out}" in printed
    assert "(30 warm-up + 60) iterations, thin 1 (auto): 60 draws kept per chain" in printed
    assert out.is_file() and not (tmp_path / "run" / "tiny.nc.partial").exists()
    idata = results.load(out)
    assert idata.posterior["z"].shape == (2, 60, 6)
    assert idata.posterior["log_k"].shape == (2, 60, 8, 8)
    assert idata.posterior["log_k"].dims == ("chain", "draw", "y", "x")
    assert (idata.attrs["thin"], idata.attrs["thin_requested"]) == (1, "auto")
    assert idata.log_likelihood["y"].shape == (2, 60, 16)
    assert idata.attrs["problem"] == "tiny" and idata.attrs["seed"] == 0
    assert idata.attrs["method"] == "pcn" and idata.attrs["data_seed"] == 11
    assert "log_k" in idata.constant_data  # the truth travels with the result
    stats = idata.sample_stats
    assert set(results.PCN_STATS) <= set(stats.data_vars)
    assert 0 < float(stats["acceptance_rate"].mean()) <= 1

    assert main(["report", str(out)]) == 0  # into run/tiny_report/
    report_dir = tmp_path / "run" / "tiny_report"
    table = capsys.readouterr().out
    for row in ("max R-hat, latents", "min bulk ESS", "min tail ESS", "mean acceptance rate"):
        assert row in table
    assert "rel. L2 error of the posterior-mean log k" in table
    assert "cells with truth in mean +- 2 sd" in table
    for name in ("summary.md", "summary.json", "fields.png", "traces.png", "ranks.png"):
        assert (report_dir / name).is_file(), name
    assert (report_dir / "predictive.png").stat().st_size > 5000
    assert (report_dir / "summary.md").read_text() in table


def test_flags_override_the_problem(tiny, tmp_path, capsys):
    out = tmp_path / "a.nc"
    args = ["--chains", "3", "--draws", "11", "--warmup", "5", "--thin", "2", "--seed", "4"]
    assert _invert(tiny, out, *args, "--option", "step_size=0.5") == 0
    assert "thin 2: 5 draws kept per chain" in capsys.readouterr().out
    idata = results.load(out)
    # 11 iterations, every 2nd kept: 5 draws of z and of log k
    assert idata.posterior["z"].shape == (3, 5, 6)
    assert idata.posterior["log_k"].shape == (3, 5, 8, 8)
    assert (idata.attrs["seed"], idata.attrs["thin"], idata.attrs["num_warmup"]) == (4, 2, 5)
    assert (idata.attrs["num_draws"], idata.attrs["thin_requested"]) == (11, 2)
    assert idata.attrs["sampler_options"] == '{"step_size": 0.5, "target_accept": 0.3}'


def test_thin_from_the_problem_and_auto_from_the_flag(tiny, tmp_path):
    from test_problems import TINY

    (tiny / "problem.toml").write_text(TINY.replace("num_draws = 60", "num_draws = 60\nthin = 4"))
    out = tmp_path / "b.nc"
    assert _invert(tiny, out, "--warmup", "2") == 0
    assert results.load(out).posterior.sizes["draw"] == 15
    assert _invert(tiny, out, "--warmup", "2", "--thin", "auto") == 0
    idata = results.load(out)
    assert idata.posterior.sizes["draw"] == 60 and idata.attrs["thin_requested"] == "auto"


def _interrupt_after_first_chunk(monkeypatch):
    """Make the runner raise KeyboardInterrupt once the first chunk is on disk."""
    from vaeinv.runs import sampling as runner

    real = runner.sample

    def interrupted(*args, **kwargs):
        def stop(info):
            if info.chunks_written >= 1:
                raise KeyboardInterrupt

        return real(*args, **{**kwargs, "progress": stop})

    monkeypatch.setattr(runner, "sample", interrupted)


def test_interrupted_run_resumes_to_the_uninterrupted_draws(tiny, tmp_path, monkeypatch, capsys):
    whole, part = tmp_path / "whole.nc", tmp_path / "part.nc"
    assert _invert(tiny, whole) == 0
    with monkeypatch.context() as patch:
        _interrupt_after_first_chunk(patch)
        assert _invert(tiny, part) == 130
    assert "--resume" in capsys.readouterr().err
    assert not part.exists() and (tmp_path / "part.nc.partial" / "state.safetensors").is_file()
    # without --resume the interrupted run is not overwritten
    assert _invert(tiny, part) == 2
    assert "holds an interrupted run: pass --resume" in capsys.readouterr().err
    assert _invert(tiny, part, "--resume") == 0
    assert not (tmp_path / "part.nc.partial").exists()
    np.testing.assert_array_equal(
        results.load(part).posterior["z"].values, results.load(whole).posterior["z"].values
    )
    # resuming a finished run with the same settings is a no-op
    assert _invert(tiny, part, "--resume") == 0
    assert "already a finished run" in capsys.readouterr().out


def test_resume_refuses_another_seed_or_problem(tiny, tmp_path, monkeypatch, capsys):
    other = write_tiny_problem(
        tmp_path / "other", TINY.replace("seed = 11", "seed = 12"), name="other"
    )
    out = tmp_path / "run.nc"
    with monkeypatch.context() as patch:
        _interrupt_after_first_chunk(patch)
        assert _invert(tiny, out) == 130
    capsys.readouterr()
    assert _invert(tiny, out, "--resume", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "seed: 0 in the checkpoint, 1 now" in err
    assert _invert(other, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "attrs.problem: 'tiny' in the checkpoint, 'other' now" in err
    # a finished file of another problem or seed
    assert _invert(tiny, out, "--resume") == 0
    assert _invert(other, out, "--resume") == 2
    assert "problem: 'tiny' in the file, 'other' now" in capsys.readouterr().err
    assert _invert(tiny, out, "--resume", "--seed", "3") == 2
    assert "seed: 0 in the file, 3 now" in capsys.readouterr().err
    # ... or of other sampler options, or other data
    assert _invert(tiny, out, "--resume", "--option", "target_accept=0.5") == 2
    assert "sampler option target_accept: 0.3 in the file, 0.5 now" in capsys.readouterr().err
    _edit_data(tiny, 0, 3, "0.5")  # the noise column
    assert _invert(tiny, out, "--resume") == 2
    assert "noise_std: the file's noise standard deviations differ" in capsys.readouterr().err
    _edit_data(tiny, 0, 2, "0.5")
    assert _invert(tiny, out, "--resume") == 2
    assert "data_sha256: " in capsys.readouterr().err
    # 1 and 1.0 are one setting
    other_out = tmp_path / "int.nc"
    assert _invert(tiny, other_out, "--option", "step_size=1") == 0
    assert _invert(tiny, other_out, "--resume", "--option", "step_size=1.0") == 0
    assert "already a finished run" in capsys.readouterr().out


def test_kill_9_of_invert_then_resume_gives_the_uninterrupted_draws(tiny, tmp_path):
    """``vaeinv invert`` in a subprocess, killed with SIGKILL once three chunks are on disk:
    the checkpoint keeps them, and ``--resume`` finishes the run with the draws an
    uninterrupted run gives (pCN, bit for bit)."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed.nc"
    flags = ["--draws", "1000", "--chunk-size", "20", "--no-progress"]
    command = [sys.executable, "-m", "vaeinv.cli", "invert", str(tiny), "--out", str(out)]
    proc = subprocess.Popen(
        [*command, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    state = out.with_name(out.name + ".partial") / "state.json"
    chunks = 0
    try:
        deadline = time.monotonic() + 120
        while chunks < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            try:
                chunks = json.loads(state.read_text())["chunks_written"]
            except (OSError, ValueError, KeyError):
                continue  # not written yet, or replaced while being read
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert chunks >= 3 and not out.exists()
    # the killed run computed on one thread; bit-for-bit equality holds for the same thread
    # count (a reduction split over threads sums in another order: differences of 1e-14)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["invert", str(tiny), "--out", str(out), *flags, "--resume"]) == 0
        reference = tmp_path / "reference.nc"
        assert main(["invert", str(tiny), "--out", str(reference), *flags]) == 0
    finally:
        torch.set_num_threads(threads)
    resumed, uninterrupted = results.load(out), results.load(reference)
    assert resumed.posterior.sizes["draw"] == 1000
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        for name in uninterrupted[group].data_vars:
            np.testing.assert_array_equal(resumed[group][name], uninterrupted[group][name])


def _edit_data(folder, row, column, value):
    lines = (folder / "data.csv").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("x,"))
    cells = lines[header + 1 + row].split(",")
    cells[column] = value
    lines[header + 1 + row] = ",".join(cells)
    (folder / "data.csv").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("case", "extra", "match"),
    [
        ("short data", [], "data.csv has 15 data rows but [sensors] defines 16 sensors"),
        ("nan data", [], "row 2 (sensor 2): value is nan; expected a finite number"),
        ("zero noise", [], "row 7 (sensor 7): noise_std is 0.0; expected a positive"),
        ("unknown key", [], "unknown key 'sampler_seed' in problem file"),
        ("unknown option", [], "unknown key 'warp' in [sampler.pcn] (options of 'pcn')"),
        ("ok", ["--option", "warp=3"], "unknown key 'warp' in --option (options of 'pcn')"),
        ("ok", ["--method", "nuts", "--option", "step_size=0"], "step_size must be a positive"),
        ("ok", ["--option", "target_accept"], "--option must be KEY=VALUE"),
        ("ok", ["--prior", "gaussian64"], "prior 'gaussian64' is on Grid(nx=64, ny=64"),
        ("ok", ["--draws", "0"], "num_draws must be an integer >= 1, got 0"),
        ("ok", ["--thin", "some"], "--thin must be 'auto' or an integer, got 'some'"),
        ("ok", ["--thin", "0"], "thin must be an integer >= 1, got 0"),
        ("ok", ["--thin", "61"], "thin=61 is larger than num_draws=60: no draw would be kept"),
        ("ok", ["--device", "abacus"], "--device 'abacus' is not a torch device"),
    ],
)
def test_bad_input_fails_before_sampling(tiny, tmp_path, capsys, case, extra, match):
    if case == "short data":
        lines = (tiny / "data.csv").read_text().splitlines()
        (tiny / "data.csv").write_text("\n".join(lines[:-1]) + "\n")
    elif case == "nan data":
        _edit_data(tiny, 2, 2, "nan")
    elif case == "zero noise":
        _edit_data(tiny, 7, 3, "0.0")
    elif case == "unknown key":
        (tiny / "problem.toml").write_text("sampler_seed = 3\n" + TINY)
    elif case == "unknown option":
        (tiny / "problem.toml").write_text(TINY.replace("target_accept = 0.3", "warp = 2"))
    out = tmp_path / "bad.nc"
    assert _invert(tiny, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaeinv invert: error: ") and match in err
    assert not out.exists() and not (tmp_path / "bad.nc.partial").exists()


def test_unknown_problem_and_missing_result(tmp_path, capsys):
    assert main(["invert", "no-such-problem", "--out", str(tmp_path / "x.nc")]) == 2
    assert "unknown problem 'no-such-problem'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.nc")]) == 2
    assert "not found" in capsys.readouterr().err


def test_nuts_records_divergences(tiny, tmp_path, capsys):
    out = tmp_path / "nuts.nc"
    args = ["--method", "nuts", "--chains", "1", "--draws", "10", "--warmup", "10"]
    with warnings.catch_warnings():  # a failed solve in an early leapfrog: a divergence
        warnings.simplefilter("ignore", SolverWarning)
        assert _invert(tiny, out, *args, "--option", "max_tree_depth=3") == 0
    assert "divergences" in capsys.readouterr().out
    idata = results.load(out)
    assert idata.posterior["z"].shape == (1, 10, 6)
    assert {"diverging", "tree_depth", "n_steps"} <= set(idata.sample_stats.data_vars)
    assert int(idata.sample_stats["tree_depth"].max()) <= 3


def test_parts_run_with_only_chains_merge_into_the_whole_run(tiny, tmp_path, capsys):
    nuts = ["--method", "nuts", "--chains", "3", "--draws", "6", "--warmup", "5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        assert _invert(tiny, tmp_path / "whole.nc", *nuts) == 0
        assert _invert(tiny, tmp_path / "a.nc", *nuts, "--only-chains", "0,2") == 0
        assert "running only chain(s) [0, 2] of the 3" in capsys.readouterr().out
        assert _invert(tiny, tmp_path / "b.nc", *nuts, "--only-chains", "1") == 0
    merged = tmp_path / "merged.nc"
    parts = [str(tmp_path / "b.nc"), str(tmp_path / "a.nc")]
    assert main(["merge", *parts, "--out", str(merged)]) == 0
    assert f"wrote {merged}: chains [0, 1, 2] from 2 parts" in capsys.readouterr().out
    whole, joined = results.load(tmp_path / "whole.nc"), results.load(merged)
    for group in ("posterior", "sample_stats", "log_likelihood", "posterior_predictive"):
        for name in whole[group].data_vars:
            np.testing.assert_array_equal(whole[group][name], joined[group][name])
    assert main(["merge", *parts, "--out", str(merged)]) == 2
    assert "exists; choose another --out or pass --force" in capsys.readouterr().err
    assert main(["merge", parts[0], parts[0], "--out", str(merged), "--force"]) == 2
    assert "chain(s) [1] are in more than one part" in capsys.readouterr().err
    assert _invert(tiny, tmp_path / "c.nc", *nuts, "--only-chains", "0,x") == 2
    assert "--only-chains must be comma-separated chain indices" in capsys.readouterr().err
    assert _invert(tiny, tmp_path / "c.nc", "--only-chains", "0") == 2  # the problem's pCN
    assert "only NUTS can do" in capsys.readouterr().err


def test_split_rhat_and_the_summary_table(generator):
    from vaeinv.results.report import split_rhat, summary_table

    draws = torch.randn(4, 2000, 3, generator=generator, dtype=torch.float64).numpy()
    rhat = split_rhat(draws)
    assert rhat.shape == (3,) and np.all(np.abs(rhat - 1) < 0.01)
    # chains at means -3, -1, 1, 3: split R-hat^2 = ((n-1)/n W + B/n) / W with W = 1, B = n var
    shifted = draws[:, :, 0] + np.array([-3.0, -1.0, 1.0, 3.0])[:, None]
    half = 1000
    w = np.concatenate([shifted[:, :half], shifted[:, half:]]).var(axis=1, ddof=1).mean()
    b = half * np.repeat(shifted.mean(axis=1), 2).var(ddof=1)  # halves share their chain's mean
    expected = np.sqrt(((half - 1) / half * w + b / half) / w)
    assert split_rhat(shifted[:, :, None])[0] == pytest.approx(expected, rel=0.01)
    assert split_rhat(draws[:, :3]).tolist() == [pytest.approx(np.nan, nan_ok=True)] * 3
    table = summary_table(
        {
            "num_chains": 4,
            "num_draws": 10,
            "max_rhat_latent": float("nan"),
            "divergences": 2,
            "rel_l2_error": None,
            "coverage_2sd": 0.8512,
        },
        {"problem": "tiny", "method": "nuts", "seed": 3, "prior_name": "gaussian64"},
    )
    assert table.startswith("problem tiny, prior gaussian64, method nuts, seed 3: 4 chains x 10")
    assert "| max R-hat, latents | n/a |" in table and "| divergences | 2 |" in table
    assert "| rel. L2 error of the posterior-mean log k | n/a (no truth) |" in table
    assert "| cells with truth in mean +- 2 sd | 85.1% |" in table


def test_extend_appends_draws_to_a_finished_run(tiny, tmp_path, capsys):
    out = tmp_path / "tiny.nc"
    assert _invert(tiny, out) == 0
    capsys.readouterr()
    extend = ["extend", str(out), "--draws", "20", "--warmup", "10", "--no-progress"]
    # the file names its problem ("tiny"), which is not a shipped one: --problem finds it
    assert main(extend) == 2
    assert "tiny" in capsys.readouterr().err
    assert main([*extend, "--problem", str(tiny)]) == 0
    longer_path = tmp_path / "tiny_extended.nc"
    printed = capsys.readouterr().out
    assert f"wrote {longer_path}" in printed and "80 draws kept per chain" in printed
    run, longer = results.load(out), results.load(longer_path)
    np.testing.assert_array_equal(longer.posterior["z"].values[:, :60], run.posterior["z"].values)
    assert longer.posterior["z"].shape == (2, 80, 6) and int(longer.attrs["num_draws"]) == 80
    assert not (tmp_path / "tiny_extended.nc.partial").exists()
    assert main([*extend, "--problem", str(tiny)]) == 2  # nothing the user wrote is replaced
    assert "exists; choose another --out or pass --force" in capsys.readouterr().err
    assert main([*extend, "--problem", str(tiny), "--out", str(out)]) == 2
    assert "is the input file" in capsys.readouterr().err
    other = ["--problem", str(tiny), "--out", str(tmp_path / "other.nc")]
    assert main([*extend, *other, "--device", "gpu0"]) == 2
    assert "--device 'gpu0' is not a torch device" in capsys.readouterr().err
    assert main(["report", str(longer_path), "--out", str(tmp_path / "rep")]) == 0
    assert "2 chains x 80 draws; the last 20 iterations added by 1 extension" in (
        capsys.readouterr().out
    )
