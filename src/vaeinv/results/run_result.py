"""A finished run's record as ``InferenceData``: its draws and the attributes every result
carries (settings, sampler options, work counters, provenance)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .inference_data import to_inference_data

__all__ = ["from_run"]


def from_run(run, attrs: Mapping[str, Any] | None):
    """``InferenceData`` of a run (a `vaeinv.runs.context.RunContext` whose chunks are all
    written)."""
    run.collect_work()
    draws = {
        k: torch.cat([c[k] for c in run.chunks], dim=0 if k == "draw" else 1) for k in run.chunks[0]
    }
    s = run.settings
    posterior = run.target
    prior = getattr(posterior, "prior", None)
    run_attrs = {
        **{k: v for k, v in s.items() if k != "sampler_options"},
        "sampler_options": s["sampler_options"],
        "thin_requested": run.thin_requested,
        "init_scale": run.init_scale,
        "prior_name": posterior.name,
        "prior_weights_sha256": getattr(prior, "weights_sha256", None),
        "data_sha256": run.fingerprint["posterior"]["data_sha256"],
        "device": str(posterior.device),
        "wall_time_s": run.wall_time,
        "forward_solves": run.forward_solves + run.extra_forward_solves,
        "gradient_evaluations": run.gradient_evaluations,
        "divergences": run.divergences,
        "warmup_divergences": run.warmup_divergences,
        **run.counters,
        **({"mass_corrections": run.mass_corrections} if run.mass_corrections else {}),
        **({"laplace_start_log_density": run.laplace_starts} if run.laplace_starts else {}),
        **dict(attrs or {}),
    }
    draws["chain"] = torch.tensor(run.chain_ids, dtype=torch.int64)
    return to_inference_data(posterior, draws, attrs=run_attrs)
