"""Observation operators: point sensors reading a cell-centred field."""

from __future__ import annotations

import numpy as np
import torch

from ..grid import Grid

__all__ = ["PointSensors"]


class PointSensors:
    """Sensor values at points ``(x, y)`` by bilinear interpolation of cell-centre values.

    Between cell centres the value is the bilinear interpolant of the four surrounding centres,
    exact at a centre. In the half-cell strip along the domain's edge, beyond the outermost
    centres, the interpolant of the nearest centres is continued linearly (second-order accurate
    for smooth fields). On a grid one cell wide the value is constant across that direction.

    Args:
        grid: the grid the fields live on.
        xy: sensor coordinates, shape ``(num_sensors, 2)``, columns ``x, y``.

    Raises:
        ValueError: ``xy`` of the wrong shape, non-finite, or a point outside the domain.
    """

    def __init__(self, grid: Grid, xy) -> None:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid must be a vaeinv.Grid, got {type(grid).__name__}")
        pts = np.asarray(xy.detach().cpu() if isinstance(xy, torch.Tensor) else xy, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 1:
            raise ValueError(f"xy must have shape (num_sensors, 2), got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("xy contains non-finite coordinates")
        outside = [i for i, (x, y) in enumerate(pts) if not grid.contains(float(x), float(y))]
        if outside:
            i = outside[0]
            raise ValueError(
                f"sensor {i} at ({pts[i, 0]}, {pts[i, 1]}) lies outside the domain "
                f"{grid.domain} ({len(outside)} sensor(s) outside)"
            )
        self.grid = grid
        self.xy = torch.as_tensor(pts, dtype=torch.float64)
        ix, wx = _axis_weights(pts[:, 0] - grid.origin[0], grid.dx, grid.nx)
        iy, wy = _axis_weights(pts[:, 1] - grid.origin[1], grid.dy, grid.ny)
        # four corners: (iy0, ix0), (iy0, ix1), (iy1, ix0), (iy1, ix1)
        self._iy = torch.as_tensor(np.stack([iy[0], iy[0], iy[1], iy[1]], axis=1))
        self._ix = torch.as_tensor(np.stack([ix[0], ix[1], ix[0], ix[1]], axis=1))
        self._w = torch.as_tensor(
            np.stack([wy[0] * wx[0], wy[0] * wx[1], wy[1] * wx[0], wy[1] * wx[1]], axis=1)
        )

    @classmethod
    def lattice(cls, grid: Grid, n: int) -> PointSensors:
        """An ``n x n`` lattice at the centres of cells ``floor((k + 1/2) N / n)``, k = 0..n-1.

        On 64 x 64 cells with ``n = 8`` these are the cells 4, 12, ..., 60 of the MDGM
        benchmark. Sensors are ordered row by row (x fastest).
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= min(grid.nx, grid.ny):
            raise ValueError(
                f"lattice size n must be an integer in [1, {min(grid.nx, grid.ny)}], got {n!r}"
            )
        kx = ((np.arange(n) + 0.5) * grid.nx / n).astype(int)
        ky = ((np.arange(n) + 0.5) * grid.ny / n).astype(int)
        x0, y0 = grid.origin
        yy, xx = np.meshgrid(y0 + (ky + 0.5) * grid.dy, x0 + (kx + 0.5) * grid.dx, indexing="ij")
        return cls(grid, np.stack([xx.ravel(), yy.ravel()], axis=1))

    @property
    def num_sensors(self) -> int:
        return self.xy.shape[0]

    def __len__(self) -> int:
        return self.num_sensors

    def __repr__(self) -> str:
        return f"PointSensors({self.num_sensors} sensors on {self.grid})"

    def __call__(self, field: torch.Tensor) -> torch.Tensor:
        """Values of ``field`` ``(..., ny, nx)`` at the sensors: ``(..., num_sensors)``."""
        self.grid.check_field(field, "field")
        dev = field.device
        values = field[..., self._iy.to(dev), self._ix.to(dev)]  # (..., m, 4)
        return (values * self._w.to(dtype=field.dtype, device=dev)).sum(-1)

    def matrix(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """The operator as a dense ``(num_sensors, ny * nx)`` matrix (cells ``iy * nx + ix``)."""
        m = torch.zeros(self.num_sensors, self.grid.num_cells, dtype=dtype, device=device)
        flat = (self._iy * self.grid.nx + self._ix).to(device)
        m.scatter_add_(1, flat, self._w.to(dtype=dtype, device=device))
        return m


def _axis_weights(coord: np.ndarray, h: float, n: int):
    """Lower/upper centre indices and their linear weights along one axis."""
    if n == 1:
        zero = np.zeros(len(coord), dtype=np.int64)
        return (zero, zero), (np.ones(len(coord)), np.zeros(len(coord)))
    s = coord / h - 0.5  # position in units of cells, centre i at s = i
    i0 = np.clip(np.floor(s).astype(np.int64), 0, n - 2)
    t = s - i0  # in [0, 1] between centres; slightly outside in the edge strips
    return (i0, i0 + 1), (1.0 - t, t)
