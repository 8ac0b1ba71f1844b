"""Sampling a [`Decomposition`][vaeinv.decomposition.setup.Decomposition]: one task per
subdomain and chain group, here or on Dask ([`run_tasks`][vaeinv.runs.executors.run_tasks]),
then the local draws Poisson-blended into global ones, draw by draw.

Subdomain ``k`` samples with the seed ``SeedSequence(seed, spawn_key=(k,))`` (as
[`group_seed`][vaeinv.runs.distributed.group_seed]); its chain groups derive theirs from it as
an ordinary run's do. A task's draws therefore depend on the run's seed, the subdomain and the
group only: the same in one process, on any number of workers, and after a retry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .local import build_local
from .setup import Decomposition

__all__ = ["sample_decomposed"]


def sample_decomposed(
    decomposition: Decomposition,
    method: str = "pcn",
    *,
    num_chains: int = 4,
    groups: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    scheduler: str | None = None,
    timeout: float = 30.0,
    threads: int | None = 1,
    checkpoint: str | Path | None = None,
    on_done: Callable[[int, Any], None] | None = None,
    **settings,
):
    """Sample every subdomain's posterior with ``method`` and blend the draws; the global
    ``InferenceData`` (`vaeinv.results.decomposed`).

    Args:
        decomposition: the local problems.
        method: a registered kernel, run in every subdomain.
        num_chains: chains per subdomain.
        groups: chain groups per subdomain (`vaeinv.runs.distributed.sample_distributed`).
        seed: the run's seed.
        workers: a local Dask cluster of this many worker processes.
        scheduler: the address of a running Dask scheduler instead.
        timeout: seconds to wait for the scheduler.
        threads: torch threads in each task.
        checkpoint: a folder for the tasks' checkpoints (``subdomain-<k>/task-<g>``).
        on_done: called with ``(task index, InferenceData)`` as each task finishes.
        settings: the rest of ``vaeinv.sample``'s arguments.

    Raises:
        ValueError: as `vaeinv.runs.distributed.sample_distributed`.
    """
    from ..results.decomposed import decomposed_inference_data
    from ..runs.distributed import group_seed, group_tasks, run_group
    from ..runs.executors import run_tasks
    from ..runs.merge import merge_runs

    tasks, owner = [], []
    for spec in decomposition.specs:
        folder = None if checkpoint is None else Path(checkpoint) / f"subdomain-{spec.index}"
        part = group_tasks(
            functools.partial(build_local, spec), method, num_chains=num_chains,
            groups=groups, seed=group_seed(seed, spec.index), threads=threads,
            checkpoint=folder, **settings,
        )  # fmt: skip
        tasks += part
        owner += [spec.index] * len(part)
    parts = run_tasks(
        run_group, tasks, workers=workers, scheduler=scheduler, timeout=timeout, on_done=on_done
    )
    local = []
    for k in range(len(decomposition.specs)):
        mine = [p for p, o in zip(parts, owner, strict=True) if o == k]
        local.append(mine[0] if len(mine) == 1 else merge_runs(mine))
    attrs = {"seed": seed, "method": method, "workers": workers or 0}
    return decomposed_inference_data(decomposition, local, attrs)
