"""Runs as ArviZ ``InferenceData``: building, saving (netCDF), loading and diagnostics.

This is the only module of vaeinv that imports ArviZ. The layout of a result
(see [`to_inference_data`][vaeinv.results.inference_data.to_inference_data]):

- ``posterior``: ``z (chain, draw, latent)`` and ``log_k (chain, draw, y, x)``, the latents
  and the field of the same kept draws (``x``, ``y`` hold the cell centres).
- ``sample_stats`` ``(chain, draw)``: ``lp``, ``acceptance_rate``, ``step_size`` and
  ``accepted``, ``failed`` (pCN) or ``diverging``, ``tree_depth``, ``n_steps`` (NUTS);
  multilevel kernels add ``coarse_acceptance_rate`` and ``coarse_solves``
  ``(chain, draw, level)``, one entry per coarse level (0 the coarsest).
- ``log_likelihood``: ``y (chain, draw, sensor)``, the pointwise log-likelihood per sensor.
- ``posterior_predictive``: ``y (chain, draw, sensor)``, the noise-free predicted sensor values
  ``forward(decode(z))``.
- ``observed_data``: ``y (sensor)``, with coordinates ``sensor_x``, ``sensor_y`` when the
  sensors are known.
- ``constant_data``: ``noise_std (sensor)``; ``sensor_x``, ``sensor_y (sensor)`` when known;
  ``log_k (y, x)``, the truth, when known.

Attributes (``idata.attrs`` and ``idata.posterior.attrs``): the seed, the method, the sampler
settings, the prior name and weights hash, versions, the creation time. netCDF stores only
strings and numbers: ``None`` is written as ``""``, booleans as 0/1, and dicts, lists and tuples
as JSON strings.

Every posterior variable shares the ``(chain, draw)`` dims, so ArviZ works on the whole result:
``az.summary(idata)``, ``az.rhat(idata)``, ``az.ess(idata)`` (every latent and every cell of
``log_k``), ``az.plot_trace(idata, var_names=["z"])``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..provenance import versions
from .layout import DataLayout

with warnings.catch_warnings():  # ArviZ 0.2x announces its refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = [
    "NUTS_STATS",
    "PCN_STATS",
    "diagnostics",
    "from_groups",
    "load",
    "netcdf_attrs",
    "save",
    "to_inference_data",
    "versions",
]

#: sample statistics recorded by pCN, in ArviZ's names where ArviZ has one.
PCN_STATS = ("lp", "acceptance_rate", "step_size", "accepted", "failed")
#: sample statistics recorded by NUTS (ArviZ's names).
NUTS_STATS = ("lp", "acceptance_rate", "step_size", "diverging", "tree_depth", "n_steps")
#: per-level statistics of multilevel kernels, ``(chain, draw, level)``.
LEVEL_STATS = ("coarse_acceptance_rate", "coarse_solves")
_STAT_NAMES = frozenset(PCN_STATS + NUTS_STATS + LEVEL_STATS)
_DRAW_KEYS = frozenset(
    {"z", "chain", "draw", "prediction", "log_likelihood", "log_k"} | _STAT_NAMES
)


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def netcdf_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes netCDF can store: str, int, float (see the module docstring)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            value = ""
        elif isinstance(value, bool | np.bool_):
            value = int(value)
        elif isinstance(value, Path | torch.device | torch.dtype):
            value = str(value)
        elif isinstance(value, np.integer | np.floating):
            value = value.item()
        elif isinstance(value, Mapping | list | tuple):
            value = json.dumps(value, default=str, sort_keys=True)
        elif not isinstance(value, str | int | float):
            raise ValueError(
                f"attribute {key!r} has type {type(value).__name__}; expected str, int, float, "
                "bool, None, or a JSON-serialisable dict/list"
            )
        out[str(key)] = value
    return out


def _field_dims(posterior, shape: tuple[int, ...]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Dims and coords of one field: ``(y, x)`` with cell-centre coordinates on a 2-D grid,
    ``field_dim_0, ...`` (index coordinates) for other field shapes."""
    if len(shape) != 2:
        dims = tuple(f"field_dim_{i}" for i in range(len(shape)))
        return dims, {d: np.arange(n) for d, n in zip(dims, shape, strict=True)}
    grid = getattr(posterior, "grid", None)
    if grid is None:
        return ("y", "x"), {"y": np.arange(shape[0]), "x": np.arange(shape[1])}
    if grid.shape != shape:
        raise ValueError(f"fields have shape {shape}, but the grid {grid} has {grid.shape}")
    return ("y", "x"), {"y": grid.y_centers().numpy(), "x": grid.x_centers().numpy()}


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != expected:
        raise ValueError(f"draws[{name!r}] has shape {array.shape}, expected {expected}")


def _sample_stats(draws, chain_draw: dict, shape: tuple[int, int], attrs: dict):
    """The ``sample_stats`` group of the statistics in ``draws`` (``None`` if none)."""
    stats, coords = {}, dict(chain_draw)
    for name in sorted(_STAT_NAMES & set(draws)):
        value = _numpy(draws[name])
        if name in LEVEL_STATS:
            num_levels = value.shape[-1] if value.ndim == 3 else -1
            _check_shape(name, value, (*shape, num_levels))
            stats[name] = (("chain", "draw", "level"), value)
            coords["level"] = np.arange(num_levels)
        else:
            _check_shape(name, value, shape)
            stats[name] = (("chain", "draw"), value)
    return xr.Dataset(stats, coords=coords, attrs=attrs) if stats else None


def to_inference_data(
    posterior, draws: Mapping[str, Any], *, attrs: Mapping[str, Any] | None = None
) -> az.InferenceData:
    """Build the ``InferenceData`` of a run (layout in the module docstring).

    Args:
        posterior: the [`Posterior`][vaeinv.posterior.target.Posterior] that was sampled
            (read: ``data``, ``noise_std``, ``sensors``, ``grid``, ``truth``).
        draws: arrays (numpy or torch) of ``C`` chains and ``N`` kept draws: ``z (C, N, d)``;
            any sample statistics of `PCN_STATS` or
            `NUTS_STATS` ``(C, N)``, of `LEVEL_STATS` ``(C, N, levels)``; optional
            ``prediction (C, N, m)``, ``log_likelihood (C, N, m)`` (pointwise),
            ``log_k (C, N, ny, nx)`` (the fields of the same draws), ``draw (N,)`` (the
            draw coordinate, default ``0..N-1``) and ``chain (C,)`` (the chain coordinate,
            default ``0..C-1``; a run of some of the chains keeps their indices).
        attrs: run attributes (seed, method, settings, ...), stored on the root and on the
            ``posterior`` group next to the creation time and the versions.

    Returns:
        the ``InferenceData``.

    Raises:
        ValueError: an unknown key in ``draws``, a missing ``z``, a shape that does not fit,
            or an attribute netCDF cannot store.
    """
    unknown = sorted(set(draws) - _DRAW_KEYS)
    if unknown:
        raise ValueError(f"unknown draws keys {unknown}; valid keys: {sorted(_DRAW_KEYS)}")
    if "z" not in draws:
        raise ValueError("draws must hold 'z' (chain, draw, latent)")
    z = _numpy(draws["z"])
    if z.ndim != 3:
        raise ValueError(f"draws['z'] has shape {z.shape}, expected (chain, draw, latent)")
    num_chains, num_draws, latent_dim = z.shape
    data = _numpy(posterior.data).astype(np.float64)
    num_sensors = data.shape[0]
    draw = _numpy(draws.get("draw", np.arange(num_draws))).astype(np.int64)
    _check_shape("draw", draw, (num_draws,))
    chain = _numpy(draws.get("chain", np.arange(num_chains))).astype(np.int64)
    _check_shape("chain", chain, (num_chains,))
    chain_draw = {"chain": chain, "draw": draw}
    layout = DataLayout(posterior, num_sensors)

    run_attrs = {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "vaeinv",
        "inference_library_version": versions()["vaeinv"],
        "versions": versions(),
    }
    run_attrs.update(dict(attrs or {}))
    run_attrs = netcdf_attrs(run_attrs)
    group_attrs = {k: run_attrs[k] for k in ("created_at", "inference_library")}

    post = {"z": (("chain", "draw", "latent"), z)}
    post_coords: dict[str, Any] = {**chain_draw, "latent": np.arange(latent_dim)}
    if "log_k" in draws:
        log_k = _numpy(draws["log_k"])
        if log_k.ndim < 3 or log_k.shape[:2] != (num_chains, num_draws):
            raise ValueError(
                f"draws['log_k'] has shape {log_k.shape}, expected "
                f"({num_chains}, {num_draws}, ny, nx): one field per draw of z"
            )
        dims, coords = _field_dims(posterior, log_k.shape[2:])
        post["log_k"] = (("chain", "draw", *dims), log_k)
        post_coords.update(coords)
    groups = {"posterior": xr.Dataset(post, coords=post_coords, attrs=run_attrs)}

    stats = _sample_stats(draws, chain_draw, (num_chains, num_draws), group_attrs)
    if stats is not None:
        groups["sample_stats"] = stats
    for key, group, extra in (
        ("log_likelihood", "log_likelihood", {}),
        ("prediction", "posterior_predictive", {"description": "noise-free forward(decode(z))"}),
    ):
        if key in draws:
            value = _numpy(draws[key])
            _check_shape(key, value, (num_chains, num_draws, num_sensors))
            groups[group] = xr.Dataset(
                {"y": (("chain", "draw", *layout.dims), layout.arrange(value))},
                coords={**chain_draw, **layout.coords},
                attrs={**group_attrs, **extra},
            )
    groups["observed_data"] = xr.Dataset(
        {"y": (layout.dims, layout.arrange(data))}, coords=layout.coords, attrs=group_attrs
    )
    groups["constant_data"] = _constant_data(posterior, layout, group_attrs)
    return az.InferenceData(attrs=run_attrs, **groups)


def _constant_data(posterior, layout: DataLayout, group_attrs) -> xr.Dataset:
    """The ``constant_data`` group: noise, sensor positions, and the truth when known."""
    num_sensors = layout.num_values
    noise_std = _numpy(posterior.noise_std).astype(np.float64) * np.ones(num_sensors)
    constant = {"noise_std": (layout.dims, layout.arrange(noise_std))}
    constant_coords: dict[str, Any] = dict(layout.coords)
    sensor_xy = layout.sensor_xy
    if sensor_xy is not None:
        constant.update(sensor_x=(("sensor",), sensor_xy[:, 0]))
        constant.update(sensor_y=(("sensor",), sensor_xy[:, 1]))
        for name in ("sensor_x", "sensor_y"):
            constant_coords.pop(name, None)
    truth = getattr(posterior, "truth", None)
    if truth is not None:
        truth = _numpy(truth).astype(np.float64)
        dims, coords = _field_dims(posterior, truth.shape)
        constant["log_k"] = (dims, truth)
        constant_coords.update(coords)
    return xr.Dataset(constant, coords=constant_coords, attrs=group_attrs)


def from_groups(groups: Mapping[str, xr.Dataset], attrs: Mapping[str, Any]) -> az.InferenceData:
    """An ``InferenceData`` of ready ``groups`` (name -> dataset) with the run ``attrs`` on the
    root and on the ``posterior`` group, as `to_inference_data` stores them."""
    run_attrs = netcdf_attrs(dict(attrs))
    groups = dict(groups)
    groups["posterior"] = groups["posterior"].assign_attrs(run_attrs)
    return az.InferenceData(attrs=run_attrs, **groups)


def save(idata: az.InferenceData, path: str | Path) -> Path:
    """Write ``idata`` as netCDF (h5netcdf engine), atomically: a temporary file next to
    ``path``, then renamed onto it. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        idata.to_netcdf(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path) -> az.InferenceData:
    """Read a result file written by [`save`][vaeinv.results.inference_data.save] into memory
    (the file is closed afterwards).

    Raises:
        ValueError: a missing file, or one that is not an InferenceData netCDF file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"result file {path} not found")
    try:
        with az.rc_context({"data.load": "eager"}):
            idata = az.from_netcdf(str(path))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not an InferenceData netCDF file: {err}") from None
    if "posterior" not in idata.groups():
        raise ValueError(f"{path} has no posterior group (groups: {idata.groups()})")
    return idata


def _field_quantities(log_k: xr.DataArray, cells: int = 5) -> xr.Dataset:
    """Scalar field summaries per draw: the mean of log_k and, on a 2-D field, log_k at a few
    cells (the centre and the centres of the four quadrants)."""
    space = [d for d in log_k.dims if d not in ("chain", "draw")]
    quantities = {"mean_log_k": log_k.mean(space)}
    if space == ["y", "x"]:
        ny, nx = log_k.sizes["y"], log_k.sizes["x"]
        picks = [(ny // 2, nx // 2), (ny // 4, nx // 4), (ny // 4, 3 * nx // 4)]
        picks += [(3 * ny // 4, nx // 4), (3 * ny // 4, 3 * nx // 4)]
        for iy, ix in dict.fromkeys(picks[:cells]):
            quantities[f"log_k[{iy},{ix}]"] = log_k.isel(y=iy, x=ix, drop=True)
    return xr.Dataset(quantities)


def _extremes(dataset: xr.Dataset) -> tuple[float, float, float]:
    """``(max R-hat, min bulk ESS, min tail ESS)`` over every variable and element."""
    if dataset.sizes.get("draw", 0) < 4:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = [
            np.concatenate([np.ravel(v) for v in stat.data_vars.values()])
            for stat in (
                az.rhat(dataset),
                az.ess(dataset, method="bulk"),
                az.ess(dataset, method="tail"),
            )
        ]
    return float(np.max(values[0])), float(np.min(values[1])), float(np.min(values[2]))


def diagnostics(idata: az.InferenceData) -> dict[str, Any]:
    """The summary figures of a result.

    Returns:
        a dict with ``num_chains``, ``num_draws``; ``max_rhat``, ``min_ess_bulk``,
        ``min_ess_tail`` over everything below, and per set: ``*_latent`` (every latent
        coordinate of ``z``) and ``*_field`` (``lp``, the mean of ``log_k`` and ``log_k`` at
        five cells); ``acceptance_rate`` (mean);
        ``divergences`` (NUTS, else 0); ``failed`` (pCN rejections from a failed solve, else
        0); ``normalised_misfit``: the posterior mean of ``sum(((pred - y) / sd)^2) / m``;
        when the truth is known, ``rel_l2_error`` ``||mean log_k - truth|| / ||truth||`` and
        ``coverage_2sd``, the fraction of cells whose truth lies in mean +- 2 sd, and
        ``expected_rel_l2_error`` ``sqrt(sum of the posterior variances) / ||truth||``, the
        root-mean-square error the posterior mean would have were the truth a draw of the
        posterior (``E ||x - mean||^2 = sum var``): a calibrated posterior's
        ``rel_l2_error`` scatters around it (else all three ``None``);
        ``rhat_log_likelihood`` and ``ess_bulk_log_likelihood``: R-hat and bulk ESS of the
        total log-likelihood trace (the ``log_likelihood`` group summed over sensors), the
        quantity whose ESS MDGM reported (NaN without that group). R-hat and ESS are NaN
        when there are fewer than 4 draws.
    """
    posterior = idata.posterior
    out: dict[str, Any] = {
        "num_chains": int(posterior.sizes["chain"]),
        "num_draws": int(posterior.sizes["draw"]),
    }
    latent = _extremes(posterior[["z"]])
    field_sets = []
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and "lp" in stats:
        field_sets.append(_extremes(stats[["lp"]]))
    if "log_k" in posterior:
        field_sets.append(_extremes(_field_quantities(posterior["log_k"])))
    field = tuple(
        (max if i == 0 else min)((s[i] for s in field_sets), default=math.nan) for i in range(3)
    )
    for i, name in enumerate(("max_rhat", "min_ess_bulk", "min_ess_tail")):
        pick = max if i == 0 else min
        out[f"{name}_latent"] = latent[i]
        out[f"{name}_field"] = field[i]
        finite = [v for v in (latent[i], field[i]) if not math.isnan(v)]
        out[name] = pick(finite) if finite else math.nan

    def stat_sum(name: str) -> int:
        return int(stats[name].sum()) if stats is not None and name in stats else 0

    rate = stats.get("acceptance_rate") if stats is not None else None
    out["acceptance_rate"] = float(rate.mean()) if rate is not None else math.nan
    out["divergences"] = stat_sum("diverging")
    out["failed"] = stat_sum("failed")

    out["rhat_log_likelihood"] = out["ess_bulk_log_likelihood"] = math.nan
    pointwise = getattr(idata, "log_likelihood", None)
    if pointwise is not None and "y" in pointwise:
        values = pointwise["y"]
        observed = [d for d in values.dims if d not in ("chain", "draw")]
        total = values.sum(observed).rename("log_likelihood").to_dataset()
        rhat, ess_bulk, _ = _extremes(total)
        out["rhat_log_likelihood"], out["ess_bulk_log_likelihood"] = rhat, ess_bulk

    out["normalised_misfit"] = math.nan
    predictive = getattr(idata, "posterior_predictive", None)
    if predictive is not None and "y" in predictive:
        residual = (predictive["y"] - idata.observed_data["y"]) / idata.constant_data["noise_std"]
        out["normalised_misfit"] = float((residual**2).mean("sensor").mean())

    out["rel_l2_error"] = out["coverage_2sd"] = out["expected_rel_l2_error"] = None
    constant = getattr(idata, "constant_data", None)
    if constant is not None and "log_k" in constant and "log_k" in posterior:
        truth = constant["log_k"].values.astype(np.float64)
        draws = posterior["log_k"].values.astype(np.float64)
        draws = draws.reshape(-1, *draws.shape[2:])
        mean, sd = draws.mean(axis=0), draws.std(axis=0, ddof=1 if len(draws) > 1 else 0)
        out["rel_l2_error"] = float(np.linalg.norm(mean - truth) / np.linalg.norm(truth))
        out["coverage_2sd"] = float(np.mean(np.abs(truth - mean) <= 2 * sd))
        out["expected_rel_l2_error"] = float(np.linalg.norm(sd) / np.linalg.norm(truth))
    return out
