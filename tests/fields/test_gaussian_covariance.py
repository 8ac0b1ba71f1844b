"""Empirical moments of Gaussian random fields against the analytic kernels, MCSE-gated.

Each field gives one unbiased estimate of the covariance at a lag (the mean over all pairs at
that lag, about the known mean); the fields are independent, so the Monte Carlo standard error
of the average is the sample standard deviation of these estimates over sqrt(num fields).
"""

from __future__ import annotations

import math

import pytest
import torch

from vaeinv import Grid
from vaeinv.fields import GaussianRandomField

NUM = 2000
LAGS = [(0, 0), (0, 1), (0, 2), (0, 4), (1, 0), (2, 0), (4, 0)]  # (lag_y, lag_x) in cells


def lag_products(z: torch.Tensor, mean: float, lag_y: int, lag_x: int) -> torch.Tensor:
    """Per-field averages of (z[i] - mean)(z[i + lag] - mean) over all pairs at the lag."""
    _, ny, nx = z.shape
    y0, y1 = max(0, -lag_y), ny - max(0, lag_y)
    x0, x1 = max(0, -lag_x), nx - max(0, lag_x)
    a = z[:, y0:y1, x0:x1]
    b = z[:, y0 + lag_y : y1 + lag_y, x0 + lag_x : x1 + lag_x]
    return ((a - mean) * (b - mean)).mean(dim=(1, 2))


def assert_covariances(field: GaussianRandomField, z: torch.Tensor, lags) -> None:
    grid = field.grid
    for lag_y, lag_x in lags:
        products = lag_products(z, field.mean, lag_y, lag_x)
        estimate = products.mean().item()
        mcse = products.std().item() / math.sqrt(len(products))
        theory = field.kernel_value(lag_x * grid.dx, lag_y * grid.dy).item()
        assert mcse < 0.02 * field.std**2, "too few samples for a meaningful test"
        assert abs(estimate - theory) <= 4 * mcse, (
            f"lag {(lag_y, lag_x)}: empirical {estimate:.4f}, analytic {theory:.4f}, "
            f"MCSE {mcse:.4f}"
        )


@pytest.mark.parametrize(
    ("kernel", "nu"), [("exponential", 1.5), ("gaussian", 1.5), ("matern", 1.5), ("matern", 0.8)]
)
def test_covariance_matches_kernel(kernel, nu, generator):
    field = GaussianRandomField(Grid(32, 32), length_scale=0.1, kernel=kernel, nu=nu)
    z = field.sample(NUM, generator, dtype=torch.float64)
    assert z.shape == (NUM, 32, 32)
    assert_covariances(field, z, LAGS)


def test_mean_and_variance(generator):
    field = GaussianRandomField(Grid(24, 16, lx=1.5), mean=2.0, std=0.7, length_scale=0.2)
    z = field.sample(NUM, generator, dtype=torch.float64)
    assert z.shape == (NUM, 16, 24)
    means = z.mean(dim=(1, 2))
    assert abs(means.mean().item() - 2.0) <= 4 * means.std().item() / math.sqrt(NUM)
    assert_covariances(field, z, [(0, 0)])


def test_anisotropy_shortens_y_correlation(generator):
    field = GaussianRandomField(Grid(32, 32), length_scale=0.15, anisotropy=0.3, kernel="matern")
    z = field.sample(NUM, generator, dtype=torch.float64)
    assert_covariances(field, z, LAGS)
    along_x = lag_products(z, 0.0, 0, 2).mean()
    along_y = lag_products(z, 0.0, 2, 0).mean()
    assert along_y < along_x - 0.2


def test_rotated_principal_axes(generator):
    angle = math.pi / 4
    field = GaussianRandomField(Grid(32, 32), length_scale=0.15, anisotropy=0.3, angle=angle)
    z = field.sample(NUM, generator, dtype=torch.float64)
    assert_covariances(field, z, [(1, 1), (-1, 1), (2, 2), (-2, 2), (0, 2), (2, 0)])
    # the long axis is the diagonal: correlation along (1, 1) beats that along (-1, 1)
    assert lag_products(z, 0.0, 2, 2).mean() > lag_products(z, 0.0, -2, 2).mean() + 0.2


def test_rotation_by_a_right_angle_swaps_the_axes():
    turned = GaussianRandomField(Grid(8, 8), anisotropy=0.5, angle=math.pi / 2)
    plain = GaussianRandomField(Grid(8, 8), anisotropy=0.5)
    d = torch.linspace(0, 0.5, 6, dtype=torch.float64)
    torch.testing.assert_close(turned.kernel_value(d, 0.0), plain.kernel_value(0.0, d))
    torch.testing.assert_close(turned.covariance(d), plain.covariance(d))


def test_uncertain_length_scale_marginal_covariance(generator):
    field = GaussianRandomField(Grid(24, 24), length_scale=(0.05, 0.3), kernel="matern")
    z, scales = field.sample_with_length_scales(NUM, generator, dtype=torch.float64)
    assert_covariances(field, z, LAGS)
    assert scales.min() >= 0.05 and scales.max() <= 0.3
    mcse = scales.std().item() / math.sqrt(NUM)
    assert abs(scales.mean().item() - 0.175) <= 4 * mcse


def test_uncertain_length_scales_differ_per_sample(generator):
    field = GaussianRandomField(Grid(24, 24), length_scale=(0.03, 0.4), kernel="gaussian")
    z, scales = field.sample_with_length_scales(400, generator, dtype=torch.float64)
    # per-field lag-3 correlation estimate; it must follow the field's own length scale
    r1 = lag_products(z, 0.0, 0, 3) / lag_products(z, 0.0, 0, 0)
    rank = lambda t: torch.argsort(torch.argsort(t)).double()  # noqa: E731
    spearman = torch.corrcoef(torch.stack([rank(scales), rank(r1)]))[0, 1]
    assert spearman > 0.7
    short, long = r1[scales < 0.1], r1[scales > 0.33]
    assert long.mean() > short.mean() + 0.2
