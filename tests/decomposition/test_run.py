"""Decomposed runs: every subdomain sampled with its own derived seed, the draws blended into
global fields with a subdomain coordinate in the statistics, the same draws wherever the tasks
run (in this process, in chain groups, on Dask workers)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeinv import results
from vaeinv.decomposition import Decomposition, InterfaceSettings, build_local
from vaeinv.decomposition.run import sample_decomposed
from vaeinv.results.decomposed import decomposed_inference_data, seam_ratio
from vaeinv.runs.distributed import group_seed
from vaeinv.runs.sampling import sample

sys.path.insert(0, str(Path(__file__).resolve().parent))

import killing_prior
from manufactured import manufactured

RUN = {"num_chains": 2, "num_warmup": 40, "num_draws": 30, "seed": 5}


@pytest.fixture(scope="module")
def decomposition():
    p = manufactured()
    return Decomposition.prepare(
        p.partition, p.prior, p.flow, p.sensors, p.data, 0.01, truth=p.truth,
        interface=InterfaceSettings(fit_steps=20, map_steps=30, max_points=8),
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(decomposition):
    return sample_decomposed(decomposition, "pcn", **RUN)


def test_the_result_holds_blended_global_draws_and_local_statistics(decomposition, run):
    post, stats = run.posterior, run.sample_stats
    assert post["log_k"].shape == (2, 30, 16, 16)
    assert post["z"].dims == ("chain", "draw", "subdomain", "latent")
    assert post["z"].shape == (2, 30, 4, 20)
    assert stats["lp"].dims == ("chain", "draw", "subdomain")
    assert list(stats["subdomain"].values) == [0, 1, 2, 3]
    assert run.attrs["forward_solves"] == sum(eval(run.attrs["forward_solves_subdomain"]))
    assert run.attrs["global_solves"] == 2 and run.attrs["subdomains"] == 4
    np.testing.assert_allclose(run.constant_data["log_k"].values, decomposition.truth.numpy())
    assert run.observed_data["y"].shape == (64,)


def test_each_subdomain_samples_its_own_posterior_with_a_derived_seed(decomposition, run):
    """Subdomain k's draws are those of `vaeinv.sample` on its local posterior with the
    seed ``group_seed(seed, k)``; the blend of those draws is the global field."""
    locals_ = []
    for spec in decomposition.specs:
        posterior, _ = build_local(spec)
        seed = group_seed(RUN["seed"], spec.index)
        locals_.append(sample(posterior, "pcn", progress=False, **{**RUN, "seed": seed}))
        np.testing.assert_array_equal(
            run.posterior["z"].values[:, :, spec.index], locals_[-1].posterior["z"].values
        )
    again = decomposed_inference_data(decomposition, locals_)
    np.testing.assert_array_equal(again.posterior["log_k"].values, run.posterior["log_k"].values)


def test_the_posterior_means_errors_are_recorded_gathered_and_blended(decomposition, run):
    from vaeinv.results import diagnostics

    truth = decomposition.truth.numpy()
    z = torch.as_tensor(run.posterior["z"].values)
    local = []
    for spec in decomposition.specs:
        posterior, _ = build_local(spec)
        local.append(posterior.decode(z[:, :, spec.index]).detach().double())
    means = {
        "gathered": decomposition.partition.gather(local).mean((0, 1)).numpy(),
        "blended": run.posterior["log_k"].values.mean((0, 1)),
    }
    for name, mean in means.items():
        error = np.linalg.norm(mean - truth) / np.linalg.norm(truth)
        assert run.attrs[f"rel_l2_{name}"] == pytest.approx(error, rel=1e-9)
    assert run.attrs["rel_l2_blended"] == pytest.approx(diagnostics(run)["rel_l2_error"], rel=1e-9)


def test_chain_groups_give_the_draws_of_their_own_seeds(decomposition, run):
    grouped = sample_decomposed(decomposition, "pcn", groups=2, **RUN)
    assert grouped.posterior["z"].shape == run.posterior["z"].shape
    seed = group_seed(RUN["seed"], 0)
    posterior, _ = build_local(decomposition.specs[0])
    one = sample(
        posterior, "pcn", progress=False, **{**RUN, "num_chains": 1, "seed": group_seed(seed, 1)}
    )
    np.testing.assert_array_equal(
        grouped.posterior["z"].values[1:, :, 0], one.posterior["z"].values
    )


def test_restrictions_of_global_fields_blend_back_to_them(decomposition):
    """Local runs whose fields are restrictions of global draws: the blend returns the
    global draws and leaves no seam."""
    gen = torch.Generator().manual_seed(8)
    x, y = decomposition.partition.grid.cell_centers()
    a = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64)
    fields = a[..., 0, None, None] * torch.sin(3 * x + a[..., 1, None, None]) + a[
        ..., 2, None, None
    ] * torch.cos(2 * y)
    local_runs = []
    for spec, f in zip(decomposition.specs, decomposition.partition.scatter(fields), strict=True):
        posterior, _ = build_local(spec)
        z = torch.randn(2, 3, posterior.latent_dim, generator=gen, dtype=torch.float64)
        local_runs.append(results.to_inference_data(posterior, {"z": z, "log_k": f}))
    out = decomposed_inference_data(decomposition, local_runs)
    np.testing.assert_allclose(out.posterior["log_k"].values, fields.numpy(), atol=1e-10)
    assert 0.5 < out.attrs["seam_ratio_blended"] < 2.0
    assert seam_ratio(decomposition.partition, fields) == pytest.approx(
        out.attrs["seam_ratio_blended"], rel=1e-8
    )


def test_local_runs_of_other_shapes_are_refused(decomposition, run):
    posterior, _ = build_local(decomposition.specs[0])
    z = torch.zeros(1, 2, posterior.latent_dim, dtype=torch.float64)
    short = results.to_inference_data(posterior, {"z": z})
    with pytest.raises(ValueError, match="must hold log_k and the same chains and draws"):
        decomposed_inference_data(decomposition, [short] * 4)


@pytest.mark.slow
def test_two_dask_workers_give_the_draws_of_one_process_even_when_one_is_lost(
    decomposition, run, tmp_path
):
    """The same draws on two workers, and on two workers one of which dies while taking up
    subdomain 2's task (the scheduler runs it again elsewhere, with its own seed)."""
    import dataclasses

    import cloudpickle

    on_dask = sample_decomposed(decomposition, "pcn", workers=2, **RUN)
    np.testing.assert_array_equal(on_dask.posterior["z"].values, run.posterior["z"].values)
    np.testing.assert_array_equal(on_dask.posterior["log_k"].values, run.posterior["log_k"].values)
    cloudpickle.register_pickle_by_value(killing_prior)
    marker = tmp_path / "killed"
    specs = list(decomposition.specs)
    specs[2] = dataclasses.replace(
        specs[2], prior=killing_prior.KillingPrior(specs[2].prior, str(marker))
    )
    flaky = dataclasses.replace(decomposition, specs=specs)
    survived = sample_decomposed(flaky, "pcn", workers=2, **RUN)
    assert marker.exists()  # a worker was lost
    np.testing.assert_array_equal(survived.posterior["z"].values, run.posterior["z"].values)
    assert survived.attrs["forward_solves"] == run.attrs["forward_solves"]
