"""The keys a problem file may hold, and the checks of its values (errors name the bad value)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..kernels import registry
from ..priors.gaussian_field import CONFIG_KEYS as _GAUSSIAN_FIELD_KEYS

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
    "multilevel",
    "decomposition",
    "observations",
    "experiment",
)
_MULTILEVEL_KEYS = ("prior", "levels", "latent")
#: how the levels of [multilevel] share the latent
MULTILEVEL_LATENTS = ("levels", "shared")
#: the kernel inputs a problem file can provide (coarse posteriors from [multilevel])
PROBLEM_INPUTS = ("coarse",)
_GRID_KEYS = ("nx", "ny", "lx", "ly")
_PHYSICS_KEYS = ("dirichlet", "source", "solver", "rtol", "wells")
_SENSOR_KEYS = ("lattice", "file")
_PRIOR_KEYS = ("name", "kind")
#: what ``[prior]`` of kind "gaussian-field" may set: GaussianFieldPrior's own settings, but for
#: the grid (the problem's) and the dtype (float64 in inversions)
_FIELD_PRIOR_KEYS = tuple(k for k in _GAUSSIAN_FIELD_KEYS if k not in ("kind", "grid", "dtype"))
_PRIOR_KINDS = ("vae", "gaussian-field")
_TRUTH_KEYS = ("file", "format", "seed", "generator")
_TRUTH_FORMATS = ("log_k", "mdgm-k")
_DATA_KEYS = ("file", "noise_kind", "noise_fraction", "seed")
_NOISE_KINDS = ("absolute", "relative")
_DATA_COLUMNS = ("x", "y", "value", "noise_std")


def sampler_option_names(method: str) -> tuple[str, ...]:
    """The options of ``method`` that a problem's ``[sampler.<method>]`` table (or
    ``vaeinv invert --option``) may set; they are passed on to ``vaeinv.sample``."""
    return registry.get(method).Options.names()


_RUN_KEYS = ("method", "num_chains", "num_draws", "num_warmup", "thin", "seed", "chunk_size")


def problem_methods() -> tuple[str, ...]:
    """The registered kernels a problem file can run: those whose inputs a problem provides
    (the coarse posteriors of ``mlda`` and ``staged`` come from its ``[multilevel]`` table)."""
    return tuple(
        m for m in registry.available() if set(registry.get(m).inputs) <= set(PROBLEM_INPUTS)
    )


def sampler_keys() -> tuple[str, ...]:
    """The keys of a problem's ``[sampler]`` table: the run's settings and one table per
    registered method."""
    return (*_RUN_KEYS, *problem_methods())


#: Position tolerance when matching the data file's sensors to ``[sensors]``.
_XY_TOL = 1e-9


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


def check_sampler_options(method: str, options: Any, where: str = "sampler options") -> dict:
    """Check a method's sampler options against its kernel's ``Options`` (names and values).

    Returns:
        the options as given (the defaults are not filled in).

    Raises:
        ValueError: an unknown method or option (the valid ones listed), or a bad value.
    """
    _choice(method, "method", problem_methods())
    _check_keys(options, sampler_option_names(method), f"{where} (options of {method!r})")
    try:
        registry.get(method).Options.from_mapping(options, method)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return dict(options)


def _dirichlet(value: Any, where: str) -> dict[str, float]:
    """A ``dirichlet = {side: pressure}`` table: at least one known side, numbers."""
    from ..grid import SIDES

    _check_keys(value, SIDES, f"{where} dirichlet")
    if not value:
        raise ValueError(f"{where} dirichlet must name at least one side of {', '.join(SIDES)}")
    return {s: _float(v, f"{where} dirichlet.{s}") for s, v in value.items()}
