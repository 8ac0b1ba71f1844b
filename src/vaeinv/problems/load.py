"""Finding and loading problems: ``problems/<name>/problem.toml`` -> a validated `Problem`."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ._checks import _TOP_KEYS, _check_keys, _require
from ._tables import _data, _grid, _multilevel, _physics, _prior, _sampler, _sensors, _truth
from .decomposition import parse_decomposition
from .experiments import joined_data, parse_experiments, single_experiment
from .spec import Problem

__all__ = ["list_problems", "load_problem", "problems_folder"]


def problems_folder() -> Path:
    """The ``problems/`` folder of the source tree (``<repo>/problems``)."""
    return Path(__file__).resolve().parents[3] / "problems"


def list_problems(folder: str | Path | None = None) -> list[str]:
    """Names of the problems in ``folder`` (default: ``./problems`` and ``<repo>/problems``)."""
    folders = [Path(folder)] if folder is not None else [Path("problems"), problems_folder()]
    names = {p.parent.name for f in folders if f.is_dir() for p in f.glob("*/problem.toml")}
    return sorted(names)


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
    experiments = ()
    if "experiment" in raw:
        experiments = parse_experiments(raw, grid, physics, sensors_xy, folder, require_data)
    elif "observations" in raw:
        experiments = (
            single_experiment(raw, name, grid, physics, sensors_xy, folder, require_data),
        )
    if experiments:
        data, noise_std, meta = joined_data(experiments)
    else:
        data, noise_std, meta = _data(raw, folder, sensors_xy, require_data)
    multilevel = _multilevel(raw, grid, folder)
    decomposition = parse_decomposition(raw, grid, folder)
    if experiments and (multilevel is not None or decomposition is not None):
        raise ValueError(
            "[multilevel] and [decomposition] read heads at the [sensors] of one experiment; "
            "they do not take [observations] or [[experiment]] tables"
        )
    sampler = _sampler(raw)
    from ..kernels import registry

    if multilevel is None and "coarse" in registry.get(sampler.method).inputs:
        raise ValueError(
            f"[sampler] method {sampler.method!r} runs on the levels of a multiscale prior: add "
            'a [multilevel] table naming one (prior = "...")'
        )
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
        sampler_defaults=sampler,
        multilevel=multilevel,
        decomposition=decomposition,
        experiments=experiments,
    )
