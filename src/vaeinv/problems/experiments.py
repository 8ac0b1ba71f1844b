"""Wells, observation types and several experiments in a problem file (hydraulic tomography).

A problem is one or more experiments on the same field. Without ``[[experiment]]`` tables it
is one experiment: the ``[physics]`` flow (its ``wells`` included), the ``[observations]``
(default: heads at the ``[sensors]``), the ``[data]`` file. With them, each experiment is its own
flow test on the field; the likelihood is the product over experiments::

    [physics]                       # what every experiment shares unless it says otherwise
    dirichlet = { left = 0.0, right = 0.0 }
    wells = [ { x = 0.5, y = 0.5, rate = -1.0 } ]     # optional: rate < 0 pumps, > 0 injects

    [observations]                  # optional, what every experiment observes
    heads = true                    # heads at the [sensors] (observation wells); default true
    differences = [ [0.1, 0.5, 0.9, 0.5] ]            # optional: p(x1, y1) - p(x2, y2)
    fluxes = ["left"]               # optional: total outward flux through sides

    [[experiment]]
    name = "pump-1"
    wells = [ { x = 0.25, y = 0.25, rate = -1.0 } ]   # this test's wells (replace [physics]')
    # dirichlet = {...}, source = ..., observations = {...} override the shared ones
    data = "pump-1.csv"             # columns kind,value,noise_std: one row per value, in order
    noise_fraction = 0.02           # how make_data made it: sd = fraction * max |clean| of a kind
    seed = 1

A data file of an experiment lists the values in the order heads, head differences, fluxes,
each row naming its ``kind`` (``head``, ``head-difference``, ``flux``); a problem without
``[observations]`` or ``[[experiment]]`` keeps the classic ``x,y,value,noise_std`` file of its
sensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..grid import SIDES, Grid
from ._checks import _check_keys, _dirichlet, _file, _float, _int, _require
from .spec import PhysicsSpec

__all__ = [
    "EXPERIMENT_COLUMNS",
    "ExperimentSpec",
    "ObservationSpec",
    "experiment_noise",
    "joined_data",
    "parse_experiments",
    "parse_observations",
    "parse_wells",
    "read_experiment_data",
    "single_experiment",
]

_OBSERVATION_KEYS = ("heads", "differences", "fluxes")
_EXPERIMENT_KEYS = (
    "name", "dirichlet", "source", "wells", "observations", "data", "noise_fraction", "seed",
)  # fmt: skip
_WELL_KEYS = ("x", "y", "rate")
#: the columns of an experiment's data file
EXPERIMENT_COLUMNS = ("kind", "value", "noise_std")


@dataclass(frozen=True, eq=False)
class ObservationSpec:
    """What an experiment observes: heads at points, head differences, fluxes through sides.

    Attributes:
        heads: ``(m1, 2)`` float64 points, or ``None``.
        differences: ``(m2, 4)`` float64 pairs ``x1, y1, x2, y2``, or ``None``.
        fluxes: side names.
    """

    heads: torch.Tensor | None
    differences: torch.Tensor | None = None
    fluxes: tuple[str, ...] = ()

    def build(self, grid: Grid):
        """The [`Observations`][vaeinv.physics.observations.Observations] on ``grid``."""
        from ..physics.observations import Observations

        return Observations(grid, self.heads, self.differences, self.fluxes)

    @property
    def kinds(self) -> list[str]:
        """The kind of each value, in order (heads, head differences, fluxes)."""
        heads = 0 if self.heads is None else self.heads.shape[0]
        pairs = 0 if self.differences is None else self.differences.shape[0]
        return ["head"] * heads + ["head-difference"] * pairs + ["flux"] * len(self.fluxes)


@dataclass(frozen=True, eq=False)
class ExperimentSpec:
    """One flow test on the problem's field: its flow, its observations and its data.

    Attributes:
        name: the experiment's name.
        physics: its flow (boundary conditions, source, wells).
        observations: what it observes.
        data: ``(m,)`` float64 observed values, or ``None`` (no file yet).
        noise_std: ``(m,)`` float64 absolute noise sd per value, or ``None``.
        noise_fraction: how ``make_data`` made the noise.
        data_seed: the seed of the noise.
        data_file: the data file.
    """

    name: str
    physics: PhysicsSpec
    observations: ObservationSpec
    data: torch.Tensor | None
    noise_std: torch.Tensor | None
    noise_fraction: float
    data_seed: int
    data_file: Path

    @property
    def kinds(self) -> list[str]:
        return self.observations.kinds


def parse_wells(value: Any, grid: Grid, where: str) -> tuple[tuple[float, float, float], ...]:
    """``[{x, y, rate}, ...]`` checked: inside the domain, finite, one well per cell."""
    if not isinstance(value, list):
        raise ValueError(f"{where} wells must be a list of {{x, y, rate}} tables, got {value!r}")
    wells, cells = [], {}
    for i, table in enumerate(value):
        label = f"{where} wells[{i}]"
        _check_keys(table, _WELL_KEYS, label)
        x, y, rate = (_float(_require(table, k, label), f"{label}.{k}") for k in _WELL_KEYS)
        if not grid.contains(x, y):
            raise ValueError(f"{label} at ({x}, {y}) lies outside the domain {grid.domain}")
        cell = grid.cell_of(x, y)
        if cell in cells:
            raise ValueError(
                f"{label} at ({x}, {y}) is in cell (iy, ix) = {cell}, as wells[{cells[cell]}]: "
                "expected one well per cell (merge their rates)"
            )
        cells[cell] = i
        wells.append((x, y, rate))
    return tuple(wells)


def parse_observations(table: Any, sensors_xy: torch.Tensor, grid: Grid, where: str):
    """An ``[observations]`` table (``None``: heads at the sensors)."""
    if table is None:
        return ObservationSpec(sensors_xy)
    _check_keys(table, _OBSERVATION_KEYS, where)
    heads = table.get("heads", True)
    if not isinstance(heads, bool):
        raise ValueError(f"{where} heads must be true (at the [sensors]) or false, got {heads!r}")
    pairs = table.get("differences")
    if pairs is not None:
        try:  # the shape is checked by Observations below
            pairs = torch.tensor(pairs, dtype=torch.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where} differences must be rows [x1, y1, x2, y2]") from None
    fluxes = table.get("fluxes", [])
    if not isinstance(fluxes, list) or not all(isinstance(s, str) for s in fluxes):
        raise ValueError(f"{where} fluxes must be a list of sides {SIDES}, got {fluxes!r}")
    spec = ObservationSpec(sensors_xy if heads else None, pairs, tuple(fluxes))
    try:
        spec.build(grid)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return spec


def parse_experiments(
    raw: dict, grid: Grid, base: PhysicsSpec, sensors_xy, folder: Path, require: bool
) -> tuple[ExperimentSpec, ...]:
    """The ``[[experiment]]`` tables as `ExperimentSpec`s (``base``: the ``[physics]``;
    ``sensors_xy``: the heads' points)."""
    shared = parse_observations(raw.get("observations"), sensors_xy, grid, "[observations]")
    tables = raw["experiment"]
    if not isinstance(tables, list) or not tables:
        raise ValueError("[[experiment]] must be one or more tables")
    if "data" in raw:
        raise ValueError(
            "a problem with [[experiment]] tables has no [data] table: each experiment names "
            "its own data file"
        )
    out, names = [], set()
    for i, table in enumerate(tables):
        where = f"[[experiment]] {i + 1}"
        _check_keys(table, _EXPERIMENT_KEYS, where)
        name = _require(table, "name", where)
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"{where} name must be a new non-empty string, got {name!r}")
        names.add(name)
        where = f"[[experiment]] {name!r}"
        physics = _experiment_physics(table, grid, base, where)
        seen = shared
        if "observations" in table:
            seen = parse_observations(table["observations"], sensors_xy, grid, where)
        _check_observed(seen, physics, grid, where)
        out.append(_experiment(table, name, physics, seen, folder, require, where))
    return tuple(out)


def single_experiment(raw: dict, name: str, grid: Grid, physics: PhysicsSpec, sensors_xy,
                      folder: Path, require: bool) -> ExperimentSpec:  # fmt: skip
    """The one experiment of a problem with ``[observations]`` but no ``[[experiment]]``: the
    ``[physics]`` flow, the ``[data]`` table (its file in the experiments' format)."""
    seen = parse_observations(raw["observations"], sensors_xy, grid, "[observations]")
    table = dict(_require(raw, "data", "problem"))
    if table.pop("noise_kind", "absolute") != "absolute":
        raise ValueError(
            "[data] noise_kind must be 'absolute' with [observations]: the file's noise_std "
            "column gives each value's sd"
        )
    table["data"] = _require(table, "file", "[data]")
    table.pop("file")
    _check_observed(seen, physics, grid, "[observations]")
    return _experiment(table, name, physics, seen, folder, require, "[data]")


def _check_observed(seen: ObservationSpec, physics: PhysicsSpec, grid: Grid, where: str) -> None:
    """Raise unless every flux observed goes through a side with fixed pressures."""
    try:
        seen.build(grid).check_flow(physics.build(grid))
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def joined_data(experiments) -> tuple[torch.Tensor | None, torch.Tensor | None, dict]:
    """The problem's ``data``, ``noise_std`` (every experiment's, in order) and data record."""
    first = experiments[0]
    meta = {"noise_kind": "absolute", "noise_fraction": first.noise_fraction}
    meta.update(seed=first.data_seed, path=first.data_file)
    if any(e.data is None for e in experiments):
        return None, None, meta
    data = torch.cat([e.data for e in experiments])
    return data, torch.cat([e.noise_std for e in experiments]), meta


def _experiment_physics(table: dict, grid: Grid, base: PhysicsSpec, where: str) -> PhysicsSpec:
    wells = parse_wells(table["wells"], grid, where) if "wells" in table else base.wells
    return PhysicsSpec(
        dirichlet=_dirichlet(table.get("dirichlet", base.dirichlet), where),
        source=_float(table.get("source", base.source), f"{where} source"),
        solver=base.solver,
        rtol=base.rtol,
        wells=wells,
    )


def _experiment(table, name, physics, seen, folder, require, where) -> ExperimentSpec:
    fraction = _float(
        _require(table, "noise_fraction", where), f"{where} noise_fraction", positive=True
    )
    seed = _int(_require(table, "seed", where), f"{where} seed", 0)
    path = _file(folder, _require(table, "data", where), f"{where} data", must_exist=require)
    data = noise = None
    if path.is_file():
        data, noise = read_experiment_data(path, seen.kinds)
    return ExperimentSpec(name, physics, seen, data, noise, fraction, seed, path)


def read_experiment_data(path: Path, kinds: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """An experiment's data file: one row per value in the order of ``kinds``."""
    import csv

    from ..physics.observations import KINDS

    with open(path, newline="") as handle:
        lines = [line for line in handle if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if header != list(EXPERIMENT_COLUMNS):
        raise ValueError(
            f"{path.name} has columns {header}; expected {', '.join(EXPERIMENT_COLUMNS)}"
        )
    rows = list(reader)
    if len(rows) != len(kinds):
        raise ValueError(
            f"{path.name} has {len(rows)} data rows but the experiment observes {len(kinds)} "
            f"values ({_count(kinds)}); expected one row per value"
        )
    values, sds = [], []
    for i, (row, kind) in enumerate(zip(rows, kinds, strict=True)):
        got = (row.get("kind") or "").strip()
        if got not in KINDS:
            raise ValueError(f"{path.name} row {i}: unknown kind {got!r}; known kinds: {KINDS}")
        if got != kind:
            raise ValueError(
                f"{path.name} row {i} is a {got!r} but the experiment's value {i} is a {kind!r} "
                "(heads first, then head differences, then fluxes)"
            )
        value, sd = _number(row, "value", path, i), _number(row, "noise_std", path, i)
        if not (math.isfinite(sd) and sd > 0):
            raise ValueError(f"{path.name} row {i}: noise_std is {sd}; expected a positive sd")
        values.append(value)
        sds.append(sd)
    return torch.tensor(values, dtype=torch.float64), torch.tensor(sds, dtype=torch.float64)


def _number(row: dict, column: str, path: Path, i: int) -> float:
    text = (row.get(column) or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path.name} row {i}: {column} = {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{path.name} row {i}: {column} is {value}; expected a finite number")
    return value


def _count(kinds: list[str]) -> str:
    return ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))


def experiment_noise(clean: torch.Tensor, kinds: list[str], fraction: float) -> torch.Tensor:
    """``make_data``'s noise sd of an experiment's values: ``fraction`` times the largest
    ``|clean|`` of the same kind (a drawdown far from the pumped well is near 0: its noise is
    that of the gauges, not a fraction of its own value)."""
    sd = torch.empty_like(clean)
    for kind in dict.fromkeys(kinds):
        mask = torch.tensor([k == kind for k in kinds])
        sd[mask] = fraction * clean[mask].abs().max().clamp_min(1e-12)
    return sd
