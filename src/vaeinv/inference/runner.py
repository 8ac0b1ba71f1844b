"""The chain runner: [`sample`][vaeinv.inference.runner.sample] runs pCN or NUTS chains from
over-dispersed starts, in chunks written to disk, resumable, and returns ArviZ
``InferenceData``.

**Seeds.** The run's ``seed`` derives every generator: stream 0 draws the initial latents,
stream 1 drives pCN, stream 2 seeds NUTS (``numpy.random.SeedSequence([seed, stream])``), so
the same seed gives the same draws and the streams never share random numbers.

**Initialisation.** Chains start from over-dispersed prior draws, ``z0 = 1.5 * N(0, I)``
(variance 2.25 per latent): R-hat compares chains that started apart. ``init`` overrides this.

**Draws and thinning** (as Stan's ``num_samples`` and ``thin``). ``num_draws`` counts the
sampler's iterations per chain after warm-up; every ``thin``-th of them is kept, so a chain
keeps ``num_draws // thin`` draws (the floor: when ``thin`` does not divide ``num_draws``, the
last ``num_draws % thin`` iterations, which would not be kept, are not run). Every kept draw
carries its latents and its field: ``z (chain, draw, latent)`` and ``log_k (chain, draw, y, x)``
share the draws. ``thin="auto"`` picks the smallest ``thin`` that keeps the result under
about 100 MB ([`auto_thin`][vaeinv.inference.thinning.auto_thin]); the resolved value is
recorded in the attributes and the fingerprint. pCN keeps the field its step decoded (cached
in the [`PCNState`][vaeinv.inference.pcn.PCNState]), so storing ``log_k`` costs no extra
decode; NUTS decodes its kept draws in a batch at the end of each chunk.

**Chunks.** The run advances in blocks of ``chunk_size * thin`` iterations (warm-up included).
With a ``checkpoint`` folder, after every block of ``chunk_size`` kept draws the chunk is
written as ``chunk_00000.safetensors`` (``z``, ``log_k``, sample statistics, predictions,
pointwise log-likelihood), then the sampler state as ``state.safetensors`` (chain state with the
cached fields, adaptation, generator state; its JSON header metadata holds the progress counters
and the run fingerprint) with a readable copy of that JSON in ``state.json``. Each file goes to
a temporary name first and is renamed into place (atomic), so a killed run loses at most the
block in progress. ``resume=True`` continues from the last state: a pCN run resumed this way
gives bit-identical draws to an uninterrupted run. The fingerprint (method, seed, settings,
sampler options, initialisation, the posterior's name, latent size, data, noise and
prior-weights hash, and ``attrs``) must match, else resuming raises ``ValueError`` naming what
differs.

**NUTS** (Pyro) runs its warm-up inside the first chunk (Pyro's adaptation cannot be saved
mid-way); later chunks continue each chain from its last draw with the adapted step size and
mass matrix and the saved RNG state.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import results
from .gpcn import GPCNState, gpcn_init, gpcn_step
from .laplace import laplace_approximation
from .pcn import PCNState, freeze_adaptation, pcn_init, pcn_step
from .run_checkpoint import FORMAT, FORMAT_VERSION, RunCheckpoint, check_fingerprint, jsonable
from .thinning import RESULT_BUDGET_BYTES, auto_thin, positive_int, resolve_thin

if TYPE_CHECKING:  # results.py is the one module that imports arviz at run time
    import arviz as az

__all__ = [
    "INIT_SCALE",
    "RESULT_BUDGET_BYTES",
    "SAMPLER_OPTIONS",
    "RunProgress",
    "auto_thin",
    "resolve_thin",
    "sample",
]

#: initial latents are ``INIT_SCALE * N(0, I)`` draws (over-dispersed relative to the prior).
INIT_SCALE = 1.5
#: the sampler options each method accepts, with their defaults.
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {
    "pcn": {"step_size": 0.25, "target_accept": 0.25},
    "gpcn": {
        "step_size": 0.5,
        "target_accept": 0.25,
        "inflation": 1.0,
        "laplace_steps": 30,
        "laplace_lr": 0.05,
    },
    "nuts": {
        "target_accept": 0.8,
        "max_tree_depth": 10,
        "full_mass": False,
        "step_size": None,
        "mass": "adapt",
        "laplace_steps": 30,
        "laplace_lr": 0.05,
    },
}
_STREAM_INIT, _STREAM_PCN, _STREAM_NUTS = 0, 1, 2
_DECODE_BATCH = 256


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
        divergences: divergent transitions so far (NUTS; 0 for pCN).
    """

    phase: str
    iteration: int
    total_iterations: int
    draws_written: int
    chunks_written: int
    acceptance_rate: float
    divergences: int


def _derived_seed(seed: int, stream: int) -> int:
    state = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def _sha256(tensor: torch.Tensor) -> str:
    array = tensor.detach().to("cpu", torch.float64).contiguous().numpy()
    return hashlib.sha256(array.tobytes()).hexdigest()


def _check_options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    valid = SAMPLER_OPTIONS[method]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown sampler option(s) {unknown} for method {method!r}; "
            f"valid options: {sorted(valid)}"
        )
    out = {**valid, **options}
    for key, value in out.items():
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ValueError(f"sampler option {key}={value!r} must be a number, bool or string")
    return out


class _Bar:
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
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)

    def report(self, info: RunProgress) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{info.phase}")
        if self.callback is not None:
            self.callback(info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _decode_draws(posterior, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z (C, L, d)`` -> ``(fields (C, L, *field_shape)`` on the CPU, ``predictions (C, L, m)``
    float64 on the posterior's device), in batches of one decode and one solve, no gradient.

    A draw equal to the chain's previous one (a rejected step) reuses its field and prediction,
    so only distinct draws are decoded and solved.
    """
    num_chains, length = z.shape[:2]
    new = torch.ones(num_chains, length, dtype=torch.bool, device=z.device)
    new[:, 1:] = (z[:, 1:] != z[:, :-1]).any(-1)
    distinct = z[new]
    fields, predictions = [], []
    with torch.no_grad():
        for i in range(0, distinct.shape[0], _DECODE_BATCH):
            field = posterior.decode(distinct[i : i + _DECODE_BATCH])
            predictions.append(posterior.forward(field).to(torch.float64))
            fields.append(field.detach().to("cpu"))
    if not fields:
        empty = torch.zeros(num_chains, 0, posterior.num_data, dtype=torch.float64)
        return torch.zeros(num_chains, 0, *posterior.field_shape), empty.to(z.device)
    steps = torch.arange(length, device=z.device).expand(num_chains, length)
    source = torch.where(new, steps, torch.zeros_like(steps)).cummax(dim=1).values
    position = (new.flatten().cumsum(0) - 1).reshape(num_chains, length).gather(1, source)
    return torch.cat(fields)[position.cpu()], torch.cat(predictions)[position]


def _finish_chunk(posterior, kept: dict[str, torch.Tensor], first: int):
    """Complete a chunk's draws (``log_k`` and predictions decoded here when the sampler did
    not keep them, lp, pointwise log-likelihood) and move them to the CPU."""
    z = kept["z"]
    if "log_k" not in kept:
        kept["log_k"], kept["prediction"] = _decode_draws(posterior, z)
    with torch.no_grad():
        pointwise = posterior.log_likelihood_of(kept["prediction"], pointwise=True)
        if "lp" not in kept:
            kept["lp"] = posterior.log_prior(z) + pointwise.sum(-1)
    kept["log_likelihood"] = pointwise
    chunk = {k: v.detach().to("cpu").contiguous() for k, v in kept.items()}
    chunk["draw"] = torch.arange(first, first + z.shape[1], dtype=torch.int64)
    return chunk


def _init_latents(posterior, num_chains: int, seed: int, init) -> torch.Tensor:
    d = posterior.latent_dim
    if init is None:
        generator = torch.Generator().manual_seed(_derived_seed(seed, _STREAM_INIT))
        return INIT_SCALE * torch.randn(num_chains, d, generator=generator, dtype=torch.float64)
    if not isinstance(init, torch.Tensor) or tuple(init.shape) != (num_chains, d):
        got = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
        raise ValueError(f"init has shape {got}, expected (num_chains, latent_dim)={num_chains, d}")
    init = init.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init has non-finite values; expected finite initial latents")
    return init


def sample(
    posterior,
    method: str = "pcn",
    *,
    num_chains: int = 4,
    num_draws: int = 1000,
    num_warmup: int = 1000,
    thin: int | str = "auto",
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    chunk_size: int = 100,
    init: torch.Tensor | None = None,
    progress: bool | Callable[[RunProgress], None] = True,
    attrs: Mapping[str, Any] | None = None,
    **sampler_options,
) -> az.InferenceData:
    """Sample the posterior with ``num_chains`` chains; return ArviZ ``InferenceData``.

    Args:
        posterior: a [`Posterior`][vaeinv.inference.posterior.Posterior].
        method: ``"pcn"``, ``"gpcn"`` (pCN around a Laplace approximation of the posterior,
            [`vaeinv.inference.gpcn`][vaeinv.inference.gpcn]; the approximation is built at the
            start of warm-up from the over-dispersed starts, and its forward solves and
            gradients are counted) or ``"nuts"``.
        num_chains: chains, run as one batch (pCN, gpCN) or one after another (NUTS).
        num_draws: sampler iterations per chain after warm-up (as Stan's ``num_samples``);
            a chain keeps ``num_draws // thin`` of them.
        num_warmup: warm-up iterations per chain (adaptation), not kept.
        thin: keep every ``thin``-th iteration after warm-up (an integer in
            ``[1, num_draws]``), or ``"auto"``: the smallest ``thin`` that keeps the result
            under about 100 MB ([`auto_thin`][vaeinv.inference.thinning.auto_thin]). The
            resolved value is in ``attrs["thin"]`` (``attrs["thin_requested"]`` says what was
            asked).
        seed: the run's seed (an integer >= 0); derives every generator, recorded in attrs.
        device: where to evaluate (``posterior.to(device)``); default the posterior's device.
        checkpoint: a folder for chunks and state (see the module docstring); ``None`` keeps
            everything in memory.
        resume: continue the run saved in ``checkpoint`` (a folder without a saved run starts
            a new one). Without ``resume``, a folder that already holds a run is an error.
        chunk_size: kept draws per chunk (per checkpoint).
        init: ``(num_chains, latent_dim)`` initial latents instead of over-dispersed prior
            draws.
        progress: ``True`` shows a tqdm bar (acceptance or divergences), ``False`` nothing;
            a callable receives a [`RunProgress`][vaeinv.inference.runner.RunProgress] after
            every block, once its checkpoint is written (an exception it raises stops the run,
            which can be resumed).
        attrs: extra attributes for the result (e.g. ``{"problem": "demo"}``); JSON-
            serialisable; part of the run fingerprint.
        **sampler_options: ``step_size`` (initial beta) and ``target_accept`` for pCN; the same
            plus ``inflation`` (of the proposal covariance), ``laplace_steps`` and ``laplace_lr``
            (the Adam ascent before Gauss-Newton) for gpCN; ``target_accept``,
            ``max_tree_depth``, ``full_mass``, ``step_size`` and ``mass`` for NUTS: ``"adapt"``
            (Stan's windowed adaptation from the identity) or ``"laplace"`` (the Laplace
            covariance as a fixed dense inverse mass matrix, starts drawn around the MAP, only
            the step size adapted; with ``laplace_steps``, ``laplace_lr``). Defaults in
            `vaeinv.inference.runner.SAMPLER_OPTIONS`.

    Returns:
        ``arviz.InferenceData`` laid out as in [`results`][vaeinv.inference.results]
        (the checkpoint folder, if any, is left in place; save the result with
        [`results.save`][vaeinv.inference.results.save]).

    Raises:
        ValueError: an unknown method or sampler option, a bad count, seed, ``thin``,
            ``init`` or ``attrs`` value (``thin > num_draws`` included); ``resume`` without
            ``checkpoint``; a checkpoint folder holding a run when ``resume`` is false;
            resuming a checkpoint of another run (what differs is named).
    """
    if method not in SAMPLER_OPTIONS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(SAMPLER_OPTIONS)}")
    options = _check_options(method, sampler_options)
    if options.get("mass", "adapt") not in ("adapt", "laplace"):
        raise ValueError(f"NUTS mass must be 'adapt' or 'laplace', got {options['mass']!r}")
    num_chains = positive_int("num_chains", num_chains)
    num_draws = positive_int("num_draws", num_draws)
    num_warmup = positive_int("num_warmup", num_warmup, minimum=0)
    if not isinstance(thin, str):
        thin = positive_int("thin", thin)
    elif thin != "auto":
        raise ValueError(f"thin must be 'auto' or an integer >= 1, got {thin!r}")
    chunk_size = positive_int("chunk_size", chunk_size)
    seed = positive_int("seed", seed, minimum=0)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint folder to resume from")
    if not (isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"progress must be a bool or a callable, got {progress!r}")
    results._netcdf_attrs(dict(attrs or {}))  # fail now, not after sampling
    if device is not None:
        posterior = posterior.to(device)
    z0 = _init_latents(posterior, num_chains, seed, init)
    thin_requested = thin
    thin = resolve_thin(posterior, thin, num_chains=num_chains, num_draws=num_draws)

    prior = getattr(posterior, "prior", None)
    settings = {
        "method": method,
        "seed": seed,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "num_warmup": num_warmup,
        "thin": thin,
        "chunk_size": chunk_size,
        "sampler_options": options,
        "init": f"prior draws x {INIT_SCALE}" if init is None else f"user {_sha256(z0)}",
    }
    fingerprint = jsonable(
        {
            **settings,
            "posterior": {
                "name": posterior.name,
                "latent_dim": posterior.latent_dim,
                "num_data": posterior.num_data,
                "data_sha256": _sha256(posterior.data),
                "noise_std_sha256": _sha256(posterior.noise_std),
                "prior_weights_sha256": getattr(prior, "weights_sha256", None),
            },
            "attrs": dict(attrs or {}),
        }
    )
    run = _Run(posterior, method, settings, fingerprint, z0, progress)
    run.thin_requested = thin_requested
    store = None if checkpoint is None else RunCheckpoint(checkpoint)
    if store is not None and store.exists():
        if not resume:
            raise ValueError(
                f"checkpoint folder {store.folder} already holds a run; pass resume=True to "
                "continue it, or choose another folder"
            )
        run.restore(store)
    run.execute(store)
    return run.result(attrs)


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
        self.state: Any = None
        self.generator = torch.Generator()
        self.nuts: dict[str, torch.Tensor] | None = None
        self.thin_requested: int | str = settings["thin"]

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
            "versions": results.versions(),
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"generator": self.generator.get_state()}
        if self.state is not None:
            out.update({f"pcn.{k}": v for k, v in self.state._asdict().items() if v is not None})
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
        self.chunks = [store.read_chunk(i) for i in range(int(meta["chunks_written"]))]
        self.generator.set_state(tensors["generator"])
        device = self.posterior.device
        pcn = {k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("pcn.")}
        if pcn:
            self.state = (GPCNState if self.method == "gpcn" else PCNState)(**pcn)
        nuts = {k[5:]: v for k, v in tensors.items() if k.startswith("nuts.")}
        self.nuts = nuts or None

    def checkpoint(self, store: RunCheckpoint | None, bar: _Bar, acceptance: float) -> None:
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
        per = self.settings["num_chains"] if self.method == "nuts" else 1  # NUTS: in turn
        bar = _Bar(self.progress, per * self.total, per * self.iteration, self.method)
        try:
            if self.method in ("pcn", "gpcn"):
                self._run_pcn(store, bar)
            else:
                self._run_nuts(store, bar)
        finally:
            bar.close()

    def _timed(self, start: float) -> None:
        self.wall_time += time.perf_counter() - start

    def _run_pcn(self, store: RunCheckpoint | None, bar: _Bar) -> None:
        s = self.settings
        posterior, target = self.posterior, self.options["target_accept"]
        block = s["chunk_size"] * s["thin"]
        step = gpcn_step if self.method == "gpcn" else pcn_step
        if self.state is None:
            self.generator.manual_seed(_derived_seed(s["seed"], _STREAM_PCN))
            start = time.perf_counter()
            if self.method == "gpcn":
                self.state = self._gpcn_init()
            else:
                self.state = pcn_init(posterior, self.z0, step_size=self.options["step_size"])
            self._timed(start)
        while self.iteration < s["num_warmup"]:
            start = time.perf_counter()
            steps = min(block, s["num_warmup"] - self.iteration)
            acceptance = torch.zeros((), dtype=torch.float64, device=posterior.device)
            for _ in range(steps):
                self.state, info = step(
                    posterior, self.state, self.generator, adapt=True, target_accept=target
                )
                acceptance += info.acceptance_rate.mean()
                bar.step()
            acceptance = float(acceptance) / steps
            bar.postfix(acc=acceptance)
            self.iteration += steps
            if self.iteration == s["num_warmup"]:
                self.state = freeze_adaptation(self.state)
                self.frozen = True
            self._timed(start)
            self.checkpoint(store, bar, acceptance)
        while not self.complete:
            start = time.perf_counter()
            length = min(s["chunk_size"], self.kept - self.draws_written)
            kept: dict[str, list[torch.Tensor]] = {}
            acceptance = torch.zeros((), dtype=torch.float64, device=posterior.device)
            for i in range(length * s["thin"]):
                self.state, info = step(
                    posterior, self.state, self.generator, adapt=False, target_accept=target
                )
                acceptance += info.acceptance_rate.mean()
                bar.step()
                if (i + 1) % s["thin"] == 0:
                    for name, value in (
                        ("z", self.state.z),
                        ("prediction", self.state.prediction),
                        ("log_k", getattr(self.state, "field", None)),
                        ("accepted", info.accepted),
                        ("acceptance_rate", info.acceptance_rate),
                        ("failed", info.failed),
                        ("step_size", info.step_size),
                    ):
                        if value is not None:
                            kept.setdefault(name, []).append(value)
            acceptance = float(acceptance) / (length * s["thin"])
            bar.postfix(acc=acceptance)
            stacked = {k: torch.stack(v, dim=1) for k, v in kept.items()}
            chunk = _finish_chunk(posterior, stacked, self.draws_written)
            self.iteration += length * s["thin"]
            self.add_chunk(store, chunk)
            self._timed(start)
            self.checkpoint(store, bar, acceptance)

    def _gpcn_init(self) -> GPCNState:
        """gpCN's start: the Laplace approximation from the over-dispersed starts ``z0`` (one
        Adam ascent per chain, the best MAP kept), then chains at over-dispersed draws of it,
        ``N(m, INIT_SCALE^2 C)``, from the pCN stream."""
        opts = self.options
        laplace = self._laplace()
        z_init = laplace.sample(self.z0.shape[0], self.generator, inflation=INIT_SCALE**2)
        return gpcn_init(
            self.posterior,
            z_init,
            laplace,
            step_size=opts["step_size"],
            inflation=float(opts["inflation"]),
        )

    def _laplace(self):
        opts = self.options
        laplace = laplace_approximation(
            self.posterior, self.z0, steps=int(opts["laplace_steps"]), lr=float(opts["laplace_lr"])
        )
        # contiguous, as a restored state's tensors are: the same matmul kernels, the same bits
        laplace = laplace._replace(
            mean=laplace.mean.contiguous(), scale_tril=laplace.scale_tril.contiguous()
        )
        self.extra_forward_solves += laplace.num_forward_solves
        self.gradient_evaluations += laplace.num_gradient_evaluations
        return laplace

    def _laplace_start(self):
        """NUTS with ``mass="laplace"``: over-dispersed starts ``N(m, INIT_SCALE^2 C)`` and the
        Laplace covariance ``C`` as the (fixed, dense) inverse mass matrix."""
        laplace = self._laplace()
        generator = torch.Generator().manual_seed(
            _derived_seed(self.settings["seed"], _STREAM_NUTS)
        )
        z0 = laplace.sample(self.z0.shape[0], generator, inflation=INIT_SCALE**2)
        return z0, laplace.covariance

    def _run_nuts(self, store: RunCheckpoint | None, bar: _Bar) -> None:
        from .nuts import nuts_run

        s = self.settings
        options = self.options

        live = [self.divergences]

        def on_iteration(chain: int, iteration: int, stats: dict) -> None:
            bar.step()
            if stats["diverging"] and not stats["warmup"]:
                live[0] += 1
                bar.postfix(divergences=live[0])

        while not self.complete:
            start = time.perf_counter()
            live[0] = self.divergences
            length = min(s["chunk_size"], self.kept - self.draws_written)
            kwargs: dict[str, Any] = {
                "num_draws": length * s["thin"],
                "num_warmup": s["num_warmup"] if self.nuts is None else 0,
                "seed": _derived_seed(s["seed"], _STREAM_NUTS),
                "target_accept": options["target_accept"],
                "max_tree_depth": options["max_tree_depth"],
                "full_mass": options["full_mass"],
                "progress": on_iteration,
            }
            if self.nuts is None:
                z0 = self.z0
                kwargs.update(step_size=options["step_size"], adapt=True)
                if options["mass"] == "laplace":
                    z0, covariance = self._laplace_start()
                    kwargs.update(
                        full_mass=True, inverse_mass_matrix=covariance, adapt_mass_matrix=False
                    )
            else:
                z0 = self.nuts["z"]
                kwargs.update(
                    step_size=self.nuts["step_size"],
                    full_mass=self.nuts["inverse_mass_matrix"].dim() == 3,
                    inverse_mass_matrix=self.nuts["inverse_mass_matrix"],
                    rng_state=self.nuts["rng_state"],
                    adapt=False,
                )
            out = nuts_run(self.posterior, z0, **kwargs)
            take = slice(s["thin"] - 1, None, s["thin"])
            kept = {name: getattr(out, name)[:, take] for name in results.NUTS_STATS}
            kept["z"] = out.z[:, take].to(self.posterior.device)
            self.nuts = {
                "z": out.z[:, -1].to(torch.float64),
                "step_size": out.adapted_step_size.to(torch.float64),
                "inverse_mass_matrix": out.inverse_mass_matrix.to(torch.float64),
                "rng_state": out.rng_state,
            }
            self.divergences += int(kept["diverging"].sum())
            self.warmup_divergences += int(out.num_warmup_divergences.sum())
            self.gradient_evaluations += int(out.num_evaluations.sum())
            chunk = _finish_chunk(self.posterior, kept, self.draws_written)
            self.iteration += kwargs["num_warmup"] + length * s["thin"]
            self.add_chunk(store, chunk)
            self._timed(start)
            bar.postfix(divergences=self.divergences)
            self.checkpoint(store, bar, float(kept["acceptance_rate"].mean()))

    # ------------------------------------------------------------------ result
    def result(self, attrs: Mapping[str, Any] | None) -> az.InferenceData:
        draws = {
            k: torch.cat([c[k] for c in self.chunks], dim=0 if k == "draw" else 1)
            for k in self.chunks[0]
        }
        s = self.settings
        solves = (
            s["num_chains"] * (1 + self.total) + self.extra_forward_solves
            if self.method in ("pcn", "gpcn")
            else self.gradient_evaluations + s["num_chains"] * self.kept + self.extra_forward_solves
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
            **dict(attrs or {}),
        }
        return results.to_inference_data(self.posterior, draws, attrs=run_attrs)
