"""Block log-mean-exp coarsening."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinv.fields import coarsen


def test_constant_field_stays_constant():
    fine = torch.full((3, 2, 8, 12), 1.7, dtype=torch.float64)
    coarse = coarsen(fine, 4)
    assert coarse.shape == (3, 2, 2, 3)
    torch.testing.assert_close(coarse, torch.full_like(coarse, 1.7), rtol=0, atol=1e-14)


def test_known_block_values():
    k = torch.tensor([[1.0, 2.0, 5.0, 5.0], [3.0, 6.0, 5.0, 5.0]], dtype=torch.float64)
    coarse = coarsen(torch.log(k), 2)
    expected = torch.tensor([[math.log(3.0), math.log(5.0)]], dtype=torch.float64)
    torch.testing.assert_close(coarse, expected, rtol=0, atol=1e-14)


def test_rectangular_factor_and_stability(generator):
    fine = 300.0 + torch.randn(2, 6, 8, generator=generator, dtype=torch.float64)
    coarse = coarsen(fine, (3, 2))
    assert coarse.shape == (2, 2, 4)
    direct = torch.log(torch.exp(fine - 300.0).reshape(2, 2, 3, 4, 2).mean(dim=(2, 4))) + 300.0
    torch.testing.assert_close(coarse, direct)
    assert torch.isfinite(coarse).all()


def test_factor_one_is_identity(generator):
    fine = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(coarsen(fine, 1), fine, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("field", "factor", "match"),
    [
        (torch.zeros(8, 8), 3, r"factor \(3, 3\) must divide .*\(8, 8\)"),
        (torch.zeros(8, 8), 0, "factor must be a positive integer"),
        (torch.zeros(8, 8), (2,), "factor must be a positive integer"),
        (torch.zeros(8, 8), 2.0, "factor must be a positive integer"),
        (torch.zeros(8), 2, r"log_k must be a tensor shaped \(\.\.\., ny, nx\)"),
        ([[0.0]], 1, "log_k must be a tensor"),
    ],
)
def test_errors(field, factor, match):
    with pytest.raises(ValueError, match=match):
        coarsen(field, factor)
