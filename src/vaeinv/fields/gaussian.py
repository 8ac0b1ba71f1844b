"""Stationary Gaussian random fields sampled exactly by circulant embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ..grid import Grid
from .embedding import EmbeddingInfo, initial_shape, sqrt_spectra
from .kernels import KERNELS, correlation, scaled_distance
from .validation import (
    ConfigMixin,
    as_generator,
    check_choice,
    check_grid,
    check_number,
    check_range,
)

__all__ = ["GaussianRandomField"]

#: complex numbers per FFT batch (bounds the memory of one chunk, about 64 MiB)
_CHUNK_ELEMENTS = 2**22


@dataclass(frozen=True, eq=False)
class GaussianRandomField(ConfigMixin):
    """Stationary Gaussian random field of log-permeability, ``mean + std * rho`` correlated.

    Samples are exact on the lattice of cell centres (circulant embedding, see
    :mod:`vaeinv.fields.embedding`). With an uncertain length scale, every sample draws its
    own length scale uniformly from ``(low, high)`` first, then its field.

    Args:
        grid: the grid; samples are ``(n, ny, nx)``.
        mean: the field's mean.
        std: the field's standard deviation, ``>= 0``.
        length_scale: a positive length along the first principal axis, or a ``(low, high)``
            range of them (uncertain length scale).
        kernel: ``"exponential"``, ``"gaussian"`` or ``"matern"`` (see
            :mod:`vaeinv.fields.kernels`).
        nu: Matern smoothness, positive (used by ``"matern"`` only).
        anisotropy: ratio of the second (y when ``angle = 0``) to the first principal length
            scale, positive.
        angle: counter-clockwise rotation of the principal axes from x, radians.

    Raises:
        ValueError: a value out of range, ``low > high``, or an unknown kernel.
    """

    kind: ClassVar[str] = "gaussian"

    grid: Grid
    mean: float = 0.0
    std: float = 1.0
    length_scale: float | tuple[float, float] = 0.1
    kernel: str = "exponential"
    nu: float = 1.5
    anisotropy: float = 1.0
    angle: float = 0.0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_grid(self.grid)
        set_ = object.__setattr__
        set_(self, "mean", check_number("mean", self.mean))
        set_(self, "std", check_number("std", self.std, nonnegative=True))
        low, high = check_range("length_scale", self.length_scale, positive=True)
        set_(self, "length_scale", low if low == high else (low, high))
        check_choice("kernel", self.kernel, KERNELS)
        set_(self, "nu", check_number("nu", self.nu, positive=True))
        set_(self, "anisotropy", check_number("anisotropy", self.anisotropy, positive=True))
        set_(self, "angle", check_number("angle", self.angle))

    @property
    def length_scale_range(self) -> tuple[float, float]:
        """``(low, high)`` of the length scale; equal ends when it is fixed."""
        ls = self.length_scale
        return ls if isinstance(ls, tuple) else (ls, ls)

    def kernel_value(self, dx, dy, length_scale: float | None = None) -> torch.Tensor:
        """The analytic covariance at displacement ``(dx, dy)``.

        With an uncertain length scale (and no ``length_scale`` given) this is the marginal
        covariance, the average over the uniform length scale (64-point Gauss-Legendre).

        Args:
            dx: displacement along x (a number or a tensor; broadcast with ``dy``).
            dy: displacement along y.
            length_scale: evaluate at this length scale instead of the generator's.

        Returns:
            The covariance, float64.
        """
        dx = torch.as_tensor(dx, dtype=torch.float64)
        dy = torch.as_tensor(dy, dtype=torch.float64)
        low, high = self.length_scale_range
        if length_scale is not None or low == high:
            scale = low if length_scale is None else length_scale
            h = scaled_distance(dx, dy, scale, self.anisotropy, self.angle)
            return self.std**2 * correlation(self.kernel, h, self.nu)
        nodes, weights = np.polynomial.legendre.leggauss(64)
        total = torch.zeros(torch.broadcast_shapes(dx.shape, dy.shape), dtype=torch.float64)
        for t, w in zip(nodes, weights, strict=True):
            scale = low + (high - low) * (t + 1) / 2
            total = total + (w / 2) * self.kernel_value(dx, dy, length_scale=scale)
        return total

    def covariance(self, r) -> torch.Tensor:
        """The covariance at distance ``r`` along the first principal axis (isotropic when
        ``anisotropy = 1``); see :meth:`kernel_value`."""
        r = torch.as_tensor(r, dtype=torch.float64)
        return self.kernel_value(r * math.cos(self.angle), r * math.sin(self.angle))

    def embedding_info(self, length_scale: float | None = None) -> EmbeddingInfo:
        """How the circulant embedding went at ``length_scale`` (default: the largest)."""
        scale = self.length_scale_range[1] if length_scale is None else length_scale
        return self._spectra(torch.tensor([scale], dtype=torch.float64))[1]

    def _spectra(
        self, scales: torch.Tensor, onesided: bool = False
    ) -> tuple[torch.Tensor, EmbeddingInfo]:
        """Square-root spectra for ``scales`` (all in one torus, sized for the largest)."""
        first = initial_shape(self.grid, scales.max().item() * max(1.0, self.anisotropy))
        # the torus a previous call ended with, starting from the same first guess
        shape = self._cache.get(("shape", first), first)
        sqrt_eig, info = sqrt_spectra(
            self.grid,
            scales,
            self.kernel,
            self.nu,
            self.anisotropy,
            self.angle,
            shape,
            onesided=onesided,
        )
        self._cache[("shape", first)] = info.shape
        return sqrt_eig, info

    def sample(
        self,
        n: int,
        generator: torch.Generator | int | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> torch.Tensor:
        """Draw ``n`` independent fields.

        Args:
            n: number of fields, ``>= 0``.
            generator: the source of randomness (a ``torch.Generator`` or an int seed; ``None``
                seeds a fresh one from the OS). Work happens on the generator's device.
            dtype: floating dtype of the result.
            device: device of the result (default: the generator's).

        Returns:
            ``(n, ny, nx)`` fields.

        Raises:
            ValueError: ``n`` not a non-negative integer.
        """
        return self.sample_with_length_scales(n, generator, dtype, device)[0]

    def sample_with_length_scales(
        self,
        n: int,
        generator: torch.Generator | int | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`sample`, also returning each field's length scale ``(n,)`` (float64)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        gen = as_generator(generator)
        work = gen.device
        low, high = self.length_scale_range
        if low == high:
            scales = torch.full((n,), low, dtype=torch.float64, device=work)
            sqrt_eig = self._cache.get(("fixed", work))
            if sqrt_eig is None:
                sqrt_eig = self._spectra(scales.new_tensor([low]))[0][0]
                self._cache[("fixed", work)] = sqrt_eig
            z = self._sample_fixed(sqrt_eig, n, gen)
        else:
            scales = low + (high - low) * torch.rand(
                n, dtype=torch.float64, device=work, generator=gen
            )
            scales = scales.to(work)
            z = self._sample_grouped(scales, gen)
        fields = self.mean + self.std * z
        target = work if device is None else device
        return fields.to(device=target, dtype=dtype), scales.to(target)

    def _sample_fixed(self, sqrt_eig: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` unit fields from one full-plane spectrum: each complex draw gives two."""
        ny, nx = self.grid.shape
        pairs = (n + 1) // 2
        chunk = max(1, _CHUNK_ELEMENTS // sqrt_eig.numel())
        parts = [torch.zeros(0, ny, nx, dtype=torch.float64, device=gen.device)]
        for start in range(0, pairs, chunk):
            count = min(chunk, pairs - start)
            noise = torch.randn(
                count, 2, *sqrt_eig.shape, dtype=torch.float64, device=gen.device, generator=gen
            )
            w = torch.fft.fft2(sqrt_eig * torch.complex(noise[:, 0], noise[:, 1]))
            parts += [w.real[:, :ny, :nx], w.imag[:, :ny, :nx]]
        return torch.cat(parts)[:n]

    def _sample_grouped(self, scales: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Unit fields with their own length scales: sorted, grouped by torus size, batched."""
        ny, nx = self.grid.shape
        n = scales.shape[0]
        out = torch.empty(n, ny, nx, dtype=torch.float64, device=scales.device)
        order = torch.argsort(scales)
        sizes = [
            math.prod(initial_shape(self.grid, s * max(1.0, self.anisotropy)))
            for s in scales[order].tolist()
        ]
        start = 0
        while start < n:
            # a batch shares the torus of its largest length scale: stay within one size class
            stop = start + max(1, _CHUNK_ELEMENTS // sizes[start])
            stop = min(stop, n, next((i for i in range(start, n) if sizes[i] != sizes[start]), n))
            index = order[start:stop]
            sqrt_eig, info = self._spectra(scales[index], onesided=True)
            noise = torch.randn(
                len(index), *info.shape, dtype=torch.float64, device=gen.device, generator=gen
            )
            z = torch.fft.irfft2(sqrt_eig * torch.fft.rfft2(noise), s=info.shape)
            out[index] = z[:, :ny, :nx]
            start = stop
        return out
