"""The ``InferenceData`` of a domain-decomposed run: the local runs' draws Poisson-blended into
global fields, draw by draw.

Groups:

- ``posterior``: ``log_k (chain, draw, y, x)``, the blended global fields;
  ``z (chain, draw, subdomain, latent)``, each subdomain's latent.
- ``sample_stats``: each local statistic with a ``subdomain`` dimension
  (``lp (chain, draw, subdomain)``, ...).
- ``observed_data``: the global data; ``constant_data``: the noise, the sensors, the true field
  when known, and each subdomain's cells (``rows_start``, ``rows_stop``, ``cols_start``,
  ``cols_stop``, and the same for its core).

Attributes: the run's (seed, method, ...), the preparation's (`Decomposition.info`),
``forward_solves`` and ``gradient_evaluations`` summed over the subdomains (local solves) and
per subdomain (``forward_solves_subdomain``, ...), and the seams: the mean over draws of the RMS
jump across the cores' faces relative to the RMS jump across all faces, for the gathered
fields (each cell from its core) and for the blended ones (``seam_ratio_gathered``,
``seam_ratio_blended``; about 1 when no seam shows), and, when the truth is known, the RMS
error of the posterior mean's differences across those faces against the truth's
(``seam_error_gathered``, ``seam_error_blended``, `vaeinv.blending.seam_error`) and the
relative L2 error of the posterior mean, gathered and blended (``rel_l2_gathered``,
``rel_l2_blended``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from ..blending import PoissonBlend, seam_error
from .inference_data import from_groups

if TYPE_CHECKING:  # built through inference_data, the one module that imports arviz
    import arviz as az

__all__ = ["decomposed_inference_data", "seam_ratio"]

_COUNTERS = ("forward_solves", "gradient_evaluations", "divergences")


def seam_ratio(partition, fields: torch.Tensor) -> float:
    """The RMS jump across the faces between cores over the RMS jump across all faces, of
    global fields ``(..., ny, nx)`` (about 1 when no seam shows; mean over the fields)."""
    by, bx = partition.core_shape
    dx = fields[..., :, 1:] - fields[..., :, :-1]
    dy = fields[..., 1:, :] - fields[..., :-1, :]
    seams = [dx[..., :, i - 1] for i in range(bx, partition.grid.nx, bx)]
    seams += [dy[..., i - 1, :] for i in range(by, partition.grid.ny, by)]
    if not seams:
        return 1.0
    lead = fields.shape[:-2]
    seam = torch.cat([s.reshape(*lead, -1) for s in seams], -1).square().mean(-1)
    every = torch.cat([dx.reshape(*lead, -1), dy.reshape(*lead, -1)], -1).square().mean(-1)
    return float((seam / every).sqrt().mean())


def _stats(local_runs) -> xr.Dataset | None:
    first = getattr(local_runs[0], "sample_stats", None)
    if first is None:
        return None
    names = [n for n in first.data_vars if all(n in r.sample_stats for r in local_runs)]
    stacked = {
        n: xr.concat([r.sample_stats[n] for r in local_runs], dim="subdomain").transpose(
            "chain", "draw", "subdomain", ...
        )
        for n in names
    }
    return xr.Dataset(stacked).assign_coords(subdomain=np.arange(len(local_runs)))


def _constant(decomposition, xy, noise_std) -> xr.Dataset:
    part = decomposition.partition
    grid = part.grid
    coords = {
        "sensor": np.arange(len(noise_std)),
        "subdomain": np.arange(len(part)),
        "y": grid.y_centers().numpy(),
        "x": grid.x_centers().numpy(),
    }
    data = {
        "noise_std": (("sensor",), noise_std),
        "sensor_x": (("sensor",), xy[:, 0]),
        "sensor_y": (("sensor",), xy[:, 1]),
    }
    for name in ("rows", "cols", "core_rows", "core_cols"):
        for end in ("start", "stop"):
            values = [getattr(getattr(s, name), end) for s in part.subdomains]
            data[f"{name}_{end}"] = (("subdomain",), np.asarray(values, dtype=np.int64))
    if decomposition.truth is not None:
        data["log_k"] = (("y", "x"), decomposition.truth.numpy())
    return xr.Dataset(data, coords=coords)


def _sensors(decomposition) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The global sensors' positions, data and noise, from the local problems."""
    m = max((int(i.max()) + 1 for i in decomposition.sensor_index if i.size), default=0)
    xy, y, sd = np.zeros((m, 2)), np.zeros(m), np.ones(m)
    for spec, idx in zip(decomposition.specs, decomposition.sensor_index, strict=True):
        origin = np.asarray(decomposition.partition.subdomains[spec.index].grid.origin)
        xy[idx], y[idx], sd[idx] = spec.sensor_xy + origin, spec.data, spec.noise_std
    return xy, y, sd


def decomposed_inference_data(
    decomposition, local_runs, attrs: dict[str, Any] | None = None
) -> az.InferenceData:
    """The global ``InferenceData`` of the local runs (module docstring).

    Args:
        decomposition: the [`Decomposition`][vaeinv.decomposition.setup.Decomposition].
        local_runs: one ``InferenceData`` per subdomain, the same chains and draws, with
            ``log_k``.

    Raises:
        ValueError: local runs without ``log_k`` or with other chains or draws.
    """
    part = decomposition.partition
    shapes = {r.posterior["z"].shape[:2] for r in local_runs}
    if len(shapes) != 1 or any("log_k" not in r.posterior for r in local_runs):
        raise ValueError(
            f"the local runs must hold log_k and the same chains and draws, got {sorted(shapes)}"
        )
    fields = [torch.as_tensor(r.posterior["log_k"].values) for r in local_runs]
    blended = PoissonBlend(part)(fields)
    gathered = part.gather(fields)
    first = local_runs[0].posterior
    grid = part.grid
    post = xr.Dataset(
        {
            "log_k": (("chain", "draw", "y", "x"), blended.numpy()),
            "z": (
                ("chain", "draw", "subdomain", "latent"),
                np.stack([r.posterior["z"].values for r in local_runs], axis=2),
            ),
        },
        coords={
            "chain": first["chain"].values,
            "draw": first["draw"].values,
            "subdomain": np.arange(len(part)),
            "latent": first["latent"].values,
            "y": grid.y_centers().numpy(),
            "x": grid.x_centers().numpy(),
        },
    )
    run = dict(local_runs[0].attrs)
    for key in ("task_seed", "chains", "created_at", *_COUNTERS):
        run.pop(key, None)
    for key in _COUNTERS:
        per = [int(r.attrs.get(key, 0)) for r in local_runs]
        run[key] = sum(per)
        run[f"{key}_subdomain"] = per
    run.update(decomposition.info)
    run.update(attrs or {})
    run.update(
        decomposition="ddvae",
        subdomains=len(part),
        partition=[part.nx_parts, part.ny_parts, part.overlap],
        local_cells=[s.grid.num_cells for s in part.subdomains],
        global_cells=grid.num_cells,
        seam_ratio_gathered=seam_ratio(part, gathered.double()),
        seam_ratio_blended=seam_ratio(part, blended.double()),
    )
    if decomposition.truth is not None:  # the posterior means against the truth
        lead = tuple(range(blended.dim() - 2))
        truth = decomposition.truth.double()
        for name, fields in (("gathered", gathered), ("blended", blended)):
            mean = fields.double().mean(lead)
            run[f"seam_error_{name}"] = seam_error(part, mean, truth)
            run[f"rel_l2_{name}"] = float((mean - truth).norm() / truth.norm())
    xy, y, sd = _sensors(decomposition)
    groups = {
        "posterior": post,
        "observed_data": xr.Dataset({"y": (("sensor",), y)}, coords={"sensor": np.arange(len(y))}),
        "constant_data": _constant(decomposition, xy, sd),
    }
    stats = _stats(local_runs)
    if stats is not None:
        groups["sample_stats"] = stats
    return from_groups(groups, run)


def subdomain_diagnostics(idata) -> list[dict[str, Any]]:
    """Per subdomain, [`diagnostics`][vaeinv.results.inference_data.diagnostics] of its own
    latents and statistics (``max_rhat_latent``, ``min_ess_bulk_latent``,
    ``acceptance_rate``, ...), with its ``forward_solves``."""
    import json

    from .inference_data import diagnostics

    solves = idata.attrs.get("forward_solves_subdomain", "[]")
    solves = json.loads(solves) if isinstance(solves, str) else list(solves)
    out = []
    for k in range(int(idata.posterior.sizes["subdomain"])):
        one = diagnostics(idata.isel(subdomain=k))
        one["forward_solves"] = solves[k] if k < len(solves) else None
        out.append(one)
    return out


def subdomain_table(idata) -> str:
    """The per-subdomain diagnostics as a markdown table, and the blend's effect: the seam
    ratio, and with a known truth the posterior mean's relative L2 error and seam error,
    gathered -> blended."""
    lines = [
        "| subdomain | max R-hat, latents | min bulk ESS, latents | acceptance | local solves |",
        "|---:|---:|---:|---:|---:|",
    ]
    for k, d in enumerate(subdomain_diagnostics(idata)):
        lines.append(
            f"| {k} | {d['max_rhat_latent']:.4f} | {d['min_ess_bulk_latent']:.0f} | "
            f"{d['acceptance_rate']:.3f} | {d['forward_solves']} |"
        )
    attrs = idata.attrs
    blend = []
    for key, label, spec in (
        ("seam_ratio", "seam ratio", ".2f"),
        ("rel_l2", "posterior mean rel. L2", ".3f"),
        ("seam_error", "seam error", ".3f"),
    ):
        if f"{key}_gathered" in attrs and f"{key}_blended" in attrs:
            gathered, blended = float(attrs[f"{key}_gathered"]), float(attrs[f"{key}_blended"])
            blend.append(f"{label} {gathered:{spec}} -> {blended:{spec}}")
    if blend:
        lines += ["", "gathered -> blended: " + "; ".join(blend)]
    return "\n".join(lines) + "\n"
