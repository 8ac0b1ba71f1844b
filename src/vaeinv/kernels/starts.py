"""Where chains start: the run's over-dispersed prior draws, and the Laplace approximation
several kernels build from them first (its work and its ascents' end points recorded on the
run).

Seeds: the run's ``seed`` derives every generator, ``numpy.random.SeedSequence([seed,
stream])``: stream 0 draws the initial latents, stream 1 drives the batched kernels (pCN, gpCN,
tpCN, HMC), stream 2 seeds NUTS, stream 3 tpCN's flow (its halves, initial weights and fitting
draws), streams 10 and 11 the stages of NUTS's pooled warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..approx.laplace import laplace_approximation
from .base import Options, check_positive

__all__ = [
    "INIT_SCALE",
    "STREAM_INIT",
    "STREAM_KERNEL",
    "STREAM_NUTS",
    "STREAM_POOLED",
    "STREAM_TRANSPORT",
    "LaplaceStartOptions",
    "derived_seed",
    "laplace_start",
]

#: initial latents are ``INIT_SCALE * N(0, I)`` draws (over-dispersed relative to the prior).
INIT_SCALE = 1.5
STREAM_INIT, STREAM_KERNEL, STREAM_NUTS, STREAM_TRANSPORT = 0, 1, 2, 3
#: NUTS's pooled warm-up (``mass="pooled"``): stage ``k`` draws from stream ``10 + k``.
STREAM_POOLED = 10


def derived_seed(seed: int, stream: int) -> int:
    """The seed of stream ``stream`` of a run seeded ``seed`` (a 63-bit integer)."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


@dataclass(frozen=True)
class LaplaceStartOptions(Options):
    """The options of a kernel that starts from a Laplace approximation (gpCN, tpCN, HMC, NUTS
    with a Laplace or pooled mass).

    Attributes:
        laplace_steps: Adam steps of each start's ascent before the Gauss-Newton steps.
        laplace_lr: the ascent's learning rate.
    """

    laplace_steps: int = 30
    laplace_lr: float = 0.05

    def validate(self) -> None:
        check_positive("laplace_steps", self.laplace_steps, integer=True)
        check_positive("laplace_lr", self.laplace_lr)


def laplace_start(run):
    """The Laplace approximation from the run's starts ``run.z0`` (one Adam ascent each,
    ``laplace_steps`` at ``laplace_lr``), its work added to the run's."""
    opts = run.options
    laplace = laplace_approximation(
        run.target, run.z0, steps=int(opts.laplace_steps), lr=float(opts.laplace_lr)
    )
    # contiguous, as a restored state's tensors are: the same matmul kernels, the same bits
    laplace = laplace._replace(
        mean=laplace.mean.contiguous(), scale_tril=laplace.scale_tril.contiguous()
    )
    run.add_work(laplace.num_forward_solves, laplace.num_gradient_evaluations)
    # where each start's ascent ended: far apart values mean the chains, which all start
    # around the best one, may hide another mode from R-hat
    run.laplace_starts = [float(v) for v in laplace.start_log_density.cpu()]
    return laplace
