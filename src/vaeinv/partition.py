"""Domain decomposition of a grid into overlapping rectangular subdomains.

``Partition(grid, nx_parts, ny_parts, overlap)`` cuts ``grid`` into ``nx_parts x ny_parts``
equal blocks of cells (the *cores*, which tile the grid without overlap) and widens each core by
``overlap`` cells on every side that faces another subdomain (an *interface*); sides on the
global boundary stay where they are. Each subdomain is a [`Grid`][vaeinv.grid.Grid] of its own,
with its origin at its lower-left corner, so that a local prior, solver and sensors live on it
as on any grid.

Subdomains are numbered row by row from the lower-left one: subdomain ``k`` is part
``(k % nx_parts, k // nx_parts)`` along ``(x, y)``. ``scatter`` cuts a global field into local
fields, ``gather`` assembles a global field from local ones, each cell taken from the subdomain
whose core holds it (so ``gather(scatter(f)) == f``), and ``overlap_mean`` averages every copy of
a cell instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .grid import SIDES, Grid

__all__ = ["Partition", "Subdomain"]


@dataclass(frozen=True)
class Subdomain:
    """One subdomain of a [`Partition`][vaeinv.partition.Partition].

    Attributes:
        index: its number, row by row from the lower-left subdomain.
        part: ``(px, py)``, its position among the parts along x and y.
        grid: its own grid (origin at its lower-left corner), overlap included.
        rows, cols: its cells in the global grid, overlap included (``global[..., rows, cols]``).
        core_rows, core_cols: its core in the global grid.
        interfaces: the sides that face another subdomain (the others are on the global
            boundary), in the order of `vaeinv.grid.SIDES`.
    """

    index: int
    part: tuple[int, int]
    grid: Grid
    rows: slice
    cols: slice
    core_rows: slice
    core_cols: slice
    interfaces: tuple[str, ...]

    @property
    def core_in_local(self) -> tuple[slice, slice]:
        """The core's rows and columns in the local field."""
        r0, c0 = self.rows.start, self.cols.start
        return (
            slice(self.core_rows.start - r0, self.core_rows.stop - r0),
            slice(self.core_cols.start - c0, self.core_cols.stop - c0),
        )

    def interface_points(self, side: str) -> torch.Tensor:
        """``(n, 2)`` float64 ``(x, y)`` of the midpoints of the cell faces along ``side`` of
        this subdomain (where an interface condition is imposed), in the order of the cells."""
        if side not in self.interfaces:
            raise ValueError(
                f"side {side!r} of subdomain {self.index} is on the global boundary; its "
                f"interfaces are {list(self.interfaces)}"
            )
        g = self.grid
        (x0, y0), (x1, y1) = g.origin, g.corner
        if side in ("left", "right"):
            y = g.y_centers()
            x = torch.full_like(y, x0 if side == "left" else x1)
        else:
            x = g.x_centers()
            y = torch.full_like(x, y0 if side == "bottom" else y1)
        return torch.stack([x, y], dim=1)

    def check_prior(self, prior) -> None:
        """Raise ``ValueError`` unless ``prior``'s grid has this subdomain's cells (a local
        prior is trained on patches of the subdomain's size; its origin does not matter)."""
        grid = getattr(prior, "grid", None)
        if not isinstance(grid, Grid) or not grid.same_cells(self.grid):
            name = getattr(prior, "name", None) or type(prior).__name__
            got = (
                "no grid"
                if not isinstance(grid, Grid)
                else (f"{grid.ny} x {grid.nx} cells of {grid.dy:g} x {grid.dx:g}")
            )
            raise ValueError(
                f"the prior {name!r} has {got}; subdomain {self.index} has "
                f"{self.grid.ny} x {self.grid.nx} cells of {self.grid.dy:g} x {self.grid.dx:g}"
            )

    def interface_cells(self) -> list[tuple[int, int]]:
        """The ``(iy, ix)`` global indices of the local cells next to an interface, each once."""
        cells: list[tuple[int, int]] = []
        rows = range(self.rows.start, self.rows.stop)
        cols = range(self.cols.start, self.cols.stop)
        for side in self.interfaces:
            if side in ("left", "right"):
                ix = cols[0] if side == "left" else cols[-1]
                cells += [(iy, ix) for iy in rows]
            else:
                iy = rows[0] if side == "bottom" else rows[-1]
                cells += [(iy, ix) for ix in cols]
        return list(dict.fromkeys(cells))


class Partition:
    """``grid`` cut into ``nx_parts x ny_parts`` subdomains overlapping by ``overlap`` cells
    (module docstring).

    Args:
        grid: the global grid.
        nx_parts: the number of parts along x; it must divide ``grid.nx``.
        ny_parts: the number of parts along y; it must divide ``grid.ny``.
        overlap: cells added on each interface side of a core, ``>= 0`` and smaller than a
            core's side (so that only neighbouring subdomains overlap).

    Raises:
        ValueError: a number of parts that is not a positive integer or does not divide the
            grid, or an overlap that is not an integer in ``[0, core side)``.
    """

    def __init__(self, grid: Grid, nx_parts: int, ny_parts: int, overlap: int = 0) -> None:
        if not isinstance(grid, Grid):
            raise ValueError(f"grid must be a vaeinv.Grid, got {type(grid).__name__}")
        for name, parts, cells in (
            ("nx_parts", nx_parts, grid.nx),
            ("ny_parts", ny_parts, grid.ny),
        ):
            if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
                raise ValueError(f"{name} must be a positive integer, got {parts!r}")
            if cells % parts:
                raise ValueError(
                    f"{name} = {parts} does not divide the grid's {cells} cells along "
                    f"{'x' if name == 'nx_parts' else 'y'}; expected a divisor of {cells}"
                )
        bx, by = grid.nx // nx_parts, grid.ny // ny_parts
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
            raise ValueError(f"overlap must be an integer >= 0 (cells), got {overlap!r}")
        if (nx_parts > 1 and overlap >= bx) or (ny_parts > 1 and overlap >= by):
            raise ValueError(
                f"overlap {overlap} is as wide as a subdomain's core ({by} x {bx} cells); "
                "expected fewer cells than the core's side"
            )
        self.grid = grid
        self.nx_parts, self.ny_parts, self.overlap = nx_parts, ny_parts, overlap
        self.core_shape = (by, bx)
        self.subdomains = [
            self._subdomain(px, py) for py in range(ny_parts) for px in range(nx_parts)
        ]

    def _subdomain(self, px: int, py: int) -> Subdomain:
        g, o = self.grid, self.overlap
        by, bx = self.core_shape
        core_cols, core_rows = slice(px * bx, (px + 1) * bx), slice(py * by, (py + 1) * by)
        interfaces = tuple(
            side
            for side, inner in zip(
                SIDES, (px > 0, px < self.nx_parts - 1, py > 0, py < self.ny_parts - 1), strict=True
            )
            if inner
        )
        c0 = core_cols.start - (o if "left" in interfaces else 0)
        c1 = core_cols.stop + (o if "right" in interfaces else 0)
        r0 = core_rows.start - (o if "bottom" in interfaces else 0)
        r1 = core_rows.stop + (o if "top" in interfaces else 0)
        local = Grid(
            nx=c1 - c0,
            ny=r1 - r0,
            lx=(c1 - c0) * g.dx,
            ly=(r1 - r0) * g.dy,
            origin=(g.origin[0] + c0 * g.dx, g.origin[1] + r0 * g.dy),
        )
        return Subdomain(
            index=py * self.nx_parts + px,
            part=(px, py),
            grid=local,
            rows=slice(r0, r1),
            cols=slice(c0, c1),
            core_rows=core_rows,
            core_cols=core_cols,
            interfaces=interfaces,
        )

    def __len__(self) -> int:
        return len(self.subdomains)

    def __repr__(self) -> str:
        return (
            f"Partition({self.grid.ny} x {self.grid.nx} cells into {self.ny_parts} x "
            f"{self.nx_parts} parts, overlap {self.overlap})"
        )

    # ------------------------------------------------------------------ fields
    def scatter(self, field: torch.Tensor) -> list[torch.Tensor]:
        """The local fields ``(..., ny_k, nx_k)`` of a global ``(..., ny, nx)`` field (views)."""
        self.grid.check_field(field, "field")
        return [field[..., s.rows, s.cols] for s in self.subdomains]

    def check_local_fields(self, fields) -> None:
        """Raise ``ValueError`` unless ``fields`` are one field per subdomain on its grid."""
        if not isinstance(fields, list | tuple) or len(fields) != len(self.subdomains):
            got = len(fields) if isinstance(fields, list | tuple) else type(fields).__name__
            raise ValueError(f"expected {len(self.subdomains)} local fields, got {got}")
        for s, f in zip(self.subdomains, fields, strict=True):
            s.grid.check_field(f, f"local field {s.index}")

    def gather(self, fields) -> torch.Tensor:
        """The global field whose cells come from the cores of the local ``fields`` (one per
        subdomain, ``(..., ny_k, nx_k)``, the same leading shape)."""
        self.check_local_fields(fields)
        lead = fields[0].shape[:-2]
        out = fields[0].new_empty(*lead, *self.grid.shape)
        for s, f in zip(self.subdomains, fields, strict=True):
            rows, cols = s.core_in_local
            out[..., s.core_rows, s.core_cols] = f[..., rows, cols]
        return out

    def overlap_mean(self, fields) -> torch.Tensor:
        """The global field whose every cell is the mean of its copies in the local fields."""
        self.check_local_fields(fields)
        lead = fields[0].shape[:-2]
        total = fields[0].new_zeros(*lead, *self.grid.shape)
        count = torch.zeros(self.grid.shape, dtype=fields[0].dtype, device=fields[0].device)
        for s, f in zip(self.subdomains, fields, strict=True):
            total[..., s.rows, s.cols] += f
            count[s.rows, s.cols] += 1
        return total / count

    def copies(self) -> torch.Tensor:
        """``(ny, nx)`` int64: how many subdomains hold each cell."""
        count = torch.zeros(self.grid.shape, dtype=torch.int64)
        for s in self.subdomains:
            count[s.rows, s.cols] += 1
        return count

    # ------------------------------------------------------------------ sensors
    def sensors_in(self, xy) -> list[np.ndarray]:
        """For each subdomain, the indices of the points ``xy (n, 2)`` in its closed domain."""
        pts = np.asarray(xy.detach().cpu() if isinstance(xy, torch.Tensor) else xy, dtype=float)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"xy must have shape (num_sensors, 2), got {pts.shape}")
        out = []
        for s in self.subdomains:
            (x0, y0), (x1, y1) = s.grid.origin, s.grid.corner
            inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
            out.append(np.flatnonzero(inside))
        return out
