"""The mutable bookkeeping of one call to ``vaeinv.sample``: counters, chunks, sampler state,
its checkpoint and its result (see ``vaeinv.inference.runner``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from . import results
from ._loops import INIT_SCALE, run_nuts, run_pcn
from .gpcn import GPCNState
from .hmc import HMCState
from .pcn import PCNState
from .progress import Bar, RunProgress
from .run_checkpoint import FORMAT, FORMAT_VERSION, RunCheckpoint, check_fingerprint
from .transport import CouplingFlow, TPCNState, TransportMap

if TYPE_CHECKING:  # results.py is the one module that imports arviz at run time
    import arviz as az


def _restore_transport(saved: dict[str, torch.Tensor], options) -> TransportMap:
    """tpCN's map from its checkpointed state dict (the architecture from the options)."""
    d = saved["mean"].shape[0]
    flow = CouplingFlow(d, int(options["flow_layers"]), int(options["flow_hidden"]), seed=0)
    transport = TransportMap(saved["mean"], saved["scale_tril"], flow)
    transport.load_state_dict(saved)
    for p in transport.parameters():
        p.requires_grad_(False)
    return transport


class _Run:
    """The mutable bookkeeping of one call to ``sample`` (counters, chunks, sampler state)."""

    def __init__(self, posterior, method, settings, fingerprint, z0, progress) -> None:
        self.posterior = posterior
        self.method = method
        self.settings = settings
        self.fingerprint = fingerprint
        self.z0 = z0
        self.progress = progress
        self.options = settings["sampler_options"]
        self.iteration = 0
        self.chunks: list[dict[str, torch.Tensor]] = []
        self.draws_written = 0
        self.frozen = False
        self.complete = False
        self.wall_time = 0.0
        self.divergences = 0
        self.warmup_divergences = 0
        self.gradient_evaluations = 0
        self.extra_forward_solves = 0  # e.g. gpCN's Laplace approximation
        self.mass_corrections: list[int] = []  # NUTS mass="pooled": directions per estimate
        self.laplace_starts: list[float] = []  # gpCN, tpCN, NUTS laplace/pooled: ascents' ends
        self.state: Any = None
        self.generator = torch.Generator()
        self.nuts: dict[str, torch.Tensor] | None = None
        self.fixed_mass: torch.Tensor | None = None  # sample(inverse_mass_matrix=): NUTS, HMC
        self.transport: TransportMap | None = None  # tpCN's fitted map
        self.thin_requested: int | str = settings["thin"]

    @property
    def chain_ids(self) -> list[int]:
        """The chains this run samples: ``settings["chains"]``, else all of them."""
        return list(self.settings.get("chains", range(self.settings["num_chains"])))

    @property
    def kept(self) -> int:
        """Kept draws per chain."""
        return self.settings["num_draws"] // self.settings["thin"]

    @property
    def total(self) -> int:
        """Sampler iterations per chain, warm-up included."""
        return self.settings["num_warmup"] + self.kept * self.settings["thin"]

    # ------------------------------------------------------------------ checkpoint I/O
    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "iteration": self.iteration,
            "chunks_written": len(self.chunks),
            "draws_written": self.draws_written,
            "frozen": self.frozen,
            "complete": self.complete,
            "wall_time_s": self.wall_time,
            "divergences": self.divergences,
            "warmup_divergences": self.warmup_divergences,
            "gradient_evaluations": self.gradient_evaluations,
            "extra_forward_solves": self.extra_forward_solves,
            "mass_corrections": self.mass_corrections,
            "laplace_start_log_density": self.laplace_starts,
            "versions": results.versions(),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"generator": self.generator.get_state()}
        if self.state is not None:
            out.update({f"pcn.{k}": v for k, v in self.state._asdict().items() if v is not None})
        if self.transport is not None:
            out.update({f"transport.{k}": v for k, v in self.transport.state_dict().items()})
        if self.nuts is not None:
            out.update({f"nuts.{k}": v for k, v in self.nuts.items()})
        return out

    def restore(self, store: RunCheckpoint) -> None:
        tensors, meta = store.read_state()
        check_fingerprint(store.folder, meta["fingerprint"], self.fingerprint)
        self.iteration = int(meta["iteration"])
        self.draws_written = int(meta["draws_written"])
        self.frozen = bool(meta["frozen"])
        self.complete = bool(meta["complete"])
        self.wall_time = float(meta["wall_time_s"])
        self.divergences = int(meta["divergences"])
        self.warmup_divergences = int(meta["warmup_divergences"])
        self.gradient_evaluations = int(meta["gradient_evaluations"])
        self.extra_forward_solves = int(meta.get("extra_forward_solves", 0))
        self.mass_corrections = [int(k) for k in meta.get("mass_corrections", [])]
        self.laplace_starts = [float(v) for v in meta.get("laplace_start_log_density", [])]
        self.chunks = [store.read_chunk(i) for i in range(int(meta["chunks_written"]))]
        self.generator.set_state(tensors["generator"])
        device = self.posterior.device
        pcn = {k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("pcn.")}
        if pcn:
            kind = {"gpcn": GPCNState, "tpcn": TPCNState, "hmc": HMCState}.get(
                self.method, PCNState
            )
            self.state = kind(**pcn)
        saved = {k[10:]: v for k, v in tensors.items() if k.startswith("transport.")}
        if saved:
            self.transport = _restore_transport(saved, self.options).to(device)
        nuts = {k[5:]: v for k, v in tensors.items() if k.startswith("nuts.")}
        self.nuts = nuts or None

    def checkpoint(self, store: RunCheckpoint | None, bar: Bar, acceptance: float) -> None:
        if store is not None:
            store.write_state(self.tensors(), self.meta())
        warm = self.iteration < self.settings["num_warmup"]
        phase = "done" if self.complete else "warmup" if warm else "sampling"
        bar.report(
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

    # ------------------------------------------------------------------ running
    def execute(self, store: RunCheckpoint | None) -> None:
        if self.complete:
            return
        per = len(self.chain_ids) if self.method == "nuts" else 1  # NUTS: in turn
        bar = Bar(self.progress, per * self.total, per * self.iteration, self.method)
        try:
            if self.method in ("pcn", "gpcn", "tpcn", "hmc"):
                run_pcn(self, store, bar)
            else:
                run_nuts(self, store, bar)
        finally:
            bar.close()

    def timed(self, start: float) -> None:
        self.wall_time += time.perf_counter() - start

    # ------------------------------------------------------------------ result
    def result(self, attrs: Mapping[str, Any] | None) -> az.InferenceData:
        draws = {
            k: torch.cat([c[k] for c in self.chunks], dim=0 if k == "draw" else 1)
            for k in self.chunks[0]
        }
        s = self.settings
        solves = (
            s["num_chains"] * (1 + self.total) + self.extra_forward_solves
            if self.method in ("pcn", "gpcn", "tpcn")
            # NUTS and HMC: one solve per gradient, and one per kept draw (decoded and solved
            # again for its field and prediction)
            else self.gradient_evaluations
            + len(self.chain_ids) * self.kept
            + self.extra_forward_solves
        )
        prior = getattr(self.posterior, "prior", None)
        run_attrs = {
            **{k: v for k, v in s.items() if k != "sampler_options"},
            "sampler_options": s["sampler_options"],
            "thin_requested": self.thin_requested,
            "init_scale": INIT_SCALE,
            "prior_name": self.posterior.name,
            "prior_weights_sha256": getattr(prior, "weights_sha256", None),
            "data_sha256": self.fingerprint["posterior"]["data_sha256"],
            "device": str(self.posterior.device),
            "wall_time_s": self.wall_time,
            "forward_solves": solves,
            "gradient_evaluations": self.gradient_evaluations,
            "divergences": self.divergences,
            "warmup_divergences": self.warmup_divergences,
            **({"mass_corrections": self.mass_corrections} if self.mass_corrections else {}),
            **({"laplace_start_log_density": self.laplace_starts} if self.laplace_starts else {}),
            **dict(attrs or {}),
        }
        draws["chain"] = torch.tensor(self.chain_ids, dtype=torch.int64)
        return results.to_inference_data(self.posterior, draws, attrs=run_attrs)
