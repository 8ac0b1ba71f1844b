"""A task ``build`` that kills its worker process the first time it runs (a lost worker in
the middle of a run), for the distributed-run tests. Shipped to Dask workers by value."""

from __future__ import annotations

import os
from pathlib import Path


def build_once_killing(marker: str, problem: str, method: str):
    """The first call creates ``marker`` and ends the process at once; later calls load the
    problem's posterior."""
    from vaeinv.runs.distributed import problem_builder

    path = Path(marker)
    if not path.exists():
        path.write_text("killed once")
        os._exit(1)
    return problem_builder(problem, method)()
