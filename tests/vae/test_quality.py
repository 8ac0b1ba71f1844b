"""The quality report of a VAE against held-out fields, and the files it is written to.

Most checks use a stand-in model whose encoder and decoder are known maps (the identity, or a
doubling), so that the report's numbers follow from the definitions; the rest use a tiny
untrained VAE and compare with direct computations.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vaeinv import Grid, Prior
from vaeinv.fields.statistics import connectivity, moments, semivariogram
from vaeinv.vae import init_vae
from vaeinv.vae.calibration import LatentGaussian, fit_latent_gaussian
from vaeinv.vae.quality import (
    default_lags,
    prior_samples,
    quality_report,
    reconstruction_errors,
    write_quality_report,
)

from vae_helpers import tiny_config, tiny_fields

NY, NX = 6, 8


class Field(nn.Module):
    """``z (B, ny * nx) -> map(z) (B, ny, nx)``."""

    def __init__(self, map_=lambda z: z) -> None:
        super().__init__()
        self.map_ = map_

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.map_(z.reshape(-1, NY, NX))


class KnownVAE(nn.Module):
    """A stand-in VAE on an ``NY x NX`` grid: the encoder's mean is the field itself, the
    decoder applies ``map_`` to the latent seen as a field, the latent prior is
    ``N(loc, scale**2 I)``. Prior samples are ``map_`` of white noise around ``loc``."""

    def __init__(self, map_=lambda z: z, loc: float = 0.0, scale: float = 1.0) -> None:
        super().__init__()
        dim = NY * NX
        self.config = SimpleNamespace(ny=NY, nx=NX, latent_dim=dim, cond_channels=0)
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))  # device and dtype
        self.decoder = Field(map_)
        self.latent_prior = LatentGaussian(dim).double()
        self.latent_prior.loc.fill_(loc)
        self.latent_prior.scale_tril.mul_(scale)

    def encode(self, fields: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = fields.flatten(1)
        return mu, torch.zeros_like(mu)


def white(generator, n: int, loc: float = 0.0) -> torch.Tensor:
    return loc + torch.randn(n, NY, NX, generator=generator, dtype=torch.float64)


def test_a_perfect_model_meets_every_target(generator):
    """Prior samples and held-out fields are both white noise N(5, 1): every statistic agrees
    within Monte Carlo error (about 1 % here), and the identity reconstructs exactly."""
    model = KnownVAE(loc=5.0)
    report = quality_report(model, white(generator, 400, loc=5.0), num_samples=400, seed=3)
    assert report["reconstruction"] == {"mean": 0.0, "p90": 0.0, "num_fields": 400}
    assert report["moments"]["samples"]["mean"] == pytest.approx(5.0, abs=0.02)
    assert report["lags"] == [1]  # min(NY, NX) // 4
    assert report["variogram"]["samples"]["x"] == pytest.approx([1.0], rel=0.05)  # sd**2
    assert report["latent_prior"] == "fitted"
    assert report["facies"] is None
    assert set(report["targets"]) == {"mean", "std", "variogram", "reconstruction"}
    assert all(report["targets"].values()) and report["passed"] is True


def test_a_doubling_decoder_misses_as_defined(generator):
    """``decode(z) = 2 z``: the reconstruction error is ``||2x - x|| / ||x|| = 1`` for every
    field, the sd doubles and the semivariogram quadruples."""
    model = KnownVAE(map_=lambda z: 2.0 * z, loc=0.0)
    held_out = white(generator, 50)
    report = quality_report(model, held_out, num_samples=300, seed=0)
    assert report["reconstruction"]["mean"] == pytest.approx(1.0)
    assert report["reconstruction"]["p90"] == pytest.approx(1.0)
    assert report["moments"]["rel_diff"]["std"] == pytest.approx(1.0, abs=0.1)
    assert report["variogram"]["max_abs_rel_diff"] == pytest.approx(3.0, abs=0.6)
    targets = report["targets"]
    assert not targets["std"] and not targets["variogram"] and not targets["reconstruction"]
    assert report["passed"] is False


def test_numbers_are_those_of_the_samples_and_held_out_fields(generator):
    model = KnownVAE(loc=1.0, scale=0.5)
    held_out = white(generator, 30, loc=1.0)
    lags = [1, 3]
    report = quality_report(model, held_out, num_samples=40, seed=11, lags=lags)
    samples = prior_samples(model, 40, 11)
    white_latent = torch.randn(
        40, NY * NX, generator=torch.Generator().manual_seed(11), dtype=torch.float64
    )
    torch.testing.assert_close(samples, (1.0 + 0.5 * white_latent).reshape(40, NY, NX))
    assert report["moments"]["held_out"] == moments(held_out)
    assert report["moments"]["samples"] == moments(samples)
    gx, gy = semivariogram(samples, lags)
    assert report["variogram"]["samples"] == {"x": gx, "y": gy}
    hx, _ = semivariogram(held_out, lags)
    assert report["variogram"]["rel_diff"]["x"] == pytest.approx(
        [(s - h) / abs(h) for s, h in zip(gx, hx, strict=True)]
    )
    mean_rel = report["moments"]["rel_diff"]["mean"]
    assert mean_rel == pytest.approx(
        (moments(samples)["mean"] - moments(held_out)["mean"]) / moments(held_out)["std"]
    )
    assert report["targets"]["mean"] == (abs(mean_rel) <= 0.05)
    assert report["passed"] == all(report["targets"].values())
    assert report["lags"] == lags and report["num_held_out"] == 30 and report["seed"] == 11


def test_binary_held_out_fields_get_the_facies_section(generator):
    model = KnownVAE(map_=lambda z: (z > 0).double())
    held_out = (white(generator, 60) > 0).double()
    lags = [1, 2, 3]
    report = quality_report(model, held_out, num_samples=60, seed=5, lags=lags)
    facies = report["facies"]
    assert facies["kind"] == "binary" and facies["threshold"] == 0.5
    samples = prior_samples(model, 60, 5)
    for axis in ("x", "y"):
        expected = connectivity(samples > 0.5, lags, axis)
        assert facies["connectivity"]["samples"][axis] == pytest.approx(expected)
        assert facies["connectivity"]["held_out"][axis][0] == 1.0  # neighbours always touch
    share = facies["proportion"]
    assert share["held_out"] == pytest.approx(held_out.mean().item())
    assert share["abs_diff"] == pytest.approx(abs(share["samples"] - share["held_out"]))
    assert report["targets"]["facies_proportion"] == (share["abs_diff"] <= 0.03)
    assert report["thresholds"]["reconstruction"] == 0.15
    for key in ("largest_cluster_fraction", "percolation_fraction"):
        assert set(facies[key]) == {"held_out", "samples"}
    assert report["passed"] == all(report["targets"].values())
    off = quality_report(model, held_out, num_samples=10, lags=lags, facies=False)
    assert off["facies"] is None and "facies_proportion" not in off["targets"]


def test_continuous_fields_get_no_facies_section_unless_asked(generator):
    model = KnownVAE(loc=2.0)
    held_out = white(generator, 20, loc=2.0)
    report = quality_report(model, held_out, num_samples=20)
    assert report["facies"] is None and report["thresholds"]["reconstruction"] == 0.10
    forced = quality_report(model, held_out, num_samples=20, facies=True)
    assert forced["facies"]["kind"] == "two-facies"
    assert "facies_proportion" in forced["targets"]


def test_tiny_vae_reconstruction_and_samples_match_direct_computation(generator):
    model = init_vae(tiny_config(), seed=2)
    fields = tiny_fields(generator, n=40)
    fit_latent_gaussian(model, fields[:30])  # a non-identity latent prior
    held_out = fields[30:]
    report = quality_report(model, held_out, num_samples=12, seed=4, batch_size=3)
    with torch.no_grad():
        fit = model.decoder(model.encode(held_out)[0])
    errors = (fit - held_out).flatten(1).norm(dim=1) / held_out.flatten(1).norm(dim=1)
    assert report["reconstruction"]["mean"] == pytest.approx(errors.mean().item(), rel=1e-5)
    p90 = torch.quantile(errors.double(), 0.9).item()
    assert report["reconstruction"]["p90"] == pytest.approx(p90, rel=1e-5)
    torch.testing.assert_close(
        reconstruction_errors(model, held_out, 4), errors.double(), rtol=1e-5, atol=1e-6
    )
    latent = model.latent_prior  # the fitted Gaussian, as Prior.load passes it
    prior = Prior(model.decoder, model.config.latent_shape, Grid(8, 8), latent_transform=latent)
    torch.testing.assert_close(prior_samples(model, 12, 4, batch_size=5), prior.sample(12, 4))
    assert report["lags"] == default_lags(8, 8) == [1, 2]
    assert report["latent_dim"] == 16 and report["latent_prior"] == "fitted"


def test_report_is_deterministic_batch_independent_and_leaves_rng_and_mode(generator):
    model = init_vae(tiny_config(), seed=2)
    held_out = tiny_fields(generator, n=10)
    model.train()
    state = torch.get_rng_state()
    first = quality_report(model, held_out, num_samples=9, seed=1, batch_size=250)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training
    again = quality_report(model, held_out, num_samples=9, seed=1, batch_size=2)
    for key in ("held_out", "samples"):
        assert again["moments"][key] == pytest.approx(first["moments"][key])
    assert again["reconstruction"] == pytest.approx(first["reconstruction"])
    other = quality_report(model, held_out, num_samples=9, seed=2)
    assert other["moments"]["samples"] != first["moments"]["samples"]


def test_report_types_and_json(generator):
    report = quality_report(KnownVAE(), (white(generator, 8) > 0).double(), num_samples=8)
    keys = {
        "num_held_out", "num_samples", "seed", "grid", "latent_dim", "latent_prior", "lags",
        "reconstruction", "moments", "variogram", "facies", "thresholds", "targets", "passed",
        "examples",
    }  # fmt: skip
    assert set(report) == keys
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert all(isinstance(v, bool) for v in report["targets"].values())
    assert isinstance(report["passed"], bool)
    assert isinstance(report["reconstruction"]["mean"], float)
    examples = report["examples"]
    assert len(examples["held_out"]) == len(examples["samples"]) == 4
    assert len(examples["samples"][0]) == NY and len(examples["samples"][0][0]) == NX


def test_write_quality_report(tmp_path, generator):
    for name, held_out in [
        ("continuous", white(generator, 6, loc=3.0)),
        ("binary", (white(generator, 3) > 0).double()),  # fewer than 4 example fields
    ]:
        report = quality_report(KnownVAE(loc=3.0), held_out, num_samples=5, seed=7)
        paths = write_quality_report(report, tmp_path / name)
        assert [p.name for p in paths] == ["quality.json", "quality.md", "quality.png"]
        assert json.loads(paths[0].read_text()) == report
        markdown = paths[1].read_text()
        met, total = sum(report["targets"].values()), len(report["targets"])
        first = markdown.splitlines()[0]
        assert (f"All {total}" in first) if report["passed"] else (f"{met} of {total}" in first)
        assert "| quantity | held-out | prior samples | target | met |" in markdown
        assert ("facies proportion" in markdown) == (name == "binary")
        assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_undefined_relative_differences_are_none(generator):
    """A checkerboard's variogram at lag 2 is 0: the relative difference there is undefined,
    reported as None, and that target counts as missed. Its mean is 0, but the mean is
    compared with the held-out sd: that difference stays defined."""
    iy, ix = torch.meshgrid(torch.arange(NY), torch.arange(NX), indexing="ij")
    board = ((-1.0) ** (iy + ix)).double().expand(4, NY, NX)
    report = quality_report(KnownVAE(loc=0.5), board, num_samples=4, lags=[2], facies=False)
    assert report["variogram"]["held_out"]["x"] == [0.0]
    held, drawn = report["moments"]["held_out"], report["moments"]["samples"]
    expected = (drawn["mean"] - held["mean"]) / held["std"]
    assert report["moments"]["rel_diff"]["mean"] == pytest.approx(expected)
    assert report["variogram"]["max_abs_rel_diff"] is None
    assert not report["targets"]["mean"] and not report["targets"]["variogram"]
    assert math.isfinite(report["reconstruction"]["mean"])


@pytest.mark.parametrize(
    ("held_out", "kwargs", "match"),
    [
        (torch.zeros(NY, NX), {}, "held_out must be shaped"),
        (torch.zeros(2, NY, NX + 1), {}, "held_out must be shaped"),
        (torch.zeros(0, NY, NX), {}, "held_out must be shaped"),
        (torch.full((2, NY, NX), math.nan), {}, "non-finite"),
        (torch.ones(2, NY, NX), {"num_samples": 0}, "num_samples"),
        (torch.ones(2, NY, NX), {"batch_size": 0}, "batch_size"),
        (torch.ones(2, NY, NX), {"seed": 1.5}, "seed"),
        (torch.ones(2, NY, NX), {"lags": [NY]}, "lags"),
        (torch.ones(2, NY, NX), {"facies": True}, "single value"),
    ],
)
def test_bad_inputs_are_rejected(held_out, kwargs, match):
    with pytest.raises(ValueError, match=match):
        quality_report(KnownVAE(), held_out.double(), **kwargs)


def test_conditional_vae_is_rejected(generator):
    model = init_vae(tiny_config(cond_channels=1), seed=0)
    with pytest.raises(ValueError, match="cond_channels=1"):
        quality_report(model, tiny_fields(generator, n=4))
