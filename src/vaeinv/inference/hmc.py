"""Batched HMC with jittered trajectory lengths: every chain in one batched decode and solve.

Pyro's NUTS (``vaeinv.inference.nuts``) advances one chain at a time and ends each trajectory
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
  pooled warm-up, [`pooled_schedule`][vaeinv.inference.pooled.pooled_schedule]): at the end of
  each window, [`spiked_covariance`][vaeinv.inference.pooled.spiked_covariance] corrects the
  current covariance where the window's draws clearly disagree with it, and the dual averaging
  restarts from the current step size.

[`freeze_hmc`][vaeinv.inference.hmc.freeze_hmc] fixes the averaged step size; after it the
chain is a fixed Markov kernel that leaves the posterior invariant. A state of the trajectory
with a non-finite energy (a failed solve, a NaN) has weight 0 and is counted in
``HMCInfo.failed``; one with an energy error above ``DIVERGENCE_THRESHOLD`` too in ``diverging``.
Random numbers are drawn in a fixed order, so a resumed run is bit-identical.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from ..physics import SolverError, SolverWarning
from .pooled import pooled_schedule, spiked_covariance

__all__ = ["DIVERGENCE_THRESHOLD", "HMCInfo", "HMCState", "freeze_hmc", "hmc_init", "hmc_step"]

#: an energy error above this (in nats) marks the trajectory as divergent (Stan's value).
DIVERGENCE_THRESHOLD = 1000.0
_DA_GAMMA, _DA_T0, _DA_KAPPA = 0.05, 10.0, 0.75


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


class HMCInfo(NamedTuple):
    """What one HMC iteration did, per chain (``(C,)`` tensors).

    Attributes:
        accepted: bool, the chain moved (a state other than the current one was drawn).
        acceptance_rate: float64 the mean over the trajectory's new states of
            ``min(1, exp(H_0 - H_i))`` (0 for a state whose energy is not finite).
        failed: bool, some state of the trajectory had a non-finite energy (a failed solve,
            a NaN); it had weight 0.
        diverging: bool, failed or some energy error above ``DIVERGENCE_THRESHOLD``.
        step_size: float64 the step size used.
        n_steps: int64 leapfrogs taken (the same for every chain).
    """

    accepted: torch.Tensor
    acceptance_rate: torch.Tensor
    failed: torch.Tensor
    diverging: torch.Tensor
    step_size: torch.Tensor
    n_steps: torch.Tensor


def _evaluate_grad(posterior, z: torch.Tensor):
    """``(log_density, grad, log_likelihood, prediction)`` of ``z (C, d)`` in one batched
    decode, solve and backward pass; a solver failure makes the whole batch ``-inf``/NaN."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        try:
            prediction = posterior.predict(z).to(torch.float64)
            log_likelihood = posterior.log_likelihood_of(prediction).to(torch.float64)
            log_density = posterior.log_prior(z).to(torch.float64) + log_likelihood
            (grad,) = torch.autograd.grad(log_density.sum(), z)
        except (SolverError, torch.linalg.LinAlgError):
            c, m = z.shape[0], posterior.num_data
            nan = torch.full((c, m), math.nan, dtype=torch.float64, device=z.device)
            ninf = torch.full((c,), -math.inf, dtype=torch.float64, device=z.device)
            return ninf, torch.full_like(z, math.nan).detach(), ninf.clone(), nan
    log_density = log_density.detach()
    bad = ~torch.isfinite(log_density) | ~torch.isfinite(grad).all(-1)
    log_density = torch.where(bad, -math.inf, log_density)
    return log_density, grad.detach(), log_likelihood.detach(), prediction.detach()


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
        posterior: a [`Posterior`][vaeinv.inference.posterior.Posterior] (``latent_dim``,
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
            mass windows ([`pooled_schedule`][vaeinv.inference.pooled.pooled_schedule]; none
            when ``num_warmup`` is 0, at least ``MIN_POOLED_WARMUP`` otherwise).
        adapt_mass: ``False`` keeps ``scale_tril`` for the whole run: the warm-up adapts the
            step size only (any ``num_warmup``), as when a finished run is continued with the
            covariance of its draws ([`extend_run`][vaeinv.inference.extend.extend_run]).

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
        da_mu=torch.tensor(math.log(10.0) + log_eps, **f64),
        da_hbar=torch.tensor(0.0, **f64),
        da_count=torch.tensor(0, **i64),
        log_step_avg=torch.tensor(log_eps, **f64),
        schedule=torch.tensor(schedule, **i64),
        window=torch.zeros(width, z.shape[0], d, **f64),
        mass_corrections=torch.zeros(2, **i64),
    )


def _weight(log_density: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    """``-H = log_density - |r|^2 / 2`` per chain, ``-inf`` where it is not finite."""
    value = log_density - 0.5 * momentum.square().sum(-1)
    return torch.where(torch.isfinite(value), value, -math.inf)


def hmc_step(
    posterior,
    state: HMCState,
    generator: torch.Generator,
    *,
    adapt: bool = False,
    target_accept: float = 0.8,
) -> tuple[HMCState, HMCInfo]:
    """One HMC iteration of every chain; with ``adapt=True`` one warm-up iteration (step-size
    dual averaging, mass windows).

    The trajectory is a tree of depth ``D`` built by doubling, as NUTS builds it but without
    its U-turn check: ``D`` is the smallest depth whose ``2^D - 1`` leapfrogs reach
    ``u * trajectory_length / step_size`` (``u ~ U(0, 1)``, shared by the chains; at most
    ``max_steps`` leapfrogs), and each chain extends its tree at level ``k`` by ``2^k``
    leapfrogs forward or backward in time, by a coin flip. Within each new subtree a state is
    drawn in proportion to ``exp(-H)`` (progressive multinomial sampling), and it replaces the
    draw so far with probability ``min(1, W_new / W_old)``, the subtrees' summed weights
    (biased progressive sampling; Betancourt 2017, arXiv:1701.02434, appendix A.3.2): the draw
    favours the last-built, farthest half of the trajectory, and a subtree that runs into an
    unstable region leaves the earlier draw in place instead of rejecting the whole
    trajectory. A state whose energy is not finite has weight 0; where the density cannot be
    evaluated the leapfrog uses a zero gradient, a function of the position alone, so the
    integrator stays reversible and volume preserving and the move exact. Random numbers, in
    this order: ``u``, the directions ``(D, C)``, the momenta ``(C, d)``, the uniforms of the
    draws within subtrees ``(2^D - 1, C)`` and between them ``(D, C)``, all from
    ``generator``.
    """
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    device, c = state.z.device, state.z.shape[0]
    f64 = dict(dtype=torch.float64, device=generator.device)
    eps = float(torch.exp(state.log_step_size))
    u = float(torch.rand((), generator=generator, **f64))
    wanted = max(1.0, u * float(state.trajectory_length) / eps)
    depth = max(
        1, min(math.ceil(math.log2(wanted + 1.0)), int(state.max_steps + 1).bit_length() - 1)
    )
    n = 2**depth - 1
    forward = (torch.rand(depth, c, generator=generator, **f64) < 0.5).to(device)
    momentum = torch.randn(state.z.shape, generator=generator, **f64).to(device)
    uniforms = torch.rand(n, c, generator=generator, **f64).to(device)
    between = torch.rand(depth, c, generator=generator, **f64).to(device)

    def where(mask: torch.Tensor, new: list, old: list) -> list:
        return [
            torch.where(mask.reshape(-1, *([1] * (o.dim() - 1))), a, o)
            for a, o in zip(new, old, strict=True)
        ]

    tril = state.scale_tril
    log_w0 = _weight(state.log_density, momentum)
    log_tree = log_w0.clone()
    chosen = [state.z, state.log_density, state.grad, state.log_likelihood, state.prediction]
    moved = torch.zeros(c, dtype=torch.bool, device=device)
    grad0 = torch.where(torch.isfinite(state.log_density)[:, None], state.grad, 0.0)
    left = right = [state.z, momentum, grad0]  # the tree's ends: position, momentum, gradient
    rate_sum = torch.zeros(c, dtype=torch.float64, device=device)
    diverging = torch.zeros(c, dtype=torch.bool, device=device)
    failed = torch.zeros(c, dtype=torch.bool, device=device)
    k = 0
    for level in range(depth):
        ahead = forward[level]
        z, r, grad = where(ahead, right, left)
        h = torch.where(ahead, eps, -eps)[:, None]
        log_sub = torch.full((c,), -math.inf, dtype=torch.float64, device=device)
        sub = chosen
        for _ in range(2**level):
            r = r + 0.5 * h * (grad @ tril)
            z = z + h * (r @ tril.mT)
            out = _evaluate_grad(posterior, z)
            ok = torch.isfinite(out[0])
            grad = torch.where(ok[:, None], out[1], 0.0)
            r = r + 0.5 * h * (grad @ tril)
            log_w = torch.where(ok, _weight(out[0], r), -math.inf)
            error = log_w0 - log_w  # the energy error H_i - H_0
            bad = ~torch.isfinite(log_w)
            failed |= bad
            diverging |= bad | (error > DIVERGENCE_THRESHOLD)
            rate_sum += torch.where(bad, 0.0, torch.exp(-error.clamp_min(0.0)).nan_to_num(1.0))
            log_sub_new = torch.logaddexp(log_sub, log_w)
            take = ~bad & (uniforms[k] < torch.exp(log_w - log_sub_new))
            log_sub = torch.where(bad, log_sub, log_sub_new)
            sub = where(take, [z, out[0], out[1], out[2], out[3]], sub)
            k += 1
        left, right = where(ahead, left, [z, r, grad]), where(ahead, [z, r, grad], right)
        accept = torch.isfinite(log_sub) & (between[level] < torch.exp(log_sub - log_tree))
        chosen = where(accept, sub, chosen)
        moved |= accept
        log_tree = torch.logaddexp(log_tree, log_sub)
    rate = rate_sum / n
    info = HMCInfo(
        accepted=moved,
        acceptance_rate=rate,
        failed=failed,
        diverging=diverging,
        step_size=torch.full((c,), eps, dtype=torch.float64, device=device),
        n_steps=torch.full((c,), n, dtype=torch.int64, device=device),
    )
    new = state._replace(
        z=chosen[0],
        log_density=chosen[1],
        grad=chosen[2],
        log_likelihood=chosen[3],
        prediction=chosen[4],
    )
    if adapt:
        new = _adapt(new, float(rate.mean()), target_accept)
    return new, info


def _adapt(state: HMCState, mean_rate: float, target: float) -> HMCState:
    k = int(state.adapt_count)
    t = int(state.da_count) + 1
    f64 = dict(dtype=torch.float64, device=state.z.device)
    w = 1.0 / (t + _DA_T0)
    hbar = (1.0 - w) * float(state.da_hbar) + w * (target - mean_rate)
    log_eps = float(state.da_mu) - math.sqrt(t) / _DA_GAMMA * hbar
    eta = t ** (-_DA_KAPPA)
    log_avg = eta * log_eps + (1.0 - eta) * float(state.log_step_avg)
    state = state._replace(
        log_step_size=torch.tensor(log_eps, **f64),
        da_hbar=torch.tensor(hbar, **f64),
        da_count=state.da_count + 1,
        log_step_avg=torch.tensor(log_avg, **f64),
        adapt_count=state.adapt_count + 1,
    )
    s1, e1, s2, e2 = (int(v) for v in state.schedule)
    for index, (start, end) in enumerate(((s1, e1), (s2, e2))):
        if start <= k < end:
            window = state.window.clone()
            window[k - start] = state.z
            state = state._replace(window=window)
            if k + 1 == end:
                state = _new_mass(state, end - start, index)
    return state


def _new_mass(state: HMCState, length: int, index: int) -> HMCState:
    draws = state.window[:length].reshape(-1, state.z.shape[1])
    reference = state.scale_tril @ state.scale_tril.mT
    covariance, corrected = spiked_covariance(draws, reference)
    tril = torch.linalg.cholesky(covariance).contiguous()
    corrections = state.mass_corrections.clone()
    corrections[index] = corrected
    # the new mass changes the stable step: restart the averaging from the current step
    f64 = dict(dtype=torch.float64, device=state.z.device)
    log_eps = float(state.log_step_size)
    return state._replace(
        scale_tril=tril,
        mass_corrections=corrections,
        da_mu=torch.tensor(math.log(10.0) + log_eps, **f64),
        da_hbar=torch.tensor(0.0, **f64),
        da_count=torch.zeros_like(state.da_count),
        log_step_avg=torch.tensor(log_eps, **f64),
    )


def freeze_hmc(state: HMCState) -> HMCState:
    """End the warm-up: the averaged step size from now on (the mass is already fixed)."""
    return state._replace(log_step_size=state.log_step_avg.clone())
