"""HMC's trajectory (see `vaeinv.kernels.hmc`): a tree of leapfrogs built by doubling in random
directions to a depth fixed before it starts, the next state drawn from it by biased
progressive sampling, every leapfrog one batched log density and gradient of all chains."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .hmc_warmup import adapt_hmc

__all__ = ["DIVERGENCE_THRESHOLD", "HMCInfo", "hmc_step"]

#: an energy error above this (in nats) marks the trajectory as divergent (Stan's value).
DIVERGENCE_THRESHOLD = 1000.0


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
    decode, solve and backward pass, counted; a solver failure makes the whole batch
    ``-inf``/NaN ([`Posterior.evaluate`][vaeinv.posterior.target.Posterior.evaluate])."""
    out = posterior.evaluate(z, grad=True)
    return out.log_density, out.grad, out.log_likelihood, out.prediction


def _weight(log_density: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    """``-H = log_density - |r|^2 / 2`` per chain, ``-inf`` where it is not finite."""
    value = log_density - 0.5 * momentum.square().sum(-1)
    return torch.where(torch.isfinite(value), value, -math.inf)


def _where(mask: torch.Tensor, new: list, old: list) -> list:
    """Row by row (a chain per row), ``new`` where ``mask`` else ``old``, for each tensor."""
    return [
        torch.where(mask.reshape(-1, *([1] * (o.dim() - 1))), a, o)
        for a, o in zip(new, old, strict=True)
    ]


class _Subtree:
    """One new subtree of ``len(uniforms)`` leapfrogs in every chain, a state drawn from it in
    proportion to ``exp(-H)`` by progressive multinomial sampling."""

    def __init__(self, chosen: list, rate_sum, diverging, failed) -> None:
        self.chosen = chosen
        self.log_weight = torch.full_like(rate_sum, -math.inf)
        # the trajectory's running sums, continued leapfrog by leapfrog (the same roundings)
        self.rate_sum, self.diverging, self.failed = rate_sum, diverging, failed

    def build(self, posterior, end: list, h, tril, log_w0, uniforms) -> list:
        """Integrate from ``end = [z, r, grad]`` with step ``h``; returns the new end."""
        z, r, grad = end
        for uniform in uniforms:
            r = r + 0.5 * h * (grad @ tril)
            z = z + h * (r @ tril.mT)
            out = _evaluate_grad(posterior, z)
            ok = torch.isfinite(out[0])
            grad = torch.where(ok[:, None], out[1], 0.0)
            r = r + 0.5 * h * (grad @ tril)
            log_w = torch.where(ok, _weight(out[0], r), -math.inf)
            error = log_w0 - log_w  # the energy error H_i - H_0
            bad = ~torch.isfinite(log_w)
            self.failed = self.failed | bad
            self.diverging = self.diverging | bad | (error > DIVERGENCE_THRESHOLD)
            self.rate_sum = self.rate_sum + torch.where(
                bad, 0.0, torch.exp(-error.clamp_min(0.0)).nan_to_num(1.0)
            )
            log_sub_new = torch.logaddexp(self.log_weight, log_w)
            take = ~bad & (uniform < torch.exp(log_w - log_sub_new))
            self.log_weight = torch.where(bad, self.log_weight, log_sub_new)
            self.chosen = _where(take, [z, out[0], out[1], out[2], out[3]], self.chosen)
        return [z, r, grad]


def hmc_step(
    posterior,
    state,
    generator: torch.Generator,
    *,
    adapt: bool = False,
    target_accept: float = 0.8,
) -> tuple:
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
        z, r, grad = _where(ahead, right, left)
        h = torch.where(ahead, eps, -eps)[:, None]
        tree = _Subtree(chosen, rate_sum, diverging, failed)
        z, r, grad = tree.build(
            posterior, [z, r, grad], h, tril, log_w0, uniforms[k : k + 2**level]
        )
        k += 2**level
        log_sub, sub = tree.log_weight, tree.chosen
        rate_sum, diverging, failed = tree.rate_sum, tree.diverging, tree.failed
        left, right = _where(ahead, left, [z, r, grad]), _where(ahead, [z, r, grad], right)
        accept = torch.isfinite(log_sub) & (between[level] < torch.exp(log_sub - log_tree))
        chosen = _where(accept, sub, chosen)
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
        new = adapt_hmc(new, float(rate.mean()), target_accept)
    return new, info
