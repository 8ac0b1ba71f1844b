"""Batched HMC with jittered trajectory lengths: every chain in one batched decode and solve.

Pyro's NUTS (``vaeinv.kernels.nuts``) advances one chain at a time and ends each trajectory
when it turns back (the No-U-Turn criterion); chains whose trees end at different depths cannot
share one batched evaluation. This module builds each trajectory as NUTS does, by doubling a tree
in random directions, to a depth ``D`` fixed before the trajectory starts:

    2^D - 1 >= u * trajectory_length / step_size    (the smallest such D),  u ~ U(0, 1),

``u`` drawn once per iteration and shared by all chains (the jitter of ChEES-HMC, Hoffman, Radul
& Sountsov 2021, AISTATS: a random length avoids the periodic orbits a fixed one can fall into,
and averages over directions whose periods differ). The next state is drawn from the tree in
proportion to ``exp(-H)``: within each new subtree by progressive multinomial sampling, and
between the tree so far and the new subtree with probability ``min(1, W_new / W_old)`` (biased
progressive sampling, Betancourt 2017, arXiv:1701.02434, appendix A). The draw favours the
last-built half, far from the current state, and a trajectory that runs into a region where the
leapfrog is unstable still moves the chain to a state built before, instead of being rejected
whole. The depth and the directions do not depend on the state, so every iteration leaves the
posterior invariant; the chains share the depth and the step size so that all of them take the
same number of leapfrogs and every leapfrog is one batched ``posterior.log_density`` and its
gradient.

The inverse mass matrix is ``L L^T`` (``scale_tril``); the leapfrog runs in the whitened
coordinates ``x = L^-1 z`` with momentum ``r ~ N(0, I)``. Warm-up (``adapt=True``):

- the step size follows Nesterov dual averaging (Hoffman & Gelman 2014) towards
  ``target_accept``, on the mean over the chains of the acceptance statistic (the mean of
  ``min(1, exp(H_0 - H_i))`` over the trajectory's new states, as Stan's);
- the mass is re-estimated twice from the pooled draws of all chains (the schedule of NUTS's
  pooled warm-up, [`pooled_schedule`][vaeinv.approx.pooled.pooled_schedule]): at the end of
  each window, [`spiked_covariance`][vaeinv.approx.pooled.spiked_covariance] corrects the
  current covariance where the window's draws clearly disagree with it, and the dual averaging
  restarts from the current step size.

[`freeze_hmc`][vaeinv.kernels.hmc.freeze_hmc] fixes the averaged step size; after it the
chain is a fixed Markov kernel that leaves the posterior invariant. A state of the trajectory
with a non-finite energy (a failed solve, a NaN) has weight 0 and is counted in
``HMCInfo.failed``; one with an energy error above ``DIVERGENCE_THRESHOLD`` too in ``diverging``.
Random numbers are drawn in a fixed order, so a resumed run is bit-identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..approx.pooled import pooled_schedule
from .adaptation import DualAveraging
from .base import Kernel, check_fraction, check_positive
from .hmc_trajectory import DIVERGENCE_THRESHOLD, HMCInfo, _evaluate_grad, hmc_step
from .starts import INIT_SCALE, LaplaceStartOptions, laplace_start

__all__ = ["DIVERGENCE_THRESHOLD", "HMCInfo", "HMCState", "freeze_hmc", "hmc_init", "hmc_step"]


class HMCState(NamedTuple):
    """The state of ``C`` HMC chains (immutable; every tensor on the posterior's device).

    Attributes:
        z: ``(C, d)`` float64 current latents.
        log_density: ``(C,)`` float64 cached ``log_prior + log_likelihood`` (``-inf`` if failed).
        grad: ``(C, d)`` float64 cached gradient of ``log_density`` with respect to ``z``.
        log_likelihood: ``(C,)`` float64 cached log-likelihood.
        prediction: ``(C, m)`` float64 cached ``posterior.predict(z)``.
        scale_tril: ``(d, d)`` float64 lower-triangular ``L``, inverse mass ``L L^T``.
        log_step_size: ``()`` float64 ``log`` of the step size of the next iteration.
        trajectory_length: ``()`` float64 ``T``, the jittered trajectories' scale.
        max_steps: ``()`` int64 cap on the leapfrogs of one iteration.
        adapt_count: ``()`` int64 warm-up iterations taken so far.
        da_mu, da_hbar, da_count: ``()`` dual-averaging state (``da_count`` iterations since the
            last restart).
        log_step_avg: ``()`` float64 averaged ``log`` step size, used once frozen.
        schedule: ``(4,)`` int64 ``[start_1, end_1, start_2, end_2)``, the two mass windows in
            warm-up iterations (empty windows when the run has no warm-up).
        window: ``(W, C, d)`` float64 the current window's draws (``W`` the longer window).
        mass_corrections: ``(2,)`` int64 directions corrected by each re-estimate.
    """

    z: torch.Tensor
    log_density: torch.Tensor
    grad: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    scale_tril: torch.Tensor
    log_step_size: torch.Tensor
    trajectory_length: torch.Tensor
    max_steps: torch.Tensor
    adapt_count: torch.Tensor
    da_mu: torch.Tensor
    da_hbar: torch.Tensor
    da_count: torch.Tensor
    log_step_avg: torch.Tensor
    schedule: torch.Tensor
    window: torch.Tensor
    mass_corrections: torch.Tensor


def _check_tril(scale_tril: torch.Tensor, d: int) -> None:
    if scale_tril.shape != (d, d):
        raise ValueError(f"scale_tril has shape {tuple(scale_tril.shape)}, expected ({d}, {d})")
    diag = torch.diagonal(scale_tril)
    if not torch.isfinite(scale_tril).all() or not bool((diag > 0).all()):
        raise ValueError("scale_tril must be finite, lower triangular with a positive diagonal")


def hmc_init(
    posterior,
    z0: torch.Tensor,
    scale_tril: torch.Tensor | None = None,
    *,
    step_size: float = 0.1,
    trajectory_length: float = 3.0,
    max_steps: int = 1024,
    num_warmup: int = 0,
    adapt_mass: bool = True,
) -> HMCState:
    """Start ``C`` chains at ``z0`` (one batched log density and gradient).

    Args:
        posterior: a [`Posterior`][vaeinv.posterior.target.Posterior] (``latent_dim``,
            ``num_data``, ``device``, ``predict``, ``log_prior``, ``log_likelihood_of``).
        z0: ``(C, d)`` finite initial latents.
        scale_tril: ``(d, d)`` lower-triangular factor of the inverse mass matrix (the
            posterior covariance it should match); identity when ``None``.
        step_size: initial leapfrog step size, ``> 0``.
        trajectory_length: ``T`` (whitened units), ``> 0``; each iteration builds the
            smallest tree of ``2^D - 1`` leapfrogs that integrates for at least ``u T``,
            ``u ~ U(0, 1)`` (at most ``max_steps`` leapfrogs).
        max_steps: cap on the leapfrogs of one iteration, ``>= 1``.
        num_warmup: warm-up iterations the caller will run with ``adapt=True``; sets the two
            mass windows ([`pooled_schedule`][vaeinv.approx.pooled.pooled_schedule]; none
            when ``num_warmup`` is 0, at least ``MIN_POOLED_WARMUP`` otherwise).
        adapt_mass: ``False`` keeps ``scale_tril`` for the whole run: the warm-up adapts the
            step size only (any ``num_warmup``), as when a finished run is continued with the
            covariance of its draws ([`extend_run`][vaeinv.runs.extend.extend_run]).

    Raises:
        ValueError: a bad ``z0``, ``scale_tril``, step size, length, cap or warm-up count.
    """
    d = posterior.latent_dim
    if not isinstance(z0, torch.Tensor) or z0.dim() != 2 or z0.shape[0] < 1 or z0.shape[1] != d:
        got = tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__
        raise ValueError(f"z0 has shape {got}, expected (num_chains, {d}) with num_chains >= 1")
    device = posterior.device
    z = z0.detach().to(device=device, dtype=torch.float64)
    if not torch.isfinite(z).all():
        raise ValueError("z0 must be finite")
    for name, value in (("step_size", step_size), ("trajectory_length", trajectory_length)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be an integer >= 0, got {num_warmup!r}")
    if scale_tril is None:
        tril = torch.eye(d, dtype=torch.float64, device=device)
    else:
        tril = scale_tril.detach().to(device=device, dtype=torch.float64).contiguous()
        _check_tril(tril, d)
    if not isinstance(adapt_mass, bool):
        raise ValueError(f"adapt_mass must be True or False, got {adapt_mass!r}")
    if num_warmup > 0 and adapt_mass:
        (a1, w1), (a2, w2) = pooled_schedule(num_warmup)[0]
        schedule = [a1, a1 + w1, a1 + w1 + a2, a1 + w1 + a2 + w2]
        width = max(w1, w2)
    else:
        schedule, width = [0, 0, 0, 0], 1
    log_density, grad, log_likelihood, prediction = _evaluate_grad(posterior, z)
    f64 = dict(dtype=torch.float64, device=device)
    i64 = dict(dtype=torch.int64, device=device)
    log_eps = math.log(float(step_size))
    return HMCState(
        z=z,
        log_density=log_density,
        grad=grad,
        log_likelihood=log_likelihood,
        prediction=prediction,
        scale_tril=tril,
        log_step_size=torch.tensor(log_eps, **f64),
        trajectory_length=torch.tensor(float(trajectory_length), **f64),
        max_steps=torch.tensor(max_steps, **i64),
        adapt_count=torch.tensor(0, **i64),
        da_mu=torch.tensor(DualAveraging.restart_point(log_eps), **f64),
        da_hbar=torch.tensor(0.0, **f64),
        da_count=torch.tensor(0, **i64),
        log_step_avg=torch.tensor(log_eps, **f64),
        schedule=torch.tensor(schedule, **i64),
        window=torch.zeros(width, z.shape[0], d, **f64),
        mass_corrections=torch.zeros(2, **i64),
    )


def freeze_hmc(state: HMCState) -> HMCState:
    """End the warm-up: the averaged step size from now on (the mass is already fixed)."""
    return state._replace(log_step_size=state.log_step_avg.clone())


@dataclass(frozen=True)
class HMCOptions(LaplaceStartOptions):
    """Batched HMC's options (and the Laplace start's).

    Attributes:
        step_size: the initial leapfrog step size (dual-averaged in warm-up).
        target_accept: the step-size adaptation's target, in ``(0, 1)``.
        trajectory_length: the longest trajectory in units of the mass-whitened posterior;
            each iteration integrates ``u`` times it, ``u ~ U(0, 1)``.
        max_steps: leapfrogs per iteration at most.
    """

    step_size: float = 0.05
    target_accept: float = 0.8
    trajectory_length: float = 3.0
    max_steps: int = 1024

    def validate(self) -> None:
        super().validate()
        for name in ("step_size", "trajectory_length"):
            check_positive(f"HMC option {name}", getattr(self, name))
        check_fraction("HMC target_accept", self.target_accept)
        check_positive("HMC option max_steps", self.max_steps, integer=True, minimum=1)


class HMCKernel(Kernel):
    """Batched HMC (this module). Its start, as NUTS's pooled mass: the Laplace approximation
    from the run's over-dispersed starts, chains at over-dispersed draws of it,
    ``N(m, INIT_SCALE^2 C)``, from the run's generator, its covariance as the first inverse
    mass, re-estimated twice in warm-up from the pooled chains. With a fixed mass
    (``sample(inverse_mass_matrix=...)``) the chains start at the run's starts under that mass
    and the warm-up adapts the step size only."""

    name = "hmc"
    state_key = "pcn"  # the checkpoint prefix the format has always used
    Options = HMCOptions
    state_type = HMCState
    mass_matrix = True
    extension_warmup = 50

    def check(self, options, *, num_warmup: int, fixed_mass: bool) -> None:
        if num_warmup > 0 and not fixed_mass:
            pooled_schedule(num_warmup)  # raises for a warm-up too short for the mass windows

    def init(self, run):
        opts = run.options
        if run.fixed_mass is None:
            laplace = laplace_start(run)
            z_init = laplace.sample(run.z0.shape[0], run.generator, inflation=INIT_SCALE**2)
            scale_tril = laplace.scale_tril
        else:
            z_init = run.z0
            scale_tril = torch.linalg.cholesky(run.fixed_mass.to(torch.float64))
        return hmc_init(
            run.target,
            z_init,
            scale_tril,
            step_size=float(opts.step_size),
            trajectory_length=float(opts.trajectory_length),
            max_steps=int(opts.max_steps),
            num_warmup=run.num_warmup,
            adapt_mass=run.fixed_mass is None,
        )

    position_fields = ("z", "log_density", "grad", "log_likelihood", "prediction")

    def relocate(self, target, state, z):
        log_density, grad, log_likelihood, prediction = _evaluate_grad(target, z)
        return state._replace(
            z=z,
            log_density=log_density,
            grad=grad,
            log_likelihood=log_likelihood,
            prediction=prediction,
        )

    def step(self, target, state, generator, *, adapt, options):
        return hmc_step(target, state, generator, adapt=adapt, target_accept=options.target_accept)

    def end_warmup(self, state):
        return freeze_hmc(state)

    def extension(self, record):
        """Each chain from its last draw with the covariance of the kept draws as a fixed mass,
        the step size from the median of the chains' last ones, re-adapted."""
        keys = ("target_accept", "trajectory_length", "max_steps")
        return {
            "num_chains": record.num_held,
            "init": record.last,
            "inverse_mass_matrix": record.mass,
            "step_size": record.last_step_size,
            **{k: record.options[k] for k in keys},
        }
