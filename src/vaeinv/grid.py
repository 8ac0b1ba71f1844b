"""The computational grid: the one source of shapes and coordinates in vaeinv.

A :class:`Grid` is a uniform rectangle of ``ny x nx`` cells on ``[x0, x0 + lx] x [y0, y0 + ly]``
(``origin = (x0, y0)``, ``(0, 0)`` unless a grid is part of a larger one, as a subdomain is).
Fields on it are tensors shaped ``(..., ny, nx)`` indexed ``[iy, ix]``, with ``iy = 0`` at
``y = 0`` and ``ix = 0`` at ``x = 0`` (see the design note).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SIDES", "Grid", "check_nested"]

#: Names of the four sides of the rectangle, in a fixed order.
SIDES = ("left", "right", "bottom", "top")


@dataclass(frozen=True)
class Grid:
    """A uniform cell-centred grid of ``ny`` rows by ``nx`` columns on
    ``[x0, x0 + lx] x [y0, y0 + ly]``.

    Args:
        nx: number of cells along x (columns), at least 1.
        ny: number of cells along y (rows), at least 1.
        lx: length of the domain along x, positive and finite.
        ly: length of the domain along y, positive and finite.
        origin: ``(x0, y0)``, the domain's lower-left corner, finite.

    Raises:
        ValueError: a size that is not a positive integer, a length that is not a positive
            finite number, or an origin that is not two finite numbers.
    """

    nx: int
    ny: int
    lx: float = 1.0
    ly: float = 1.0
    origin: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("nx", "ny"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Grid {name} must be a positive integer, got {value!r}")
        for name in ("lx", "ly"):
            value = getattr(self, name)
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                as_float = math.nan
            if not (math.isfinite(as_float) and as_float > 0):
                raise ValueError(f"Grid {name} must be a positive finite length, got {value!r}")
            object.__setattr__(self, name, as_float)
        try:
            origin = tuple(float(v) for v in self.origin)
        except (TypeError, ValueError):
            origin = ()
        if len(origin) != 2 or not all(map(math.isfinite, origin)):
            raise ValueError(
                f"Grid origin must be two finite numbers (x0, y0), got {self.origin!r}"
            )
        object.__setattr__(self, "origin", origin)

    @property
    def domain(self) -> str:
        """``"[x0, x1] x [y0, y1]"``, the domain in words (for messages)."""
        (x0, y0), (x1, y1) = self.origin, self.corner
        return f"[{x0:g}, {x1:g}] x [{y0:g}, {y1:g}]"

    @property
    def corner(self) -> tuple[float, float]:
        """``(x0 + lx, y0 + ly)``, the domain's upper-right corner."""
        return (self.origin[0] + self.lx, self.origin[1] + self.ly)

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``: the trailing shape of every field on this grid."""
        return (self.ny, self.nx)

    @property
    def num_cells(self) -> int:
        """Total number of cells, ``nx * ny``."""
        return self.nx * self.ny

    @property
    def dx(self) -> float:
        """Cell width along x."""
        return self.lx / self.nx

    @property
    def dy(self) -> float:
        """Cell height along y."""
        return self.ly / self.ny

    @property
    def cell_area(self) -> float:
        """Area of one cell, ``dx * dy``."""
        return self.dx * self.dy

    def x_centers(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """Cell-centre x coordinates, shape ``(nx,)``."""
        return self.origin[0] + (torch.arange(self.nx, dtype=dtype, device=device) + 0.5) * self.dx

    def y_centers(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """Cell-centre y coordinates, shape ``(ny,)``."""
        return self.origin[1] + (torch.arange(self.ny, dtype=dtype, device=device) + 0.5) * self.dy

    def cell_centers(self, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell-centre coordinates ``(X, Y)``, each shaped ``(ny, nx)``."""
        y, x = torch.meshgrid(
            self.y_centers(dtype, device), self.x_centers(dtype, device), indexing="ij"
        )
        return x, y

    def same_cells(self, other: Grid) -> bool:
        """Whether ``other`` has this grid's cells (counts and sizes), wherever its origin is:
        a field on one is a field on the other, moved."""
        return (
            isinstance(other, Grid)
            and (self.nx, self.ny) == (other.nx, other.ny)
            and math.isclose(self.dx, other.dx, rel_tol=1e-12)
            and math.isclose(self.dy, other.dy, rel_tol=1e-12)
        )

    def side_length(self, side: str) -> int:
        """Number of cells along ``side`` (``ny`` for left/right, ``nx`` for bottom/top)."""
        check_side(side)
        return self.ny if side in ("left", "right") else self.nx

    def contains(self, x: float, y: float) -> bool:
        """Whether the point ``(x, y)`` lies in the closed domain."""
        (x0, y0), (x1, y1) = self.origin, self.corner
        return x0 <= x <= x1 and y0 <= y <= y1

    def cell_of(self, x: float, y: float) -> tuple[int, int]:
        """``(iy, ix)`` of the cell containing ``(x, y)`` (the upper cell on a shared edge)."""
        ix = min(math.floor((x - self.origin[0]) / self.dx), self.nx - 1)
        iy = min(math.floor((y - self.origin[1]) / self.dy), self.ny - 1)
        return iy, ix

    def check_field(self, field: torch.Tensor, name: str = "field") -> None:
        """Raise ``ValueError`` unless ``field`` is a tensor shaped ``(..., ny, nx)``."""
        if not isinstance(field, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(field).__name__}")
        if field.dim() < 2 or tuple(field.shape[-2:]) != self.shape:
            raise ValueError(
                f"{name} has shape {tuple(field.shape)}, expected (..., {self.ny}, {self.nx}) "
                f"(ny, nx) for {self}"
            )


def check_side(side: str) -> None:
    """Raise ``ValueError`` unless ``side`` is one of :data:`SIDES`."""
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; expected one of {', '.join(SIDES)}")


def check_nested(coarse: Grid, fine: Grid, coarse_name: str, fine_name: str) -> None:
    """Raise ``ValueError`` unless ``coarse`` nests in ``fine``: the same domain, each side of
    ``fine`` an integer multiple (at least 1) of ``coarse``'s."""
    scale = max(fine.lx, fine.ly)
    same_domain = all(
        abs(a - b) <= 1e-12 * scale
        for a, b in zip((*coarse.origin, *coarse.corner), (*fine.origin, *fine.corner), strict=True)
    )
    if not same_domain or fine.nx % coarse.nx or fine.ny % coarse.ny:
        raise ValueError(
            f"the {coarse_name} grid {coarse.ny} x {coarse.nx} on {coarse.domain} does "
            f"not nest in the {fine_name} grid {fine.ny} x {fine.nx} on {fine.domain}: "
            "expected the same domain and sides that divide the finer ones"
        )
