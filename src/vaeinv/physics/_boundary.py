"""Validation and normalisation of the flow problem's boundary conditions and sources (private).

Shared by the torch solver and the FiPy reference so that both read a problem identically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..grid import SIDES, Grid, check_side

__all__ = ["FlowSetup", "Well"]


@dataclass(frozen=True)
class Well:
    """A point source at ``(x, y)`` injecting ``rate`` (volume per time; negative: production)."""

    x: float
    y: float
    rate: float


@dataclass(frozen=True)
class FlowSetup:
    """The validated boundary conditions, source and wells of a flow problem on a grid."""

    grid: Grid
    dirichlet: dict[str, np.ndarray]  # side -> values along the side, float64
    source: np.ndarray  # (ny, nx) per unit area, float64
    wells: tuple[Well, ...]

    @classmethod
    def build(cls, grid: Grid, dirichlet, source, wells) -> FlowSetup:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid must be a vaeinv.Grid, got {type(grid).__name__}")
        return cls(grid, _dirichlet(grid, dirichlet), _source(grid, source), _wells(grid, wells))

    def cell_rates(self) -> np.ndarray:
        """Total volumetric source per cell, ``(ny, nx)``: the source times the cell area plus
        the wells, each in the cell containing it."""
        rates = self.source * self.grid.cell_area
        for well in self.wells:
            iy, ix = self.grid.cell_of(well.x, well.y)
            rates[iy, ix] += well.rate
        return rates


def _dirichlet(grid: Grid, dirichlet) -> dict[str, np.ndarray]:
    if not isinstance(dirichlet, Mapping):
        raise ValueError(
            f"dirichlet must be a mapping from side name to pressure, got {dirichlet!r}"
        )
    if not dirichlet:
        raise ValueError(
            "dirichlet is empty: with no-flow on every side the pressure is undetermined; "
            f"fix the pressure on at least one of {', '.join(SIDES)}"
        )
    out = {}
    for side, value in dirichlet.items():
        check_side(side)
        n = grid.side_length(side)
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(n, float(arr))
        if arr.shape != (n,):
            raise ValueError(
                f"dirichlet[{side!r}] has shape {arr.shape}; expected a scalar or {n} values "
                f"(one per cell along the {side} side)"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"dirichlet[{side!r}] contains non-finite values")
        out[side] = arr
    return {side: out[side] for side in SIDES if side in out}


def _source(grid: Grid, source) -> np.ndarray:
    arr = np.asarray(source.detach().cpu() if hasattr(source, "detach") else source, dtype=float)
    if arr.ndim == 0:
        arr = np.full(grid.shape, float(arr))
    if arr.shape != grid.shape:
        raise ValueError(
            f"source has shape {arr.shape}; expected a scalar or an array of shape {grid.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("source contains non-finite values")
    return arr


def _wells(grid: Grid, wells) -> tuple[Well, ...]:
    if not isinstance(wells, Iterable):
        raise ValueError(f"wells must be a sequence of (x, y, rate), got {wells!r}")
    out = []
    for i, w in enumerate(wells):
        try:
            x, y, rate = (float(v) for v in w)
        except (TypeError, ValueError):
            raise ValueError(f"wells[{i}] = {w!r}; expected (x, y, rate)") from None
        if not all(map(math.isfinite, (x, y, rate))):
            raise ValueError(f"wells[{i}] = {w!r} has a non-finite entry")
        if not grid.contains(x, y):
            raise ValueError(f"wells[{i}] at ({x}, {y}) lies outside the domain {grid.domain}")
        out.append(Well(x, y, rate))
    return tuple(out)
