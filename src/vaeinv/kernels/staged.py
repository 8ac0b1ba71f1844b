"""Staged coarse-to-fine inversion as the multiscale deep generative model (MDGM, Xia & Zabaras
2022) runs it, as the registered kernel ``"staged"``:
``vaeinv.sample(posterior, "staged", coarse=[coarsest, ...], ...)``.

Before the run's own warm-up, each chain runs ``stage_iterations`` pCN iterations on every
coarse posterior in turn, coarsest first (the first half adapts the step, the second half is
averaged). The average of a stage's latents starts the next stage: its coordinates are the
coarse ones of the next latent, and the next level's own coordinates start at the prior mean
0. After the last coarse stage, the chains run pCN on the fine posterior over the whole joint
latent, from those starts, with the run's warm-up and draws.

The coarse stages are an **initialiser, not a posterior**: nothing drawn there is kept, and
the kept draws are pCN draws of the fine posterior, whose correctness does not depend on the
stages (only where the chains start). Compare `vaeinv.kernels.mlda`, which uses the coarse
posteriors inside every iteration and stays exact. The coarse stages' solves are counted in
the result's attributes (``forward_solves_level_<l>``, ``coarse_forward_solves``). Random
numbers: the stages draw from the run's kernel stream before the fine pCN does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import check_positive
from .levels import check_coarse_levels, check_levels, describe_levels
from .pcn import PCNKernel, PCNOptions, freeze_adaptation, pcn_init, pcn_step

__all__ = ["StagedKernel", "StagedOptions"]


@dataclass(frozen=True)
class StagedOptions(PCNOptions):
    """The staged run's options: pCN's (for every stage) and

    Attributes:
        stage_iterations: pCN iterations per chain on each coarse stage, ``>= 2`` (the first
            half adapts, the second half is averaged into the next stage's start).
    """

    stage_iterations: int = 1000

    def validate(self) -> None:
        super().validate()
        check_positive("stage_iterations", self.stage_iterations, integer=True, minimum=2)


class StagedKernel(PCNKernel):
    """Coarse stages, then pCN on the fine posterior (module docstring).

    Args:
        coarse: ``[coarsest, ..., next-to-fine]``, as for ``"mlda"``.
    """

    name = "staged"
    state_key = "staged"
    Options = StagedOptions
    inputs = ("coarse",)
    extension_warmup = None
    extension_refusal = "a staged run's coarse stages are its start; extend it with 'pcn'"

    def __init__(self, coarse=None) -> None:
        if coarse is None:
            raise ValueError("method 'staged' needs coarse=[coarsest_posterior, ...]")
        self.levels = check_levels(coarse, "staged")

    def describe_inputs(self) -> dict:
        return describe_levels(self.levels)

    def init(self, run):
        target, options = run.target, run.options
        check_coarse_levels(self.levels, target, self.name)
        z = run.z0.to(target.device, torch.float64)
        start = z[:, : self.levels[0].latent_dim]
        finer = [*self.levels[1:], target]
        for k, level in enumerate(self.levels):
            before = level.work.forward_solves
            mean = _stage(level, start, run.generator, options)
            solves = level.work.forward_solves - before
            run.count(f"forward_solves_level_{k}", solves)
            run.count("coarse_forward_solves", solves)
            pad = torch.zeros(z.shape[0], finer[k].latent_dim - mean.shape[1], dtype=mean.dtype)
            start = torch.cat([mean, pad.to(mean.device)], dim=1)
        return pcn_init(target, start, step_size=options.step_size)


def _stage(level, start: torch.Tensor, generator, options: StagedOptions) -> torch.Tensor:
    """pCN on one coarse posterior from ``start``: the mean of the second half's latents."""
    state = pcn_init(level, start, step_size=options.step_size)
    warm = options.stage_iterations // 2
    total = torch.zeros_like(state.z)
    for i in range(options.stage_iterations):
        state, _ = pcn_step(
            level, state, generator, adapt=i < warm, target_accept=options.target_accept
        )
        if i + 1 == warm:
            state = freeze_adaptation(state)
        if i >= warm:
            total = total + state.z
    return total / (options.stage_iterations - warm)
