"""Field statistics: semivariograms, moments, facies thresholds and facies connectivity, each
checked against values worked out by hand on constructed fields."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinv.fields.statistics import (
    connectivity,
    facies_proportion,
    facies_threshold,
    is_binary,
    is_two_facies,
    largest_cluster_fraction,
    moments,
    percolation_fraction,
    semivariogram,
)


def masks(*rows: str) -> torch.Tensor:
    """A bool stack from pictures: fields separated by ``|``, rows top (iy = 0) first."""
    fields = [[[c == "#" for c in row] for row in field.split()] for field in rows]
    return torch.tensor(fields)


# --------------------------------------------------------------------------- semivariogram
def test_semivariogram_of_a_ramp_along_x():
    slope, lags = 0.7, [1, 2, 3, 5]
    ix = torch.arange(8, dtype=torch.float64)
    fields = (2.0 + slope * ix).expand(3, 6, 8)
    gamma_x, gamma_y = semivariogram(fields, lags)
    assert gamma_x == pytest.approx([0.5 * (slope * h) ** 2 for h in lags], rel=1e-12)
    assert gamma_y == [0.0] * len(lags)
    # the same field turned by 90 degrees swaps the two
    turned_x, turned_y = semivariogram(fields.transpose(-1, -2).contiguous()[:, :6, :6], lags)
    assert turned_x == [0.0] * len(lags)
    assert turned_y == pytest.approx([0.5 * (slope * h) ** 2 for h in lags], rel=1e-12)


def test_semivariogram_of_a_checkerboard():
    iy, ix = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    board = ((-1.0) ** (iy + ix)).unsqueeze(0)
    lags = [1, 2, 3, 4]
    expected = [2.0, 0.0, 2.0, 0.0]  # 0.5 * (1 - (-1))**2 at odd lags, no change at even lags
    assert semivariogram(board, lags) == (expected, expected)


def test_semivariogram_pools_pairs_over_fields():
    ix = torch.arange(5, dtype=torch.float64)
    fields = torch.stack([(1.0 * ix).expand(4, 5), (3.0 * ix).expand(4, 5)])
    gamma_x, _ = semivariogram(fields, [2])
    # the same number of pairs in each field: the mean of 0.5 * (2 * slope)**2 over the two
    assert gamma_x == pytest.approx([(0.5 * 2.0**2 + 0.5 * 6.0**2) / 2])


@pytest.mark.parametrize("lags", [[], [0], [4], [1, 2.0], [True]])
def test_semivariogram_rejects_bad_lags(lags):
    with pytest.raises(ValueError, match="lag"):
        semivariogram(torch.zeros(2, 4, 6), lags)


@pytest.mark.parametrize("fields", [torch.zeros(4, 6), torch.zeros(0, 4, 4), [[1.0]]])
def test_statistics_reject_a_non_stack(fields):
    with pytest.raises(ValueError, match=r"\(n, ny, nx\)"):
        semivariogram(fields, [1])
    with pytest.raises(ValueError, match=r"\(n, ny, nx\)"):
        moments(fields)


# --------------------------------------------------------------------------- moments, facies
def test_moments_pool_cells_and_fields():
    fields = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    stats = moments(fields)
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))  # Bessel-corrected
    assert moments(torch.ones(1, 1, 1)) == {"mean": 1.0, "std": 0.0}


def test_is_binary_and_its_threshold():
    binary = torch.tensor([[[-1.0, 3.0], [3.0, 3.0]]])
    assert is_binary(binary) and facies_threshold(binary) == 1.0
    assert not is_binary(torch.tensor([[[0.0, 1.0, 2.0]]]))
    assert not is_binary(torch.ones(2, 3, 3))


def test_threshold_of_two_facies_is_halfway_between_their_means():
    # 2-means: the split {0, 0.2, 0.4} | {5, 5.2} is stable, so t = (0.2 + 5.1) / 2
    fields = torch.tensor([[[0.0, 0.2, 0.4, 5.0, 5.2]]], dtype=torch.float64)
    assert facies_threshold(fields) == pytest.approx(2.65)


def test_threshold_is_a_fixed_point_of_the_split(generator):
    low = torch.randn(3000, generator=generator) * 0.3
    high = 4.0 + torch.randn(1000, generator=generator) * 0.5
    fields = torch.cat([low, high]).reshape(4, 20, 50)
    t = facies_threshold(fields)
    values = fields.double().flatten()
    assert t == pytest.approx(0.5 * (values[values <= t].mean() + values[values > t].mean()))
    assert 1.0 < t < 3.0


def test_constant_fields_have_no_threshold():
    with pytest.raises(ValueError, match="single value"):
        facies_threshold(torch.full((2, 3, 3), 1.5))


def test_two_facies_detection(generator):
    n = 20_000
    mixture = torch.where(
        torch.rand(n, generator=generator) < 0.3,
        4.0 + 0.5 * torch.randn(n, generator=generator),
        0.6 * torch.randn(n, generator=generator),
    )
    assert is_two_facies(mixture.reshape(20, 10, 100))
    assert is_two_facies(torch.tensor([[[0.0, 1.0], [1.0, 1.0]]]))
    assert not is_two_facies(torch.randn(20, 10, 100, generator=generator))  # unimodal
    assert not is_two_facies(torch.rand(20, 10, 100, generator=generator))  # flat
    assert not is_two_facies(torch.randn(20, 10, 100, generator=generator).exp())  # skewed
    assert not is_two_facies(torch.ones(2, 3, 3))
    rare = torch.cat([torch.zeros(995), torch.full((5,), 9.0)]).reshape(1, 10, 100)
    assert not is_two_facies(rare + 0.01 * torch.randn(1, 10, 100, generator=generator))


@pytest.mark.parametrize("kwargs", [{"dip": 0.0}, {"dip": 1.0}, {"min_share": 0.5}, {"bins": 3}])
def test_two_facies_detection_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="dip"):
        is_two_facies(torch.zeros(1, 2, 2), **kwargs)


def test_facies_proportion():
    mask = masks("#.. ##. ...", "### ### ###")
    assert facies_proportion(mask) == pytest.approx(12 / 18)
    with pytest.raises(ValueError, match="bool"):
        facies_proportion(mask.float())


# --------------------------------------------------------------------------- connectivity
def test_connectivity_of_one_solid_block_is_one():
    block = torch.ones(3, 5, 6, dtype=torch.bool)
    for axis in ("x", "y"):
        assert connectivity(block, [1, 2, 4], axis) == [1.0, 1.0, 1.0]
    inner = torch.zeros(2, 6, 6, dtype=torch.bool)
    inner[:, 1:5, 2:6] = True
    assert connectivity(inner, [1, 3], "x") == [1.0, 1.0]


def test_connectivity_counted_by_hand():
    # four separate two-cell blobs, then a U whose arms join through the bottom row
    blobs = "##.# ...# #... #.##"
    u_shape = "#.#. #.#. ###. ...#"
    stack = masks(blobs, u_shape)
    # along x at lag 2: blobs have 2 facies pairs (rows 0 and 3), none joined; the U has 3
    # pairs (rows 0, 1, 2), all joined -> 3 / 5. At lag 1 every facies pair touches.
    assert connectivity(stack, [1, 2, 3], "x") == pytest.approx([1.0, 3 / 5, 0.0])
    # along y at lag 2: blobs (0,0)-(2,0) and (1,3)-(3,3) apart; the U: (0,0)-(2,0) and
    # (0,2)-(2,2) joined -> 2 / 4; at lag 3 only blob pairs (0,0)-(3,0), (0,3)-(3,3), apart
    assert connectivity(stack, [1, 2, 3], "y") == pytest.approx([1.0, 2 / 4, 0.0])
    assert connectivity(masks(blobs), [2], "x") == [0.0]


def test_connectivity_is_four_connected_and_per_field():
    diagonal = masks("#.# .#. ...")  # (0,0) and (0,2) meet only through corners
    assert connectivity(diagonal, [2], "x") == [0.0]
    # the same cells joined in one field must not join them in the next one
    # (field 1: rows 0 and 1 joined through row 1; field 2: row 0 apart -> 2 of 3 pairs)
    assert connectivity(masks("#.# ### ...", "#.# ... ..."), [2], "x") == [pytest.approx(2 / 3)]


def test_connectivity_without_facies_pairs_is_nan():
    assert math.isnan(connectivity(torch.zeros(1, 4, 4, dtype=torch.bool), [1], "y")[0])


def test_connectivity_rejects_bad_axis_and_mask():
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="axis"):
        connectivity(mask, [1], "z")
    with pytest.raises(ValueError, match="bool"):
        connectivity(mask.float(), [1], "x")
    with pytest.raises(ValueError, match="lag"):
        connectivity(mask, [4], "x")


def test_largest_cluster_fraction():
    stack = masks("##.# ...# #... #.##", "#.#. #.#. ###. ...#", ".... .... .... ....")
    # four clusters of 2 -> 2 / 8; a U of 7 and a single cell -> 7 / 8; the empty field skipped
    assert largest_cluster_fraction(stack) == pytest.approx((2 / 8 + 7 / 8) / 2)
    assert largest_cluster_fraction(torch.ones(2, 3, 3, dtype=torch.bool)) == 1.0
    assert math.isnan(largest_cluster_fraction(torch.zeros(1, 3, 3, dtype=torch.bool)))


def test_a_straight_channel_percolates_along_its_axis_only():
    along_x = masks("..... ##### .....")
    assert percolation_fraction(along_x, "x") == 1.0
    assert percolation_fraction(along_x, "y") == 0.0
    along_y = along_x.transpose(-1, -2)
    assert percolation_fraction(along_y, "y") == 1.0 and percolation_fraction(along_y, "x") == 0.0
    meander = masks("##... .#... .###. ...##")
    assert percolation_fraction(meander, "x") == 1.0 and percolation_fraction(meander, "y") == 1.0
    # both sides touched, by two clusters that do not meet: no spanning cluster
    broken = masks("##... ..... ...##")
    assert percolation_fraction(broken, "x") == 0.0
    stack = torch.cat([along_x, broken, masks("#.... #.... #....")])
    assert percolation_fraction(stack, "x") == pytest.approx(1 / 3)
    assert percolation_fraction(stack, "y") == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="axis"):
        percolation_fraction(stack, "0")
