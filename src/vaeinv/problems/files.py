"""A problem's files: reading truths and CSV tables, redrawing the truth and the data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ..grid import Grid
from ._checks import _DATA_COLUMNS, _TRUTH_FORMATS, _choice, _int
from .spec import Problem

__all__ = ["make_data", "make_truth", "read_truth"]


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
    from ..fields import generator_from_config

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

    A problem with experiments (`vaeinv.problems.experiments`) gets one file per experiment,
    each from its flow and observations, with ``noise_std = noise_fraction * max|clean|`` over
    the values of each kind and the experiment's seed (``seed + i`` for the ``i``-th when
    ``seed`` is given); ``path`` is then a folder (default: each file where the problem says).

    Args:
        problem: the problem (its truth must be known).
        seed: the noise seed; default the problem's ``[data] seed``.
        path: where to write; default the problem's data file.

    Returns:
        the path written (a list of them for experiments).

    Raises:
        ValueError: a problem without a truth.
    """
    if problem.truth is None:
        raise ValueError(f"problem {problem.name!r} has no truth to generate data from")
    if problem.experiments:
        return _make_experiment_data(problem, seed, path)
    seed = problem.data_seed if seed is None else _int(seed, "seed", 0)
    with torch.no_grad():
        # the clean data from an accurate solve (DarcyFlow's default tolerance or the problem's
        # own), not the noise-tied one of its posterior
        pressure = problem.physics.build(problem.grid).solve(problem.truth)
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


def _make_experiment_data(problem: Problem, seed, folder) -> list[Path]:
    from .experiments import EXPERIMENT_COLUMNS, experiment_noise

    with torch.no_grad():
        readings = problem.build_forward(accurate=True)
        clean = readings.split(readings(problem.truth[None])[0])
    paths = []
    for i, (experiment, values) in enumerate(zip(problem.experiments, clean, strict=True)):
        noise_seed = experiment.data_seed if seed is None else _int(seed, "seed", 0) + i
        kinds = experiment.kinds
        sd = experiment_noise(values, kinds, experiment.noise_fraction)
        gen = torch.Generator().manual_seed(noise_seed)
        noisy = values + sd * torch.randn(values.shape, generator=gen, dtype=torch.float64)
        path = experiment.data_file if folder is None else Path(folder) / experiment.data_file.name
        wells = ", ".join(f"({x:g}, {y:g}) rate {r:g}" for x, y, r in experiment.physics.wells)
        lines = [
            f"# {problem.name}, experiment {experiment.name!r} (wells: {wells or 'none'}), "
            "from the truth by vaeinv.problems.make_data",
            f"# noise: sd = {experiment.noise_fraction:g} * max |clean value| of each kind, "
            f"seed {noise_seed}",
            ",".join(EXPERIMENT_COLUMNS),
        ]
        for kind, v, s in zip(kinds, noisy.tolist(), sd.tolist(), strict=True):
            lines.append(f"{kind},{v:.17g},{s:.17g}")
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths
