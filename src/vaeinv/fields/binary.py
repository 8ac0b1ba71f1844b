"""Binary porous media: a standard Gaussian field thresholded at a porosity quantile."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar

import torch

from ..grid import Grid
from .gaussian import GaussianRandomField
from .validation import (
    ConfigMixin,
    as_generator,
    check_grid,
    check_number,
)

__all__ = ["ThresholdedGaussianField"]


@dataclass(frozen=True, eq=False)
class ThresholdedGaussianField(ConfigMixin):
    """Binary media, ``1`` = pore and ``0`` = solid: a level set of a Gaussian random field.

    A standard (mean 0, sd 1) Gaussian field ``Z`` is drawn and a cell is pore where
    ``Z < Phi^-1(porosity)``, so every cell is pore with probability ``porosity`` and the
    expected pore fraction is exactly ``porosity``.

    Args:
        grid: the grid; samples are ``(n, ny, nx)``.
        porosity: the expected pore fraction, in ``(0, 1)``.
        length_scale: correlation length of ``Z`` (a positive float or a ``(low, high)``
            range), as in :class:`GaussianRandomField`.
        kernel: covariance kernel of ``Z``.
        nu: Matern smoothness.
        anisotropy: ratio of the second to the first principal length scale.
        angle: rotation of the principal axes, radians.

    Raises:
        ValueError: ``porosity`` not in ``(0, 1)``, or a bad Gaussian field argument.
    """

    kind: ClassVar[str] = "thresholded"

    grid: Grid
    porosity: float = 0.4
    length_scale: float | tuple[float, float] = 0.05
    kernel: str = "gaussian"
    nu: float = 1.5
    anisotropy: float = 1.0
    angle: float = 0.0
    _field: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_grid(self.grid)
        set_ = object.__setattr__
        set_(self, "porosity", check_number("porosity", self.porosity, low=0.0, high=1.0))
        gaussian = GaussianRandomField(
            self.grid,
            0.0,
            1.0,
            self.length_scale,
            self.kernel,
            self.nu,
            self.anisotropy,
            self.angle,
        )
        for name in ("length_scale", "nu", "anisotropy", "angle"):
            set_(self, name, getattr(gaussian, name))
        set_(self, "_field", gaussian)

    @property
    def threshold(self) -> float:
        """``Phi^-1(porosity)``: the level below which the standard field is pore."""
        return NormalDist().inv_cdf(self.porosity)

    @property
    def gaussian_field(self) -> GaussianRandomField:
        """The underlying standard Gaussian field."""
        return self._field

    def sample(
        self,
        n: int,
        generator: torch.Generator | int | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> torch.Tensor:
        """Draw ``n`` binary fields.

        Args:
            n: number of fields, ``>= 0``.
            generator: a ``torch.Generator`` or an int seed (``None``: a fresh OS seed).
            dtype: floating dtype of the result.
            device: device of the result (default: the generator's).

        Returns:
            ``(n, ny, nx)`` fields of ``0.0`` (solid) and ``1.0`` (pore).

        Raises:
            ValueError: ``n`` not a non-negative integer.
        """
        gen = as_generator(generator)
        z = self._field.sample(n, gen, torch.float64)
        target = gen.device if device is None else device
        return (z < self.threshold).to(device=target, dtype=dtype)
