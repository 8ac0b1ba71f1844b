"""Circulant embedding: exact spectra of stationary covariances on a periodic torus.

A stationary covariance sampled on the ``ny x nx`` lattice is embedded in a circulant covariance
on a larger ``My x Mx`` torus (lags taken as the nearest periodic image). Its eigenvalues are the
2-D FFT of the covariance's first row; when they are all non-negative, ``fft2(sqrt(lambda / M)
xi)`` with complex standard normal ``xi`` has real and imaginary parts that are two independent
fields with exactly the target covariance on the lattice (Dietrich & Newsam 1997). Otherwise the
torus is enlarged; negative eigenvalues left after the last enlargement are clipped to zero, with
an :class:`EmbeddingWarning` giving the clipped fraction. Equivalently, ``irfft2(sqrt(lambda)
rfft2(eps))`` with real white noise ``eps`` is one field (the one-sided form, used when every
field has its own spectrum).

Clipping eigenvalues whose magnitudes sum to a fraction ``f`` of the total changes no entry of
the covariance by more than ``f`` times the variance. The embedding counts as exact when
``f <= MASS_RTOL`` (below float32 resolution); otherwise the torus is enlarged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..grid import Grid
from .kernels import correlation, scaled_distance

__all__ = ["EmbeddingInfo", "EmbeddingWarning", "fast_size", "initial_shape", "sqrt_spectra"]

#: negative eigenvalue mass (relative) below which the embedding counts as exact
MASS_RTOL = 1e-7


class EmbeddingWarning(RuntimeWarning):
    """The circulant embedding kept negative eigenvalues, which were clipped to zero."""


@dataclass(frozen=True)
class EmbeddingInfo:
    """What the embedding did.

    Args:
        shape: the torus ``(My, Mx)``.
        enlargements: how many times the torus was enlarged.
        clipped_fraction: fraction of eigenvalues that were negative and clipped to zero.
        negative_mass: sum of the clipped eigenvalues' magnitudes over the sum of magnitudes
            (the worst case of the relative covariance error; round-off is about ``1e-16``).
    """

    shape: tuple[int, int]
    enlargements: int
    clipped_fraction: float
    negative_mass: float


def fast_size(m: int) -> int:
    """The smallest integer ``>= m`` whose only prime factors are 2, 3 and 5 (FFT-friendly)."""
    m = max(int(m), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def initial_shape(grid: Grid, extent: float, pad_scales: float = 4.0) -> tuple[int, int]:
    """The first torus tried: twice the grid plus ``pad_scales`` correlation extents per axis.

    Args:
        grid: the grid fields live on.
        extent: the largest principal length scale.
        pad_scales: how many length scales of padding to add.

    Returns:
        ``(My, Mx)``, FFT-friendly sizes.
    """
    my = fast_size(2 * grid.ny + math.ceil(pad_scales * extent / grid.dy))
    mx = fast_size(2 * grid.nx + math.ceil(pad_scales * extent / grid.dx))
    return my, mx


def _torus_lags(m: int, step: float, device) -> torch.Tensor:
    """Signed nearest-image lags ``k * step`` for ``k = 0, ..., m - 1`` on a torus of ``m``."""
    k = torch.arange(m, dtype=torch.float64, device=device)
    return torch.where(k <= m // 2, k, k - m) * step


def sqrt_spectra(
    grid: Grid,
    length_scales: torch.Tensor,
    kernel: str,
    nu: float,
    anisotropy: float,
    angle: float,
    shape: tuple[int, int],
    max_enlargements: int = 3,
    onesided: bool = False,
) -> tuple[torch.Tensor, EmbeddingInfo]:
    """Square-root eigenvalues of the embedded unit-variance correlation, one per length scale.

    Args:
        grid: the grid fields live on.
        length_scales: ``(B,)`` float64 length scales (first principal axis); their device is
            where the spectra are computed.
        kernel: a kernel name (see :mod:`vaeinv.fields.kernels`).
        nu: Matern smoothness.
        anisotropy: ratio of the second to the first principal length scale.
        angle: rotation of the principal axes, radians.
        shape: the first torus ``(My, Mx)`` to try, at least ``(2 ny - 1, 2 nx - 1)``.
        max_enlargements: how many times the torus may be doubled before clipping.
        onesided: return ``sqrt(lambda)`` over the ``rfft2`` half-plane, ``(B, My, Mx//2 + 1)``,
            instead of ``sqrt(lambda / (My Mx))`` over the full plane, ``(B, My, Mx)``.

    Returns:
        The float64 square-root spectra, and an :class:`EmbeddingInfo`.

    Warns:
        EmbeddingWarning: negative eigenvalues beyond round-off remained and were clipped.
    """
    device = length_scales.device
    scales = length_scales.reshape(-1, 1, 1)
    my, mx = shape
    for enlargement in range(max_enlargements + 1):
        dy = _torus_lags(my, grid.dy, device).reshape(-1, 1)
        dx = _torus_lags(mx, grid.dx, device).reshape(1, -1)
        row = correlation(kernel, scaled_distance(dx, dy, scales, anisotropy, angle), nu)
        # The real part is the spectrum of the row's even part, equal to it at every lag that
        # the lattice uses; it removes the ambiguity at exactly half the torus.
        eig = (torch.fft.rfft2(row) if onesided else torch.fft.fft2(row)).real
        mass = eig.clamp(max=0).abs().sum(dim=(-2, -1)) / eig.abs().sum(dim=(-2, -1))
        if mass.max() <= MASS_RTOL or enlargement == max_enlargements:
            break
        my, mx = fast_size(2 * my), fast_size(2 * mx)
    clipped_fraction = (eig < 0).double().mean().item()
    negative_mass = mass.max().item()
    if negative_mass > MASS_RTOL:
        warnings.warn(
            f"circulant embedding of the {kernel} kernel on a {my} x {mx} torus kept negative "
            f"eigenvalues after {enlargement} enlargements: clipped {clipped_fraction:.3g} of "
            f"them (relative mass {negative_mass:.3g}); the covariance is approximate",
            EmbeddingWarning,
            stacklevel=3,
        )
    info = EmbeddingInfo((my, mx), enlargement, clipped_fraction, negative_mass)
    eig = eig.clamp(min=0)
    return torch.sqrt(eig if onesided else eig / (my * mx)), info
