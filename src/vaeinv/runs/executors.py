"""Where a run's tasks execute: in this process, one after another, or on a Dask cluster.

A task is a picklable function applied to a picklable payload. On Dask
(``dask.distributed``) every task is submitted once, its result gathered in the order of the
payloads; a task whose worker is lost is run again by the scheduler on another worker (Dask
retries such a task up to ``distributed.scheduler.allowed-failures`` times), and since a
task's randomness comes from its payload (seeds derived from the run's seed and the task),
the retried task gives the same result.

``workers=N`` starts a ``LocalCluster`` of ``N`` single-threaded worker processes on this
machine and closes it afterwards; ``scheduler="tcp://host:8786"`` connects to a running
cluster (started by hand with ``dask scheduler`` and ``dask worker``, or by dask-jobqueue on
a batch system) and leaves it running.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["run_tasks"]


def run_tasks(
    fn: Callable[[Any], Any],
    payloads: Sequence[Any],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    timeout: float = 30.0,
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``[fn(p) for p in payloads]``, in this process or on Dask.

    Args:
        fn: the task function (importable by the workers: a module-level function).
        payloads: one per task.
        workers: start a local Dask cluster of this many worker processes (one thread each).
        scheduler: the address of a running Dask scheduler instead (``workers`` then unused).
        timeout: seconds to wait for the scheduler (or the local cluster) to answer.
        on_done: called with ``(task index, result)`` as each task finishes.

    Raises:
        ValueError: ``workers`` not a positive integer, both ``workers`` and ``scheduler``, or a
            scheduler that does not answer within ``timeout`` (its address named), before any
            task runs.
    """
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if workers is not None and scheduler is not None:
        raise ValueError("give workers (a local cluster) or scheduler (a running one), not both")
    if workers is None and scheduler is None:
        out = []
        for i, payload in enumerate(payloads):
            out.append(fn(payload))
            if on_done is not None:
                on_done(i, out[-1])
        return out
    from dask.distributed import Client, LocalCluster, as_completed

    # ArviZ writes a stamp file the first time it is imported on a new day, through one fixed
    # temporary name: worker processes importing it at the same moment race on that file and
    # one of them dies. Importing it here first writes today's stamp (for workers on this
    # machine); a lost worker's task is retried in any case, with the same draws.
    from ..results import inference_data  # noqa: F401

    cluster = None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as err:
            raise ValueError(
                f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s "
                f"({type(err).__name__}: {err}); start one with 'dask scheduler' and workers "
                "with 'dask worker ADDRESS', or pass workers=N for a local cluster"
            ) from err
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            timeout=timeout,
        )
        client = Client(cluster, timeout=timeout)
    try:
        futures = [client.submit(fn, payload, pure=False) for payload in payloads]
        index = {future.key: i for i, future in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        for future in as_completed(futures):
            i = index[future.key]
            results[i] = future.result()
            if on_done is not None:
                on_done(i, results[i])
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
