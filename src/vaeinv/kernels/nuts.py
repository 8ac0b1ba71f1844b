"""NUTS through Pyro, on the latent posterior: ``potential_fn(z) = -log_density(z)``.

Each chain runs Pyro's [NUTS kernel](https://docs.pyro.ai/en/stable/mcmc.html) (multinomial
sampling, Stan's windowed warm-up of the step size by dual averaging and of the diagonal or
dense inverse mass matrix), driven here step by step as Pyro's own ``MCMC`` runner drives it
(``setup``, ``sample`` per iteration, ``cleanup``), so that every draw's statistics are
recorded under ArviZ's names: ``lp``, ``acceptance_rate`` (mean Metropolis acceptance
probability over the trajectory), ``step_size``, ``diverging``, ``tree_depth`` (number of
tree doublings, as Stan counts them) and ``n_steps`` (leapfrog steps: one potential and one
gradient evaluation each).

Chains run one after another. Pyro draws from the global torch RNG, so each chain runs inside
``torch.random.fork_rng()`` with its own stream: seeded from ``(seed, chain)`` or restored from
``rng_state``. The caller's global RNG state is left untouched, a chain's draws do not depend on
how many chains run, and a run continues in chunks bit for bit: pass the previous result's
``adapted_step_size``, ``inverse_mass_matrix`` and ``rng_state``, ``z0 = z[:, -1]``,
``adapt=False`` and ``num_warmup=0``.

A non-finite potential (a failed solve gives NaN, or the solver raises
[`SolverError`][vaeinv.physics.darcy.SolverError]) makes the trajectory diverge: the draw is
recorded
as ``diverging`` and the chain goes on.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..physics.darcy import SolverError, SolverWarning
from .nuts_chain import ChainSettings, chain_seed, rng_state_of, run_chain

__all__ = ["ChainSettings", "NUTSResult", "chain_seed", "nuts_run"]


@dataclass(frozen=True)
class NUTSResult:
    """Draws and per-draw statistics of ``C`` NUTS chains (CPU tensors).

    Attributes:
        z: ``(C, N, d)`` float64 draws (after warm-up).
        lp: ``(C, N)`` float64 log density (``log_prior + log_likelihood``) of each draw.
        acceptance_rate: ``(C, N)`` float64 mean acceptance probability over the trajectory.
        step_size: ``(C, N)`` float64 leapfrog step size used.
        diverging: ``(C, N)`` bool, the trajectory diverged (energy error over 1000, or a
            non-finite potential).
        tree_depth: ``(C, N)`` int64 number of tree doublings.
        n_steps: ``(C, N)`` int64 leapfrog steps (potential + gradient evaluations).
        adapted_step_size: ``(C,)`` float64 step size at the end of the run.
        inverse_mass_matrix: ``(C, d)`` (diagonal) or ``(C, d, d)`` (``full_mass``) float64 at
            the end of the run.
        rng_state: ``(C, L)`` uint8 opaque per-chain RNG state at the end of the run (the CPU
            generator's state, followed by the CUDA one's on a CUDA device); pass it back to
            continue.
        num_evaluations: ``(C,)`` int64 potential + gradient evaluations in the whole call,
            warm-up and step-size search included.
        num_warmup_divergences: ``(C,)`` int64 divergent warm-up iterations.
        last: ``(C, d)`` float64 each chain's state at the end of the call (its last draw, or
            where its warm-up ended).
    """

    z: torch.Tensor
    lp: torch.Tensor
    acceptance_rate: torch.Tensor
    step_size: torch.Tensor
    diverging: torch.Tensor
    tree_depth: torch.Tensor
    n_steps: torch.Tensor
    adapted_step_size: torch.Tensor
    inverse_mass_matrix: torch.Tensor
    rng_state: torch.Tensor
    num_evaluations: torch.Tensor
    num_warmup_divergences: torch.Tensor
    last: torch.Tensor


def _per_chain(value, num_chains: int, name: str, dtype=torch.float64) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype).detach().cpu()
    if t.dim() == 0:
        t = t.expand(num_chains)
    if t.shape[0] != num_chains:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}, expected one per chain ({num_chains},...)"
        )
    return t


def _check_inverse_mass(inverse_mass_matrix, num_chains: int, d: int, full_mass: bool):
    imm = torch.as_tensor(inverse_mass_matrix, dtype=torch.float64).detach().cpu()
    per_draw = (d, d) if full_mass else (d,)
    if tuple(imm.shape) == per_draw:
        imm = imm.expand(num_chains, *per_draw)
    if tuple(imm.shape) != (num_chains, *per_draw):
        kind = "dense (full_mass=True)" if full_mass else "diagonal (full_mass=False)"
        raise ValueError(
            f"inverse_mass_matrix has shape {tuple(imm.shape)}, expected {per_draw} or "
            f"({num_chains}, {', '.join(map(str, per_draw))}) for a {kind} mass matrix"
        )
    if full_mass:
        sym = torch.allclose(imm, imm.transpose(-1, -2))
        if not sym or torch.linalg.cholesky_ex(imm).info.any():
            raise ValueError("inverse_mass_matrix must be symmetric positive definite")
    elif not (torch.isfinite(imm).all() and (imm > 0).all()):
        raise ValueError(f"inverse_mass_matrix must be positive and finite, got min {imm.min()}")
    return imm


def nuts_run(
    posterior,
    z0: torch.Tensor,
    *,
    num_draws: int,
    num_warmup: int,
    seed: int,
    settings: ChainSettings | None = None,
    step_size: float | torch.Tensor | None = None,
    inverse_mass_matrix: torch.Tensor | None = None,
    rng_state: torch.Tensor | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    chain_ids: Sequence[int] | None = None,
) -> NUTSResult:
    """Run ``C`` NUTS chains, one after another, from ``z0``.

    Args:
        posterior: a [`Posterior`][vaeinv.posterior.target.Posterior] (``latent_dim``,
            ``device``, ``log_density`` and ``potential``).
        z0: ``(C, d)`` initial latents with finite log density.
        num_draws: kept iterations per chain, at least 0.
        num_warmup: warm-up iterations per chain (discarded), at least 0.
        seed: non-negative integer; chain ``c`` draws from the stream
            [`chain_seed`][vaeinv.kernels.nuts_chain.chain_seed]``(seed, c)`` unless
            ``rng_state`` is given.
        settings: the kernel's [`ChainSettings`][vaeinv.kernels.nuts_chain.ChainSettings]
            (target acceptance, tree depth, dense or diagonal mass, what is adapted);
            default ``ChainSettings()``.
        step_size: the (initial) step size, a positive number or one per chain ``(C,)``;
            required when ``settings.adapt`` is false. When adapting, Pyro starts its search
            from it (default 1).
        inverse_mass_matrix: the (initial) inverse mass matrix, ``(d,)`` / ``(C, d)`` or, with
            ``full_mass``, ``(d, d)`` / ``(C, d, d)``; default the identity.
        rng_state: ``(C, L)`` uint8, the ``rng_state`` of a previous result, to continue its
            streams; overrides ``seed``.
        progress: optional ``progress(chain, iteration, stats)`` called after every iteration
            (``iteration`` counts warm-up and draws from 0); ``stats`` holds ``warmup``,
            ``diverging``, ``acceptance_rate``, ``step_size``, ``tree_depth``, ``n_steps``.
        chain_ids: the index of each row of ``z0`` among the run's chains (default
            ``0..C-1``): the seed of its stream and the ``chain`` passed to ``progress``. Rows
            ``[2, 3]`` of a four-chain run, run alone with ``chain_ids=[2, 3]``, give the draws
            the whole run gives them.

    Returns:
        A [`NUTSResult`][vaeinv.kernels.nuts.NUTSResult] (CPU tensors).

    Raises:
        ValueError: a bad ``z0`` shape or a non-finite initial log density (the chain and
            value named), bad counts or ``seed``, a missing or non-positive ``step_size``, an
            ``inverse_mass_matrix`` or ``rng_state`` of the wrong shape, a non-positive-definite
            mass matrix, or ``chain_ids`` that are not ``C`` distinct non-negative integers.
    """
    settings = ChainSettings() if settings is None else settings
    d = posterior.latent_dim
    device = torch.device(posterior.device)
    ids = _check_chains(z0, d, chain_ids)
    num_chains = len(ids)
    for name, value in (("num_draws", num_draws), ("num_warmup", num_warmup)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if num_draws + num_warmup < 1:
        raise ValueError("nuts_run needs num_draws + num_warmup >= 1 iterations")
    if rng_state is None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    step_sizes = _check_step_size(step_size, num_chains, settings.adapt)
    masses = None
    if inverse_mass_matrix is not None:
        masses = _check_inverse_mass(inverse_mass_matrix, num_chains, d, settings.full_mass)
    if rng_state is not None:
        expected = rng_state_of(device).numel()
        if rng_state.dtype != torch.uint8 or tuple(rng_state.shape) != (num_chains, expected):
            raise ValueError(
                f"rng_state has shape {tuple(rng_state.shape)} and dtype {rng_state.dtype}, "
                f"expected ({num_chains}, {expected}) uint8 (a previous result's rng_state)"
            )
    z_start = z0.detach().to(device=device, dtype=torch.float64)
    _check_start(posterior, z_start)
    results = [
        run_chain(
            ids[c],
            settings,
            num_draws=num_draws,
            num_warmup=num_warmup,
            seed=seed,
            potential_fn=lambda params: posterior.potential(params["z"]),
            z0=z_start[c],
            step_size=float(step_sizes[c]),
            inverse_mass_matrix=None if masses is None else masses[c].to(device),
            rng_state=None if rng_state is None else rng_state[c],
            progress=progress,
        )
        for c in range(num_chains)
    ]
    stacked = {key: torch.stack([r[key] for r in results]) for key in results[0]}
    return NUTSResult(**stacked)


def _check_chains(z0, d: int, chain_ids) -> list[int]:
    if not isinstance(z0, torch.Tensor) or z0.dim() != 2 or z0.shape[0] < 1 or z0.shape[1] != d:
        got = tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__
        raise ValueError(f"z0 has shape {got}, expected (num_chains, {d}) with num_chains >= 1")
    num_chains = z0.shape[0]
    ids = list(range(num_chains)) if chain_ids is None else list(chain_ids)
    if (
        len(ids) != num_chains
        or len(set(ids)) != num_chains
        or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids)
    ):
        raise ValueError(
            f"chain_ids must be {num_chains} distinct non-negative integers (one per row of "
            f"z0), got {chain_ids!r}"
        )
    return ids


def _check_step_size(step_size, num_chains: int, adapt: bool) -> torch.Tensor:
    if step_size is None:
        if not adapt:
            raise ValueError("adapt=False needs a step_size (e.g. a previous adapted_step_size)")
        return torch.ones(num_chains, dtype=torch.float64)
    step_sizes = _per_chain(step_size, num_chains, "step_size")
    if not (torch.isfinite(step_sizes).all() and (step_sizes > 0).all()):
        raise ValueError(f"step_size must be positive and finite, got {step_size!r}")
    return step_sizes


def _check_start(posterior, z_start: torch.Tensor) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        try:
            lp0 = posterior.log_density(z_start).to(torch.float64)
        except SolverError:
            lp0 = torch.full((z_start.shape[0],), math.nan, dtype=torch.float64)
    if not torch.isfinite(lp0).all():
        c = int(torch.nonzero(~torch.isfinite(lp0))[0])
        raise ValueError(
            f"chain {c} starts at a point with log density {lp0[c].item()}; "
            "NUTS needs a finite log density at every z0 row"
        )
