"""Channelized facies and thresholded binary media: fractions and facies statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaeinv import Grid
from vaeinv.fields import ChannelizedField, ThresholdedGaussianField

MDGM_TRUTH = "/work/shared/benchmarks/mdgm/channel_true_permeability.dat"


def test_channel_fraction_near_the_mdgm_truth(generator):
    log_k, facies = ChannelizedField(Grid(32, 32)).sample_with_facies(1000, generator)
    assert log_k.shape == facies.shape == (1000, 32, 32) and facies.dtype == torch.bool
    fraction = facies.double().mean(dim=(1, 2))
    # the truth has 31.7 %; the default geometry is tuned to about 31 % on average
    assert abs(fraction.mean().item() - 0.317) < 0.02
    assert 0.03 < fraction.std().item() < 0.08


def test_facies_are_filled_by_their_own_fields(generator):
    field = ChannelizedField(Grid(32, 32))
    log_k, facies = field.sample_with_facies(1000, generator, dtype=torch.float64)
    for mask, mean, std in ((facies, 4.0, 0.5), (~facies, 0.0, 0.6)):
        # the facies fields are independent of the geometry: per-field means are unbiased
        counts = mask.sum(dim=(1, 2))
        per_field = (log_k * mask).sum(dim=(1, 2))[counts > 0] / counts[counts > 0]
        mcse = per_field.std().item() / math.sqrt(len(per_field))
        assert abs(per_field.mean().item() - mean) <= 4 * mcse
        assert log_k[mask].std().item() == pytest.approx(std, rel=0.1)


def test_defaults_resemble_the_mdgm_truth():
    truth = np.log(np.loadtxt(MDGM_TRUTH))
    channel = truth > 2.0
    assert abs(truth[channel].mean() - 4.0) < 0.2 and abs(truth[~channel].mean()) < 0.2
    field = ChannelizedField(Grid(64, 64))
    assert field.channel["mean"] == 4.0 and field.background["std"] == 0.6


def test_channel_count_range_and_geometry_ranges(generator):
    one = ChannelizedField(Grid(32, 32), num_channels=1, width=0.2, orientation=0.0, amplitude=0.0)
    _, facies = one.sample_with_facies(50, generator)
    # one straight horizontal band of width 0.2: 6 or 7 full rows of 32 cells (edges may clip)
    rows = facies.any(dim=2).sum(dim=1)
    assert torch.all(facies.all(dim=2) == facies.any(dim=2))
    assert torch.all((rows >= 1) & (rows <= 7))
    many = ChannelizedField(Grid(32, 32), num_channels=(1, 4))
    assert many.num_channels == (1, 4)
    fewer = ChannelizedField(Grid(32, 32), num_channels=1).sample_with_facies(500, generator)[1]
    more = many.sample_with_facies(500, generator)[1]
    assert more.double().mean() > fewer.double().mean() + 0.1


def test_thresholded_porosity_matches_target(generator):
    field = ThresholdedGaussianField(Grid(32, 32), porosity=0.3, length_scale=0.08)
    z = field.sample(1000, generator)
    assert set(z.unique().tolist()) <= {0.0, 1.0} and z.dtype == torch.float32
    porosity = z.double().mean(dim=(1, 2))
    mcse = porosity.std().item() / math.sqrt(len(porosity))
    assert abs(porosity.mean().item() - 0.3) <= 4 * mcse
    assert mcse < 0.01


def test_thresholded_is_a_level_set_of_its_gaussian_field():
    field = ThresholdedGaussianField(Grid(16, 16), porosity=0.6, kernel="exponential")
    pores = field.sample(4, 7, dtype=torch.float64)
    z = field.gaussian_field.sample(4, 7, dtype=torch.float64)
    assert field.threshold == pytest.approx(0.2533471, abs=1e-6)
    assert torch.equal(pores, (z < field.threshold).double())
