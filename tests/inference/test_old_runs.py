"""Runs written before the kernels had a registry still work: their interrupted checkpoints
resume to the draws the uninterrupted run of that code gave (pinned by digest), and their
finished results open, report and extend.

``tests/data/runs_before_registry`` holds, for each method, a checkpoint folder interrupted
after two blocks, and for pCN and NUTS the finished result of the same run (2 chains, 20 warm-up
and 12 kept iterations, chunks of 4, seed 3, on the linear-Gaussian helper problem).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_same_draws import draws_digest

import vaeinv
from vaeinv import results

from linear_gaussian import linear_gaussian

DATA = Path(__file__).resolve().parents[1] / "data" / "runs_before_registry"
COMMON = {"num_chains": 2, "num_draws": 12, "num_warmup": 20, "thin": 1, "chunk_size": 4}
OPTIONS = {
    "gpcn": {"laplace_steps": 5},
    "hmc": {"laplace_steps": 5},
    "nuts": {},
    "pcn": {},
    "tpcn": {"laplace_steps": 5, "flow_steps": 10, "flow_layers": 2, "flow_hidden": 8},
}
#: the draws of each uninterrupted run, as the code that wrote the checkpoints gave them
DIGESTS = {
    "gpcn": "91520840f0ecdd7de0559d10a939e9154c2d5244c4d286165265fb0405fc9c4f",
    "hmc": "cdb3bdf15281e3d3b615019c4e4913cb6dc110e0a7aea147cd6ba98b9972346f",
    "nuts": "406827a262f7b12108a270333fe2212f12237381c4780fd42abfdf6f1d5ce41e",
    "pcn": "6aff6056a2864e4f562d8179e15ebcba1c4832de12ecfe745a0f2392b96707b6",
    "tpcn": "21e7c8796fd0c08c3a07add90c0af08af9e39309c8216179393d08bbee7a9647",
}


@pytest.mark.parametrize("method", sorted(OPTIONS))
def test_an_old_checkpoint_resumes_to_the_old_uninterrupted_draws(method, tmp_path):
    folder = tmp_path / "run.partial"
    shutil.copytree(DATA / f"{method}.partial", folder)  # the fixture stays as it is
    idata = vaeinv.sample(
        linear_gaussian().posterior,
        method,
        checkpoint=folder,
        resume=True,
        progress=False,
        seed=3,
        **COMMON,
        **OPTIONS[method],
    )
    assert draws_digest(idata) == DIGESTS[method]


@pytest.mark.parametrize("method", ["nuts", "pcn"])
def test_an_old_result_opens_reports_and_extends(method, tmp_path):
    idata = results.load(DATA / f"{method}.nc")
    assert draws_digest(idata) == DIGESTS[method]
    assert results.diagnostics(idata)["num_draws"] == 12
    more = vaeinv.extend_run(idata, linear_gaussian().posterior, num_draws=8, progress=False)
    assert more.posterior.sizes["draw"] == 20 and more.attrs["method"] == method
