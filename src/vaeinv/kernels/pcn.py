"""Preconditioned Crank-Nicolson (pCN), batched over chains, as an ``(init, step)`` pair.

With the standard-normal latent prior, pCN proposes

    z' = sqrt(1 - beta^2) z + beta xi,    xi ~ N(0, I),

a move that leaves the prior invariant, so the Metropolis-Hastings ratio is the likelihood
ratio alone: accept with probability ``min(1, exp(ll(z') - ll(z)))``. Chains are a leading
batch dimension: one step costs one batched decode and one batched solve for all chains
(``posterior.forward(posterior.decode(z'))``, which is ``posterior.predict(z')``). The state
caches each chain's log-likelihood, prediction and decoded field, so a rejection never solves
again and keeping a draw's field costs no extra decode.

The step size ``beta`` is adapted per chain during warm-up (``adapt=True``) by Robbins-Monro on
``log beta`` with gain ``(t + 1)^-0.6`` towards ``target_accept``, using the acceptance
probability (not the 0/1 outcome) as the signal. An averaged iterate (weights
``(t + 1)^-0.75``, which forget the early transient) is kept alongside; call
[`freeze_adaptation`][vaeinv.kernels.pcn.freeze_adaptation] at the end of warm-up to sample
with it.

All randomness comes from the caller's ``torch.Generator``, drawn in a fixed order per step
(``xi (C, d)`` then ``u (C,)``, always both, whatever the outcome), so a run resumed from a
saved ``(state, generator.get_state())`` reproduces the uninterrupted draws bit for bit.

A proposal whose prediction is not finite (a failed solve gives NaN) is rejected and reported
in [`PCNInfo.failed`][vaeinv.kernels.pcn.PCNInfo]; it never raises, and the physics'
``SolverWarning`` is silenced inside the step (it is counted instead).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .adaptation import robbins_monro
from .base import Kernel, Options, check_fraction

__all__ = ["PCNInfo", "PCNState", "freeze_adaptation", "pcn_init", "pcn_step"]


class PCNState(NamedTuple):
    """The state of ``C`` pCN chains (immutable; every tensor on the posterior's device).

    Attributes:
        z: ``(C, d)`` float64 current latents.
        log_likelihood: ``(C,)`` float64 cached log-likelihood of ``z`` (``-inf`` where the
            prediction failed).
        prediction: ``(C, m)`` float64 cached ``posterior.predict(z)``.
        log_step_size: ``(C,)`` float64 ``log beta`` used by the next step, ``<= 0``.
        adapt_count: ``()`` int64 number of adaptation steps taken so far.
        log_step_avg: ``(C,)`` float64 averaged ``log beta`` iterate, used once frozen.
        field: ``(C, *field_shape)`` cached ``posterior.decode(z)`` in the prior's dtype (the
            decode the prediction came from), or ``None`` in a state built without it (the
            next step then decodes the current ``z`` once to fill it in). Like every entry, a
            tensor that a checkpoint saves and restores.
    """

    z: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    log_step_size: torch.Tensor
    adapt_count: torch.Tensor
    log_step_avg: torch.Tensor
    field: torch.Tensor | None = None


class PCNInfo(NamedTuple):
    """What one pCN step did, per chain (``(C,)`` tensors).

    Attributes:
        accepted: bool, the proposal was accepted.
        acceptance_rate: float64 ``min(1, exp(ll' - ll))``; 0 for a failed proposal.
        failed: bool, the proposal's prediction or log-likelihood was not finite (a failed
            solve); counted as a rejection.
        step_size: float64 ``beta`` used for the proposal.
        log_likelihood_proposed: float64 ``ll'`` of the proposal (``-inf`` if failed).
    """

    accepted: torch.Tensor
    acceptance_rate: torch.Tensor
    failed: torch.Tensor
    step_size: torch.Tensor
    log_likelihood_proposed: torch.Tensor


def _evaluate_field(posterior, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(field, prediction, log_likelihood)`` of ``z (C, d)``: one decode, one solve, counted
    ([`Posterior.evaluate`][vaeinv.posterior.target.Posterior.evaluate])."""
    out = posterior.evaluate(z)
    return out.field, out.prediction, out.log_likelihood


def _evaluate(posterior, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prediction (C, m), log_likelihood (C,))`` float64 of ``z (C, d)``."""
    return _evaluate_field(posterior, z)[1:]


def finite_starts(z0: torch.Tensor, device) -> torch.Tensor:
    """``z0`` as float64 on ``device``, checked finite (the bad entry named)."""
    z = z0.detach().to(device=device, dtype=torch.float64)
    if not torch.isfinite(z).all():
        bad = tuple(int(i) for i in torch.nonzero(~torch.isfinite(z))[0])
        raise ValueError(f"z0 must be finite, got {z[bad].item()} at index {bad}")
    return z


def initial_beta(step_size, num_chains: int, device) -> torch.Tensor:
    """The chains' initial ``beta``: a number or one per chain, each in ``(0, 1]``."""
    beta = torch.as_tensor(step_size, dtype=torch.float64).detach().to(device)
    if beta.dim() == 0:
        beta = beta.expand(num_chains).clone()
    if beta.shape != (num_chains,):
        raise ValueError(
            f"step_size has shape {tuple(beta.shape)}, expected a number or ({num_chains},)"
        )
    if not ((beta > 0) & (beta <= 1)).all():
        bad = beta[~((beta > 0) & (beta <= 1))][0].item()
        raise ValueError(f"step_size (beta) must be in (0, 1], got {bad}")
    return beta


def pcn_init(posterior, z0: torch.Tensor, step_size: float | torch.Tensor = 0.25) -> PCNState:
    """Start ``C`` chains at ``z0`` (one batched prediction).

    Args:
        posterior: a [`Posterior`][vaeinv.posterior.target.Posterior] (or any object with
            ``latent_dim``, ``num_data``, ``device``, ``decode``, ``forward`` and
            ``log_likelihood_of``).
        z0: ``(C, d)`` finite initial latents, ``d = posterior.latent_dim``; cast to float64
            on the posterior's device.
        step_size: initial ``beta`` in ``(0, 1]``: a number, or a ``(C,)`` tensor (one per
            chain).

    Returns:
        The initial [`PCNState`][vaeinv.kernels.pcn.PCNState] (``adapt_count = 0``, the
        field of ``z0`` cached). A chain
        whose initial prediction fails starts with log-likelihood ``-inf`` and accepts its
        first finite proposal.

    Raises:
        ValueError: ``z0`` not ``(C, d)`` with ``C >= 1``, not finite, or ``step_size`` outside
            ``(0, 1]`` or of the wrong shape.
    """
    d = posterior.latent_dim
    if not isinstance(z0, torch.Tensor) or z0.dim() != 2 or z0.shape[0] < 1 or z0.shape[1] != d:
        got = tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__
        raise ValueError(f"z0 has shape {got}, expected (num_chains, {d}) with num_chains >= 1")
    z = finite_starts(z0, posterior.device)
    beta = initial_beta(step_size, z.shape[0], posterior.device)
    field, prediction, log_likelihood = _evaluate_field(posterior, z)
    log_step = beta.log()
    return PCNState(
        z=z,
        log_likelihood=torch.where(
            torch.isnan(log_likelihood), torch.full_like(log_likelihood, -math.inf), log_likelihood
        ),
        prediction=prediction,
        log_step_size=log_step,
        adapt_count=torch.zeros((), dtype=torch.int64, device=z.device),
        log_step_avg=log_step.clone(),
        field=field,
    )


def _step_noise(generator: torch.Generator, num_chains: int, d: int, device) -> tuple:
    """A step's random numbers, in this order: ``xi (C, d)`` then ``u (C,)``, float64 from
    ``generator`` (on its device), moved to ``device``."""
    on = {"generator": generator, "dtype": torch.float64, "device": generator.device}
    xi = torch.randn(num_chains, d, **on).to(device)
    return xi, torch.rand(num_chains, **on).to(device)


def _pcn_proposal(x: torch.Tensor, log_step_size, generator, target_accept: float):
    """``(sqrt(1 - beta^2) x + beta xi, u)`` for ``x (C, d)``, with the step's random numbers
    from ``generator`` (``_step_noise``); ``target_accept`` is checked first.

    Raises:
        ValueError: ``target_accept`` outside ``(0, 1)``.
    """
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    xi, u = _step_noise(generator, x.shape[0], x.shape[1], x.device)
    beta = log_step_size.exp()
    return torch.sqrt(1.0 - beta * beta)[:, None] * x + beta[:, None] * xi, u


def _accept(log_new: torch.Tensor, log_old: torch.Tensor, failed: torch.Tensor, u: torch.Tensor):
    """``(acceptance = min(1, exp(log_new - log_old)), 0 where failed; accepted = u < it)``."""
    log_ratio = (log_new - log_old).clamp(max=0.0)
    acceptance = torch.where(failed, torch.zeros_like(log_ratio), log_ratio.exp())
    return acceptance, u < acceptance


def _adapted(state, acceptance: torch.Tensor, target_accept: float, adapt: bool):
    """``(log_step_size, adapt_count, log_step_avg)`` after one Robbins-Monro update of
    ``log beta`` towards ``target_accept`` (unchanged without ``adapt``)."""
    if not adapt:
        return state.log_step_size, state.adapt_count, state.log_step_avg
    return robbins_monro(
        state.log_step_size, state.adapt_count, state.log_step_avg, acceptance, target_accept
    )


def pcn_step(
    posterior,
    state: PCNState,
    generator: torch.Generator,
    *,
    adapt: bool,
    target_accept: float = 0.25,
) -> tuple[PCNState, PCNInfo]:
    """One pCN step for every chain: one batched decode and solve, then accept or reject per
    chain. The new state caches the field of each chain's current ``z`` (the proposal's decode
    where accepted).

    Args:
        posterior: the posterior the state was initialised with.
        state: the current [`PCNState`][vaeinv.kernels.pcn.PCNState].
        generator: the ``torch.Generator`` every random number comes from (``xi`` then ``u``,
            drawn on its device in float64 and moved to the posterior's device).
        adapt: update ``log beta`` (Robbins-Monro) and its averaged iterate; use during
            warm-up, then [`freeze_adaptation`][vaeinv.kernels.pcn.freeze_adaptation].
        target_accept: acceptance probability the adaptation aims at, in ``(0, 1)``.

    Returns:
        ``(new_state, info)``; see [`PCNInfo`][vaeinv.kernels.pcn.PCNInfo].

    Raises:
        ValueError: ``target_accept`` outside ``(0, 1)``.
    """
    z = state.z
    num_chains = z.shape[0]
    proposal, u = _pcn_proposal(z, state.log_step_size, generator, target_accept)
    beta = state.log_step_size.exp()
    field, prediction, log_likelihood = _evaluate_field(posterior, proposal)
    failed = ~(torch.isfinite(prediction).all(-1) & torch.isfinite(log_likelihood))
    acceptance, accepted = _accept(log_likelihood, state.log_likelihood, failed, u)
    log_likelihood = torch.where(failed, torch.full_like(log_likelihood, -math.inf), log_likelihood)
    log_step, adapt_count, log_avg = _adapted(state, acceptance, target_accept, adapt)

    keep = accepted[:, None]
    old_field = state.field
    if old_field is None:  # a state built without its field: decode the current z once
        with torch.no_grad():
            old_field = posterior.decode(z)
    keep_field = accepted.reshape(num_chains, *([1] * (field.dim() - 1)))
    new_state = PCNState(
        z=torch.where(keep, proposal, z),
        log_likelihood=torch.where(accepted, log_likelihood, state.log_likelihood),
        prediction=torch.where(keep, prediction, state.prediction),
        log_step_size=log_step,
        adapt_count=adapt_count,
        log_step_avg=log_avg,
        field=torch.where(keep_field, field, old_field.to(field.dtype)),
    )
    info = PCNInfo(
        accepted=accepted,
        acceptance_rate=acceptance,
        failed=failed,
        step_size=beta,
        log_likelihood_proposed=log_likelihood,
    )
    return new_state, info


def freeze_adaptation(state: PCNState) -> PCNState:
    """End warm-up: sample from now on with the averaged step size ``exp(log_step_avg)``.

    Args:
        state: a state after the adaptation steps.

    Returns:
        The state with ``log_step_size`` set to ``log_step_avg`` (nothing else changes).
    """
    return state._replace(log_step_size=state.log_step_avg.clone())


@dataclass(frozen=True)
class PCNOptions(Options):
    """pCN's options.

    Attributes:
        step_size: the initial ``beta`` in ``(0, 1]`` (adapted per chain in warm-up).
        target_accept: the acceptance rate the adaptation aims at, in ``(0, 1)``.
    """

    step_size: float = 0.25
    target_accept: float = 0.25

    def validate(self) -> None:
        check_fraction("step_size (pCN beta)", self.step_size, closed=True)
        check_fraction("target_accept", self.target_accept)


def check_standard_normal(target, method: str) -> None:
    """The pCN family's moves leave ``N(0, I)`` invariant: refuse another latent prior."""
    if not getattr(target.prior, "standard_normal", False):
        raise ValueError(
            f"method {method!r} needs a standard-normal latent prior (prior.standard_normal); "
            f"{target.prior!r} is not one: use method 'hmc' or 'nuts'"
        )


class PCNKernel(Kernel):
    """Batched pCN (this module): chains start at the run's over-dispersed starts."""

    name = "pcn"
    state_key = "pcn"  # the checkpoint prefix the format has always used
    Options = PCNOptions
    state_type = PCNState
    extension_warmup = 100
    position_fields = ("z", "log_likelihood", "prediction", "field")

    def init(self, run):
        check_standard_normal(run.target, self.name)
        return pcn_init(run.target, run.z0, step_size=run.options.step_size)

    def relocate(self, target, state, z):
        field, prediction, log_likelihood = _evaluate_field(target, z)
        return state._replace(
            z=z, log_likelihood=log_likelihood, prediction=prediction, field=field
        )

    def step(self, target, state, generator, *, adapt, options):
        return pcn_step(target, state, generator, adapt=adapt, target_accept=options.target_accept)

    def end_warmup(self, state):
        return freeze_adaptation(state)

    def extension(self, record):
        """Each chain from its last draw, the step size from the median of the chains' last
        ones (at most 1), re-adapted in a short warm-up."""
        return {
            "num_chains": record.num_held,
            "init": record.last,
            "step_size": min(record.last_step_size, 1.0),
            "target_accept": record.options["target_accept"],
        }
