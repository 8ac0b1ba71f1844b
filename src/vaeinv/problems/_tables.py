"""Each table of ``problem.toml`` read and checked into its part of a `Problem`."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..grid import Grid
from ._checks import (
    _DATA_COLUMNS,
    _DATA_KEYS,
    _FIELD_PRIOR_KEYS,
    _GRID_KEYS,
    _MULTILEVEL_KEYS,
    _NOISE_KINDS,
    _PHYSICS_KEYS,
    _PRIOR_KEYS,
    _PRIOR_KINDS,
    _SENSOR_KEYS,
    _TRUTH_FORMATS,
    _TRUTH_KEYS,
    _XY_TOL,
    MULTILEVEL_LATENTS,
    _check_keys,
    _choice,
    _dirichlet,
    _file,
    _float,
    _int,
    _require,
    check_sampler_options,
    problem_methods,
    sampler_keys,
)
from .experiments import parse_wells
from .files import _read_csv, read_truth
from .spec import MultilevelSpec, PhysicsSpec, PriorSpec, SamplerDefaults, method_budget


def _grid(raw: dict) -> Grid:
    table = _check_keys(_require(raw, "grid", "problem"), _GRID_KEYS, "[grid]")
    for key in ("nx", "ny"):
        _require(table, key, "[grid]")
    return Grid(**table)


def _physics(raw: dict, grid: Grid) -> PhysicsSpec:
    table = _check_keys(_require(raw, "physics", "problem"), _PHYSICS_KEYS, "[physics]")
    spec = PhysicsSpec(
        dirichlet=_dirichlet(_require(table, "dirichlet", "[physics]"), "[physics]"),
        source=_float(table.get("source", 0.0), "[physics] source"),
        solver=_choice(
            table.get("solver", "auto"), "[physics] solver", ("auto", "direct", "multigrid")
        ),
        rtol=_rtol(table.get("rtol", "noise")),
        wells=parse_wells(table.get("wells", []), grid, "[physics]"),
    )
    spec.build(grid)  # validates the set-up
    return spec


def _rtol(value) -> float | None:
    if value == "noise":
        return None
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if not (number and 0 < value < 1):
        raise ValueError(f'[physics] rtol must be "noise" or a number in (0, 1), got {value!r}')
    return float(value)


def _sensors(raw: dict, grid: Grid, folder: Path) -> torch.Tensor:
    from ..physics import PointSensors

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
        from ..fields import generator_from_config

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
    table = _check_keys(raw.get("sampler", {}), sampler_keys(), "[sampler]")
    base = SamplerDefaults()
    kwargs: dict[str, Any] = {}
    if "method" in table:
        kwargs["method"] = _choice(table["method"], "[sampler] method", problem_methods())
    for key, least in (
        ("num_chains", 1),
        ("num_draws", 1),
        ("num_warmup", 0),
        ("seed", 0),
        ("chunk_size", 1),
    ):
        if key in table:
            kwargs[key] = _int(table[key], f"[sampler] {key}", least)
    # a budget not written down is the method's own (pCN needs far more, cheaper iterations)
    budget = method_budget(kwargs.get("method", base.method))
    for key, value in zip(("num_chains", "num_draws", "num_warmup"), budget, strict=True):
        kwargs.setdefault(key, value)
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
    for method in problem_methods():
        if method in table:
            options[method] = check_sampler_options(method, table[method], f"[sampler.{method}]")
    return SamplerDefaults(**{**base.__dict__, **kwargs, "options": options})


def _multilevel(raw: dict, grid: Grid, folder: Path) -> MultilevelSpec | None:
    if "multilevel" not in raw:
        return None
    table = _check_keys(raw["multilevel"], _MULTILEVEL_KEYS, "[multilevel]")
    latent = table.get("latent", "levels")
    if latent not in MULTILEVEL_LATENTS:
        raise ValueError(
            f"[multilevel] latent must be one of {list(MULTILEVEL_LATENTS)}, got {latent!r}"
        )
    shared = latent == "shared"
    prior = table.get("prior") if shared else _require(table, "prior", "[multilevel]")
    if shared and "levels" not in table:
        raise ValueError('[multilevel] latent = "shared" needs levels = [coarsest, ..., fine]')
    if prior is not None:
        if not isinstance(prior, str) or not prior:
            what = "a prior's" if shared else "a multiscale prior's"
            raise ValueError(f"[multilevel] prior must be {what} name, got {prior!r}")
        local = folder / prior
        prior = str(local.resolve()) if local.exists() else prior
    levels = table.get("levels")
    if levels is not None:
        ok = isinstance(levels, list) and len(levels) >= 2
        ok = ok and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in levels)
        if not ok or any(a >= b for a, b in itertools.pairwise(levels)):
            raise ValueError(
                f"[multilevel] levels must list two or more growing grid sizes, got {levels!r}"
            )
        if levels[-1] != grid.ny:
            raise ValueError(
                f"[multilevel] levels must end with the problem's grid size {grid.ny}, "
                f"got {levels!r}"
            )
        levels = tuple(levels)
    return MultilevelSpec(prior, levels, latent)
