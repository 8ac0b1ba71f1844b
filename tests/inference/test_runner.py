"""sample(): the result of a run (layout, exact identities between its groups, thinning and
its automatic choice, ArviZ on the whole result), determinism under the seed, chunked
checkpoints, resume (bit-identical pCN and NUTS draws after an interruption, a kill -9 of a
subprocess run), fingerprint checks and every bad argument."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from vaeinv import Grid, results
from vaeinv.posterior.target import Posterior
from vaeinv.runs import draws as _draws
from vaeinv.runs import sampling as runner
from vaeinv.runs import thinning
from vaeinv.runs.checkpoint import RunCheckpoint
from vaeinv.runs.sampling import RunProgress, auto_thin, resolve_thin, sample

from interrupt import Stop, stop_after
from linear_gaussian import assert_moments, linear_gaussian

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

HERE = Path(__file__).resolve().parent
GRID = Grid(nx=3, ny=2)  # linear_gaussian's default grid
QUICK = {"num_chains": 3, "num_draws": 14, "num_warmup": 10, "chunk_size": 4, "progress": False}


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=11)


@pytest.fixture
def seed(request) -> int:
    value = (20261122 + sum(map(ord, request.node.name))) % 2**31
    print(f"run seed for {request.node.name}: {value}")
    return value


def arrays(idata) -> dict[str, np.ndarray]:
    """Every variable of every group, keyed by ``group/name``."""
    return {
        f"{group}/{name}": idata[group][name].values
        for group in idata.groups()
        for name in idata[group].data_vars
    }


def assert_same_draws(left, right) -> None:
    a, b = arrays(left), arrays(right)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------------------- the result
def test_pcn_result_layout_and_identities(problem, seed):
    post = problem.posterior
    idata = sample(post, seed=seed, attrs={"problem": "lg"}, **QUICK)
    assert idata.posterior["z"].dims == ("chain", "draw", "latent")
    assert idata.posterior["log_k"].dims == ("chain", "draw", "y", "x")
    assert dict(idata.posterior.sizes) == {"chain": 3, "draw": 14, "latent": 3, "y": 2, "x": 3}
    np.testing.assert_array_equal(idata.posterior["draw"], np.arange(14))
    assert set(idata.sample_stats.data_vars) == set(results.PCN_STATS)
    z = torch.as_tensor(idata.posterior["z"].values)
    with torch.no_grad():
        # the field of every draw, cached by the pCN step (the decode of a batch of chains)
        log_k = post.decode(z)
        np.testing.assert_allclose(idata.posterior["log_k"], log_k, rtol=0, atol=1e-13)
        # batching changes the last bits of the matrix products only
        tight = {"rtol": 1e-12, "atol": 1e-12}
        np.testing.assert_allclose(idata.posterior_predictive["y"], post.predict(z), **tight)
        pointwise = post.log_likelihood(z, pointwise=True)
        np.testing.assert_allclose(idata.log_likelihood["y"], pointwise, **tight)
        np.testing.assert_allclose(idata.sample_stats["lp"], post.log_density(z), **tight)
    stats = idata.sample_stats
    # a rejected step repeats the previous draw; an accepted one (almost surely) moves
    moved = (np.diff(idata.posterior["z"].values, axis=1) != 0).any(-1)
    np.testing.assert_array_equal(moved, stats["accepted"].values[:, 1:])
    assert not stats["failed"].values.any()
    assert (stats["acceptance_rate"] >= 0).all() and (stats["acceptance_rate"] <= 1).all()
    # the step size is frozen after warm-up: constant per chain over the draws
    assert (stats["step_size"] == stats["step_size"][:, :1]).all()
    attrs = idata.attrs
    assert attrs["seed"] == seed and attrs["method"] == "pcn" and attrs["problem"] == "lg"
    assert attrs["num_chains"] == 3 and attrs["num_draws"] == 14 and attrs["num_warmup"] == 10
    assert attrs["thin"] == 1 and attrs["thin_requested"] == "auto" and attrs["chunk_size"] == 4
    assert "field_thin" not in attrs
    assert attrs["prior_name"] == "linear-gaussian" and attrs["prior_weights_sha256"] == ""
    assert attrs["forward_solves"] == 3 * (1 + 10 + 14)
    assert attrs["sampler_options"] == '{"step_size": 0.25, "target_accept": 0.25}'
    np.testing.assert_array_equal(idata.observed_data["y"], post.data)


def test_nuts_result_layout(problem, seed):
    idata = sample(problem.posterior, "nuts", seed=seed, **{**QUICK, "num_chains": 2})
    assert set(idata.sample_stats.data_vars) == set(results.NUTS_STATS)
    assert idata.sample_stats["tree_depth"].dtype == np.int64
    assert idata.sample_stats["diverging"].dtype == bool
    z = torch.as_tensor(idata.posterior["z"].values)
    with torch.no_grad():
        np.testing.assert_allclose(
            idata.sample_stats["lp"], problem.posterior.log_density(z), rtol=1e-12
        )
        np.testing.assert_allclose(
            idata.posterior_predictive["y"], problem.posterior.predict(z), rtol=1e-12, atol=1e-12
        )
        # NUTS draws are decoded in a batch at the end of each chunk
        np.testing.assert_allclose(
            idata.posterior["log_k"], problem.posterior.decode(z), rtol=0, atol=1e-13
        )
    assert idata.posterior["log_k"].dims == ("chain", "draw", "y", "x")
    assert idata.attrs["method"] == "nuts"
    assert idata.attrs["gradient_evaluations"] >= idata.sample_stats["n_steps"].values.sum()


@pytest.mark.parametrize("method", ["pcn", "nuts"])
def test_thinning_keeps_every_thin_th_iteration(problem, seed, method):
    """``num_draws`` counts iterations; ``thin=3`` keeps iterations 3, 6, 9, 12 of 14 (the
    floor: 14 // 3 = 4 draws) and changes nothing else (the streams are the same): z, its
    field and every statistic are those of the unthinned run at the kept iterations."""
    settings = {**QUICK, "num_chains": 2, "num_draws": 12, "thin": 1}
    full = sample(problem.posterior, method, seed=seed, **settings)
    thinned = sample(
        problem.posterior, method, seed=seed, **{**settings, "num_draws": 14, "thin": 3}
    )
    assert thinned.posterior.sizes["draw"] == 4 and thinned.attrs["thin"] == 3
    np.testing.assert_array_equal(thinned.posterior["draw"], np.arange(4))
    for group in ("posterior", "sample_stats", "posterior_predictive", "log_likelihood"):
        for name in full[group].data_vars:
            kept = full[group][name].values[:, 2::3]
            np.testing.assert_allclose(
                thinned[group][name].values, kept, rtol=1e-12, atol=1e-12, err_msg=name
            )
    np.testing.assert_array_equal(thinned.posterior["z"], full.posterior["z"].values[:, 2::3])
    np.testing.assert_array_equal(
        thinned.posterior["log_k"], full.posterior["log_k"].values[:, 2::3]
    )
    if method == "pcn":  # the 2 iterations past the last kept one are not run
        assert thinned.attrs["forward_solves"] == 2 * (1 + 10 + 12)


def test_pcn_keeps_fields_without_decoding_again(problem, seed):
    """One decode of all chains per iteration (and one at the start), whatever is kept: the
    fields come from the pCN state."""
    calls = []

    def decode(z):
        calls.append(z.shape[0])
        return problem.posterior.decode(z)

    post = Posterior.from_callables(
        decode, problem.posterior.forward, problem.posterior.data, 0.3, 3, grid=GRID
    )
    calls.clear()
    for thin in (1, 2):
        idata = sample(post, seed=seed, **{**QUICK, "thin": thin})
        assert calls == [3] * (1 + 10 + 14), thin
        with torch.no_grad():
            fields = problem.posterior.decode(torch.as_tensor(idata.posterior["z"].values))
        np.testing.assert_allclose(idata.posterior["log_k"], fields, rtol=0, atol=1e-13)
        calls.clear()


def test_pcn_recovers_the_linear_gaussian_posterior(problem, seed):
    """End to end through the runner: moments within 4 MCSE of the closed form."""
    idata = sample(
        problem.posterior, seed=seed, num_chains=4, num_draws=1500, num_warmup=500,
        chunk_size=500, progress=False,
    )  # fmt: skip
    draws = torch.as_tensor(idata.posterior["z"].values)
    assert_moments(draws, problem.mean, problem.cov)
    diag = results.diagnostics(idata)
    assert diag["max_rhat"] < 1.05 and diag["min_ess_bulk"] > 100, diag


def test_repeated_draws_are_decoded_once(problem):
    """Fields and predictions of a repeated draw (equal to the previous one) are copied, not
    decoded and solved again (the batch decode of NUTS draws)."""
    rows, solves = [], []

    def decode(z):
        rows.append(z.shape[0])
        return problem.posterior.decode(z)

    def forward(field):
        solves.append(field.shape[0])
        return problem.posterior.forward(field)

    post = Posterior.from_callables(decode, forward, problem.posterior.data, 0.3, 3, grid=GRID)
    rows.clear()
    solves.clear()
    z = torch.randn(2, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z[0, 1] = z[0, 2] = z[0, 0]  # chain 0: a, a, a, b, c, c
    z[0, 5] = z[0, 4]
    z[1, 3] = z[1, 2]  # chain 1: a, b, c, c, d, e
    fields, predictions = _draws._decode_draws(post, z)
    assert sum(rows) == sum(solves) == 3 + 5
    with torch.no_grad():
        torch.testing.assert_close(fields, problem.posterior.decode(z), rtol=0, atol=1e-14)
        torch.testing.assert_close(predictions, problem.posterior.predict(z), rtol=0, atol=1e-13)
    empty_fields, empty_predictions = _draws._decode_draws(post, z[:, :0])
    assert empty_fields.shape == (2, 0, 2, 3) and empty_predictions.shape == (2, 0, 4)


def test_init_draws_are_over_dispersed_and_seeded(problem):
    post = problem.posterior
    z0 = runner._init_latents(post, 1000, 1, None)
    assert z0.shape == (1000, 3) and z0.dtype == torch.float64
    # 3000 N(0, 1.5^2) draws: the sample sd has sd 1.5 / sqrt(6000) = 0.019; allow 4 of them
    assert abs(float(z0.std()) - runner.INIT_SCALE) < 4 * 0.019
    assert abs(float(z0.mean())) < 4 * 1.5 / math.sqrt(3000)
    torch.testing.assert_close(z0, runner._init_latents(post, 1000, 1, None), rtol=0, atol=0)
    assert not torch.equal(z0, runner._init_latents(post, 1000, 2, None))
    own = torch.ones(2, 3, dtype=torch.float32)
    assert torch.equal(runner._init_latents(problem.posterior, 2, 0, own), own.double())


def test_init_overrides_the_start(problem, seed):
    """From a given start with a frozen step size, chains follow their own start."""
    init = torch.tensor([[0.1, 0.2, 0.3], [-1.0, 0.5, 2.0]], dtype=torch.float64)
    settings = {**QUICK, "num_chains": 2, "num_warmup": 0, "num_draws": 3}
    a = sample(problem.posterior, seed=seed, init=init, step_size=1e-9, **settings)
    np.testing.assert_allclose(a.posterior["z"].values[:, 0], init, atol=1e-8)
    assert "user" in a.attrs["init"]


# ---------------------------------------------------------------------------- determinism
def test_same_seed_same_draws_other_seed_other_draws(problem, seed):
    a = sample(problem.posterior, seed=seed, **QUICK)
    b = sample(problem.posterior, seed=seed, **QUICK)
    assert_same_draws(a, b)
    c = sample(problem.posterior, seed=seed + 1, **QUICK)
    assert not np.array_equal(a.posterior["z"], c.posterior["z"])


def test_global_rng_is_untouched(problem, seed):
    state = torch.random.get_rng_state()
    sample(problem.posterior, seed=seed, **QUICK)
    sample(problem.posterior, "nuts", seed=seed, **{**QUICK, "num_chains": 1, "num_draws": 3})
    assert torch.equal(state, torch.random.get_rng_state())


def test_chunk_size_and_checkpointing_do_not_change_the_draws(problem, seed, tmp_path):
    a = sample(problem.posterior, seed=seed, **QUICK)
    b = sample(problem.posterior, seed=seed, checkpoint=tmp_path / "run", **QUICK)
    assert_same_draws(a, b)
    c = sample(problem.posterior, seed=seed, **{**QUICK, "chunk_size": 5})
    np.testing.assert_array_equal(a.posterior["z"], c.posterior["z"])


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_folder_contents(problem, seed, tmp_path):
    folder = tmp_path / "run.nc.partial"
    seen: list[RunProgress] = []
    sample(problem.posterior, seed=seed, checkpoint=folder, **{**QUICK, "progress": seen.append})
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"chunk_{i:05d}.safetensors" for i in range(4)] + [
        "state.json", "state.safetensors"
    ]  # fmt: skip
    meta = RunCheckpoint(folder).read_state()[1]
    assert meta["complete"] and meta["chunks_written"] == 4 and meta["draws_written"] == 14
    assert meta["iteration"] == 24 and meta["frozen"]
    assert meta["fingerprint"]["seed"] == seed and meta["fingerprint"]["method"] == "pcn"
    # warm-up blocks of chunk_size * thin = 4 iterations, then chunks of 4, 4, 4, 2 draws
    assert [p.iteration for p in seen] == [4, 8, 10, 14, 18, 22, 24]
    assert [p.phase for p in seen] == ["warmup"] * 2 + ["sampling"] * 4 + ["done"]
    assert [p.draws_written for p in seen] == [0, 0, 0, 4, 8, 12, 14]
    assert all(p.total_iterations == 24 and 0 <= p.acceptance_rate <= 1 for p in seen)


@pytest.mark.parametrize("stop_at", [1, 3, 5], ids=["in-warmup", "end-of-warmup", "sampling"])
def test_resumed_pcn_run_is_bit_identical(problem, seed, tmp_path, stop_at):
    reference = sample(problem.posterior, seed=seed, **QUICK)
    folder = tmp_path / "run"
    seen: list[RunProgress] = []
    with pytest.raises(Stop):
        sample(
            problem.posterior, seed=seed, checkpoint=folder,
            **{**QUICK, "progress": stop_after(stop_at, seen)},
        )  # fmt: skip
    assert not RunCheckpoint(folder).read_state()[1]["complete"]
    resumed = sample(problem.posterior, seed=seed, checkpoint=folder, resume=True, **QUICK)
    assert_same_draws(reference, resumed)


def test_resumed_thinned_pcn_run_is_bit_identical(problem, seed, tmp_path):
    """With thin=3 (blocks of chunk_size * thin = 6 iterations) the state saved mid-run carries
    the cached fields: the resumed run's fields are the uninterrupted run's, bit for bit."""
    settings = {**QUICK, "thin": 3, "chunk_size": 2}  # 4 kept draws in 2 chunks
    reference = sample(problem.posterior, seed=seed, **settings)
    folder = tmp_path / "run"
    seen: list[RunProgress] = []
    with pytest.raises(Stop):
        sample(
            problem.posterior, seed=seed, checkpoint=folder,
            **{**settings, "progress": stop_after(3, seen)},
        )  # fmt: skip
    assert [p.iteration for p in seen] == [6, 10, 16] and seen[-1].draws_written == 2
    tensors, meta = RunCheckpoint(folder).read_state()
    assert tensors["pcn.field"].shape == (3, 2, 3) and meta["fingerprint"]["thin"] == 3
    resumed = sample(problem.posterior, seed=seed, checkpoint=folder, resume=True, **settings)
    assert_same_draws(reference, resumed)
    assert resumed.posterior.sizes["draw"] == 4


def test_resumed_nuts_run_is_bit_identical(problem, seed, tmp_path):
    settings = {**QUICK, "num_chains": 2, "num_draws": 9}
    reference = sample(problem.posterior, "nuts", seed=seed, **settings)
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(
            problem.posterior, "nuts", seed=seed, checkpoint=folder,
            **{**settings, "progress": stop_after(2)},
        )  # fmt: skip
    resumed = sample(
        problem.posterior, "nuts", seed=seed, checkpoint=folder, resume=True, **settings
    )
    assert_same_draws(reference, resumed)


def test_a_chunk_written_without_its_state_is_redone(problem, seed, tmp_path):
    """A kill between a chunk file and the state file leaves an orphan chunk: it is rewritten."""
    reference = sample(problem.posterior, seed=seed, **QUICK)
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(
            problem.posterior, seed=seed, checkpoint=folder, **{**QUICK, "progress": stop_after(4)}
        )
    chunks = RunCheckpoint(folder).read_state()[1]["chunks_written"]
    (folder / f"chunk_{chunks:05d}.safetensors").write_bytes(b"half-written garbage")
    (folder / "state.safetensors.tmp").write_bytes(b"half-written garbage")
    resumed = sample(problem.posterior, seed=seed, checkpoint=folder, resume=True, **QUICK)
    assert_same_draws(reference, resumed)


def test_resuming_a_complete_run_recomputes_nothing(seed, tmp_path):
    calls = []
    lg = linear_gaussian(latent_dim=3, num_data=4, forward_hook=lambda f, p: calls.append(1) or p)
    first = sample(lg.posterior, seed=seed, checkpoint=tmp_path / "run", **QUICK)
    before = len(calls)
    again = sample(lg.posterior, seed=seed, checkpoint=tmp_path / "run", resume=True, **QUICK)
    assert len(calls) == before
    assert_same_draws(first, again)


def test_resume_on_an_empty_folder_starts_a_new_run(problem, seed, tmp_path):
    a = sample(problem.posterior, seed=seed, **QUICK)
    b = sample(problem.posterior, seed=seed, checkpoint=tmp_path / "new", resume=True, **QUICK)
    assert_same_draws(a, b)


@pytest.mark.slow
def test_kill_9_loses_at_most_the_chunk_in_progress(problem, seed, tmp_path):
    """A run in a subprocess is killed (SIGKILL) mid-way; its checkpoint holds every chunk it
    reported, and resuming gives the draws of an uninterrupted run."""
    folder = tmp_path / "run"
    settings = {**QUICK, "num_draws": 400, "num_warmup": 40, "chunk_size": 20}
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(HERE)!r})
        from linear_gaussian import linear_gaussian
        from vaeinv.runs.sampling import sample

        def slow(field, prediction):
            time.sleep(0.005)
            return prediction

        lg = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=11, forward_hook=slow)
        settings = {{**{settings!r}, "progress": lambda p: print(p.iteration, flush=True)}}
        sample(lg.posterior, seed={seed}, checkpoint=sys.argv[1], **settings)
        print("finished", flush=True)
        """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    reported = []
    deadline = time.monotonic() + 60
    try:
        for line in proc.stdout:
            assert line.strip() != "finished", "the run ended before it could be killed"
            reported.append(int(line))
            if len(reported) == 5 or time.monotonic() > deadline:  # 2 warm-up blocks, 3 chunks
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(reported) == 5, reported
    meta = RunCheckpoint(folder).read_state()[1]
    assert meta["iteration"] >= reported[-1]  # nothing reported as saved was lost
    assert not meta["complete"] and meta["chunks_written"] >= 3
    resumed = sample(problem.posterior, seed=seed, checkpoint=folder, resume=True, **settings)
    reference = sample(problem.posterior, seed=seed, **settings)
    assert_same_draws(reference, resumed)


# ---------------------------------------------------------------------------- resume errors
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 1}, r"seed: \d+ in the checkpoint, 1 now"),
        ({"num_chains": 2}, "num_chains: 3 in the checkpoint, 2 now"),
        ({"method": "nuts"}, "method: 'pcn' in the checkpoint, 'nuts' now"),
        ({"target_accept": 0.3}, r"sampler_options.target_accept: 0.25 in the checkpoint, 0.3"),
        ({"attrs": {"problem": "other"}}, "attrs.problem: <absent> in the checkpoint, 'other'"),
        ({"chunk_size": 5}, "chunk_size: 4 in the checkpoint, 5 now"),
        ({"thin": 2}, "thin: 1 in the checkpoint, 2 now"),
    ],
)
def test_resume_refuses_another_run(problem, seed, tmp_path, change, message):
    sample(problem.posterior, seed=seed, checkpoint=tmp_path, **QUICK)
    settings = {**QUICK, "seed": seed, **change}
    with pytest.raises(ValueError, match=f"belongs to another run; .*{message}"):
        sample(problem.posterior, checkpoint=tmp_path, resume=True, **settings)


def test_resume_refuses_another_problem(problem, seed, tmp_path):
    sample(problem.posterior, seed=seed, checkpoint=tmp_path, **QUICK)
    other = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=12).posterior
    with pytest.raises(ValueError, match=r"posterior.data_sha256: '[0-9a-f]+' in the checkpoint"):
        sample(other, seed=seed, checkpoint=tmp_path, resume=True, **QUICK)
    wider = linear_gaussian(latent_dim=4, num_data=4, noise_std=0.3, seed=11).posterior
    with pytest.raises(ValueError, match=r"posterior\.latent_dim: 3 in the checkpoint, 4 now"):
        sample(wider, seed=seed, checkpoint=tmp_path, resume=True, **QUICK)


def test_checkpoint_errors(problem, seed, tmp_path):
    sample(problem.posterior, seed=seed, checkpoint=tmp_path / "a", **QUICK)
    with pytest.raises(ValueError, match="already holds a run; pass resume=True"):
        sample(problem.posterior, seed=seed, checkpoint=tmp_path / "a", **QUICK)
    with pytest.raises(ValueError, match="resume=True needs a checkpoint folder"):
        sample(problem.posterior, seed=seed, resume=True, **QUICK)
    (tmp_path / "a" / "chunk_00002.safetensors").unlink()
    with pytest.raises(ValueError, match=r"chunk_00002.safetensors is missing"):
        sample(problem.posterior, seed=seed, checkpoint=tmp_path / "a", resume=True, **QUICK)
    bad = tmp_path / "b"
    bad.mkdir()
    (bad / "state.safetensors").write_bytes(b"\x80\x02 a pickle, say")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        sample(problem.posterior, seed=seed, checkpoint=bad, resume=True, **QUICK)
    torch_file = tmp_path / "c"
    torch_file.mkdir()
    safetensors.torch.save_file({"x": torch.zeros(1)}, str(torch_file / "state.safetensors"))
    with pytest.raises(ValueError, match="is not a vaeinv run checkpoint"):
        sample(problem.posterior, seed=seed, checkpoint=torch_file, resume=True, **QUICK)


# ---------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"method": "mala"},
            r"unknown method 'mala'; expected one of \['gpcn', 'hmc', 'mlda', 'nuts', 'pcn', 'st",
        ),
        ({"beta": 0.1}, r"unknown sampler option\(s\) \['beta'\] for method 'pcn'; valid"),
        ({"method": "nuts", "max_depth": 3}, r"unknown sampler option\(s\) \['max_depth'\]"),
        ({"step_size": [0.1]}, r"sampler option step_size=\[0.1\] must be a number"),
        ({"num_chains": 0}, "num_chains must be an integer >= 1, got 0"),
        ({"num_draws": 2.5}, "num_draws must be an integer >= 1, got 2.5"),
        ({"num_warmup": -1}, "num_warmup must be an integer >= 0, got -1"),
        ({"thin": True}, "thin must be an integer >= 1, got True"),
        ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
        ({"seed": -3}, "seed must be an integer >= 0, got -3"),
        ({"thin": "all"}, "thin must be 'auto' or an integer >= 1, got 'all'"),
        ({"thin": 0}, "thin must be an integer >= 1, got 0"),
        ({"thin": 15}, "thin=15 is larger than num_draws=14: no draw would be kept"),
        ({"field_thin": 3}, r"unknown sampler option\(s\) \['field_thin'\]"),
        ({"init": torch.zeros(2, 3)}, r"init has shape \(2, 3\), expected .*=\(3, 3\)"),
        ({"init": torch.full((3, 3), math.nan)}, "init has non-finite values"),
        ({"progress": "yes"}, "progress must be a bool or a callable"),
        ({"attrs": {"when": object()}}, "attribute 'when' has type object"),
    ],
)
def test_bad_arguments(problem, kwargs, message):
    settings = {**QUICK, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(problem.posterior, **settings)


def test_integer_options_of_real_settings_are_one_setting(problem, seed, tmp_path):
    """``step_size=1`` is ``step_size=1.0`` (recorded as a float); integer settings stay
    integers; a run checkpointed with one resumes with the other."""
    from vaeinv.kernels import registry

    options = registry.get("nuts").Options(step_size=1, max_tree_depth=5).as_dict()
    assert type(options["step_size"]) is float and type(options["max_tree_depth"]) is int
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(
            problem.posterior, seed=seed, checkpoint=folder, step_size=1,
            **{**QUICK, "progress": stop_after(2)},
        )  # fmt: skip
    resumed = sample(
        problem.posterior, seed=seed, checkpoint=folder, resume=True, step_size=1.0, **QUICK
    )
    assert_same_draws(sample(problem.posterior, seed=seed, step_size=1, **QUICK), resumed)
    assert json.loads(resumed.attrs["sampler_options"])["step_size"] == 1.0


def test_progress_bar_runs(problem, seed, capsys):
    sample(problem.posterior, seed=seed, **{**QUICK, "progress": True})
    sample(problem.posterior, "nuts", seed=seed, **{**QUICK, "num_chains": 1, "progress": True})
    err = capsys.readouterr().err  # tqdm writes to stderr
    assert err.count("24/24") >= 2 and "acc=" in err and "divergences=" in err, err


def test_device_argument(problem, seed):
    a = sample(problem.posterior, seed=seed, device="cpu", **QUICK)
    assert a.attrs["device"] == "cpu"
    assert_same_draws(a, sample(problem.posterior, seed=seed, **QUICK))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["pcn", "nuts"])
def test_cuda_run_checkpoints_and_resumes(problem, seed, method, tmp_path):
    """``device="cuda"`` end to end: runner, checkpoint and InferenceData; a run stopped after
    its first chunk and resumed gives the uninterrupted run's draws."""
    settings = {**QUICK, "device": "cuda"}
    reference = sample(problem.posterior, method, seed=seed, **settings)
    assert reference.attrs["device"].startswith("cuda")
    assert np.isfinite(reference.posterior["z"].values).all()
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(
            problem.posterior, method, seed=seed, checkpoint=folder,
            **{**settings, "progress": stop_after(3, [])},
        )  # fmt: skip
    resumed = sample(
        problem.posterior, method, seed=seed, checkpoint=folder, resume=True, **settings
    )
    assert_same_draws(reference, resumed)


# ---------------------------------------------------------------------------- thin="auto"
def result_bytes(thin: int, c=8, n=2000, d=256, m=64, cells=4096, item=4) -> int:
    """The uncompressed size auto_thin budgets for (see its docstring)."""
    return c * (n // thin) * (cells * item + 8 * d + 16 * m + 48) + 8 * cells + 32 * m


def test_auto_thin_is_the_smallest_that_fits():
    assert auto_thin(4, 1000, 256, 64, 4096, 4) == 1  # 78 MB: everything fits
    thin = auto_thin(8, 2000, 256, 64, 4096, 4)
    assert result_bytes(thin) <= runner.RESULT_BUDGET_BYTES < result_bytes(thin - 1)
    assert thin == 4  # 500 of 2000 iterations kept per chain
    # when one draw per chain is over budget, one draw per chain is still kept
    assert auto_thin(4, 1000, 256, 64, 4096, 4, budget=1000) == 1000


@pytest.mark.parametrize("num_draws", [1, 2, 7, 97, 1000])
def test_auto_thin_is_minimal_for_every_budget(num_draws):
    """Against brute force: the smallest thin whose result fits, for budgets from nothing to
    everything (thin = num_draws when nothing fits)."""
    sizes = {"c": 3, "n": num_draws, "d": 5, "m": 7, "cells": 50, "item": 8}
    args = (3, num_draws, 5, 7, 50, 8)
    for budget in np.unique(np.geomspace(1, result_bytes(1, **sizes) * 2, 300).astype(int)):
        fits = [t for t in range(1, num_draws + 1) if result_bytes(t, **sizes) <= budget]
        assert auto_thin(*args, budget=int(budget)) == (fits[0] if fits else num_draws), budget


def test_auto_thin_in_a_run_keeps_the_result_under_budget(problem, seed, monkeypatch):
    post = problem.posterior  # 3 chains, d = 3, m = 4, 2 x 3 float64 cells
    idata = sample(post, seed=seed, **QUICK)
    assert idata.attrs["thin"] == 1 and idata.posterior.sizes["draw"] == 14
    per_draw = 3 * (6 * 8 + 8 * 3 + 16 * 4 + 48)
    budget = 8 * 6 + 32 * 4 + 4 * per_draw  # room for 4 draws per chain: thin = 14 // 5 + 1
    monkeypatch.setattr(thinning, "RESULT_BUDGET_BYTES", budget)
    assert resolve_thin(post, "auto", num_chains=3, num_draws=14) == 3
    idata = sample(post, seed=seed, **QUICK)
    assert (idata.attrs["thin"], idata.attrs["thin_requested"]) == (3, "auto")
    assert idata.posterior.sizes["draw"] == 4 and idata.posterior["log_k"].shape[:2] == (3, 4)
    data_bytes = sum(idata[g][v].nbytes for g in idata.groups() for v in idata[g].data_vars)
    assert data_bytes <= budget
    # an explicit thin is kept as given
    assert sample(post, seed=seed, **{**QUICK, "thin": 2}).attrs["thin_requested"] == 2


# ---------------------------------------------------------------------------- ArviZ
def test_arviz_works_on_the_whole_result(problem, seed, tmp_path):
    """Every posterior variable shares (chain, draw): ArviZ's summary, R-hat, ESS and trace
    plots take the whole result, and a netCDF round trip keeps it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idata = sample(problem.posterior, seed=seed, **{**QUICK, "num_draws": 40, "thin": 2})
    summary = az.summary(idata)
    assert len(summary) == 3 + 2 * 3  # z[0..2] and log_k at the 6 cells
    assert {"z[0]", "z[1]", "z[2]"} <= set(summary.index)
    assert sum(name.startswith("log_k[") for name in summary.index) == 6  # at the cell centres
    assert np.isfinite(summary[["mean", "sd", "ess_bulk", "r_hat"]].to_numpy()).all()
    rhat, ess = az.rhat(idata), az.ess(idata)
    for stat in (rhat, ess):
        assert stat["z"].dims == ("latent",) and stat["log_k"].dims == ("y", "x")
        assert np.isfinite(stat["log_k"].values).all()
    with warnings.catch_warnings():  # ArviZ 0.23 calls a deprecated matplotlib helper
        warnings.simplefilter("ignore", DeprecationWarning)
        axes = az.plot_trace(idata, var_names=["z"])
    assert axes.shape == (1, 2)
    plt.close("all")
    back = results.load(results.save(idata, tmp_path / "run.nc"))
    assert back.posterior["log_k"].dims == ("chain", "draw", "y", "x")
    np.testing.assert_array_equal(back.posterior["log_k"], idata.posterior["log_k"])
    assert back.attrs["thin"] == 2 and back.attrs["num_draws"] == 40
    assert az.summary(back, var_names=["z"]).shape[0] == 3
