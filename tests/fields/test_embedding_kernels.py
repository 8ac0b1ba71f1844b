"""Kernels and the circulant embedding: closed forms, sizes, enlargement and clipping."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from vaeinv import Grid
from vaeinv.fields import EmbeddingWarning, GaussianRandomField, correlation
from vaeinv.fields.embedding import fast_size, initial_shape, sqrt_spectra
from vaeinv.fields.kernels import _log_kv_debye, _matern_general, scaled_distance

H = torch.linspace(0, 4, 41, dtype=torch.float64)


def test_kernels_at_zero_and_closed_forms():
    for kernel in ("exponential", "gaussian", "matern"):
        assert correlation(kernel, torch.zeros(1, dtype=torch.float64)).item() == 1.0
    torch.testing.assert_close(correlation("gaussian", H), torch.exp(-(H**2) / 2))
    torch.testing.assert_close(correlation("matern", H, nu=0.5), correlation("exponential", H))


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_general_matern_matches_half_integer_forms(nu):
    torch.testing.assert_close(
        _matern_general(H, nu), correlation("matern", H, nu), atol=1e-12, rtol=0
    )


def test_large_nu_expansion_matches_scipy_and_tends_to_gaussian():
    from scipy.special import kv

    x = np.array([0.05, 0.5, 2.0, 10.0, 40.0, 90.0])
    for nu in (30.0, 45.0):
        np.testing.assert_allclose(_log_kv_debye(nu, x), np.log(kv(nu, x)), atol=1e-7, rtol=0)
    gaps = [
        (correlation("matern", H, nu) - correlation("gaussian", H)).abs().max()
        for nu in (50.0, 200.0, 1000.0)
    ]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 5e-4


def test_scaled_distance_anisotropy_and_rotation():
    d = torch.tensor(0.3, dtype=torch.float64)
    assert scaled_distance(d, 0 * d, 0.1, anisotropy=0.5).item() == pytest.approx(3.0)
    assert scaled_distance(0 * d, d, 0.1, anisotropy=0.5).item() == pytest.approx(6.0)
    c = math.cos(math.pi / 3) * d
    s = math.sin(math.pi / 3) * d
    assert scaled_distance(c, s, 0.1, 0.5, angle=math.pi / 3).item() == pytest.approx(3.0)


def test_fast_size():
    assert [fast_size(m) for m in (1, 7, 11, 13, 17, 97, 128)] == [1, 8, 12, 15, 18, 100, 128]
    assert initial_shape(Grid(10, 20), extent=0.1) == (fast_size(40 + 8), fast_size(20 + 4))


def test_spectrum_reproduces_the_covariance_exactly():
    """sum_k lambda_k e^{2 pi i k.j / M} / M is the embedded covariance: check at lattice lags."""
    field = GaussianRandomField(Grid(12, 10), length_scale=0.2, anisotropy=0.5, angle=0.4)
    sqrt_eig, info = field._spectra(torch.tensor([0.2], dtype=torch.float64))
    assert info.clipped_fraction == 0 or info.negative_mass < 1e-7
    row = torch.fft.ifft2(sqrt_eig[0] ** 2).real * sqrt_eig[0].numel()
    for jy, jx in [(0, 0), (1, 3), (-2, 5), (9, -11)]:
        expected = field.kernel_value(jx * field.grid.dx, jy * field.grid.dy).item()
        assert row[jy, jx].item() == pytest.approx(expected, abs=1e-10)


def test_enlarges_until_nonnegative():
    grid = Grid(16, 16)
    scales = torch.tensor([1.0], dtype=torch.float64)
    shape = initial_shape(grid, 1.0)
    _, info = sqrt_spectra(grid, scales, "gaussian", 1.5, 1.0, 0.0, shape)
    assert info.enlargements >= 1 and info.shape[0] > shape[0]
    assert info.negative_mass <= 1e-7


def test_clipping_warns_with_the_fraction():
    grid = Grid(16, 16)
    scales = torch.tensor([1.0], dtype=torch.float64)
    with pytest.warns(EmbeddingWarning, match="clipped"):
        sqrt_eig, info = sqrt_spectra(grid, scales, "gaussian", 1.5, 1.0, 0.0, (32, 32), 0)
    assert info.clipped_fraction > 0 and info.negative_mass > 1e-7
    assert torch.all(sqrt_eig >= 0)


def test_default_fields_embed_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmbeddingWarning)
        for kernel in ("exponential", "gaussian", "matern"):
            GaussianRandomField(Grid(32, 32), length_scale=0.5, kernel=kernel).sample(2, 0)
