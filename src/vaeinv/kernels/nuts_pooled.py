"""NUTS's pooled warm-up (``mass="pooled"``): the Laplace start, then the mass re-estimated
twice from the draws of all chains pooled (the schedule and the estimate in
[`vaeinv.approx.pooled`][vaeinv.approx.pooled]), each stage a NUTS run of its own stream."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from ..approx.pooled import pooled_schedule, spiked_covariance
from .nuts import nuts_run
from .nuts_chain import ChainSettings

__all__ = ["PooledWarmup", "pooled_warmup"]


class PooledWarmup(NamedTuple):
    """The state after the estimation stages of a pooled warm-up.

    Attributes:
        z: ``(C, d)`` float64 the chains' last draws.
        step_size: ``(C,)`` float64 the last adapted step sizes (the final warm-up's start).
        inverse_mass_matrix: ``(d, d)`` float64 the last estimate, shared by all chains.
        corrected: directions corrected by each estimate (`spiked_covariance`).
        num_evaluations: potential + gradient evaluations, all chains.
        divergences: divergent iterations, all chains.
    """

    z: torch.Tensor
    step_size: torch.Tensor
    inverse_mass_matrix: torch.Tensor
    corrected: list[int]
    num_evaluations: int
    divergences: int


def pooled_warmup(
    posterior,
    z0: torch.Tensor,
    inverse_mass_matrix: torch.Tensor,
    *,
    num_warmup: int,
    seeds: Sequence[int],
    target_accept: float,
    max_tree_depth: int,
    chain_ids: Sequence[int] | None = None,
    step_size: float | torch.Tensor | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> PooledWarmup:
    """Run the estimation stages of a pooled warm-up (see the module docstring).

    Args:
        posterior: as for [`nuts_run`][vaeinv.kernels.nuts.nuts_run].
        z0: ``(C, d)`` starts.
        inverse_mass_matrix: ``(d, d)`` the first stage's mass (e.g. the Laplace covariance).
        num_warmup: the whole warm-up per chain, split by `pooled_schedule`.
        seeds: one seed per estimation stage (each stage's chains draw from
            ``chain_seed(seeds[k], chain)``).
        target_accept: as for ``nuts_run``.
        max_tree_depth: as for ``nuts_run``.
        chain_ids: as for ``nuts_run`` (the chains pooled are these).
        step_size: the first stage's initial step size (default: Pyro's search from 1).
        progress: called as ``progress(chain, iteration, stats)`` after every iteration.

    Returns:
        A [`PooledWarmup`][vaeinv.kernels.nuts_pooled.PooledWarmup] after
        ``num_warmup - final`` iterations per chain; the caller runs the final step-size
        warm-up (``final = pooled_schedule(num_warmup)[1]`` iterations) and the draws.
    """
    stages, _ = pooled_schedule(num_warmup)
    if len(seeds) != len(stages):
        raise ValueError(f"seeds must hold {len(stages)} seeds, got {len(seeds)}")
    z, mass, step = z0, inverse_mass_matrix.to(torch.float64), step_size
    corrected, evaluations, divergences = [], 0, 0
    for (warm, window), seed in zip(stages, seeds, strict=True):
        out = nuts_run(
            posterior,
            z,
            num_draws=window,
            num_warmup=warm,
            seed=int(seed),
            settings=ChainSettings(target_accept, max_tree_depth, True, True, False),
            step_size=step,
            inverse_mass_matrix=mass,
            progress=progress,
            chain_ids=chain_ids,
        )
        mass, k = spiked_covariance(out.z.reshape(-1, out.z.shape[-1]), mass)
        corrected.append(k)
        z, step = out.z[:, -1], out.adapted_step_size
        evaluations += int(out.num_evaluations.sum())
        divergences += int(out.num_warmup_divergences.sum()) + int(out.diverging.sum())
    return PooledWarmup(
        z=z,
        step_size=step,
        inverse_mass_matrix=mass,
        corrected=corrected,
        num_evaluations=evaluations,
        divergences=divergences,
    )
