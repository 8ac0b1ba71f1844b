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
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import results
from ._loops import _STREAM_INIT, INIT_SCALE, _derived_seed
from ._run import _Run
from .pooled import pooled_schedule
from .progress import RunProgress
from .run_checkpoint import RunCheckpoint, jsonable
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
    "tpcn": {
        "step_size": 0.5,
        "target_accept": 0.25,
        "laplace_steps": 30,
        "laplace_lr": 0.05,
        "flow_steps": 2000,
        "flow_particles": 8,
        "flow_layers": 8,
        "flow_hidden": 256,
        "flow_lr": 1e-3,
    },
    "hmc": {
        "step_size": 0.05,
        "target_accept": 0.8,
        "trajectory_length": 3.0,
        "max_steps": 1024,
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


#: NUTS's ``mass`` option: Stan's adaptation, the fixed Laplace covariance, or the pooled
#: cross-chain estimate started from it (`vaeinv.inference.pooled`).
NUTS_MASSES = ("adapt", "laplace", "pooled")


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
        real = valid[key] is None or isinstance(valid[key], float)
        if real and isinstance(value, int) and not isinstance(value, bool):
            out[key] = float(value)  # one canonical form: step_size=1 is step_size=1.0
    return out


def _check_chains(chains: Any, num_chains: int, method: str) -> list[int]:
    if method != "nuts":
        raise ValueError(
            f"chains= runs some of a run's chains, which only NUTS can do (its chains have "
            f"their own random streams); method {method!r} draws all chains from one stream"
        )
    ids = list(chains) if isinstance(chains, Sequence) and not isinstance(chains, str) else None
    if (
        not ids
        or any(isinstance(c, bool) or not isinstance(c, int) for c in ids)
        or any(not 0 <= c < num_chains for c in ids)
        or len(set(ids)) != len(ids)
    ):
        raise ValueError(
            f"chains must be distinct chain indices in [0, {num_chains}) "
            f"(num_chains={num_chains}), got {chains!r}"
        )
    return sorted(ids)


def _check_tpcn_options(options: Mapping[str, Any]) -> None:
    """tpCN's flow settings: counts and rates of the right sign (before any work)."""
    for key, minimum in (("flow_steps", 0), ("flow_layers", 0), ("flow_particles", 1)):
        positive_int(key, options[key], minimum=minimum)
    positive_int("flow_hidden", options["flow_hidden"])
    for key in ("flow_lr", "laplace_lr"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{key} must be a positive number, got {value!r}")
    step = options["step_size"]
    if isinstance(step, bool) or not isinstance(step, int | float) or not 0 < step <= 1:
        raise ValueError(f"step_size (pCN beta) must be in (0, 1], got {step!r}")


def _check_hmc_options(options: Mapping[str, Any], num_warmup: Any) -> None:
    for name in ("step_size", "trajectory_length"):
        value = options[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"HMC option {name} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"HMC option {name} must be finite, got {value!r}")
    if not 0.0 < options["target_accept"] < 1.0:
        raise ValueError(f"HMC target_accept must be in (0, 1), got {options['target_accept']!r}")
    steps = options["max_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"HMC option max_steps must be an integer >= 1, got {steps!r}")
    if isinstance(num_warmup, int) and num_warmup > 0:
        pooled_schedule(num_warmup)  # raises for a warm-up too short for the mass windows


def _check_fixed_mass(matrix, d: int) -> torch.Tensor:
    """A fixed NUTS inverse mass matrix: finite, ``(d, d)``, symmetric positive definite
    (the checks of ``nuts_run``'s own, before any work)."""
    from .nuts import _check_inverse_mass

    if not isinstance(matrix, torch.Tensor) or not bool(torch.isfinite(matrix).all()):
        raise ValueError("inverse_mass_matrix must be a finite (latent_dim, latent_dim) tensor")
    return _check_inverse_mass(matrix, 1, d, full_mass=True)[0].contiguous()


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
    chains: Sequence[int] | None = None,
    progress: bool | Callable[[RunProgress], None] = True,
    attrs: Mapping[str, Any] | None = None,
    inverse_mass_matrix: torch.Tensor | None = None,
    **sampler_options,
) -> az.InferenceData:
    """Sample the posterior with ``num_chains`` chains; return ArviZ ``InferenceData``.

    Args:
        posterior: a [`Posterior`][vaeinv.inference.posterior.Posterior].
        method: ``"pcn"``, ``"gpcn"`` (pCN around a Laplace approximation of the posterior,
            [`vaeinv.inference.gpcn`][vaeinv.inference.gpcn]; the approximation is built at the
            start of warm-up from the over-dispersed starts, and its forward solves and
            gradients are counted), ``"tpcn"`` (pCN in the reference space of a coupling
            flow fitted to the posterior from the Laplace approximation by variational
            inference, [`vaeinv.inference.transport`][vaeinv.inference.transport]; the fit's
            solves and gradients are counted), ``"hmc"`` (batched HMC with jittered trajectory
            lengths, [`vaeinv.inference.hmc`][vaeinv.inference.hmc]: the Laplace start of
            NUTS's pooled mass, the mass re-estimated twice from the pooled chains in warm-up;
            needs ``num_warmup`` 0 or ``>= 20``) or ``"nuts"``.
        num_chains: chains, run as one batch (pCN, gpCN, tpCN, HMC) or one after another
            (NUTS).
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
        chains: NUTS only: run just these of the ``num_chains`` chains (distinct indices in
            ``[0, num_chains)``), e.g. ``[0, 1]`` and ``[2, 3]`` in two processes or on two
            machines. Each chain gets the draws the whole run gives it (the same starts, the
            same Laplace fit, its own random stream), the result keeps the indices as its
            ``chain`` coordinate, and [`merge_runs`][vaeinv.inference.merge.merge_runs]
            joins the parts into the whole run's result.
        progress: ``True`` shows a tqdm bar (acceptance or divergences), ``False`` nothing;
            a callable receives a [`RunProgress`][vaeinv.inference.runner.RunProgress] after
            every block, once its checkpoint is written (an exception it raises stops the run,
            which can be resumed).
        attrs: extra attributes for the result (e.g. ``{"problem": "demo"}``); JSON-
            serialisable; part of the run fingerprint.
        inverse_mass_matrix: NUTS and HMC: a ``(latent_dim, latent_dim)`` symmetric
            positive definite inverse mass matrix kept fixed for the whole run (for NUTS,
            passing it sets ``mass="fixed"``; HMC skips its Laplace start and mass windows):
            the chains start at ``init`` (or the over-dispersed prior draws) and the warm-up
            adapts the step size only. Its sha256 is part of the run
            fingerprint. [`extend_run`][vaeinv.inference.extend.extend_run] passes the
            covariance of a finished run's draws.
        **sampler_options: ``step_size`` (initial beta) and ``target_accept`` for pCN; the same
            plus ``inflation`` (of the proposal covariance), ``laplace_steps`` and ``laplace_lr``
            (the Adam ascent before Gauss-Newton) for gpCN; ``step_size``, ``target_accept``,
            ``laplace_steps``, ``laplace_lr`` and the flow's ``flow_steps`` (Adam steps of the
            fit), ``flow_particles`` (draws per step), ``flow_layers``, ``flow_hidden`` and
            ``flow_lr`` for tpCN; ``step_size`` (initial), ``target_accept``,
            ``trajectory_length`` (the longest trajectory in units of the mass-whitened
            posterior; each iteration integrates ``u`` times it, ``u ~ U(0, 1)``),
            ``max_steps`` (leapfrogs per iteration at most), ``laplace_steps`` and
            ``laplace_lr`` for HMC; ``target_accept``,
            ``max_tree_depth``, ``full_mass``, ``step_size`` and ``mass`` for NUTS: ``"adapt"``
            (Stan's windowed adaptation from the identity) or ``"laplace"`` (the Laplace
            covariance as a fixed dense inverse mass matrix, starts drawn around the MAP, only
            the step size adapted; with ``laplace_steps``, ``laplace_lr``) or ``"pooled"``
            (the Laplace start, then the mass re-estimated twice during warm-up from the
            draws of all chains pooled, see [`pooled`][vaeinv.inference.pooled]; needs
            ``num_warmup >= 20``; parts of a run pool within each part). Defaults in
            `vaeinv.inference.runner.SAMPLER_OPTIONS`.

    Returns:
        ``arviz.InferenceData`` laid out as in [`results`][vaeinv.inference.results]
        (the checkpoint folder, if any, is left in place; save the result with
        [`results.save`][vaeinv.inference.results.save]).

    Raises:
        ValueError: an unknown method or sampler option, a bad count, seed, ``thin``,
            ``init``, ``chains`` or ``attrs`` value (``thin > num_draws`` included),
            ``chains`` with pCN, gpCN or tpCN (their chains share one random stream);
            ``resume`` without ``checkpoint``; a checkpoint folder holding a run when ``resume``
            is false; resuming a checkpoint of another run (what differs is named).
    """
    if method not in SAMPLER_OPTIONS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(SAMPLER_OPTIONS)}")
    fixed_mass = None
    if inverse_mass_matrix is not None:
        if method not in ("nuts", "hmc"):
            raise ValueError(
                f"inverse_mass_matrix is a NUTS and HMC setting; method {method!r} has no "
                "mass matrix"
            )
        if method == "nuts" and sampler_options.get("mass", "fixed") != "fixed":
            raise ValueError(
                f"inverse_mass_matrix fixes the mass (mass='fixed'); it cannot be combined "
                f"with mass={sampler_options['mass']!r}"
            )
        if method == "nuts":
            sampler_options = {**sampler_options, "mass": "fixed"}
        fixed_mass = _check_fixed_mass(inverse_mass_matrix, posterior.latent_dim)
    options = _check_options(method, sampler_options)
    masses = NUTS_MASSES + (("fixed",) if fixed_mass is not None else ())
    if options.get("mass", "adapt") not in masses:
        hint = "; mass='fixed' needs inverse_mass_matrix=" if options["mass"] == "fixed" else ""
        raise ValueError(f"NUTS mass must be one of {NUTS_MASSES}, got {options['mass']!r}{hint}")
    if method == "tpcn":
        _check_tpcn_options(options)
    if method == "hmc":
        _check_hmc_options(options, num_warmup if fixed_mass is None else 0)
    num_chains = positive_int("num_chains", num_chains)
    num_draws = positive_int("num_draws", num_draws)
    num_warmup = positive_int("num_warmup", num_warmup, minimum=0)
    if method == "nuts" and options["mass"] == "pooled":
        pooled_schedule(num_warmup)  # raises for a warm-up too short to split
    if not isinstance(thin, str):
        thin = positive_int("thin", thin)
    elif thin != "auto":
        raise ValueError(f"thin must be 'auto' or an integer >= 1, got {thin!r}")
    chunk_size = positive_int("chunk_size", chunk_size)
    seed = positive_int("seed", seed, minimum=0)
    if chains is not None:
        chains = _check_chains(chains, num_chains, method)
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
    if chains is not None:
        settings["chains"] = chains
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
            **({} if fixed_mass is None else {"inverse_mass_matrix": _sha256(fixed_mass)}),
        }
    )
    run = _Run(posterior, method, settings, fingerprint, z0, progress)
    run.fixed_mass = fixed_mass
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
