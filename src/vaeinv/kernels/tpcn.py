"""Transport-map pCN (``method="tpcn"``): pCN on the reference points ``u`` of a transport map
``z = T(u)`` fitted to the posterior ([`vaeinv.approx.transport`][vaeinv.approx.transport]),
with the exact pulled-back target, so the chain is exact whatever the quality of the fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..approx.transport import CouplingFlow, TransportMap, fit_transport
from .base import Kernel, check_positive
from .gpcn import weighted_decision
from .pcn import (
    PCNInfo,
    PCNOptions,
    _evaluate,
    _pcn_proposal,
    check_standard_normal,
    freeze_adaptation,
)
from .starts import INIT_SCALE, STREAM_TRANSPORT, LaplaceStartOptions, laplace_start

__all__ = ["TPCNKernel", "TPCNOptions", "TPCNState", "tpcn_init", "tpcn_step"]


class TPCNState(NamedTuple):
    """The state of ``C`` transport-map pCN chains (immutable; float64 on the posterior's device).

    Attributes:
        u: ``(C, d)`` current reference points.
        log_weight: ``(C,)`` cached ``log w(u)`` (``-inf`` for a failed start).
        z: ``(C, d)`` their latents ``T(u)``.
        log_likelihood: ``(C,)`` cached log-likelihood (``-inf`` for a failed start).
        prediction: ``(C, m)`` cached ``posterior.predict(z)``.
        log_step_size, log_step_avg, adapt_count: the step size's adaptation, as pCN's.
    """

    u: torch.Tensor
    log_weight: torch.Tensor
    z: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    log_step_size: torch.Tensor
    log_step_avg: torch.Tensor
    adapt_count: torch.Tensor


def _evaluate_reference(posterior, transport: TransportMap, u: torch.Tensor):
    """``(z, prediction, log_likelihood, log_weight)`` of reference points ``u (C, d)``."""
    with torch.no_grad():
        z, log_det = transport(u)
        prediction, log_likelihood = _evaluate(posterior, z)
        log_likelihood = torch.where(
            torch.isnan(log_likelihood), torch.full_like(log_likelihood, -math.inf), log_likelihood
        )
        weight = posterior.log_prior(z) + log_likelihood + log_det + 0.5 * (u * u).sum(-1)
        weight = torch.where(torch.isnan(weight), torch.full_like(weight, -math.inf), weight)
    return z, prediction, log_likelihood, weight


def tpcn_init(
    posterior, u0: torch.Tensor, transport: TransportMap, step_size: float = 0.5
) -> TPCNState:
    """Start ``C`` chains at reference points ``u0 (C, d)`` (one batched prediction).

    Raises:
        ValueError: ``u0`` not finite ``(C, d)``, or ``step_size`` outside ``(0, 1]``.
    """
    d = posterior.latent_dim
    if not isinstance(u0, torch.Tensor) or u0.dim() != 2 or u0.shape[0] < 1 or u0.shape[1] != d:
        got = tuple(u0.shape) if isinstance(u0, torch.Tensor) else type(u0).__name__
        raise ValueError(f"u0 has shape {got}, expected (num_chains, {d}) with num_chains >= 1")
    u = u0.detach().to(device=posterior.device, dtype=torch.float64)
    if not bool(torch.isfinite(u).all()):
        raise ValueError("u0 must be finite")
    if not 0.0 < float(step_size) <= 1.0:
        raise ValueError(f"step_size (beta) must be in (0, 1], got {step_size!r}")
    z, prediction, log_likelihood, weight = _evaluate_reference(posterior, transport, u)
    log_step = torch.full((u.shape[0],), math.log(float(step_size)), dtype=torch.float64)
    log_step = log_step.to(u.device)
    return TPCNState(
        u=u,
        z=z,
        log_likelihood=log_likelihood,
        prediction=prediction,
        log_step_size=log_step,
        adapt_count=torch.zeros((), dtype=torch.int64, device=u.device),
        log_step_avg=log_step.clone(),
        log_weight=weight,
    )


def tpcn_step(
    posterior,
    state: TPCNState,
    generator: torch.Generator,
    *,
    transport: TransportMap,
    adapt: bool,
    target_accept: float = 0.25,
) -> tuple[TPCNState, PCNInfo]:
    """One transport-map pCN step for every chain: one batched decode and solve.

    The random numbers (``xi (C, d)`` then ``r (C,)``, float64 from ``generator``) and the
    step-size adaptation are those of gpCN; see the module docstring for the ratio.

    Raises:
        ValueError: ``target_accept`` outside ``(0, 1)``.
    """
    u = state.u
    proposal, r = _pcn_proposal(u, state.log_step_size, generator, target_accept)
    z, prediction, log_likelihood, log_weight = _evaluate_reference(posterior, transport, proposal)
    accepted, updates, info = weighted_decision(
        state, prediction, log_likelihood, log_weight, r, target_accept=target_accept, adapt=adapt
    )
    keep = accepted[:, None]
    new_state = state._replace(
        u=torch.where(keep, proposal, u), z=torch.where(keep, z, state.z), **updates
    )
    return new_state, info


@dataclass(frozen=True)
class TPCNOptions(LaplaceStartOptions, PCNOptions):
    """tpCN's options: pCN's (``step_size`` from 0.5), the Laplace start's, and the flow's.

    Attributes:
        flow_steps: Adam steps of the variational fit.
        flow_particles: reference draws per fitting step.
        flow_layers: coupling layers of the flow.
        flow_hidden: width of each conditioner's hidden layers.
        flow_lr: the fit's learning rate.
    """

    step_size: float = 0.5
    flow_steps: int = 2000
    flow_particles: int = 8
    flow_layers: int = 8
    flow_hidden: int = 256
    flow_lr: float = 1e-3

    def validate(self) -> None:
        PCNOptions.validate(self)
        LaplaceStartOptions.validate(self)
        for key, minimum in (("flow_steps", 0), ("flow_layers", 0)):
            check_positive(key, getattr(self, key), integer=True, minimum=minimum)
        for key in ("flow_particles", "flow_hidden"):
            check_positive(key, getattr(self, key), integer=True, minimum=1)
        check_positive("flow_lr", self.flow_lr)


class TPCNKernel(Kernel):
    """Transport-map pCN. Its start: the Laplace approximation (as gpCN's), the coupling flow
    fitted from it by variational inference (its solves and reverse passes counted), then
    chains at over-dispersed reference points ``INIT_SCALE * N(0, I)`` from the run's
    generator. The fitted map is kept in the checkpoint."""

    name = "tpcn"
    state_key = "pcn"  # the checkpoint prefix the format has always used
    Options = TPCNOptions
    state_type = TPCNState
    extension_refusal = (
        "its chains are tied to the flow its warm-up fitted, which the result does not keep; "
        "sample a new run"
    )

    def init(self, run):
        check_standard_normal(run.target, self.name)
        opts = run.options
        laplace = laplace_start(run)
        seed = run.stream_seed(STREAM_TRANSPORT)
        flow = CouplingFlow(
            run.target.latent_dim, int(opts.flow_layers), int(opts.flow_hidden), seed
        )
        transport = TransportMap(laplace.mean, laplace.scale_tril, flow).to(run.target.device)
        steps = int(opts.flow_steps)

        def shown(step: int) -> None:
            if (step + 1) % 25 == 0 or step + 1 == steps:
                run.show(flow_fit=f"{step + 1}/{steps}")

        fit = fit_transport(
            run.target,
            transport,
            steps=steps,
            particles=int(opts.flow_particles),
            lr=float(opts.flow_lr),
            generator=torch.Generator().manual_seed(seed),
            progress=shown,
        )
        run.add_work(fit.num_forward_solves, fit.num_gradient_evaluations)
        self.transport = transport
        d = run.target.latent_dim
        u0 = INIT_SCALE * torch.randn(
            run.z0.shape[0], d, generator=run.generator, dtype=torch.float64
        )
        return tpcn_init(run.target, u0, transport, step_size=opts.step_size)

    def step(self, target, state, generator, *, adapt, options):
        return tpcn_step(
            target,
            state,
            generator,
            transport=self.transport,
            adapt=adapt,
            target_accept=options.target_accept,
        )

    def end_warmup(self, state):
        return freeze_adaptation(state)

    def extra_tensors(self, run):
        return {f"transport.{k}": v for k, v in self.transport.state_dict().items()}

    def restore_extra(self, run, tensors):
        saved = {k[10:]: v for k, v in tensors.items() if k.startswith("transport.")}
        d = saved["mean"].shape[0]
        opts = run.options
        flow = CouplingFlow(d, int(opts.flow_layers), int(opts.flow_hidden), seed=0)
        transport = TransportMap(saved["mean"], saved["scale_tril"], flow)
        transport.load_state_dict(saved)
        for p in transport.parameters():
            p.requires_grad_(False)
        self.transport = transport.to(run.target.device)
