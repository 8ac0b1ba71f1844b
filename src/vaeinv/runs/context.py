"""The mutable record of one call to ``vaeinv.sample``: the kernel and its options, counters,
chunks, the chain state, its checkpoint and its result (see `vaeinv.runs.sampling`). Kernels
see it as ``run`` in ``init`` and ``advance``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from ..kernels.starts import INIT_SCALE, derived_seed
from ..provenance import versions
from .checkpoint import FORMAT, FORMAT_VERSION, RunCheckpoint, check_fingerprint
from .progress import Bar, RunProgress

if TYPE_CHECKING:
    from ..kernels.base import Kernel, Options


class RunContext:
    """One run's bookkeeping (counters, chunks, state) and what kernels may ask of it.

    Attributes a kernel reads: ``target`` (the posterior), ``options`` (its `Options`),
    ``z0`` (every chain's start, ``(num_chains, d)``), ``chain_ids`` (the chains this run
    samples), ``generator`` (the batched kernels' stream), ``num_warmup``, ``fixed_mass`` (the
    ``inverse_mass_matrix`` given to ``sample``, or ``None``), ``bar`` (the progress display).
    What a kernel records: `add_work` (solves and gradients spent outside ``evaluate``),
    ``laplace_starts``, ``mass_corrections``, ``divergences``, ``warmup_divergences``.
    """

    def __init__(self, target, kernel: Kernel, options: Options, settings, fingerprint, z0):
        self.target = target
        self.kernel = kernel
        self.options = options
        self.settings = settings
        self.fingerprint = fingerprint
        self.z0 = z0
        self.iteration = 0
        self.chunks: list[dict[str, torch.Tensor]] = []
        self.draws_written = 0
        self.frozen = False
        self.complete = False
        self.wall_time = 0.0
        self.divergences = 0
        self.warmup_divergences = 0
        self.forward_solves = 0
        self.gradient_evaluations = 0
        self.extra_forward_solves = 0  # e.g. the Laplace approximation's
        self.mass_corrections: list[int] = []  # directions corrected per mass estimate
        self.laplace_starts: list[float] = []  # where the Laplace ascents ended
        self.counters: dict[str, int] = {}  # a kernel's own work counters, recorded as attrs
        self.state: Any = None
        self.generator = torch.Generator()
        self.fixed_mass: torch.Tensor | None = None
        self.thin_requested: int | str = settings["thin"]
        self.init_scale = INIT_SCALE  # of the over-dispersed starts, recorded with the result
        self.bar: Bar | None = None
        self._acceptance = 0.0
        self._acceptance_steps = 0
        work = target.work  # what the target counted before this run is not this run's
        self._work_seen = (work.forward_solves, work.gradient_evaluations)

    # ------------------------------------------------------------------ what kernels ask
    @property
    def chain_ids(self) -> list[int]:
        """The chains this run samples: ``settings["chains"]``, else all of them."""
        return list(self.settings.get("chains", range(self.settings["num_chains"])))

    @property
    def num_warmup(self) -> int:
        return self.settings["num_warmup"]

    def stream_seed(self, stream: int) -> int:
        """The seed of the run's random stream ``stream`` (see `vaeinv.kernels.starts`)."""
        return derived_seed(self.settings["seed"], stream)

    def add_work(self, forward_solves: int, gradient_evaluations: int) -> None:
        """Count work spent outside ``target.evaluate`` (a fit, an approximation)."""
        self.extra_forward_solves += int(forward_solves)
        self.gradient_evaluations += int(gradient_evaluations)

    def count(self, name: str, value: int) -> None:
        """Add to a kernel's own work counter ``name`` (recorded in the result's attributes)."""
        self.counters[name] = self.counters.get(name, 0) + int(value)

    def show(self, **values) -> None:
        """Show values beside the progress bar (e.g. ``divergences=3``)."""
        if self.bar is not None:
            self.bar.postfix(**values)

    def record_step(self, info, warmup: bool) -> None:
        """A step's acceptance (for the progress display) and divergences, by phase."""
        self._acceptance += float(info.acceptance_rate.mean())
        self._acceptance_steps += 1
        diverging = getattr(info, "diverging", None)
        if diverging is not None:
            if warmup:
                self.warmup_divergences += int(diverging.sum())
            else:
                self.divergences += int(diverging.sum())
        if self.bar is not None:
            self.bar.step()

    def block_acceptance(self) -> float:
        """The mean acceptance of the steps since the last call (``nan`` if none)."""
        mean = self._acceptance / self._acceptance_steps if self._acceptance_steps else float("nan")
        self._acceptance, self._acceptance_steps = 0.0, 0
        return mean

    # ------------------------------------------------------------------ sizes
    @property
    def kept(self) -> int:
        """Kept draws per chain."""
        return self.settings["num_draws"] // self.settings["thin"]

    @property
    def total(self) -> int:
        """Sampler iterations per chain, warm-up included."""
        return self.settings["num_warmup"] + self.kept * self.settings["thin"]

    # ------------------------------------------------------------------ work and time
    def collect_work(self) -> None:
        """Move what the target counted into the run's totals."""
        work = self.target.work
        seen_solves, seen_gradients = self._work_seen
        self.forward_solves += work.forward_solves - seen_solves
        self.gradient_evaluations += work.gradient_evaluations - seen_gradients
        self._work_seen = (work.forward_solves, work.gradient_evaluations)

    def timed(self, start: float) -> None:
        self.wall_time += time.perf_counter() - start

    # ------------------------------------------------------------------ checkpoint I/O
    _COUNTERS = (
        ("iteration", "iteration", int),
        ("draws_written", "draws_written", int),
        ("frozen", "frozen", bool),
        ("complete", "complete", bool),
        ("wall_time", "wall_time_s", float),
        ("divergences", "divergences", int),
        ("warmup_divergences", "warmup_divergences", int),
        ("gradient_evaluations", "gradient_evaluations", int),
        ("extra_forward_solves", "extra_forward_solves", int),
    )

    def meta(self) -> dict[str, Any]:
        self.collect_work()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "chunks_written": len(self.chunks),
            **{key: getattr(self, attr) for attr, key, _ in self._COUNTERS},
            "forward_solves": self.forward_solves,
            "mass_corrections": self.mass_corrections,
            "laplace_start_log_density": self.laplace_starts,
            "counters": self.counters,
            "versions": versions(),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"generator": self.generator.get_state()}
        prefix = self.kernel.state_key or self.kernel.name
        if self.state is not None:
            items = self.state._asdict().items()
            out.update({f"{prefix}.{k}": v for k, v in items if v is not None})
        out.update(self.kernel.extra_tensors(self))
        return out

    def restore(self, store: RunCheckpoint) -> None:
        tensors, meta = store.read_state()
        check_fingerprint(store.folder, meta["fingerprint"], self.fingerprint)
        for attr, key, kind in self._COUNTERS:
            setattr(self, attr, kind(meta.get(key, 0)))
        # a checkpoint written before solves were counted one by one: every iteration of
        # every chain solved once (a gradient-based kernel: once per gradient)
        fallback = max(self.gradient_evaluations, len(self.chain_ids) * (1 + self.iteration))
        self.forward_solves = int(meta.get("forward_solves", fallback))
        self.mass_corrections = [int(k) for k in meta.get("mass_corrections", [])]
        self.laplace_starts = [float(v) for v in meta.get("laplace_start_log_density", [])]
        self.counters = {str(k): int(v) for k, v in meta.get("counters", {}).items()}
        self.chunks = [store.read_chunk(i) for i in range(int(meta["chunks_written"]))]
        self.generator.set_state(tensors["generator"])
        device = self.target.device
        prefix = (self.kernel.state_key or self.kernel.name) + "."
        saved = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if saved:
            fields = self.kernel.state_type._fields
            move = self.kernel.state_on_device
            values = {k: saved[k].to(device) if move else saved[k] for k in saved}
            values = {k: values.get(k) for k in fields}
            self.state = self.kernel.state_type(**values)
        self.kernel.restore_extra(self, tensors)

    def checkpoint(self, store: RunCheckpoint | None, acceptance: float) -> None:
        if store is not None:
            store.write_state(self.tensors(), self.meta())
        warm = self.iteration < self.settings["num_warmup"]
        phase = "done" if self.complete else "warmup" if warm else "sampling"
        self.bar.report(
            RunProgress(
                phase=phase,
                iteration=self.iteration,
                total_iterations=self.total,
                draws_written=self.draws_written,
                chunks_written=len(self.chunks),
                acceptance_rate=acceptance,
                divergences=self.divergences,
            )
        )

    def add_chunk(self, store: RunCheckpoint | None, chunk: dict[str, torch.Tensor]) -> None:
        if store is not None:
            store.write_chunk(len(self.chunks), chunk)
        self.chunks.append(chunk)
        self.draws_written += chunk["z"].shape[1]
        self.complete = self.draws_written >= self.kept
