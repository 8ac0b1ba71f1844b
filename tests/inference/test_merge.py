"""Runs of some chains (``sample(..., chains=...)``) and ``merge_runs``: the parts of a NUTS run,
merged, are the whole run bit for bit; the counters add up; parts of different runs, chains held
twice and chains= with pCN are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_runner import assert_same_draws

from vaeinv import results
from vaeinv.kernels.nuts import nuts_run
from vaeinv.runs.merge import merge_runs
from vaeinv.runs.sampling import sample

from linear_gaussian import linear_gaussian

RUN = {"num_chains": 3, "num_draws": 8, "num_warmup": 6, "chunk_size": 4, "progress": False}
FAST_LAPLACE = {"laplace_steps": 30, "laplace_lr": 0.1}


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=11)


@pytest.fixture
def seed(request) -> int:
    value = (20261130 + sum(map(ord, request.node.name))) % 2**31
    print(f"run seed for {request.node.name}: {value}")
    return value


def assert_same_run(left, right) -> None:
    """Every variable of every group, and the chain coordinate, equal to the bit."""
    assert_same_draws(left, right)
    np.testing.assert_array_equal(left.posterior.chain.values, right.posterior.chain.values)


@pytest.mark.parametrize("mass", ["adapt", "laplace"])
def test_parts_of_a_nuts_run_merge_into_the_whole_run(problem, seed, mass, tmp_path):
    options = {"mass": mass, **(FAST_LAPLACE if mass == "laplace" else {})}
    whole = sample(problem.posterior, "nuts", seed=seed, **RUN, **options)
    first = sample(problem.posterior, "nuts", seed=seed, chains=[2, 0], **RUN, **options)
    second = sample(problem.posterior, "nuts", seed=seed, chains=[1], **RUN, **options)
    assert list(first.posterior.chain.values) == [0, 2]
    assert json.loads(first.attrs["chains"]) == [0, 2]
    # parts go through netCDF as they would between machines
    parts = []
    for name, part in (("second", second), ("first", first)):
        results.save(part, tmp_path / f"{name}.nc")
        parts.append(results.load(tmp_path / f"{name}.nc"))
    merged = merge_runs(parts)
    assert_same_run(whole, merged)
    assert "chains" not in merged.attrs  # all three chains of the run
    assert merged.attrs["merged_from"] == merged.posterior.attrs["merged_from"] == 2
    times = json.loads(merged.attrs["wall_time_s_parts"])
    assert merged.attrs["wall_time_s"] == pytest.approx(sum(times))
    counters = ("gradient_evaluations", "forward_solves", "divergences", "warmup_divergences")
    if mass == "adapt":  # no shared set-up: each chain's work is counted once, by its part
        for key in counters:
            assert merged.attrs[key] == whole.attrs[key], key
    else:  # each part fitted the Laplace approximation itself
        laplace = first.attrs["gradient_evaluations"] + second.attrs["gradient_evaluations"]
        assert merged.attrs["gradient_evaluations"] == laplace
        assert merged.attrs["gradient_evaluations"] > whole.attrs["gradient_evaluations"]
    for key in ("seed", "num_chains", "method", "sampler_options"):
        assert merged.attrs[key] == whole.attrs[key]
    assert results.diagnostics(merged) == results.diagnostics(whole)
    if mass == "laplace":  # where the Laplace ascents ended: part 0's, even if another
        # machine rounded the other part's differently
        ends = json.loads(parts[1].attrs["laplace_start_log_density"])
        parts[1].attrs["laplace_start_log_density"] = json.dumps([v + 1e-12 for v in ends])
        again = merge_runs(parts)
        assert (
            again.attrs["laplace_start_log_density"] == parts[0].attrs["laplace_start_log_density"]
        )
        assert json.loads(again.attrs["laplace_start_log_density"]) == ends


def test_merging_some_parts_keeps_their_chains(problem, seed):
    parts = [
        sample(problem.posterior, "nuts", seed=seed, chains=[c], **{**RUN, "num_chains": 4})
        for c in (3, 1)
    ]
    merged = merge_runs(parts)
    assert list(merged.posterior.chain.values) == [1, 3]
    assert json.loads(merged.attrs["chains"]) == [1, 3]


def test_nuts_run_chain_ids_pick_each_chains_stream(problem, seed):
    z0 = 0.5 * np.ones((3, problem.posterior.latent_dim))
    import torch

    z0 = torch.as_tensor(z0) + torch.arange(3.0)[:, None] * 0.1
    kwargs = {"num_draws": 5, "num_warmup": 4, "seed": seed}
    whole = nuts_run(problem.posterior, z0, **kwargs)
    alone = nuts_run(problem.posterior, z0[[2]], chain_ids=[2], **kwargs)
    assert torch.equal(alone.z[0], whole.z[2])
    assert not torch.equal(nuts_run(problem.posterior, z0[[2]], **kwargs).z[0], whole.z[2])
    with pytest.raises(ValueError, match="chain_ids must be 1 distinct non-negative integers"):
        nuts_run(problem.posterior, z0[[2]], chain_ids=[1, 2], **kwargs)
    with pytest.raises(ValueError, match="chain_ids must be 2 distinct"):
        nuts_run(problem.posterior, z0[:2], chain_ids=[-1, 2], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "pcn", "chains": [0]}, "only NUTS can do"),
        ({"method": "gpcn", "chains": [0]}, "method 'gpcn' draws all chains from one stream"),
        ({"chains": [3]}, r"chains must be distinct chain indices in \[0, 3\) .*got \[3\]"),
        ({"chains": [0, 0]}, r"distinct chain indices .*got \[0, 0\]"),
        ({"chains": []}, r"got \[\]"),
        ({"chains": "01"}, "got '01'"),
        ({"chains": [True]}, r"got \[True\]"),
    ],
)
def test_bad_chains(problem, kwargs, message):
    kwargs = {"method": "nuts", **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(problem.posterior, **kwargs, **RUN)


def test_merge_refuses_parts_of_other_runs(problem, seed):
    a = sample(problem.posterior, "nuts", seed=seed, chains=[0], **RUN)
    b = sample(problem.posterior, "nuts", seed=seed, chains=[1, 2], **RUN)
    other_seed = sample(problem.posterior, "nuts", seed=seed + 1, chains=[1], **RUN)
    with pytest.raises(ValueError, match="at least two parts, got 1"):
        merge_runs([a])
    with pytest.raises(ValueError, match=r"part 1 is not of the same run as part 0: its 'seed'"):
        merge_runs([a, other_seed])
    with pytest.raises(ValueError, match=r"chain\(s\) \[1\] are in more than one part"):
        merge_runs([a, b, b.sel(chain=[1])])
    longer = sample(problem.posterior, "nuts", seed=seed, chains=[1], **{**RUN, "num_draws": 9})
    with pytest.raises(ValueError, match="its 'num_draws' is 9, part 0's is 8"):
        merge_runs([a, longer])
    other_data = linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=12)
    moved = sample(other_data.posterior, "nuts", seed=seed, chains=[2], **RUN)
    with pytest.raises(ValueError, match="same run as part 0: its 'data_sha256'"):
        merge_runs([a, moved])
