"""Joining the parts of one run, each of some of its chains, into the run's result.

NUTS chains are independent: each has its own random stream, seeded from the run's seed and the
chain's index ([`chain_seed`][vaeinv.kernels.nuts_chain.chain_seed]), and all of them start from
points drawn before any chain runs. ``vaeinv.sample(..., chains=[0, 1])`` and
``chains=[2, 3]`` can therefore run in two processes, or on two machines, and
[`merge_runs`][vaeinv.runs.merge.merge_runs] joins their results into the one a single
four-chain run gives (the same draws, bit for bit on the same machine), with the work counters
(forward solves, gradients, divergences) and the sampling times summed.

Parts are checked to be of one run before anything is joined: every attribute except those
that belong to a part (its chains, counters, times, creation time and device) must agree, the
observed and constant data must be equal, and no chain may appear twice.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import xarray as xr

from .. import results

if TYPE_CHECKING:  # results is the one package that imports arviz at run time
    import arviz as az

__all__ = ["merge_runs"]

#: run attributes that are summed over the parts (and every kernel counter named by
#: `SUMMED_PREFIXES`, such as MLDA's solves per level).
SUMMED = ("forward_solves", "gradient_evaluations", "divergences", "warmup_divergences")
SUMMED_PREFIXES = ("forward_solves_level_", "gradient_evaluations_level_", "coarse_forward_solves")
#: run attributes of a part that may differ between parts (besides `SUMMED`).
#: ``mass_corrections``: a pooled NUTS warm-up (``mass="pooled"``) estimates within each part.
#: ``laplace_start_log_density``: every part fits the whole run's Laplace approximation, but
#: parts run on other machines may round it differently (part 0's is kept).
_PER_PART = (
    "chains",
    "created_at",
    "wall_time_s",
    "device",
    "merged_from",
    "mass_corrections",
    "laplace_start_log_density",
    "task_seed",
    *SUMMED,
)


def _summed(key: str) -> bool:
    return key in SUMMED or key.startswith(SUMMED_PREFIXES)


def _chains(part: az.InferenceData) -> list[int]:
    return [int(c) for c in part.posterior["chain"].values]


def merge_runs(parts: Sequence[az.InferenceData]) -> az.InferenceData:
    """Join results of some chains each (``vaeinv.sample(..., chains=...)``) into one.

    Args:
        parts: two or more results of one run (same problem, seed, settings and data), each
            holding other chains.

    Returns:
        the joined ``InferenceData``, chains in increasing order; its attributes are the run's,
        with ``forward_solves``, ``gradient_evaluations``, ``divergences``,
        ``warmup_divergences`` and ``wall_time_s`` summed over the parts,
        ``wall_time_s_parts`` listing each part's time (``mass_corrections_parts`` each
        part's pooled mass estimates, see `vaeinv.approx.pooled`), ``merged_from`` the
        number of parts,
        and ``chains`` the chains held when they are not all ``num_chains`` of the run.

    Raises:
        ValueError: fewer than two parts, parts of different runs (the first differing
            attribute or group named), a chain in two parts, or parts with different groups.
    """
    parts = list(parts)
    if len(parts) < 2:
        raise ValueError(f"merging needs at least two parts, got {len(parts)}")
    first = dict(parts[0].attrs)
    groups = set(parts[0].groups())
    for i, part in enumerate(parts[1:], start=1):
        attrs = dict(part.attrs)
        for key in sorted((set(first) | set(attrs)) - set(_PER_PART)):
            if _summed(key):
                continue
            if str(first.get(key)) != str(attrs.get(key)):
                raise ValueError(
                    f"part {i} is not of the same run as part 0: its {key!r} is "
                    f"{attrs.get(key)!r}, part 0's is {first.get(key)!r}; only parts of one "
                    "run (same problem, data, seed and settings, other chains) can be merged"
                )
        if set(part.groups()) != groups:
            raise ValueError(
                f"part {i} has the groups {sorted(part.groups())}, part 0 {sorted(groups)}"
            )
    held = [c for part in parts for c in _chains(part)]
    twice = sorted({c for c in held if held.count(c) > 1})
    if twice:
        raise ValueError(f"chain(s) {twice} are in more than one part; each part holds others")

    merged: dict[str, xr.Dataset] = {}
    for name in parts[0].groups():
        datasets = [getattr(part, name) for part in parts]
        if "chain" in datasets[0].dims:
            merged[name] = xr.concat(datasets, dim="chain", combine_attrs="override")
            merged[name] = merged[name].sortby("chain")
            continue
        for i, other in enumerate(datasets[1:], start=1):
            if not other.equals(datasets[0]):
                raise ValueError(
                    f"part {i}'s {name} differs from part 0's: parts of one run share their "
                    "data, noise, sensors and truth"
                )
        merged[name] = datasets[0]

    attrs: dict[str, Any] = {k: v for k, v in first.items() if k not in _PER_PART}
    for key in [k for k in first if _summed(k)]:
        attrs[key] = sum(int(part.attrs.get(key, 0)) for part in parts)
    if "task_seed" in first:
        attrs["task_seeds"] = json.dumps([int(part.attrs["task_seed"]) for part in parts])
    times = [float(part.attrs.get("wall_time_s", 0.0)) for part in parts]
    attrs["wall_time_s"] = sum(times)
    attrs["wall_time_s_parts"] = json.dumps(times)
    if "mass_corrections" in first:
        attrs["mass_corrections_parts"] = json.dumps(
            [json.loads(part.attrs["mass_corrections"]) for part in parts]
        )
    if "laplace_start_log_density" in first:
        attrs["laplace_start_log_density"] = first["laplace_start_log_density"]
    attrs["device"] = first.get("device", "")
    attrs["merged_from"] = len(parts)
    attrs["created_at"] = datetime.datetime.now(datetime.UTC).isoformat()
    chains = sorted(held)
    if chains != list(range(int(first.get("num_chains", len(chains))))):
        attrs["chains"] = json.dumps(chains)
    return results.from_groups(merged, attrs)
