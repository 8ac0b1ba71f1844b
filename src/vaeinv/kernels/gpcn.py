"""Generalized pCN (gpCN): pCN proposals around a Gaussian (Laplace) approximation of the posterior.

Plain pCN proposes moves that leave the prior ``N(0, I)`` invariant; when the data are informative
the posterior is far narrower than the prior in a few directions and the step size collapses.
gpCN (Rudolf & Sprungk 2018, *Found. Comput. Math.* 18; Pinski, Simpson, Stuart & Weber 2015)
uses the same autoregressive move around a Gaussian ``N(m, C)`` close to the posterior,

    z' = m + rho (z - m) + beta L xi,    rho = sqrt(1 - beta^2),  L L^T = C,  xi ~ N(0, I),

which is reversible with respect to ``N(m, C)``; the Metropolis-Hastings ratio is therefore

    log alpha = [log pi(z') - log N(z'; m, C)] - [log pi(z) - log N(z; m, C)],

with ``pi`` the posterior density (``log_prior + log_likelihood``). It is exact for any ``m`` and
any positive definite ``C``; the closer ``N(m, C)`` is to the posterior, the larger the steps
(``beta = 1`` is an independence sampler, exact draws when the posterior is Gaussian).

The centre and covariance come from
[`laplace_approximation`][vaeinv.approx.laplace.laplace_approximation] (re-exported here).

[`gpcn_init`][vaeinv.kernels.gpcn.gpcn_init] and [`gpcn_step`][vaeinv.kernels.gpcn.gpcn_step]
mirror [`pcn_init`][vaeinv.kernels.pcn.pcn_init] / [`pcn_step`][vaeinv.kernels.pcn.pcn_step]:
one batched ``posterior.predict`` per step, the same [`PCNInfo`][vaeinv.kernels.pcn.PCNInfo],
the same Robbins-Monro adaptation of ``log beta`` (and
[`freeze_adaptation`][vaeinv.kernels.pcn.freeze_adaptation] works on a
[`GPCNState`][vaeinv.kernels.gpcn.GPCNState]), random numbers drawn in a fixed order (``xi``
then ``u``) so that a resumed run is bit-identical, and a failed prediction counted as a
rejection.

Where gpCN works well, and where not. The ratio ``pi / N(m, C)`` should stay bounded: the
posterior's tails no heavier than the reference's. A forward map that grows at least linearly
in the informed directions gives that; a saturating one (a likelihood that flattens far from the
data, so prior-like tails in directions where ``C`` is much narrower than the prior) does not,
and then gpCN, still exact, under-visits those tails for a very long time while its ESS
estimate looks fine. Start the chains at draws of the approximation
([`LaplaceApproximation.sample`][vaeinv.approx.laplace.LaplaceApproximation.sample]), not at
over-dispersed prior draws: far out, ``-log N(z; m, C)`` is huge, the chain's weight
``pi / N(m, C)`` too, and a chain started there can take very long to come in. ``inflation``
(``C`` scaled by 1.2-1.5) makes the reference's tails heavier at a small cost in acceptance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..approx.laplace import LaplaceApproximation, laplace_approximation
from .base import Kernel, check_positive
from .pcn import (
    PCNInfo,
    PCNOptions,
    _accept,
    _adapted,
    _evaluate,
    _step_noise,
    check_standard_normal,
    finite_starts,
    freeze_adaptation,
    initial_beta,
)
from .starts import INIT_SCALE, LaplaceStartOptions, laplace_start

__all__ = [
    "GPCNState",
    "LaplaceApproximation",
    "freeze_adaptation",
    "gpcn_init",
    "gpcn_step",
    "laplace_approximation",
]

_LOG_2PI = math.log(2.0 * math.pi)


class GPCNState(NamedTuple):
    """The state of ``C`` gpCN chains (immutable; every tensor on the posterior's device).

    Attributes:
        z: ``(C, d)`` float64 current latents.
        log_likelihood: ``(C,)`` float64 cached log-likelihood (``-inf`` for a failed start).
        prediction: ``(C, m)`` float64 cached ``posterior.predict(z)``.
        log_step_size: ``(C,)`` float64 ``log beta`` of the next step, ``<= 0``.
        adapt_count: ``()`` int64 adaptation steps taken so far.
        log_step_avg: ``(C,)`` float64 averaged ``log beta``, used once frozen.
        log_weight: ``(C,)`` float64 cached ``log pi(z) - log N(z; mean, C)`` (``-inf`` for a
            failed start).
        mean: ``(d,)`` float64 centre ``m`` of the proposal (shared by all chains).
        scale_tril: ``(d, d)`` float64 lower-triangular ``L`` of the proposal (shared).
    """

    z: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    log_step_size: torch.Tensor
    adapt_count: torch.Tensor
    log_step_avg: torch.Tensor
    log_weight: torch.Tensor
    mean: torch.Tensor
    scale_tril: torch.Tensor


# ---------------------------------------------------------------------------- gpCN
def _log_reference(z: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """``log N(z; mean, L L^T)`` for ``z (C, d)``: ``(C,)``."""
    w = torch.linalg.solve_triangular(scale_tril, (z - mean).T, upper=False)
    d = z.shape[-1]
    log_det = scale_tril.diagonal().log().sum()
    return -0.5 * (w * w).sum(0) - log_det - 0.5 * d * _LOG_2PI


def _log_weight(posterior, z, log_likelihood, mean, scale_tril) -> torch.Tensor:
    weight = posterior.log_prior(z) + log_likelihood - _log_reference(z, mean, scale_tril)
    return torch.where(torch.isnan(weight), torch.full_like(weight, -math.inf), weight)


def gpcn_init(
    posterior,
    z0: torch.Tensor,
    laplace,
    step_size: float | torch.Tensor = 0.5,
    *,
    inflation: float = 1.0,
) -> GPCNState:
    """Start ``C`` gpCN chains at ``z0`` around the Gaussian ``laplace`` (one batched prediction).

    Args:
        posterior: a [`Posterior`][vaeinv.posterior.target.Posterior] (``latent_dim``,
            ``num_data``, ``device``, ``predict``, ``log_prior``, ``log_likelihood_of``).
        z0: ``(C, d)`` finite initial latents.
        laplace: the proposal's Gaussian: a
            [`LaplaceApproximation`][vaeinv.approx.laplace.LaplaceApproximation], or any object
            with ``mean (d,)`` and lower-triangular ``scale_tril (d, d)`` (positive diagonal).
        step_size: initial ``beta`` in ``(0, 1]``: a number or a ``(C,)`` tensor.
        inflation: the proposal covariance is ``inflation * L L^T`` (``> 0``; values a little
            above 1 make the proposal more robust to a too narrow approximation).

    Returns:
        The initial [`GPCNState`][vaeinv.kernels.gpcn.GPCNState].

    Raises:
        ValueError: bad ``z0``, ``step_size``, ``inflation``, or a ``laplace`` whose mean or
            scale is of the wrong shape, not finite, not lower triangular or not positive on the
            diagonal.
    """
    d = posterior.latent_dim
    if not isinstance(z0, torch.Tensor) or z0.dim() != 2 or z0.shape[0] < 1 or z0.shape[1] != d:
        got = tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__
        raise ValueError(f"z0 has shape {got}, expected (num_chains, {d}) with num_chains >= 1")
    z = finite_starts(z0, posterior.device)
    if not (math.isfinite(float(inflation)) and float(inflation) > 0):
        raise ValueError(f"inflation must be positive and finite, got {inflation!r}")
    mean = torch.as_tensor(laplace.mean, dtype=torch.float64).detach().to(posterior.device)
    tril = torch.as_tensor(laplace.scale_tril, dtype=torch.float64).detach().to(posterior.device)
    if mean.shape != (d,) or not bool(torch.isfinite(mean).all()):
        raise ValueError(f"laplace.mean has shape {tuple(mean.shape)}, expected finite ({d},)")
    if tril.shape != (d, d) or not bool(torch.isfinite(tril).all()):
        raise ValueError(
            f"laplace.scale_tril has shape {tuple(tril.shape)}, expected finite ({d}, {d})"
        )
    if not torch.equal(tril, tril.tril()):
        raise ValueError("laplace.scale_tril must be lower triangular (L with L L^T = C)")
    if not bool((tril.diagonal() > 0).all()):
        i = int((tril.diagonal() <= 0).nonzero()[0])
        raise ValueError(
            f"laplace.scale_tril has diagonal entry {float(tril[i, i])} at {i}; expected > 0"
        )
    tril = math.sqrt(float(inflation)) * tril
    beta = initial_beta(step_size, z.shape[0], posterior.device)
    prediction, log_likelihood = _evaluate(posterior, z)
    log_likelihood = torch.where(
        torch.isnan(log_likelihood), torch.full_like(log_likelihood, -math.inf), log_likelihood
    )
    log_step = beta.log()
    return GPCNState(
        z=z,
        log_likelihood=log_likelihood,
        prediction=prediction,
        log_step_size=log_step,
        adapt_count=torch.zeros((), dtype=torch.int64, device=z.device),
        log_step_avg=log_step.clone(),
        log_weight=_log_weight(posterior, z, log_likelihood, mean, tril),
        mean=mean,
        scale_tril=tril,
    )


def weighted_decision(
    state, prediction, log_likelihood, log_weight, u, *, target_accept: float, adapt: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor], PCNInfo]:
    """The accept/reject step of gpCN and tpCN, whose chains carry a log weight: a proposal
    with a non-finite prediction or weight fails (acceptance 0, log-likelihood and weight
    ``-inf``); otherwise it is accepted with ``min(1, exp(log_weight - state.log_weight))``
    against ``u``; then the step size adapts (with ``adapt``).

    Returns:
        ``(accepted (C,), updates, info)``: ``updates`` are the state's new ``log_likelihood``,
        ``prediction``, ``log_weight`` and step-size fields (pass them to ``_replace`` with the
        chain's new position), ``info`` the step's [`PCNInfo`][vaeinv.kernels.pcn.PCNInfo].
    """
    failed = ~(torch.isfinite(prediction).all(-1) & torch.isfinite(log_weight))
    acceptance, accepted = _accept(log_weight, state.log_weight, failed, u)
    minus_inf = torch.full_like(log_likelihood, -math.inf)
    log_likelihood = torch.where(failed, minus_inf, log_likelihood)
    log_weight = torch.where(failed, minus_inf, log_weight)
    log_step, adapt_count, log_avg = _adapted(state, acceptance, target_accept, adapt)
    updates = {
        "log_likelihood": torch.where(accepted, log_likelihood, state.log_likelihood),
        "prediction": torch.where(accepted[:, None], prediction, state.prediction),
        "log_step_size": log_step,
        "adapt_count": adapt_count,
        "log_step_avg": log_avg,
        "log_weight": torch.where(accepted, log_weight, state.log_weight),
    }
    info = PCNInfo(
        accepted=accepted,
        acceptance_rate=acceptance,
        failed=failed,
        step_size=state.log_step_size.exp(),
        log_likelihood_proposed=log_likelihood,
    )
    return accepted, updates, info


def gpcn_step(
    posterior,
    state: GPCNState,
    generator: torch.Generator,
    *,
    adapt: bool,
    target_accept: float = 0.25,
) -> tuple[GPCNState, PCNInfo]:
    """One gpCN step for every chain: one batched prediction, then accept or reject per chain.

    Args:
        posterior: the posterior the state was initialised with.
        state: the current [`GPCNState`][vaeinv.kernels.gpcn.GPCNState].
        generator: the ``torch.Generator`` of every random number (``xi (C, d)`` then
            ``u (C,)``, float64 on its device, moved to the posterior's device).
        adapt: update ``log beta`` (Robbins-Monro, as pCN) and its averaged iterate; after
            warm-up call [`freeze_adaptation`][vaeinv.kernels.pcn.freeze_adaptation].
        target_accept: the acceptance probability the adaptation aims at, in ``(0, 1)``.

    Returns:
        ``(new_state, info)``; ``info.acceptance_rate`` is ``min(1, exp(log alpha))`` with the
        gpCN ratio (0 for a failed proposal).

    Raises:
        ValueError: ``target_accept`` outside ``(0, 1)``.
    """
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    z, mean, tril = state.z, state.mean, state.scale_tril
    num_chains, d = z.shape
    xi, u = _step_noise(generator, num_chains, d, z.device)
    beta = state.log_step_size.exp()
    rho = torch.sqrt(1.0 - beta * beta)
    proposal = mean + rho[:, None] * (z - mean) + beta[:, None] * (xi @ tril.T)
    prediction, log_likelihood = _evaluate(posterior, proposal)
    log_weight = _log_weight(posterior, proposal, log_likelihood, mean, tril)
    accepted, updates, info = weighted_decision(
        state, prediction, log_likelihood, log_weight, u, target_accept=target_accept, adapt=adapt
    )
    new_state = state._replace(z=torch.where(accepted[:, None], proposal, z), **updates)
    return new_state, info


@dataclass(frozen=True)
class GPCNOptions(LaplaceStartOptions, PCNOptions):
    """gpCN's options: pCN's (``step_size`` from 0.5), the Laplace start's, and ``inflation``,
    the factor of the Laplace covariance in the proposal."""

    step_size: float = 0.5
    inflation: float = 1.0

    def validate(self) -> None:
        PCNOptions.validate(self)
        LaplaceStartOptions.validate(self)
        check_positive("inflation", self.inflation)


class GPCNKernel(Kernel):
    """gpCN (this module). Its start: the Laplace approximation from the run's over-dispersed
    starts (one Adam ascent per chain, the best MAP kept), then chains at over-dispersed draws
    of it, ``N(m, INIT_SCALE^2 C)``, from the run's generator."""

    name = "gpcn"
    state_key = "pcn"  # the checkpoint prefix the format has always used
    Options = GPCNOptions
    state_type = GPCNState
    extension_refusal = (
        "its chains are tied to the Laplace approximation its warm-up built, which the result "
        "does not keep; sample a new run"
    )

    def init(self, run):
        check_standard_normal(run.target, self.name)
        laplace = laplace_start(run)
        z_init = laplace.sample(run.z0.shape[0], run.generator, inflation=INIT_SCALE**2)
        return gpcn_init(
            run.target,
            z_init,
            laplace,
            step_size=run.options.step_size,
            inflation=float(run.options.inflation),
        )

    position_fields = ("z", "log_likelihood", "prediction", "log_weight")

    def relocate(self, target, state, z):
        prediction, log_likelihood = _evaluate(target, z)
        log_likelihood = torch.where(torch.isnan(log_likelihood), -math.inf, log_likelihood)
        weight = _log_weight(target, z, log_likelihood, state.mean, state.scale_tril)
        return state._replace(
            z=z, log_likelihood=log_likelihood, prediction=prediction, log_weight=weight
        )

    def step(self, target, state, generator, *, adapt, options):
        return gpcn_step(target, state, generator, adapt=adapt, target_accept=options.target_accept)

    def end_warmup(self, state):
        return freeze_adaptation(state)
