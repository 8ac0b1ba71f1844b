"""Inverse problems as folders: ``problems/<name>/problem.toml`` -> a validated `Problem`.

A problem names everything an inversion needs: the grid, the flow physics, the sensors, the
prior, the observed data (a CSV file next to the TOML), optionally the true field, and the
sampler's defaults. Layout (every key not marked optional is required; unknown keys anywhere
are errors)::

    name = "mdgm-gaussian"
    description = "..."                      # optional

    [grid]
    nx = 64
    ny = 64
    lx = 1.0                                 # optional, default 1
    ly = 1.0                                 # optional, default 1

    [physics]
    dirichlet = { left = 0.0, right = 0.0 }  # fixed pressures; other sides are no-flow
    source = 3.0                             # optional, default 0
    solver = "auto"                          # optional: "auto" | "direct" | "multigrid"

    [sensors]                                # exactly one of:
    lattice = 8                              # PointSensors.lattice(grid, 8)
    # file = "sensors.csv"                   # columns x,y

    [prior]                                  # a VAE checkpoint:
    name = "gaussian64"                      # a shipped name, or a path relative to the folder
    # or the Gaussian-field baseline:
    # kind = "gaussian-field"
    # mean, std, length_scale, kernel, nu, anisotropy, angle, method, num_modes (optional)

    [truth]                                  # optional
    file = "truth.txt"
    format = "log_k"                         # "log_k" (ny rows of nx values, row 0 at y = 0)
                                             # or "mdgm-k" (permeability K, rows as MDGM's)
    seed = 7                                 # optional, with generator: the truth was drawn
    generator = { kind = "gaussian", ... }   # from this vaeinv.fields config with this seed

    [data]
    file = "data.csv"                        # columns x,y,value,noise_std; '#' comments
    noise_kind = "absolute"                  # sd = the noise_std column, or "relative":
                                             # sd = noise_fraction * |value|
    noise_fraction = 0.05                    # how the data was made: sd = fraction * |clean|
    seed = 1                                 # and the seed of the noise (see make_data)

    [sampler]                                # defaults of `vaeinv invert`, all optional
    method = "pcn"
    num_chains = 4
    num_draws = 1000                         # iterations per chain after warm-up
    num_warmup = 1000
    thin = "auto"                            # or an integer: keep every thin-th iteration
    seed = 0
    chunk_size = 100
    [sampler.pcn]                            # options of one method, passed to vaeinv.sample
    target_accept = 0.25

The data file's sensor positions must be those of ``[sensors]``, in the same order.
[`make_data`][vaeinv.problems.make_data] regenerates it from the truth.
"""

from __future__ import annotations

import csv
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .grid import SIDES, Grid

__all__ = [
    "SAMPLER_OPTIONS",
    "PhysicsSpec",
    "PriorSpec",
    "Problem",
    "SamplerDefaults",
    "check_sampler_options",
    "list_problems",
    "load_problem",
    "make_data",
    "make_truth",
    "problems_folder",
    "read_truth",
]

_TOP_KEYS = (
    "name",
    "description",
    "grid",
    "physics",
    "sensors",
    "prior",
    "truth",
    "data",
    "sampler",
)
_GRID_KEYS = ("nx", "ny", "lx", "ly")
_PHYSICS_KEYS = ("dirichlet", "source", "solver")
_SENSOR_KEYS = ("lattice", "file")
_PRIOR_KEYS = ("name", "kind")
_FIELD_PRIOR_KEYS = (
    "mean",
    "std",
    "length_scale",
    "kernel",
    "nu",
    "anisotropy",
    "angle",
    "method",
    "num_modes",
)
_PRIOR_KINDS = ("vae", "gaussian-field")
_TRUTH_KEYS = ("file", "format", "seed", "generator")
_TRUTH_FORMATS = ("log_k", "mdgm-k")
_DATA_KEYS = ("file", "noise_kind", "noise_fraction", "seed")
_NOISE_KINDS = ("absolute", "relative")
_DATA_COLUMNS = ("x", "y", "value", "noise_std")
_METHODS = ("pcn", "gpcn", "nuts")
#: The options of each sampling method that a problem's ``[sampler.<method>]`` table (or
#: ``vaeinv invert --option``) may set; they are passed on to ``vaeinv.sample``.
SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {
    "pcn": ("step_size", "target_accept"),
    "gpcn": ("step_size", "target_accept", "inflation", "laplace_steps", "laplace_lr"),
    "nuts": (
        "target_accept",
        "max_tree_depth",
        "full_mass",
        "step_size",
        "mass",
        "laplace_steps",
        "laplace_lr",
    ),
}
_SAMPLER_KEYS = (
    "method",
    "num_chains",
    "num_draws",
    "num_warmup",
    "thin",
    "seed",
    "chunk_size",
    *_METHODS,
)
#: Position tolerance when matching the data file's sensors to ``[sensors]``.
_XY_TOL = 1e-9


def problems_folder() -> Path:
    """The ``problems/`` folder of the source tree (``<repo>/problems``)."""
    return Path(__file__).resolve().parents[2] / "problems"


def list_problems(folder: str | Path | None = None) -> list[str]:
    """Names of the problems in ``folder`` (default: ``./problems`` and ``<repo>/problems``)."""
    folders = [Path(folder)] if folder is not None else [Path("problems"), problems_folder()]
    names = {p.parent.name for f in folders if f.is_dir() for p in f.glob("*/problem.toml")}
    return sorted(names)


# ---------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class PhysicsSpec:
    """The flow problem: ``-div(k grad p) = source``, fixed pressures on ``dirichlet`` sides.

    Args:
        dirichlet: ``{side: pressure}``; sides not named are no-flow.
        source: the source term per unit area.
        solver: the [`DarcyFlow`][vaeinv.physics.DarcyFlow] solver.
    """

    dirichlet: dict[str, float]
    source: float = 0.0
    solver: str = "auto"

    def build(self, grid: Grid):
        """The [`DarcyFlow`][vaeinv.physics.DarcyFlow] on ``grid``."""
        from .physics import DarcyFlow

        return DarcyFlow(
            grid, dirichlet=dict(self.dirichlet), source=self.source, solver=self.solver
        )

    def config(self) -> dict[str, Any]:
        return {"dirichlet": dict(self.dirichlet), "source": self.source, "solver": self.solver}


@dataclass(frozen=True)
class PriorSpec:
    """Which prior a problem uses.

    Args:
        kind: ``"vae"`` (a checkpoint) or ``"gaussian-field"`` (the Gaussian-field baseline).
        name: for ``"vae"``: a shipped prior's name or a checkpoint path.
        options: for ``"gaussian-field"``: the keyword arguments of
            ``vaeinv.inference.GaussianFieldPrior`` (besides the grid).
    """

    kind: str
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, grid: Grid):
        """Load or build the prior; a Gaussian-field prior is built on ``grid``."""
        if self.kind == "vae":
            from .prior import Prior

            return Prior.load(self.name)
        from .inference.gaussian_prior import GaussianFieldPrior

        return GaussianFieldPrior(grid, **self.options)

    @property
    def label(self) -> str:
        return str(self.name) if self.kind == "vae" else "gaussian-field"

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.name is not None:
            out["name"] = self.name
        return out | dict(self.options)


@dataclass(frozen=True)
class SamplerDefaults:
    """A problem's default sampler settings (overridden by ``vaeinv invert`` flags).

    Args:
        method: ``"pcn"``, ``"gpcn"`` or ``"nuts"``.
        num_chains, num_draws, num_warmup, seed, chunk_size: as in ``vaeinv.sample``
            (``num_draws`` counts the iterations per chain after warm-up).
        thin: keep every ``thin``-th iteration (an integer in ``[1, num_draws]``), or
            ``"auto"`` (the runner picks the smallest that keeps the result under about 100 MB).
        options: per method, the options passed to ``vaeinv.sample`` (see `SAMPLER_OPTIONS`).
    """

    method: str = "pcn"
    num_chains: int = 4
    num_draws: int = 1000
    num_warmup: int = 1000
    thin: int | str = "auto"
    seed: int = 0
    chunk_size: int = 100
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options_for(self, method: str) -> dict[str, Any]:
        """The options of ``method`` (empty when the problem sets none)."""
        return dict(self.options.get(method, {}))


@dataclass(frozen=True, eq=False)
class Problem:
    """A validated inverse problem (see the module docstring for the file layout).

    Attributes:
        name: the problem's name.
        description: one line on what it is.
        folder: the folder holding ``problem.toml`` (relative paths are taken from it).
        grid: the grid.
        physics: the flow problem.
        sensors_xy: ``(m, 2)`` float64 sensor coordinates.
        prior: the prior.
        truth: the true ``log_k`` ``(ny, nx)`` float64, or ``None``.
        data: the observed values ``(m,)`` float64 (``None`` only when loaded with
            ``require_data=False`` and the file is missing).
        noise_std: the noise sd per sensor ``(m,)`` float64 (the file's column; for
            ``noise_kind="relative"``, ``noise_fraction * |data|``).
        noise_kind: ``"absolute"`` or ``"relative"``.
        noise_fraction: the relative noise level the data was generated with.
        data_seed: the seed of the data's noise.
        data_file: the data file's path.
        truth_spec: the ``[truth]`` table (``file``, ``format``, optional ``seed``, ``generator``).
        sampler_defaults: the ``[sampler]`` table.
    """

    name: str
    description: str
    folder: Path
    grid: Grid
    physics: PhysicsSpec
    sensors_xy: torch.Tensor
    prior: PriorSpec
    truth: torch.Tensor | None
    data: torch.Tensor | None
    noise_std: torch.Tensor | None
    noise_kind: str
    noise_fraction: float
    data_seed: int
    data_file: Path
    truth_spec: dict[str, Any] | None
    sampler_defaults: SamplerDefaults

    def __repr__(self) -> str:
        return (
            f"Problem({self.name!r}, {self.grid}, {self.num_sensors} sensors, "
            f"prior={self.prior.label!r})"
        )

    @property
    def num_sensors(self) -> int:
        return int(self.sensors_xy.shape[0])

    def build_physics(self):
        """A fresh [`DarcyFlow`][vaeinv.physics.DarcyFlow] for this problem."""
        return self.physics.build(self.grid)

    def build_sensors(self):
        """The [`PointSensors`][vaeinv.physics.PointSensors] of this problem."""
        from .physics import PointSensors

        return PointSensors(self.grid, self.sensors_xy)

    def build_prior(self, prior=None):
        """The problem's prior, or ``prior`` (a name, a checkpoint path or a prior object)."""
        if prior is None:
            return self.prior.build(self.grid)
        if isinstance(prior, str | Path):
            if str(prior) == "gaussian-field":
                return PriorSpec("gaussian-field").build(self.grid)
            from .prior import Prior

            return Prior.load(prior)
        return prior

    def posterior(self, prior=None, device=None):
        """The latent posterior of this problem.

        Args:
            prior: ``None`` for the problem's prior; otherwise a prior to use instead (a shipped
                name, a checkpoint path, ``"gaussian-field"`` for the default Gaussian-field
                prior, or a prior object).
            device: move the posterior there (default: the prior's device).

        Returns:
            a ``vaeinv.inference.Posterior``.

        Raises:
            ValueError: no data, or a prior whose grid is not the problem's (both named), or any
                check of the posterior's composition.
        """
        from .inference.posterior import Posterior

        if self.data is None:
            raise ValueError(f"problem {self.name!r} has no data file {str(self.data_file)!r}")
        the_prior = self.build_prior(prior)
        prior_grid = getattr(the_prior, "grid", None)
        if prior_grid != self.grid:
            label = getattr(the_prior, "name", None) or type(the_prior).__name__
            raise ValueError(
                f"the prior {label!r} is on {prior_grid} but problem {self.name!r} has its "
                f"physics on {self.grid}; choose a prior on the problem's grid"
            )
        if self.noise_kind == "relative":
            noise = self.noise_fraction
        else:
            noise = self.noise_std
        post = Posterior(
            the_prior,
            self.build_physics(),
            self.build_sensors(),
            self.data,
            noise,
            noise_kind=self.noise_kind,
            truth=self.truth,
        )
        return post if device is None else post.to(device)

    def attrs(self) -> dict[str, Any]:
        """What a run records about its problem (``vaeinv.sample``'s ``attrs``, part of the
        run's fingerprint; the data and noise themselves are hashed by the runner)."""
        return {
            "problem": self.name,
            "data_seed": self.data_seed,
            "noise_kind": self.noise_kind,
            "noise_fraction": self.noise_fraction,
        }


# ---------------------------------------------------------------------------- checks


def _check_keys(table: Any, known: tuple[str, ...], where: str) -> dict:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {table!r}")
    unknown = [k for k in table if k not in known]
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r} in {where}; expected keys: {', '.join(known)}"
        )
    return table


def _require(table: dict, key: str, where: str) -> Any:
    if key not in table:
        raise ValueError(f"{where} has no {key!r}")
    return table[key]


def _int(value: Any, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def _float(value: Any, name: str, *, positive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return float(value)


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _file(folder: Path, value: Any, name: str, must_exist: bool = True) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a file name, got {value!r}")
    path = (folder / value).resolve()
    if must_exist and not path.is_file():
        raise ValueError(f"{name} {value!r} does not exist (looked for {path})")
    return path


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "problem.toml"
    if path.is_file():
        return path
    name = str(name_or_path)
    if "/" not in name and "\\" not in name and not name.endswith(".toml"):
        for folder in (Path("problems"), problems_folder()):
            candidate = folder / name / "problem.toml"
            if candidate.is_file():
                return candidate
    known = list_problems()
    listing = f"known problems: {', '.join(known)}" if known else "no problems found"
    raise ValueError(
        f"unknown problem {name!r} (neither a problem name nor a folder or problem.toml file); "
        f"{listing}"
    )


# ---------------------------------------------------------------------------- tables


def _grid(raw: dict) -> Grid:
    table = _check_keys(_require(raw, "grid", "problem"), _GRID_KEYS, "[grid]")
    for key in ("nx", "ny"):
        _require(table, key, "[grid]")
    return Grid(**table)


def _physics(raw: dict, grid: Grid) -> PhysicsSpec:
    table = _check_keys(_require(raw, "physics", "problem"), _PHYSICS_KEYS, "[physics]")
    dirichlet = _require(table, "dirichlet", "[physics]")
    _check_keys(dirichlet, SIDES, "[physics] dirichlet")
    if not dirichlet:
        raise ValueError(f"[physics] dirichlet must name at least one side of {', '.join(SIDES)}")
    spec = PhysicsSpec(
        dirichlet={s: _float(v, f"[physics] dirichlet.{s}") for s, v in dirichlet.items()},
        source=_float(table.get("source", 0.0), "[physics] source"),
        solver=_choice(
            table.get("solver", "auto"), "[physics] solver", ("auto", "direct", "multigrid")
        ),
    )
    spec.build(grid)  # validates the set-up
    return spec


def _sensors(raw: dict, grid: Grid, folder: Path) -> torch.Tensor:
    from .physics import PointSensors

    table = _check_keys(_require(raw, "sensors", "problem"), _SENSOR_KEYS, "[sensors]")
    if len(table) != 1:
        raise ValueError(f"[sensors] needs exactly one of 'lattice' or 'file', got {sorted(table)}")
    if "lattice" in table:
        n = table["lattice"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= min(grid.nx, grid.ny):
            raise ValueError(
                f"[sensors] lattice must be an integer in [1, {min(grid.nx, grid.ny)}], got {n!r}"
            )
        return PointSensors.lattice(grid, n).xy
    path = _file(folder, table["file"], "[sensors] file")
    rows = _read_csv(path, ("x", "y"))
    return PointSensors(grid, np.array([[r["x"], r["y"]] for r in rows])).xy


def _prior(raw: dict, folder: Path) -> PriorSpec:
    table = _require(raw, "prior", "problem")
    if not isinstance(table, dict):
        raise ValueError(f"[prior] must be a table, got {table!r}")
    kind = _choice(table.get("kind", "vae"), "[prior] kind", _PRIOR_KINDS)
    if kind == "vae":
        _check_keys(table, _PRIOR_KEYS, "[prior] (kind 'vae')")
        name = _require(table, "name", "[prior]")
        if not isinstance(name, str) or not name:
            raise ValueError(f"[prior] name must be a prior name or path, got {name!r}")
        local = folder / name
        return PriorSpec("vae", str(local.resolve()) if local.exists() else name)
    _check_keys(table, ("kind", *_FIELD_PRIOR_KEYS), "[prior] (kind 'gaussian-field')")
    options = {k: v for k, v in table.items() if k != "kind"}
    if isinstance(options.get("length_scale"), list):
        raise ValueError(
            f"[prior] length_scale must be one positive number (a fixed length scale), "
            f"got {options['length_scale']!r}"
        )
    return PriorSpec("gaussian-field", None, options)


def _truth(raw: dict, grid: Grid, folder: Path, require: bool) -> tuple[Any, dict | None]:
    if "truth" not in raw:
        return None, None
    table = _check_keys(raw["truth"], _TRUTH_KEYS, "[truth]")
    fmt = _choice(table.get("format", "log_k"), "[truth] format", _TRUTH_FORMATS)
    spec = dict(table) | {"format": fmt}
    if "generator" in table:
        from .fields import generator_from_config

        gen = generator_from_config(table["generator"])
        if gen.grid != grid:
            raise ValueError(f"[truth] generator is on {gen.grid}, the problem on {grid}")
        if fmt != "log_k":
            raise ValueError("[truth] with a generator must have format 'log_k'")
        spec["seed"] = _int(
            _require(table, "seed", "[truth] (with a generator)"), "[truth] seed", 0
        )
    elif "seed" in table:
        raise ValueError("[truth] seed needs a generator (the config the truth was drawn from)")
    path = _file(folder, _require(table, "file", "[truth]"), "[truth] file", must_exist=require)
    spec["path"] = path
    if not path.is_file():
        return None, spec
    return read_truth(path, fmt, grid), spec


def read_truth(path: str | Path, fmt: str, grid: Grid) -> torch.Tensor:
    """Read a truth file as ``log_k`` ``(ny, nx)`` float64.

    Args:
        path: whitespace-separated text, ``ny`` rows of ``nx`` values, row ``i`` at ``y_i``.
        fmt: ``"log_k"`` (values are log-permeability) or ``"mdgm-k"`` (permeability, as the
            MDGM benchmark files; the log is taken).
        grid: the problem's grid.

    Raises:
        ValueError: a shape other than the grid's, non-finite values, non-positive permeability.
    """
    _choice(fmt, "[truth] format", _TRUTH_FORMATS)
    try:
        values = np.loadtxt(path, dtype=float, ndmin=2)
    except ValueError as err:
        raise ValueError(f"truth file {path} is not a whitespace-separated table: {err}") from None
    if values.shape != grid.shape:
        raise ValueError(
            f"truth file {path} holds {values.shape[0]} x {values.shape[1]} values, expected "
            f"{grid.ny} x {grid.nx} (ny x nx) for {grid}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"truth file {path} has non-finite values")
    if fmt == "mdgm-k":
        if np.any(values <= 0):
            raise ValueError(f"truth file {path} (format 'mdgm-k') has non-positive permeability")
        values = np.log(values)
    return torch.as_tensor(values, dtype=torch.float64)


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, float]]:
    """Rows of a CSV file with a header naming (at least) ``columns``; ``#`` lines skipped."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(
            f"{path.name} has no column {missing[0]!r}; its header is {header}, expected "
            f"columns {', '.join(columns)}"
        )
    extra = [h for h in header if h not in columns]
    if extra:
        raise ValueError(
            f"{path.name} has an unknown column {extra[0]!r}; expected columns {', '.join(columns)}"
        )
    rows = []
    for i, row in enumerate(reader):
        out = {}
        for c in columns:
            text = (row.get(c) or "").strip() if isinstance(row.get(c), str) else row.get(c)
            try:
                out[c] = float(text)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{path.name} row {i} (sensor {i}): {c} = {text!r} is not a number"
                ) from None
        rows.append(out)
    if not rows:
        raise ValueError(f"{path.name} has no rows")
    return rows


def _data(raw: dict, folder: Path, sensors_xy: torch.Tensor, require: bool):
    table = _check_keys(_require(raw, "data", "problem"), _DATA_KEYS, "[data]")
    noise_kind = _choice(table.get("noise_kind", "absolute"), "[data] noise_kind", _NOISE_KINDS)
    fraction = _float(
        _require(table, "noise_fraction", "[data]"), "[data] noise_fraction", positive=True
    )
    seed = _int(_require(table, "seed", "[data]"), "[data] seed", 0)
    path = _file(folder, _require(table, "file", "[data]"), "[data] file", must_exist=require)
    meta = {"noise_kind": noise_kind, "noise_fraction": fraction, "seed": seed, "path": path}
    if not path.is_file():
        return None, None, meta
    rows = _read_csv(path, _DATA_COLUMNS)
    m = sensors_xy.shape[0]
    if len(rows) != m:
        raise ValueError(
            f"{path.name} has {len(rows)} data rows but [sensors] defines {m} sensors; "
            "expected one row per sensor"
        )
    for i, r in enumerate(rows):
        if not math.isfinite(r["value"]):
            raise ValueError(
                f"{path.name} row {i} (sensor {i}): value is {r['value']}; expected a finite number"
            )
        sd = r["noise_std"]
        if noise_kind == "absolute" and not (math.isfinite(sd) and sd > 0):
            raise ValueError(
                f"{path.name} row {i} (sensor {i}): noise_std is {sd}; expected a positive "
                "finite noise standard deviation"
            )
        sx, sy = (float(v) for v in sensors_xy[i])
        if abs(r["x"] - sx) > _XY_TOL or abs(r["y"] - sy) > _XY_TOL:
            raise ValueError(
                f"{path.name} row {i} is at ({r['x']}, {r['y']}) but sensor {i} of [sensors] is at "
                f"({sx}, {sy}); the data rows must follow the sensors in order"
            )
    data = torch.tensor([r["value"] for r in rows], dtype=torch.float64)
    if noise_kind == "relative":
        noise = fraction * data.abs()
        bad = (noise <= 0).nonzero().flatten().tolist()
        if bad:
            raise ValueError(
                f"{path.name} row {bad[0]} (sensor {bad[0]}): value 0 gives a relative noise sd "
                f"of 0; expected non-zero data with noise_kind 'relative'"
            )
    else:
        noise = torch.tensor([r["noise_std"] for r in rows], dtype=torch.float64)
    return data, noise, meta


def _sampler(raw: dict) -> SamplerDefaults:
    table = _check_keys(raw.get("sampler", {}), _SAMPLER_KEYS, "[sampler]")
    base = SamplerDefaults()
    kwargs: dict[str, Any] = {}
    if "method" in table:
        kwargs["method"] = _choice(table["method"], "[sampler] method", _METHODS)
    for key, least in (
        ("num_chains", 1),
        ("num_draws", 1),
        ("num_warmup", 0),
        ("seed", 0),
        ("chunk_size", 1),
    ):
        if key in table:
            kwargs[key] = _int(table[key], f"[sampler] {key}", least)
    if "thin" in table:
        thin = table["thin"]
        if thin != "auto":
            if isinstance(thin, str):
                raise ValueError(f"[sampler] thin must be 'auto' or an integer >= 1, got {thin!r}")
            thin = _int(thin, "[sampler] thin", 1)
            num_draws = kwargs.get("num_draws", base.num_draws)
            if thin > num_draws:
                raise ValueError(
                    f"[sampler] thin = {thin} is larger than num_draws = {num_draws}: no draw "
                    "would be kept; expected thin <= num_draws"
                )
        kwargs["thin"] = thin
    options = {}
    for method in _METHODS:
        if method in table:
            options[method] = check_sampler_options(method, table[method], f"[sampler.{method}]")
    return SamplerDefaults(**{**base.__dict__, **kwargs, "options": options})


def check_sampler_options(method: str, options: Any, where: str = "sampler options") -> dict:
    """Check a method's sampler options (names from `SAMPLER_OPTIONS`, values by type).

    Raises:
        ValueError: an unknown method or option (the valid ones listed), or a bad value.
    """
    _choice(method, "method", _METHODS)
    _check_keys(options, SAMPLER_OPTIONS[method], f"{where} (options of {method!r})")
    out = dict(options)
    for key, value in options.items():
        if key == "target_accept":
            v = _float(value, f"{where} target_accept")
            if not 0 < v < 1:
                raise ValueError(f"{where} target_accept must be in (0, 1), got {value!r}")
        elif key == "step_size":
            v = _float(value, f"{where} step_size", positive=True)
            if method in ("pcn", "gpcn") and v > 1:
                raise ValueError(f"{where} step_size (pCN beta) must be in (0, 1], got {value!r}")
        elif key in ("inflation", "laplace_lr"):
            _float(value, f"{where} {key}", positive=True)
        elif key == "laplace_steps":
            _int(value, f"{where} laplace_steps", 0)
        elif key == "max_tree_depth":
            _int(value, f"{where} max_tree_depth", 1)
        elif key == "mass":
            _choice(value, f"{where} mass", ("adapt", "laplace"))
        elif key == "full_mass" and not isinstance(value, bool):
            raise ValueError(f"{where} full_mass must be true or false, got {value!r}")
    return out


# ---------------------------------------------------------------------------- loading


def load_problem(name_or_path: str | Path, *, require_data: bool = True) -> Problem:
    """Read and validate a problem.

    Args:
        name_or_path: a problem name (a folder of ``./problems`` or of the source tree's
            ``problems/``), a problem folder, or its ``problem.toml``.
        require_data: if false, a missing data or truth file is allowed (the problem then has
            ``data=None`` / ``truth=None``; used by [`make_data`][vaeinv.problems.make_data]).

    Returns:
        The problem.

    Raises:
        ValueError: an unknown problem, invalid TOML, an unknown or missing key (the valid ones
            listed), a bad value (named), a data file whose rows do not match the sensors, NaN
            data, or non-positive noise.
    """
    path = _resolve(name_or_path)
    folder = path.parent
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    _check_keys(raw, _TOP_KEYS, f"problem file {path}")
    name = _require(raw, "name", f"problem file {path}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ValueError(f"description must be a string, got {description!r}")
    grid = _grid(raw)
    physics = _physics(raw, grid)
    sensors_xy = _sensors(raw, grid, folder)
    prior = _prior(raw, folder)
    truth, truth_spec = _truth(raw, grid, folder, require_data)
    data, noise_std, meta = _data(raw, folder, sensors_xy, require_data)
    return Problem(
        name=name,
        description=description,
        folder=folder,
        grid=grid,
        physics=physics,
        sensors_xy=sensors_xy,
        prior=prior,
        truth=truth,
        data=data,
        noise_std=noise_std,
        noise_kind=meta["noise_kind"],
        noise_fraction=meta["noise_fraction"],
        data_seed=meta["seed"],
        data_file=meta["path"],
        truth_spec=truth_spec,
        sampler_defaults=_sampler(raw),
    )


# ---------------------------------------------------------------------------- generating


def make_truth(problem: Problem, path: str | Path | None = None) -> Path:
    """Redraw a problem's truth file from its ``[truth]`` generator and seed.

    Args:
        problem: the problem.
        path: where to write; default the problem's truth file.

    Returns:
        the truth file's path.

    Raises:
        ValueError: a problem without ``[truth] generator``.
    """
    from .fields import generator_from_config

    spec = problem.truth_spec
    if not spec or "generator" not in spec:
        raise ValueError(f"problem {problem.name!r} has no [truth] generator to draw a truth from")
    gen = generator_from_config(spec["generator"])
    log_k = gen.sample(1, torch.Generator().manual_seed(spec["seed"]), dtype=torch.float64)[0]
    path = Path(spec["path"] if path is None else path)
    header = (
        f"log_k on {problem.grid.ny} x {problem.grid.nx} cells (row i at y_i), drawn by "
        f"vaeinv.problems.make_truth with seed {spec['seed']} from {spec['generator']}"
    )
    np.savetxt(path, log_k.numpy(), fmt="%.10g", header=header)
    return path


def make_data(problem: Problem, seed: int | None = None, path: str | Path | None = None) -> Path:
    """Regenerate a problem's data file from its truth with the flow solver.

    ``clean = sensors(solve(truth))``; ``noise_std = noise_fraction * |clean|``;
    ``value = clean + noise_std * e`` with ``e ~ N(0, I)`` from ``torch.Generator`` seeded by
    ``seed``. The file records the seed and the noise level in its comment lines.

    Args:
        problem: the problem (its truth must be known).
        seed: the noise seed; default the problem's ``[data] seed``.
        path: where to write; default the problem's data file.

    Returns:
        the path written.

    Raises:
        ValueError: a problem without a truth.
    """
    if problem.truth is None:
        raise ValueError(f"problem {problem.name!r} has no truth to generate data from")
    seed = problem.data_seed if seed is None else _int(seed, "seed", 0)
    with torch.no_grad():
        pressure = problem.build_physics().solve(problem.truth)
        clean = problem.build_sensors()(pressure)
    noise_std = problem.noise_fraction * clean.abs()
    gen = torch.Generator().manual_seed(seed)
    values = clean + noise_std * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    path = Path(problem.data_file if path is None else path)
    xy = problem.sensors_xy.numpy()
    lines = [
        f"# {problem.name}: pressures -div(k grad p) = {problem.physics.source:g} at the sensors, "
        f"from the truth by vaeinv.problems.make_data",
        f"# noise: sd = {problem.noise_fraction:g} * |clean value|, seed {seed}",
        ",".join(_DATA_COLUMNS),
    ]
    for (x, y), v, sd in zip(xy, values.tolist(), noise_std.tolist(), strict=True):
        lines.append(f"{x:.17g},{y:.17g},{v:.17g},{sd:.17g}")
    path.write_text("\n".join(lines) + "\n")
    return path
