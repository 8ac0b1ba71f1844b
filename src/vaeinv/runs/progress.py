"""What a run reports as it goes: [`RunProgress`][vaeinv.runs.progress.RunProgress] for a
user's callback, and the tqdm bar of ``vaeinv.sample(progress=True)``."""

from __future__ import annotations

import sys
from dataclasses import dataclass

__all__ = ["RunProgress"]


@dataclass(frozen=True)
class RunProgress:
    """What a progress callback receives after every block (after its checkpoint is written).

    Attributes:
        phase: ``"warmup"``, ``"sampling"`` or ``"done"``.
        iteration: sampler iterations done per chain (warm-up included).
        total_iterations: ``num_warmup + (num_draws // thin) * thin``.
        draws_written: kept draws done per chain.
        chunks_written: chunks done.
        acceptance_rate: mean acceptance probability over chains in the last block.
        divergences: divergent transitions so far (NUTS, HMC; 0 for pCN).
    """

    phase: str
    iteration: int
    total_iterations: int
    draws_written: int
    chunks_written: int
    acceptance_rate: float
    divergences: int


class Bar:
    """A tqdm bar (``progress=True``), a user callback, or nothing."""

    def __init__(self, progress, total: int, done: int, method: str) -> None:
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            # in a log file (no terminal) a refresh every 30 s instead of ten a second
            interval = 0.1 if sys.stderr.isatty() else 30.0
            self.bar = tqdm(
                total=total,
                initial=done,
                desc=f"{method} sampling",
                unit="it",
                mininterval=interval,
            )

    def step(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def postfix(self, **values) -> None:
        if self.bar is not None:
            shown = {k: v if isinstance(v, str) else f"{v:.3g}" for k, v in values.items()}
            self.bar.set_postfix(shown, refresh=False)

    def report(self, info: RunProgress) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{info.phase}")
        if self.callback is not None:
            self.callback(info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
