"""The one run loop: every kernel advances a run block by block, warm-up then chunks of kept
draws, with a checkpoint and a progress report after every block (see `vaeinv.runs.sampling`).

A block is ``chunk_size * thin`` iterations. A kernel whose warm-up cannot be saved mid-way
(``resumable_warmup = False``, NUTS) runs its whole warm-up as one block.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..kernels.starts import STREAM_KERNEL
from .draws import finish_chunk
from .progress import Bar

if TYPE_CHECKING:
    from .checkpoint import RunCheckpoint
    from .context import RunContext


def execute(run: RunContext, store: RunCheckpoint | None, progress) -> None:
    """Run ``run`` to completion (nothing to do for a complete run)."""
    if run.complete:
        return
    per = len(run.chain_ids) if run.kernel.independent_chains else 1  # chains in turn
    run.bar = Bar(progress, per * run.total, per * run.iteration, run.kernel.name)
    try:
        if run.state is None:
            run.generator.manual_seed(run.stream_seed(STREAM_KERNEL))
            start = time.perf_counter()
            run.state = run.kernel.init(run)
            run.timed(start)
        _warmup(run, store)
        _sample(run, store)
    finally:
        run.bar.close()


def _warmup(run: RunContext, store: RunCheckpoint | None) -> None:
    s = run.settings
    block = s["chunk_size"] * s["thin"]
    while run.iteration < s["num_warmup"]:
        start = time.perf_counter()
        remaining = s["num_warmup"] - run.iteration
        steps = min(block, remaining) if run.kernel.resumable_warmup else remaining
        run.state, _ = run.kernel.advance(run, run.state, steps, adapt=True, thin=s["thin"])
        acceptance = run.block_acceptance()
        run.show(acc=acceptance)
        run.iteration += steps
        if run.iteration == s["num_warmup"]:
            run.state = run.kernel.end_warmup(run.state)
            run.frozen = True
        run.timed(start)
        run.checkpoint(store, acceptance)


def _sample(run: RunContext, store: RunCheckpoint | None) -> None:
    s = run.settings
    while not run.complete:
        start = time.perf_counter()
        length = min(s["chunk_size"], run.kept - run.draws_written)
        iterations = length * s["thin"]
        run.state, kept = run.kernel.advance(
            run, run.state, iterations, adapt=False, thin=s["thin"]
        )
        if "log_k" not in kept:  # decoded and solved once more for its field and prediction
            run.forward_solves += len(run.chain_ids) * length
        chunk = finish_chunk(run.target, kept, run.draws_written)
        acceptance = run.block_acceptance()
        if acceptance != acceptance:  # a kernel that ran the block itself (NUTS)
            acceptance = float(kept["acceptance_rate"].mean())
        else:
            run.show(acc=acceptance)
        run.iteration += iterations
        run.add_chunk(store, chunk)
        run.timed(start)
        run.checkpoint(store, acceptance)
