"""Runs in chain groups: the groups, their seeds, the same draws in one process and on Dask
workers (a lost worker included), the whole-run draws for independent chains, and the
refusals."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import flaky_build

import vaeinv
from test_problems import write_tiny_problem
from vaeinv.runs.distributed import chain_groups, group_seed, problem_builder, sample_distributed
from vaeinv.runs.executors import run_tasks

RUN = {"num_chains": 4, "num_warmup": 10, "num_draws": 15, "seed": 3, "thin": 1}


def _same(a, b) -> None:
    for group in ("posterior", "sample_stats"):
        for name in getattr(a, group).data_vars:
            np.testing.assert_array_equal(
                getattr(a, group)[name].values, getattr(b, group)[name].values
            )


def test_chain_groups_split_the_chains_and_seeds_depend_on_the_group_only():
    assert chain_groups(5, 2) == [(0, 1), (2, 3, 4)]  # bounds round(k * 5 / 2): 0, 2, 5
    assert chain_groups(4, 4) == [(0,), (1,), (2,), (3,)]
    assert sum(len(g) for g in chain_groups(7, 3)) == 7
    assert group_seed(3, 1) == group_seed(3, 1) != group_seed(3, 0) != group_seed(4, 0)
    with pytest.raises(
        ValueError, match=r"chain groups must be an integer in \[1, num_chains = 4\]"
    ):
        chain_groups(4, 5)


def test_grouped_independent_chains_give_the_whole_runs_draws(tmp_path):
    folder = write_tiny_problem(tmp_path / "p")
    build = problem_builder(folder, "nuts")
    posterior, _ = build()
    whole = vaeinv.sample(posterior, "nuts", progress=False, **RUN)
    grouped = sample_distributed(build, "nuts", groups=2, threads=None, **RUN)
    _same(whole, grouped)
    assert grouped.attrs["forward_solves"] == whole.attrs["forward_solves"]


@pytest.mark.slow
def test_two_dask_workers_give_the_draws_of_one_process_even_when_one_is_lost(tmp_path):
    """pCN in two groups (each a batch seeded by its group): the same draws in this process,
    on two local workers, and on two workers one of which dies in the middle of a task (the
    scheduler runs the task again elsewhere)."""
    folder = write_tiny_problem(tmp_path / "p")
    build = problem_builder(folder, "pcn")
    here = sample_distributed(build, "pcn", groups=2, **RUN)
    assert here.posterior["z"].shape[:2] == (4, 15)
    assert len(set(np.asarray(here.attrs["task_seeds"][1:-1].split(","), dtype=np.int64))) == 2
    on_dask = sample_distributed(build, "pcn", groups=2, workers=2, **RUN)
    _same(here, on_dask)
    import cloudpickle

    cloudpickle.register_pickle_by_value(flaky_build)
    marker = tmp_path / "killed"
    flaky = functools.partial(flaky_build.build_once_killing, str(marker), str(folder), "pcn")
    survived = sample_distributed(flaky, "pcn", groups=2, workers=2, **RUN)
    assert marker.exists()  # a worker was lost
    _same(here, survived)
    assert survived.attrs["forward_solves"] == here.attrs["forward_solves"]


def test_bad_executors_are_refused_before_any_task():
    calls = []
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        run_tasks(calls.append, [1], workers=0)
    with pytest.raises(ValueError, match="not both"):
        run_tasks(calls.append, [1], workers=2, scheduler="tcp://127.0.0.1:9")
    with pytest.raises(
        ValueError, match=r"cannot reach the Dask scheduler at 'tcp://127\.0\.0\.1:9' within 1 s"
    ):
        run_tasks(calls.append, [1], scheduler="tcp://127.0.0.1:9", timeout=1)
    assert calls == []
    assert run_tasks(abs, [-1, -2]) == [1, 2]


@pytest.mark.slow
def test_invert_runs_chain_groups_on_workers_with_the_draws_of_one_process(tmp_path, capsys):
    from vaeinv import results
    from vaeinv.cli import main

    folder = write_tiny_problem(tmp_path / "p")
    args = ["invert", str(folder), "--no-progress", "--draws", "15", "--warmup", "10"]
    here, there = tmp_path / "here.nc", tmp_path / "there.nc"
    assert main([*args, "--out", str(here), "--chain-groups", "2"]) == 0
    assert "chains in groups on this process" in capsys.readouterr().out
    assert main([*args, "--out", str(there), "--chain-groups", "2", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "on 2 local Dask worker(s)" in out and "group 1 (chains [1]) done" in out
    _same(results.load(here), results.load(there))
    assert not (tmp_path / "there.nc.partial").exists()


def test_invert_refuses_only_chains_with_workers(tmp_path, capsys):
    from vaeinv.cli import main

    folder = write_tiny_problem(tmp_path / "p")
    assert main(["invert", str(folder), "--only-chains", "0", "--workers", "2"]) == 2
    assert "--only-chains runs some chains by hand" in capsys.readouterr().err
