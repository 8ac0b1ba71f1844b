"""Patches cut from the fields of another generator: the training data of a local prior (a VAE
of subdomain-sized fields for domain-decomposed inversion).

``PatchField(source, nx, ny, per_field)`` draws global fields from ``source`` and cuts
``per_field`` patches of ``ny x nx`` cells from each at uniformly random positions. For a
stationary source every patch has the law of the field on any subdomain of that size, which is
why one local prior can serve every subdomain. ``at = (ix, iy)`` cuts every patch at that one
position instead (its lower-left cell), one patch per source field: the training data of a
prior for one subdomain of a non-stationary field. The patches live on a grid of their own
(``nx * dx`` by ``ny * dy``, origin at 0), the cells the same size as the source's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..grid import Grid
from .validation import as_generator

__all__ = ["PatchField"]


@dataclass(frozen=True, eq=False)
class PatchField:
    """Patches of ``ny x nx`` cells of ``source``'s fields (module docstring).

    Args:
        source: a field generator (its ``grid`` at least ``ny x nx`` cells).
        nx: the patch's cells along x.
        ny: the patch's cells along y.
        per_field: patches cut from each source field, ``>= 1`` (more is cheaper, but the
            patches of one field are correlated); must be 1 with ``at``.
        at: ``(ix, iy)``, the lower-left cell of every patch, or ``None`` (random positions).

    Raises:
        ValueError: a patch larger than the source's grid, or bad sizes.
    """

    kind: ClassVar[str] = "patches"

    source: Any
    nx: int
    ny: int
    per_field: int = 4
    at: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        grid = getattr(self.source, "grid", None)
        if not isinstance(grid, Grid) or not callable(getattr(self.source, "sample", None)):
            raise ValueError(f"source must be a field generator, got {self.source!r}")
        for name in ("nx", "ny", "per_field"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"patch {name} must be a positive integer, got {value!r}")
        if self.nx > grid.nx or self.ny > grid.ny:
            raise ValueError(
                f"a patch of {self.ny} x {self.nx} cells does not fit in the source's grid of "
                f"{grid.ny} x {grid.nx} cells"
            )
        if self.at is not None:
            at = tuple(self.at)
            ok = len(at) == 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in at)
            if not ok or not (0 <= at[0] <= grid.nx - self.nx and 0 <= at[1] <= grid.ny - self.ny):
                raise ValueError(
                    f"patch at = {self.at!r} must be [ix, iy] with 0 <= ix <= {grid.nx - self.nx} "
                    f"and 0 <= iy <= {grid.ny - self.ny} (the patch inside the source's grid)"
                )
            if self.per_field != 1:
                raise ValueError(
                    f"a patch at one position takes per_field = 1, got {self.per_field}"
                )
            object.__setattr__(self, "at", at)

    @property
    def grid(self) -> Grid:
        """The patches' grid: the source's cell size, origin at 0."""
        g = self.source.grid
        return Grid(self.nx, self.ny, lx=self.nx * g.dx, ly=self.ny * g.dy)

    def sample(self, n: int, generator=None, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """``n`` patches ``(n, ny, nx)``: ``ceil(n / per_field)`` source fields first, then the
        patches' corners ``(ix, iy)`` per field, all from ``generator``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        gen = as_generator(generator)
        m = math.ceil(n / self.per_field)
        fields = self.source.sample(m, gen, dtype, device)
        g = self.source.grid
        if self.at is None:
            ix = torch.randint(0, g.nx - self.nx + 1, (m, self.per_field), generator=gen)
            iy = torch.randint(0, g.ny - self.ny + 1, (m, self.per_field), generator=gen)
        else:
            ix = torch.full((m, 1), self.at[0])
            iy = torch.full((m, 1), self.at[1])
        patches = [
            fields[i, y : y + self.ny, x : x + self.nx]
            for i in range(m)
            for x, y in zip(ix[i].tolist(), iy[i].tolist(), strict=True)
        ]
        return torch.stack(patches[:n])

    def config(self) -> dict[str, Any]:
        """``{"kind": "patches", "source": source.config(), "nx", "ny", "per_field"}`` (and
        ``"at"`` when set)."""
        out = {
            "kind": self.kind,
            "source": self.source.config(),
            "nx": self.nx,
            "ny": self.ny,
            "per_field": self.per_field,
        }
        if self.at is not None:
            out["at"] = list(self.at)
        return out

    @classmethod
    def from_config(cls, config) -> PatchField:
        """Rebuild from `config`'s dict (the source from its own config)."""
        from .registry import generator_from_config

        unknown = sorted(set(config) - {"kind", "source", "nx", "ny", "per_field", "at"})
        if unknown:
            raise ValueError(
                f"unknown key(s) {unknown} for generator 'patches'; expected source, nx, ny, "
                "per_field, at"
            )
        if "source" not in config:
            raise ValueError("generator 'patches' needs source = { kind = ..., grid = ... }")
        source = generator_from_config(config["source"])
        at = config.get("at")
        per_field = config.get("per_field", 4 if at is None else 1)
        return cls(source, config.get("nx"), config.get("ny"), per_field, at)
