"""The ``[decomposition]`` table of a problem file: a domain-decomposed inversion (DD-VAE).

```toml
[decomposition]
parts = [2, 2]               # subdomains along x and y; each must divide the grid
overlap = 8                  # cells added on each interface side of a core
prior = "gaussian-patch72"   # the local prior (a name or a folder next to problem.toml), or
                             # a list of them, one per subdomain (row by row from lower left)
solver = "auto"              # the local Darcy solver

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

__all__ = ["DecompositionSpec", "parse_decomposition"]

_KEYS = ("parts", "overlap", "prior", "solver", "interface")
_INTERFACE_KEYS = ("pilot_rounds", "target_fraction", "max_points", "fit_steps", "map_steps")


@dataclass(frozen=True)
class DecompositionSpec:
    """The ``[decomposition]`` table (module docstring)."""

    parts: tuple[int, int]
    overlap: int
    prior: str | tuple[str, ...]
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
        return Decomposition.prepare(
            self.partition(problem.grid),
            self.prior if isinstance(self.prior, str) else list(self.prior),
            problem.build_physics(),
            problem.build_sensors(),
            problem.data.numpy(),
            problem.noise_std.numpy(),
            truth=problem.truth,
            interface=InterfaceSettings(**self.interface),
            solver=self.solver,
        )

    def config(self) -> dict[str, Any]:
        prior = self.prior if isinstance(self.prior, str) else list(self.prior)
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
    names = prior if isinstance(prior, list) else [prior]
    if not names or not all(isinstance(p, str) and p for p in names):
        raise ValueError(
            f"{where} prior must be a local prior's name or folder, or a list of them (one per "
            f"subdomain), got {prior!r}"
        )
    names = [str((folder / p).resolve()) if (folder / p).exists() else p for p in names]
    solver = table.get("solver", "auto")
    interface = dict(_check_keys(table.get("interface", {}), _INTERFACE_KEYS, f"{where} interface"))
    from ..decomposition import InterfaceSettings

    InterfaceSettings(**interface)  # its checks, now
    prior = names[0] if isinstance(prior, str) else tuple(names)
    spec = DecompositionSpec((parts[0], parts[1]), overlap, prior, solver, interface)
    partition = spec.partition(grid)  # the partition's checks, now
    if not isinstance(prior, str) and len(prior) != len(partition):
        raise ValueError(
            f"{where} prior lists {len(prior)} priors for {len(partition)} subdomains; give one "
            "for all or one per subdomain"
        )
    return spec
