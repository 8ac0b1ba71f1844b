"""One run's chains in groups, each group a task that can run in another process or on another
machine ([`run_tasks`][vaeinv.runs.executors.run_tasks]), the parts joined into the run's
result ([`merge_runs`][vaeinv.runs.merge.merge_runs]).

What a group draws depends on the groups, never on where or when it runs, so a run gives the
same draws in one process and on any number of Dask workers, and a task retried after a lost
worker repeats its draws:

- a kernel with independent chains (NUTS) runs group ``g`` as ``sample(..., chains=group)``
  with the run's seed: the joined result is the whole run's, bit for bit, whatever the groups;
- a batched kernel (pCN, gpCN, tpCN, HMC, MLDA: all chains from one random stream) runs each
  group as a batch of its own, seeded with the run's seed when there is one group and
  otherwise with the group's seed, ``SeedSequence(seed, spawn_key=(g,))`` (recorded as the
  part's ``task_seed``): the draws depend on the grouping, and adding groups spreads the run
  over more workers at the cost of smaller batches.

Each task builds its posterior itself (``build()``, a picklable function such as a problem
file's loader), so that nothing large travels to the workers, and checkpoints into
``checkpoint/task-<g>`` when the run has a checkpoint folder (on a shared file system when the
workers are other machines), so that an interrupted run resumes task by task.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GroupTask",
    "chain_groups",
    "group_seed",
    "group_tasks",
    "problem_builder",
    "run_group",
    "sample_distributed",
]


def group_seed(seed: int, group: int) -> int:
    """The seed of chain group ``group`` of a run seeded ``seed`` (a 63-bit integer)."""
    sequence = np.random.SeedSequence(int(seed), spawn_key=(int(group),))
    return int(sequence.generate_state(1, np.uint64)[0]) >> 1


def chain_groups(num_chains: int, groups: int) -> list[tuple[int, ...]]:
    """``num_chains`` chains in ``groups`` contiguous groups as equal as they can be.

    Raises:
        ValueError: ``groups`` not an integer in ``[1, num_chains]``.
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= num_chains:
        raise ValueError(
            f"chain groups must be an integer in [1, num_chains = {num_chains}], got {groups!r}"
        )
    bounds = [round(k * num_chains / groups) for k in range(groups + 1)]
    return [tuple(range(a, b)) for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class GroupTask:
    """One group's task (picklable): what `run_group` runs."""

    build: Callable[[], tuple[Any, dict]]
    method: str
    group: int
    chains: tuple[int, ...]
    num_chains: int
    seed: int
    task_seed: int
    independent: bool
    settings: dict = field(default_factory=dict)
    checkpoint: str | None = None
    threads: int | None = None


def run_group(task: GroupTask):
    """Sample one group (the module docstring says how); its ``InferenceData``."""
    import torch

    threads = torch.get_num_threads()
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    try:
        return _sample_group(task)
    finally:
        torch.set_num_threads(threads)


def _sample_group(task: GroupTask):
    from .sampling import sample

    posterior, inputs = task.build()
    settings = dict(task.settings)
    if task.checkpoint is not None:
        settings["checkpoint"] = task.checkpoint
    if task.independent:
        return sample(
            posterior, task.method, num_chains=task.num_chains, chains=list(task.chains),
            seed=task.seed, **inputs, **settings,
        )  # fmt: skip
    idata = sample(
        posterior, task.method, num_chains=len(task.chains), seed=task.task_seed,
        **inputs, **settings,
    )  # fmt: skip
    groups = [g for g in idata.groups() if "chain" in getattr(idata, g).dims]
    idata = idata.assign_coords({"chain": list(task.chains)}, groups=groups)
    idata.attrs["seed"] = task.seed
    idata.attrs["num_chains"] = task.num_chains
    if task.task_seed != task.seed:
        idata.attrs["task_seed"] = task.task_seed
    return idata


def sample_distributed(
    build: Callable[[], tuple[Any, dict]],
    method: str,
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
    """Sample ``method`` on the posterior ``build()`` gives, in chain groups (module
    docstring), in this process or on Dask; the joined ``InferenceData``.

    Args:
        build: a picklable function returning ``(posterior, inputs)`` (the kernel's inputs,
            e.g. ``{"coarse": [...]}`` for MLDA): each task calls it.
        method: a registered kernel.
        num_chains: chains of the whole run.
        groups: the number of chain groups; ``None``: one per chain for a kernel with
            independent chains, one for a batched kernel.
        seed: the run's seed.
        workers: start a local Dask cluster of this many workers
            ([`run_tasks`][vaeinv.runs.executors.run_tasks]); with no ``scheduler`` either, the
            tasks run in this process.
        scheduler: the address of a running Dask scheduler instead.
        timeout: seconds to wait for the scheduler.
        threads: torch threads in each task, in this process too (restored after it), so that
            a run gives the same bits wherever its tasks run (``None``: the process's setting).
        checkpoint: a folder for the tasks' checkpoints (``task-<g>`` each).
        on_done: called with ``(group, InferenceData)`` as each group finishes.
        settings: the rest of ``vaeinv.sample``'s arguments (``num_warmup``, ``num_draws``,
            ``thin``, ``resume``, ``chunk_size``, ``attrs``, ``device``, options).

    Raises:
        ValueError: an unknown method, a bad number of groups or workers, an unreachable
            scheduler, and whatever ``vaeinv.sample`` refuses (raised by the first task).
    """
    from .executors import run_tasks
    from .merge import merge_runs

    tasks = group_tasks(
        build, method, num_chains=num_chains, groups=groups, seed=seed, threads=threads,
        checkpoint=checkpoint, **settings,
    )  # fmt: skip
    parts = run_tasks(
        run_group, tasks, workers=workers, scheduler=scheduler, timeout=timeout, on_done=on_done
    )
    return parts[0] if len(parts) == 1 else merge_runs(parts)


def group_tasks(
    build: Callable[[], tuple[Any, dict]],
    method: str,
    *,
    num_chains: int,
    groups: int | None,
    seed: int,
    threads: int | None = 1,
    checkpoint: str | Path | None = None,
    **settings,
) -> list[GroupTask]:
    """The chain groups' tasks of one run (`sample_distributed` says what each argument
    means), to run with `run_group`, here or on Dask."""
    from ..kernels import registry

    kernel = registry.get(method)
    independent = bool(kernel.independent_chains)
    if groups is None:
        groups = num_chains if independent else 1
    split = chain_groups(num_chains, groups)
    settings = {"progress": False, **settings}
    return [
        GroupTask(
            build=build,
            method=method,
            group=g,
            chains=chains,
            num_chains=num_chains,
            seed=seed,
            task_seed=seed if (independent or len(split) == 1) else group_seed(seed, g),
            independent=independent,
            settings=settings,
            checkpoint=None if checkpoint is None else str(Path(checkpoint) / f"task-{g}"),
            threads=threads,
        )
        for g, chains in enumerate(split)
    ]


def _problem_inputs(problem: str, method: str, prior, device):
    """``(posterior, inputs)`` of a problem file for ``method`` (the CLI's ``build``)."""
    from ..problems import load_problem

    return load_problem(problem).sampling_inputs(method, prior=prior, device=device)


def problem_builder(problem: str | Path, method: str, prior=None, device=None):
    """A picklable ``build`` for `sample_distributed` that loads a problem file (by name or
    folder) in the task's process."""
    import functools

    return functools.partial(_problem_inputs, str(problem), method, prior, device)
