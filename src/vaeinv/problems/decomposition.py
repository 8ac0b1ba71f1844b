"""The ``[decomposition]`` table of a problem file: a domain-decomposed inversion (DD-VAE).

```toml
[decomposition]
parts = [2, 2]               # subdomains along x and y; each must divide the grid
overlap = 8                  # cells added on each interface side of a core
prior = "gaussian-patch72"   # the local prior (a name or a folder next to problem.toml), or
                             # a list of them, one per subdomain (row by row from lower left)
solver = "auto"              # the local Darcy solver
# or, instead of prior = "...", a local Gaussian-field prior (local Karhunen-Loeve expansions)
# built on each subdomain's cells, with the keys of a [prior] table:
# [decomposition.prior]
# kind = "gaussian-field"
# mean = 1.0
# std = 0.75
# length_scale = 0.2
# kernel = "matern"
# num_modes = 400

[decomposition.interface]    # the interface model (vaeinv.decomposition.InterfaceSettings)
pilot_rounds = 2
target_fraction = 0.5
max_points = 64
fit_steps = 150
map_steps = 150
```

With the table, ``vaeinv invert`` samples each subdomain's local posterior (the ``[sampler]``
settings apply to each) and blends the draws; ``--global`` samples the problem's ``[prior]``
on the whole grid instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._checks import _check_keys, _require
from .spec import PriorSpec

__all__ = ["DecompositionSpec", "parse_decomposition"]

_KEYS = ("parts", "overlap", "prior", "solver", "interface")
_INTERFACE_KEYS = ("pilot_rounds", "target_fraction", "max_points", "fit_steps", "map_steps")


@dataclass(frozen=True)
class DecompositionSpec:
    """The ``[decomposition]`` table (module docstring)."""

    parts: tuple[int, int]
    overlap: int
    prior: str | tuple[str, ...] | PriorSpec
    solver: str = "auto"
    interface: dict[str, Any] = field(default_factory=dict)

    def partition(self, grid):
        """The [`Partition`][vaeinv.partition.Partition] of ``grid``."""
        from ..partition import Partition

        return Partition(grid, self.parts[0], self.parts[1], self.overlap)

    def prepare(self, problem):
        """The problem's [`Decomposition`][vaeinv.decomposition.setup.Decomposition]."""
        from ..decomposition import Decomposition, InterfaceSettings

        if problem.data is None:
            raise ValueError(f"problem {problem.name!r} has no data file")
        partition = self.partition(problem.grid)
        return Decomposition.prepare(
            partition,
            self.local_priors(partition),
            problem.build_physics(),
            problem.build_sensors(),
            problem.data.numpy(),
            problem.noise_std.numpy(),
            truth=problem.truth,
            interface=InterfaceSettings(**self.interface),
            solver=self.solver,
        )

    def local_priors(self, partition):
        """The ``prior`` argument of `Decomposition.prepare`: the name, the list of names, or
        a table's prior built on each subdomain's cells (one per distinct subdomain size)."""
        if isinstance(self.prior, str):
            return self.prior
        if not isinstance(self.prior, PriorSpec):
            return list(self.prior)
        if self.prior.kind == "vae":
            return self.prior.name
        from ..grid import Grid

        built: dict[tuple, Any] = {}
        out = []
        for s in partition.subdomains:
            g = s.grid
            key = (g.nx, g.ny, g.lx, g.ly)
            if key not in built:  # a stationary field: its origin does not matter
                built[key] = self.prior.build(Grid(g.nx, g.ny, lx=g.lx, ly=g.ly))
            out.append(built[key])
        return out

    def config(self) -> dict[str, Any]:
        prior: Any = self.prior
        if isinstance(prior, PriorSpec):
            prior = prior.config()
        elif not isinstance(prior, str):
            prior = list(prior)
        out = {"parts": list(self.parts), "overlap": self.overlap, "prior": prior}
        if self.solver != "auto":
            out["solver"] = self.solver
        if self.interface:
            out["interface"] = dict(self.interface)
        return out


def parse_decomposition(raw: dict, grid, folder: Path) -> DecompositionSpec | None:
    """The validated ``[decomposition]`` table, or ``None`` without one.

    Raises:
        ValueError: an unknown key, a missing ``parts``/``prior``, parts that do not divide
            the grid or an overlap too wide (from `Partition`), bad interface settings.
    """
    if "decomposition" not in raw:
        return None
    where = "[decomposition]"
    table = _check_keys(raw["decomposition"], _KEYS, where)
    parts = _require(table, "parts", where)
    if (
        not isinstance(parts, list)
        or len(parts) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in parts)
    ):
        raise ValueError(f"{where} parts must be [nx_parts, ny_parts] (integers), got {parts!r}")
    overlap = table.get("overlap", 0)
    prior = _require(table, "prior", where)
    if isinstance(prior, dict):  # a [decomposition.prior] table, checked as [prior] is
        from ._tables import _prior

        try:
            prior = _prior({"prior": prior}, folder)
        except ValueError as e:
            raise ValueError(str(e).replace("[prior]", "[decomposition.prior]")) from None
        return _spec(table, parts, overlap, prior, grid, where)
    names = prior if isinstance(prior, list) else [prior]
    if not names or not all(isinstance(p, str) and p for p in names):
        raise ValueError(
            f"{where} prior must be a local prior's name or folder, or a list of them (one per "
            f"subdomain), got {prior!r}"
        )
    names = [str((folder / p).resolve()) if (folder / p).exists() else p for p in names]
    prior = names[0] if isinstance(prior, str) else tuple(names)
    return _spec(table, parts, overlap, prior, grid, where)


def _spec(table: dict, parts: list, overlap, prior, grid, where: str) -> DecompositionSpec:
    """The checked spec: the interface settings and the partition checked now."""
    solver = table.get("solver", "auto")
    interface = dict(_check_keys(table.get("interface", {}), _INTERFACE_KEYS, f"{where} interface"))
    from ..decomposition import InterfaceSettings

    InterfaceSettings(**interface)  # its checks, now
    spec = DecompositionSpec((parts[0], parts[1]), overlap, prior, solver, interface)
    partition = spec.partition(grid)  # the partition's checks, now
    if isinstance(prior, tuple) and len(prior) != len(partition):
        raise ValueError(
            f"{where} prior lists {len(prior)} priors for {len(partition)} subdomains; give one "
            "for all or one per subdomain"
        )
    return spec
