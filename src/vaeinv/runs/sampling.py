"""The chain runner: [`sample`][vaeinv.runs.sampling.sample] runs the chains of any registered
kernel from over-dispersed starts, in chunks written to disk, resumable, and returns ArviZ
``InferenceData``.

**Seeds.** The run's ``seed`` derives every generator: stream 0 draws the initial latents,
stream 1 drives the batched kernels (pCN, gpCN, tpCN, HMC), stream 2 seeds NUTS
(``numpy.random.SeedSequence([seed, stream])``), so the same seed gives the same draws and
the streams never share random numbers.

**Initialisation.** Chains start from over-dispersed prior draws, ``z0 = 1.5 * N(0, I)``
(variance 2.25 per latent): R-hat compares chains that started apart. ``init`` overrides this.

**Draws and thinning** (as Stan's ``num_samples`` and ``thin``). ``num_draws`` counts the
sampler's iterations per chain after warm-up; every ``thin``-th of them is kept, so a chain
keeps ``num_draws // thin`` draws (the floor: when ``thin`` does not divide ``num_draws``, the
last ``num_draws % thin`` iterations, which would not be kept, are not run). Every kept draw
carries its latents and its field: ``z (chain, draw, latent)`` and ``log_k (chain, draw, y, x)``
share the draws. ``thin="auto"`` picks the smallest ``thin`` that keeps the result under
about 100 MB ([`auto_thin`][vaeinv.runs.thinning.auto_thin]); the resolved value is
recorded in the attributes and the fingerprint. pCN keeps the field its step decoded (cached
in the [`PCNState`][vaeinv.kernels.pcn.PCNState]), so storing ``log_k`` costs no extra
decode; NUTS decodes its kept draws in a batch at the end of each chunk.

**Chunks.** The run advances in blocks of ``chunk_size * thin`` iterations (warm-up included).
With a ``checkpoint`` folder, after every block of ``chunk_size`` kept draws the chunk is
written as ``chunk_00000.safetensors`` (``z``, ``log_k``, sample statistics, predictions,
pointwise log-likelihood), then the sampler state as ``state.safetensors`` (chain state with the
cached fields, adaptation, generator state; its JSON header metadata holds the progress counters
and the run fingerprint) with a readable copy of that JSON in ``state.json``. Each file goes to
a temporary name first and is renamed into place (atomic), so a killed run loses at most the
block in progress. ``resume=True`` continues from the last state: a pCN run resumed this way
gives bit-identical draws to an uninterrupted run (as any kernel does whose state holds all it
needs). The fingerprint (method, seed, settings,
sampler options, initialisation, the posterior's name, latent size, data, noise and
prior-weights hash, and ``attrs``) must match, else resuming raises ``ValueError`` naming what
differs.

**NUTS** (Pyro) runs its whole warm-up as one block (Pyro's adaptation cannot be saved
mid-way), checkpointed at its end; later chunks continue each chain from its last draw with
the adapted step size and mass matrix and the saved RNG state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import results
from ..kernels import registry
from ..kernels.starts import INIT_SCALE, STREAM_INIT, derived_seed
from ..provenance import jsonable
from ..provenance import tensor_sha256 as sha256
from .checkpoint import RunCheckpoint
from .context import RunContext
from .loop import execute
from .progress import RunProgress
from .thinning import RESULT_BUDGET_BYTES, auto_thin, positive_int, resolve_thin

if TYPE_CHECKING:  # results is the one package that imports arviz at run time
    import arviz as az

__all__ = [
    "INIT_SCALE",
    "RESULT_BUDGET_BYTES",
    "RunProgress",
    "RunSettings",
    "auto_thin",
    "resolve_thin",
    "sample",
    "sampler_options",
]


def sampler_options(method: str) -> dict[str, Any]:
    """The options ``method`` accepts, with their defaults (from its kernel's ``Options``).

    Raises:
        ValueError: an unknown method.
    """
    return registry.get(method).Options.defaults()


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The settings of a run other than the kernel's options, checked on construction
    (see `sample` for each).

    Raises:
        ValueError: a bad count, seed, ``thin``, ``chunk_size``, ``progress`` or ``attrs``;
            ``resume`` without ``checkpoint``.
    """

    num_chains: int = 4
    num_draws: int = 1000
    num_warmup: int = 1000
    thin: int | str = "auto"
    seed: int = 0
    device: str | torch.device | None = None
    checkpoint: str | Path | None = None
    resume: bool = False
    chunk_size: int = 100
    init: torch.Tensor | None = None
    chains: Sequence[int] | None = None
    progress: bool | Callable[[RunProgress], None] = True
    attrs: Mapping[str, Any] | None = None
    inverse_mass_matrix: torch.Tensor | None = None

    def __post_init__(self) -> None:
        positive_int("num_chains", self.num_chains)
        positive_int("num_draws", self.num_draws)
        positive_int("num_warmup", self.num_warmup, minimum=0)
        if not isinstance(self.thin, str):
            positive_int("thin", self.thin)
        elif self.thin != "auto":
            raise ValueError(f"thin must be 'auto' or an integer >= 1, got {self.thin!r}")
        positive_int("chunk_size", self.chunk_size)
        positive_int("seed", self.seed, minimum=0)
        if self.resume and self.checkpoint is None:
            raise ValueError("resume=True needs a checkpoint folder to resume from")
        if not (isinstance(self.progress, bool) or callable(self.progress)):
            raise ValueError(f"progress must be a bool or a callable, got {self.progress!r}")
        results.netcdf_attrs(dict(self.attrs or {}))  # fail now, not after sampling

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))


def sample(posterior, method: str = "pcn", **settings) -> az.InferenceData:
    """Sample the posterior with ``num_chains`` chains; return ArviZ ``InferenceData``.

    Args:
        posterior: a [`Posterior`][vaeinv.posterior.target.Posterior].
        method: a registered kernel's name (`vaeinv.kernels.available()`): ``"pcn"``,
            ``"gpcn"`` (pCN around a Laplace approximation of the posterior,
            [`vaeinv.kernels.gpcn`][vaeinv.kernels.gpcn]; the approximation is built at the
            start of warm-up from the over-dispersed starts, and its forward solves and
            gradients are counted), ``"tpcn"`` (pCN in the reference space of a coupling
            flow fitted to the posterior from the Laplace approximation by variational
            inference, [`vaeinv.kernels.tpcn`][vaeinv.kernels.tpcn]), ``"hmc"`` (batched HMC
            with jittered trajectory lengths, [`vaeinv.kernels.hmc`][vaeinv.kernels.hmc]: the
            Laplace start, the mass re-estimated twice from the pooled chains in warm-up;
            needs ``num_warmup`` 0 or ``>= 20``), ``"nuts"``
            ([`vaeinv.kernels.nuts_kernel`][vaeinv.kernels.nuts_kernel]) or a kernel of
            your own (`vaeinv.kernels.register`).
        **settings: the run's settings and the kernel's options, by name:

            - ``num_chains`` (4): chains, run as one batch (pCN, gpCN, tpCN, HMC) or one after
              another (NUTS).
            - ``num_draws`` (1000): sampler iterations per chain after warm-up (as Stan's
              ``num_samples``); a chain keeps ``num_draws // thin`` of them.
            - ``num_warmup`` (1000): warm-up iterations per chain (adaptation), not kept.
            - ``thin`` (``"auto"``): keep every ``thin``-th iteration after warm-up (an integer
              in ``[1, num_draws]``), or ``"auto"``: the smallest ``thin`` that keeps the
              result under about 100 MB. The resolved value is in ``attrs["thin"]``
              (``attrs["thin_requested"]`` says what was asked).
            - ``seed`` (0): the run's seed (an integer >= 0); derives every generator.
            - ``device``: where to evaluate (``posterior.to(device)``); default the
              posterior's device.
            - ``checkpoint``: a folder for chunks and state (see the module docstring);
              ``None`` keeps everything in memory.
            - ``resume`` (False): continue the run saved in ``checkpoint`` (a folder without a
              saved run starts a new one). Without it, a folder holding a run is an error.
            - ``chunk_size`` (100): kept draws per chunk (per checkpoint).
            - ``init``: ``(num_chains, latent_dim)`` initial latents instead of
              over-dispersed prior draws.
            - ``chains``: kernels with independent chains (NUTS) only: run just these of the
              ``num_chains`` chains, e.g. ``[0, 1]`` and ``[2, 3]`` in two processes; each
              chain gets the draws the whole run gives it, the result keeps the indices as
              its ``chain`` coordinate, and
              [`merge_runs`][vaeinv.runs.merge.merge_runs] joins the parts.
            - ``progress`` (True): a tqdm bar, ``False`` nothing, or a callable receiving a
              [`RunProgress`][vaeinv.runs.progress.RunProgress] after every block, once its
              checkpoint is written (an exception it raises stops the run, which can be
              resumed).
            - ``attrs``: extra attributes for the result (JSON-serialisable; part of the run
              fingerprint).
            - ``inverse_mass_matrix``: NUTS and HMC: a ``(latent_dim, latent_dim)`` symmetric
              positive definite inverse mass matrix kept fixed for the whole run (for NUTS,
              passing it sets ``mass="fixed"``; HMC skips its Laplace start and mass windows);
              the warm-up adapts the step size only. Its sha256 is part of the fingerprint.
            - a kernel's inputs (objects, not options: ``coarse`` for ``"mlda"``), named by
              its ``inputs``; recorded in the fingerprint by ``describe_inputs``.
            - the kernel's options: see its ``Options`` class
              (`vaeinv.kernels.pcn.PCNOptions`, `vaeinv.kernels.gpcn.GPCNOptions`,
              `vaeinv.kernels.tpcn.TPCNOptions`, `vaeinv.kernels.hmc.HMCOptions`,
              `vaeinv.kernels.nuts_kernel.NUTSOptions`); defaults from
              [`sampler_options`][vaeinv.runs.sampling.sampler_options].

    Returns:
        ``arviz.InferenceData`` laid out as in `vaeinv.results.inference_data` (the
        checkpoint folder, if any, is left in place; save the result with
        [`results.save`][vaeinv.results.inference_data.save]).

    Raises:
        ValueError: an unknown method or sampler option, a bad count, seed, ``thin``,
            ``init``, ``chains`` or ``attrs`` value (``thin > num_draws`` included),
            ``chains`` with a kernel whose chains share one random stream; ``resume``
            without ``checkpoint``; a checkpoint folder holding a run when ``resume`` is
            false; resuming a checkpoint of another run (what differs is named).
    """
    kernel_class = registry.get(method)
    names = RunSettings.names()
    run_settings = RunSettings(**{k: v for k, v in settings.items() if k in names})
    inputs = {k: v for k, v in settings.items() if k in kernel_class.inputs}
    given = {k: v for k, v in settings.items() if k not in names and k not in inputs}
    kernel = kernel_class(**inputs)
    fixed_mass = _fixed_mass(kernel, run_settings, given, posterior.latent_dim)
    if fixed_mass is not None and "mass" in kernel.Options.names():
        given = {**given, "mass": "fixed"}
    options = kernel.Options.from_mapping(given, method)
    kernel.check(options, num_warmup=run_settings.num_warmup, fixed_mass=fixed_mass is not None)
    chains = None
    if run_settings.chains is not None:
        chains = _check_chains(run_settings.chains, run_settings.num_chains, kernel)
    if run_settings.device is not None:
        posterior = posterior.to(run_settings.device)
    run = _new_run(posterior, kernel, options, run_settings, chains, fixed_mass)
    store = None if run_settings.checkpoint is None else RunCheckpoint(run_settings.checkpoint)
    if store is not None and store.exists():
        if not run_settings.resume:
            raise ValueError(
                f"checkpoint folder {store.folder} already holds a run; pass resume=True to "
                "continue it, or choose another folder"
            )
        run.restore(store)
    execute(run, store, run_settings.progress)
    return results.from_run(run, run_settings.attrs)


def _fixed_mass(kernel, run_settings: RunSettings, given: dict, d: int):
    matrix = run_settings.inverse_mass_matrix
    if matrix is None:
        return None
    if not kernel.mass_matrix:
        raise ValueError(
            f"inverse_mass_matrix is a NUTS and HMC setting; method {kernel.name!r} has no "
            "mass matrix"
        )
    if given.get("mass", "fixed") != "fixed":
        raise ValueError(
            f"inverse_mass_matrix fixes the mass (mass='fixed'); it cannot be combined "
            f"with mass={given['mass']!r}"
        )
    if not isinstance(matrix, torch.Tensor) or not bool(torch.isfinite(matrix).all()):
        raise ValueError("inverse_mass_matrix must be a finite (latent_dim, latent_dim) tensor")
    m = matrix.detach().to("cpu", torch.float64)
    if tuple(m.shape) != (d, d):
        raise ValueError(f"inverse_mass_matrix has shape {tuple(m.shape)}, expected ({d}, {d})")
    if not torch.allclose(m, m.mT) or torch.linalg.cholesky_ex(m).info.any():
        raise ValueError("inverse_mass_matrix must be symmetric positive definite")
    return m.contiguous()


def _check_chains(chains: Any, num_chains: int, kernel) -> list[int]:
    if not kernel.independent_chains:
        raise ValueError(
            f"chains= runs some of a run's chains, which only NUTS can do (its chains have "
            f"their own random streams); method {kernel.name!r} draws all chains from one stream"
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


def _init_latents(posterior, num_chains: int, seed: int, init) -> torch.Tensor:
    d = posterior.latent_dim
    if init is None:
        generator = torch.Generator().manual_seed(derived_seed(seed, STREAM_INIT))
        return INIT_SCALE * torch.randn(num_chains, d, generator=generator, dtype=torch.float64)
    if not isinstance(init, torch.Tensor) or tuple(init.shape) != (num_chains, d):
        got = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
        raise ValueError(f"init has shape {got}, expected (num_chains, latent_dim)={num_chains, d}")
    init = init.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(init).all()):
        raise ValueError("init has non-finite values; expected finite initial latents")
    return init


def _new_run(posterior, kernel, options, rs: RunSettings, chains, fixed_mass) -> RunContext:
    """The run's record: its settings, its fingerprint (what a resume must match)."""
    z0 = _init_latents(posterior, rs.num_chains, rs.seed, rs.init)
    thin = resolve_thin(posterior, rs.thin, num_chains=rs.num_chains, num_draws=rs.num_draws)
    settings = {
        "method": kernel.name,
        "seed": rs.seed,
        "num_chains": rs.num_chains,
        "num_draws": rs.num_draws,
        "num_warmup": rs.num_warmup,
        "thin": thin,
        "chunk_size": rs.chunk_size,
        "sampler_options": options.as_dict(),
        "init": f"prior draws x {INIT_SCALE}" if rs.init is None else f"user {sha256(z0)}",
    }
    if chains is not None:
        settings["chains"] = chains
    prior = getattr(posterior, "prior", None)
    fingerprint = jsonable(
        {
            **settings,
            "posterior": {
                "name": posterior.name,
                "latent_dim": posterior.latent_dim,
                "num_data": posterior.num_data,
                "data_sha256": sha256(posterior.data),
                "noise_std_sha256": sha256(posterior.noise_std),
                "prior_weights_sha256": getattr(prior, "weights_sha256", None),
            },
            "attrs": dict(rs.attrs or {}),
            **({} if fixed_mass is None else {"inverse_mass_matrix": sha256(fixed_mass)}),
            **({"kernel_inputs": kernel.describe_inputs()} if kernel.inputs else {}),
        }
    )
    run = RunContext(posterior, kernel, options, settings, fingerprint, z0)
    run.fixed_mass = fixed_mass
    run.thin_requested = rs.thin
    return run
