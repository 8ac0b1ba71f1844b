"""Channelized facies: sinuous channels across the domain, each facies its own Gaussian field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch

from ..grid import Grid
from .gaussian import GaussianRandomField
from .validation import (
    ConfigMixin,
    as_generator,
    check_grid,
    check_range,
)

__all__ = ["ChannelizedField"]

_CHUNK = 256


def _channel_defaults() -> dict[str, Any]:
    return {"mean": 4.0, "std": 0.5, "length_scale": 0.1}


def _background_defaults() -> dict[str, Any]:
    return {"mean": 0.0, "std": 0.6, "length_scale": 0.1}


@dataclass(frozen=True, eq=False)
class ChannelizedField(ConfigMixin):
    """Sinuous channels crossing the domain roughly left to right (MDGM-like channel facies).

    In coordinates scaled to the unit square, channel ``j`` has an axis through
    ``(1/2, position)`` at angle ``orientation`` from x; along it (coordinate ``s``) its centre
    line meanders as ``amplitude * sin(2 pi s / wavelength + phase)`` across it (coordinate
    ``t``), and the channel is ``|t - centre(s)| < width / 2``. Each sample draws its number of
    channels and, per channel, every geometric parameter uniformly from its range (phase from
    ``[0, 2 pi)``). Cells inside any channel take the ``channel`` Gaussian field, the others the
    ``background`` field, drawn independently. The defaults give about 30 % channel cells with
    log-k about 4 (sd 0.5) inside and 0 (sd 0.6) outside, like the MDGM channel truth.

    Args:
        grid: the grid; samples are ``(n, ny, nx)``.
        num_channels: channels per sample, an integer ``>= 1`` or an inclusive ``(lo, hi)``.
        width: range of the channel width, as a fraction of the domain.
        orientation: range of the axis angle from the x axis, radians in ``(-pi/2, pi/2)``.
        amplitude: range of the meander amplitude, fraction of the domain, ``>= 0``.
        wavelength: range of the meander wavelength, fraction of the domain, positive.
        position: range of the height (fraction of ``ly``) where the axis crosses ``x = lx/2``.
        channel: :class:`GaussianRandomField` arguments (no ``grid``) inside the channels.
        background: :class:`GaussianRandomField` arguments (no ``grid``) outside.

    Raises:
        ValueError: a value out of range, ``low > high``, or a bad facies field argument.
    """

    kind: ClassVar[str] = "channelized"

    grid: Grid
    num_channels: int | tuple[int, int] = 2
    width: float | tuple[float, float] = (0.13, 0.21)
    orientation: float | tuple[float, float] = (-0.5, 0.5)
    amplitude: float | tuple[float, float] = (0.02, 0.1)
    wavelength: float | tuple[float, float] = (0.5, 1.5)
    position: float | tuple[float, float] = (0.15, 0.85)
    channel: Mapping[str, Any] = field(default_factory=_channel_defaults)
    background: Mapping[str, Any] = field(default_factory=_background_defaults)
    _fields: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_grid(self.grid)
        set_ = object.__setattr__
        set_(self, "num_channels", _check_count(self.num_channels))
        half_pi = math.pi / 2
        set_(self, "width", check_range("width", self.width, positive=True))
        set_(
            self,
            "orientation",
            check_range("orientation", self.orientation, low=-half_pi, high=half_pi),
        )
        set_(self, "amplitude", check_range("amplitude", self.amplitude, nonnegative=True))
        set_(self, "wavelength", check_range("wavelength", self.wavelength, positive=True))
        set_(self, "position", check_range("position", self.position))
        facies = []
        for name in ("channel", "background"):
            params = getattr(self, name)
            facies.append(_facies_field(self.grid, name, params))
            set_(
                self,
                name,
                {k: v for k, v in facies[-1].config().items() if k not in ("kind", "grid")},
            )
        set_(self, "_fields", tuple(facies))

    def sample(
        self,
        n: int,
        generator: torch.Generator | int | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> torch.Tensor:
        """Draw ``n`` log-k fields ``(n, ny, nx)``; arguments as in :meth:`sample_with_facies`."""
        return self.sample_with_facies(n, generator, dtype, device)[0]

    def sample_with_facies(
        self,
        n: int,
        generator: torch.Generator | int | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` log-k fields and their facies.

        Args:
            n: number of fields, ``>= 0``.
            generator: a ``torch.Generator`` or an int seed (``None``: a fresh OS seed).
            dtype: floating dtype of the log-k fields.
            device: device of the results (default: the generator's).

        Returns:
            ``(log_k, facies)``, both ``(n, ny, nx)``; ``facies`` is boolean, ``True`` in a
            channel.

        Raises:
            ValueError: ``n`` not a non-negative integer.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        gen = as_generator(generator)
        mask = self._facies(n, gen)
        inside, outside = (f.sample(n, gen, torch.float64) for f in self._fields)
        log_k = torch.where(mask, inside, outside)
        target = gen.device if device is None else device
        return log_k.to(device=target, dtype=dtype), mask.to(target)

    def _facies(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Boolean channel masks ``(n, ny, nx)``: geometry drawn first, then rasterised."""
        work = gen.device
        lo, hi = self.num_channels
        counts = torch.randint(lo, hi + 1, (n,), generator=gen, device=work)
        u = torch.rand(n, hi, 6, dtype=torch.float64, generator=gen, device=work)
        ranges = (self.width, self.orientation, self.amplitude, self.wavelength, self.position)
        width, angle, amp, wave, pos = (a + (b - a) * u[..., i] for i, (a, b) in enumerate(ranges))
        phase = 2 * math.pi * u[..., 5]
        active = torch.arange(hi, device=work) < counts[:, None]
        x, y = self.grid.cell_centers(device=work)
        x, y = x / self.grid.lx - 0.5, y / self.grid.ly
        out = torch.empty(n, *self.grid.shape, dtype=torch.bool, device=work)
        for start in range(0, n, _CHUNK):
            sl = slice(start, start + _CHUNK)
            c, s = torch.cos(angle[sl])[..., None, None], torch.sin(angle[sl])[..., None, None]
            dy = y - pos[sl][..., None, None]
            along, across = c * x + s * dy, -s * x + c * dy
            centre = amp[sl][..., None, None] * torch.sin(
                2 * math.pi * along / wave[sl][..., None, None] + phase[sl][..., None, None]
            )
            inside = (across - centre).abs() < width[sl][..., None, None] / 2
            out[sl] = (inside & active[sl][..., None, None]).any(dim=1)
        return out


def _check_count(value: Any) -> tuple[int, int]:
    """``num_channels`` as an inclusive ``(lo, hi)`` pair of integers ``>= 1``."""
    pair = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    ok = len(pair) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
    if not ok or pair[0] < 1 or pair[0] > pair[1]:
        raise ValueError(
            f"num_channels must be an integer >= 1 or a (lo, hi) pair of them with lo <= hi, "
            f"got {value!r}"
        )
    return pair


def _facies_field(grid: Grid, name: str, params: Any) -> GaussianRandomField:
    """The Gaussian field of one facies from its arguments, with clear errors."""
    if not isinstance(params, Mapping):
        raise ValueError(
            f"{name} must be a mapping of GaussianRandomField arguments, got {params!r}"
        )
    valid = [f.name for f in fields(GaussianRandomField) if f.init and f.name != "grid"]
    for key in params:
        if key not in valid:
            raise ValueError(f"unknown {name} key {key!r}; valid keys are {', '.join(valid)}")
    return GaussianRandomField(
        grid, **{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    )
