"""More draws for a finished run: [`extend_run`][vaeinv.runs.extend.extend_run].

A run that stopped short of convergence (R-hat above 1.01, too few effective draws) need not be
started again. ``extend_run`` continues every chain of a finished result from its last kept
draw and appends the new draws after the old ones, so that the result is one longer run of the
same chains:

- **NUTS** continues with the covariance of all the result's kept draws, pooled over its chains,
  as a fixed dense inverse mass matrix (``sample(..., inverse_mass_matrix=...)``): after a run
  this is a better estimate of the posterior's shape than any warm-up had (on ``mdgm-channel``
  it raised the smallest latent ESS per draw about five times over the pooled warm-up's mass,
  docs/benchmarks.md). With fewer kept draws than ``2 * latent_dim`` the estimate is the
  diagonal of the draws' variances. A short warm-up (``num_warmup``, default 50 iterations,
  not kept) adapts the step size from the run's last one; then ``num_draws`` iterations.
- **HMC** continues the same way: the covariance of the kept draws as its fixed mass (no
  Laplace start, no mass windows), the step size re-adapted from the run's last one for
  ``num_warmup`` iterations (default 50), the run's ``trajectory_length``.
- **pCN** continues each chain with a short warm-up (default 100 iterations) that re-adapts the
  step size from the median of the chains' last ones, then ``num_draws`` iterations.
- **gpCN** and **tpCN** are not extended: their chains are tied to the map their warm-up built
  (the Laplace approximation, the fitted flow), which the result does not keep.

The kept draws are thinned as the run's were. Each kernel of the extension leaves the posterior
invariant, and the warm-up's draws are dropped, so chains that had reached the posterior stay
there; R-hat and ESS are then computed over all the draws. The extension draws its random
numbers from streams derived from the run's seed and the number of earlier extensions, and its
record (draws, warm-up, seed, mass) is appended to the result's ``extensions`` attribute; the
work counters (forward solves, gradients, divergences, wall time) are summed.

Parts of a NUTS run (``sample(..., chains=...)``) are extended one by one, then merged with
[`merge_runs`][vaeinv.runs.merge.merge_runs]; each part's mass is then estimated from its
own chains.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from .. import results
from ..kernels import registry
from ..kernels.starts import derived_seed
from ..provenance import tensor_sha256 as sha256
from .progress import RunProgress
from .sampling import sample
from .thinning import positive_int

if TYPE_CHECKING:  # results is the one package that imports arviz at run time
    import arviz as az

__all__ = ["FinishedRun", "draws_covariance", "extend_run"]

#: seeds of the ``k``-th extension derive from ``(seed, _STREAM_EXTEND + k)``.
_STREAM_EXTEND = 100
#: attributes summed over the run and its extension.
_SUMMED = ("forward_solves", "gradient_evaluations", "divergences", "warmup_divergences")


@dataclass(frozen=True)
class FinishedRun:
    """What a kernel's ``extension`` hook reads of a finished run.

    Attributes:
        options: the run's sampler options.
        num_chains: the run's chains (all parts together).
        held: the chains this result holds.
        last: ``(len(held), d)`` float64 each held chain's last kept draw.
        last_step_size: the median of the chains' last step sizes (``None`` when the run
            recorded no ``step_size``).
        mass: ``(d, d)`` the covariance of the kept draws (kernels with a mass matrix).
        mass_kind: ``"dense"`` or ``"diagonal"`` (see `draws_covariance`).
    """

    options: dict[str, Any]
    num_chains: int
    held: list[int]
    last: torch.Tensor
    last_step_size: float | None
    mass: torch.Tensor | None
    mass_kind: str | None

    @property
    def num_held(self) -> int:
        return len(self.held)


def draws_covariance(z: np.ndarray) -> tuple[torch.Tensor, str]:
    """The covariance of draws ``z (chain, draw, d)`` pooled over chains, as NUTS's inverse mass.

    Returns ``(matrix (d, d) float64, kind)``: the sample covariance (``kind = "dense"``) when
    there are at least ``2 d`` draws and it is positive definite, else the diagonal of the
    variances (``"diagonal"``), where a latent of zero variance (a chain that never moved)
    gets the mean of the others' (1 if none moved).
    """
    flat = np.asarray(z, dtype=np.float64).reshape(-1, z.shape[-1])
    n, d = flat.shape
    if n < 2:
        raise ValueError(f"a mass estimate needs at least 2 kept draws, the result has {n}")
    if n >= 2 * d:
        cov = torch.from_numpy(np.cov(flat, rowvar=False)).reshape(d, d)
        cov = 0.5 * (cov + cov.T)
        if torch.linalg.cholesky_ex(cov).info == 0:
            return cov.contiguous(), "dense"
    var = flat.var(axis=0, ddof=1)
    moved = var > 0
    var = np.where(moved, var, var[moved].mean() if moved.any() else 1.0)
    return torch.diag(torch.from_numpy(var)).contiguous(), "diagonal"


def _check_result(idata, posterior) -> dict[str, Any]:
    attrs = dict(idata.attrs)
    method = attrs.get("method")
    if method not in registry.available():
        raise ValueError(
            f"cannot extend a run of method {method!r}: it is not a result of vaeinv.sample"
        )
    kernel = registry.get(method)
    if kernel.extension_warmup is None:
        raise ValueError(f"cannot extend a run of method {method!r}: {kernel.extension_refusal}")
    z = idata.posterior["z"]
    if z.sizes["latent"] != posterior.latent_dim:
        raise ValueError(
            f"the result's latent has {z.sizes['latent']} dimensions, the posterior's "
            f"{posterior.latent_dim}: extend a run with the posterior it was sampled from"
        )
    checks = {
        "data_sha256": sha256(posterior.data),
        "prior_weights_sha256": getattr(getattr(posterior, "prior", None), "weights_sha256", None),
        "prior_name": posterior.name,
    }
    for key, value in checks.items():
        recorded = "" if attrs.get(key) is None else str(attrs[key])
        if key in attrs and recorded != ("" if value is None else str(value)):
            raise ValueError(
                f"the result's {key} is {attrs[key]!r} but the posterior's is {value!r}: "
                "extend a run with the posterior (data, prior) it was sampled from"
            )
    return attrs


def extend_run(
    idata: az.InferenceData,
    posterior,
    *,
    num_draws: int,
    num_warmup: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    chunk_size: int | None = None,
    progress: bool | Callable[[RunProgress], None] = True,
) -> az.InferenceData:
    """Continue every chain of a finished run and append ``num_draws`` iterations per chain.

    Args:
        idata: a result of [`sample`][vaeinv.runs.sampling.sample] (or ``vaeinv invert``),
            NUTS, HMC or pCN, possibly extended before; a part of a NUTS run is extended alone.
        posterior: the posterior it sampled (its data, prior and latent size are checked
            against the result's record).
        num_draws: sampler iterations per chain to add (thinned as the run was).
        num_warmup: iterations before them that re-adapt the step size, not kept; default
            the kernel's ``extension_warmup``.
        checkpoint: a folder for the extension's chunks and state, as for
            [`sample`][vaeinv.runs.sampling.sample].
        resume: continue the extension saved in ``checkpoint``.
        chunk_size: kept draws per chunk (default: the run's).
        progress: as for [`sample`][vaeinv.runs.sampling.sample].

    Returns:
        the longer result: the run's draws, then the extension's, in every group that has
        draws; its ``num_draws`` attribute counts both, the work counters and the wall time
        are summed, and ``extensions`` (a JSON list) records each extension.

    Raises:
        ValueError: a gpCN run or a result not written by ``sample``; a posterior whose latent
            size, data or prior differ from the run's; a bad ``num_draws`` or ``num_warmup``;
            as [`sample`][vaeinv.runs.sampling.sample] for the checkpoint.
    """
    attrs = _check_result(idata, posterior)
    kernel = registry.get(attrs["method"])
    num_draws = positive_int("num_draws", num_draws)
    thin = int(attrs.get("thin", 1))
    if num_draws < thin:
        raise ValueError(
            f"num_draws={num_draws} keeps no draw at the run's thin of {thin}; "
            f"ask for at least {thin}"
        )
    num_warmup = kernel.extension_warmup if num_warmup is None else num_warmup
    num_warmup = positive_int("num_warmup", num_warmup, minimum=0)
    extensions = json.loads(attrs.get("extensions", "[]"))
    seed = derived_seed(int(attrs["seed"]), _STREAM_EXTEND + len(extensions))
    finished = _finished(idata, attrs, kernel.mass_matrix)
    record: dict[str, Any] = {"num_draws": num_draws, "num_warmup": num_warmup, "seed": seed}
    if finished.mass is not None:
        record["mass"] = f"{finished.mass_kind} covariance of the kept draws"
    more = sample(
        posterior,
        kernel.name,
        num_draws=num_draws,
        num_warmup=num_warmup,
        thin=thin,
        seed=seed,
        checkpoint=checkpoint,
        resume=resume,
        chunk_size=int(attrs.get("chunk_size", 100)) if chunk_size is None else chunk_size,
        progress=progress,
        **kernel().extension(finished),
    )
    return _append(idata, more, attrs, record)


def _last_step_size(idata) -> float | None:
    """The median of the chains' last step sizes (``None`` for a kernel that records none)."""
    stats = getattr(idata, "sample_stats", None)
    if stats is None or "step_size" not in stats:
        return None
    return float(np.median(stats["step_size"].values[:, -1]))


def _finished(idata, attrs: dict[str, Any], with_mass: bool) -> FinishedRun:
    z = idata.posterior["z"].transpose("chain", "draw", "latent").values
    mass, kind = draws_covariance(z) if with_mass else (None, None)
    return FinishedRun(
        options=json.loads(attrs["sampler_options"]),
        num_chains=int(attrs["num_chains"]),
        held=[int(c) for c in idata.posterior["chain"].values],
        last=torch.from_numpy(np.ascontiguousarray(z[:, -1], dtype=np.float64)),
        last_step_size=_last_step_size(idata),
        mass=mass,
        mass_kind=kind,
    )


def _append(idata, more, attrs: dict[str, Any], record: dict[str, Any]) -> az.InferenceData:
    old = int(idata.posterior.sizes["draw"])
    groups: dict[str, xr.Dataset] = {}
    for name in idata.groups():
        data = getattr(idata, name)
        if "draw" in data.dims:
            extra = getattr(more, name)
            extra = extra.assign_coords(draw=extra["draw"].values + old)
            groups[name] = xr.concat([data, extra], dim="draw", combine_attrs="override")
        else:
            groups[name] = data
    out = {**attrs}
    for key in _SUMMED:
        if key in attrs:
            out[key] = int(attrs[key]) + int(more.attrs.get(key, 0))
    out["wall_time_s"] = float(attrs.get("wall_time_s", 0.0)) + float(more.attrs["wall_time_s"])
    if "wall_time_s_parts" in attrs:  # a merged run extended as a whole
        out.pop("wall_time_s_parts")
    out["num_draws"] = int(attrs["num_draws"]) + record["num_draws"]
    out["extensions"] = json.dumps([*json.loads(attrs.get("extensions", "[]")), record])
    out["created_at"] = datetime.datetime.now(datetime.UTC).isoformat()
    for key in ("sampler_options", "versions"):
        if key in out and not isinstance(out[key], str):
            out[key] = json.dumps(out[key])
    return results.from_groups(groups, out)
