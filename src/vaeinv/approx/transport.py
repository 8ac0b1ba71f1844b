"""A transport map fitted to the posterior, the frame of transport-map pCN
(`vaeinv.kernels.tpcn`): pCN in the reference space of a flow fitted to the posterior.

gpCN proposes around the Laplace approximation ``N(m, L L^T)``, i.e. runs pCN on
``u = L^-1 (z - m)``. When the posterior is far from Gaussian (sharp facies in the channel
benchmark), the Laplace frame is a poor one: on ``mdgm-channel`` the log importance weights of
Laplace draws have a standard deviation of about 100, and gpCN's acceptance falls to 0.1 at
tiny steps. Transport-map MCMC (Parno & Marzouk 2018, *SIAM/ASA JUQ* 6(2); the flow-based
variant of Hoffman et al. 2019, "NeuTra-lizing bad geometry in HMC") replaces the affine map by a
learned one,

    z = T(u) = m + L g(u),    g = a stack of affine coupling layers (Dinh et al. 2017),

fitted to the posterior by variational inference before sampling: ``g`` starts at the identity
(so ``T`` starts as the Laplace map) and Adam minimises ``KL(T_# N(0, I) || posterior)``, the
negative ELBO ``-E_u[log pi(T(u)) + log |det J_T(u)|]`` estimated with ``particles`` draws of
``u`` per step (one batched decode, solve and reverse pass). The chains then run pCN on ``u``
with the exact pulled-back target ``pi(T(u)) |det J_T(u)|``: with reference ``N(0, I)``,

    u' = sqrt(1 - beta^2) u + beta xi,
    accept with min(1, w(u') / w(u)),   log w(u) = log pi(T(u)) + log |det J_T(u)| + |u|^2 / 2,

so the chain is exact whatever the quality of the fit (a better fit only allows larger steps);
``g = identity`` gives gpCN. Each step costs one batched decode and solve and no gradient; the
fit costs ``flow_steps * flow_particles`` solves and reverse passes, counted in the run's
``forward_solves`` and ``gradient_evaluations``.

The flow: ``flow_layers`` couplings, each transforming half of the coordinates (a fixed random
half per pair of layers, the pair's second layer the complement) by
``u_b <- u_b exp(s(u_a)) + t(u_a)``, ``s`` bounded by ``2 tanh(s / 2)``, with ``s, t`` from a
two-hidden-layer GELU network of width ``flow_hidden`` whose last layer starts at zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ..coupling import AffineCouplings
from ..physics.darcy import SolverError

__all__ = ["CouplingFlow", "TransportFit", "TransportMap", "fit_transport"]

#: the largest gradient norm of one Adam step of the fit (clipped above).
_CLIP = 100.0


class CouplingFlow(AffineCouplings):
    """``g: R^d -> R^d``, affine coupling layers, the identity at initialisation (float64).

    Args:
        dim: ``d``.
        layers: number of coupling layers (even counts pair each random half with its
            complement).
        hidden: width of each conditioner's two hidden layers.
        seed: seeds the halves and the conditioners' initial weights.
    """

    def __init__(self, dim: int, layers: int, hidden: int, seed: int) -> None:
        if dim < 2:
            raise ValueError(f"a coupling flow needs at least 2 dimensions, got {dim}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            masks = []
            for k in range(layers):
                if k % 2 == 0:
                    mask = torch.zeros(dim, dtype=torch.float64)
                    mask[torch.randperm(dim)[: dim // 2]] = 1.0
                masks.append(mask if k % 2 == 0 else 1.0 - masks[-1])
            stacked = torch.stack(masks) if masks else torch.zeros(0, dim, dtype=torch.float64)
            super().__init__(stacked, hidden, depth=2, scale_limit=2.0)
        self.nets.double()

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(g(u), log |det dg/du|)`` for ``u (..., d)``."""
        return self.forward_and_logdet(u)

    def inverse(self, v: torch.Tensor) -> torch.Tensor:
        """``g^-1(v)`` for ``v (..., d)`` (each layer undone, last first)."""
        return self.inverse_and_logdet(v)[0]


class TransportMap(nn.Module):
    """``T(u) = mean + scale_tril g(u)``: the Laplace map composed with a coupling flow."""

    def __init__(self, mean: torch.Tensor, scale_tril: torch.Tensor, flow: CouplingFlow):
        super().__init__()
        self.register_buffer("mean", mean.detach().to(torch.float64).contiguous())
        self.register_buffer("scale_tril", scale_tril.detach().to(torch.float64).contiguous())
        self.flow = flow

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z = T(u), log |det J_T(u)|)`` for ``u (..., d)``."""
        v, log_det = self.flow(u)
        z = self.mean + v @ self.scale_tril.T
        return z, log_det + self.scale_tril.diagonal().log().sum()

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``u = T^-1(z)`` for ``z (..., d)``, e.g. to start chains at given latents."""
        v = torch.linalg.solve_triangular(
            self.scale_tril, (z - self.mean).unsqueeze(-1), upper=False
        ).squeeze(-1)
        return self.flow.inverse(v)


class TransportFit(NamedTuple):
    """What [`fit_transport`][vaeinv.approx.transport.fit_transport] spent and reached.

    Attributes:
        elbo: ``(steps,)`` float64 the ELBO estimate of each step (NaN for a skipped step).
        num_forward_solves: forward solves (one per particle per step).
        num_gradient_evaluations: reverse passes (one per particle per step).
        failed_particles: particles whose log density was not finite (dropped from their step).
    """

    elbo: torch.Tensor
    num_forward_solves: int
    num_gradient_evaluations: int
    failed_particles: int


def _log_density(posterior, z: torch.Tensor) -> torch.Tensor:
    try:
        return posterior.log_density(z).to(torch.float64)
    except (SolverError, torch.linalg.LinAlgError):
        return torch.full(z.shape[:-1], math.nan, dtype=torch.float64, device=z.device)


def fit_transport(
    posterior,
    transport: TransportMap,
    *,
    steps: int,
    particles: int,
    lr: float,
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
) -> TransportFit:
    """Fit ``transport.flow`` to the posterior by stochastic variational inference (in place).

    Each of ``steps`` Adam steps (learning rate ``lr``, cosine-annealed to 0, gradient norm
    clipped at 100) draws ``particles`` reference points ``u ~ N(0, I)`` from ``generator`` and
    ascends ``mean[log pi(T(u)) + log |det J_T(u)|]`` over the particles whose log density is
    finite (a failed solve drops its particle; a step where all fail is skipped).
    """
    params = list(transport.flow.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    d = posterior.latent_dim
    elbo = torch.full((steps,), math.nan, dtype=torch.float64)
    failed = 0
    for step in range(steps):
        u = torch.randn(
            particles, d, generator=generator, dtype=torch.float64, device=generator.device
        ).to(transport.mean.device)
        z, log_det = transport(u)
        value = _log_density(posterior, z) + log_det
        ok = torch.isfinite(value)
        failed += int((~ok).sum())
        if bool(ok.any()):
            objective = value[ok].mean()
            optimizer.zero_grad()
            (-objective).backward()
            torch.nn.utils.clip_grad_norm_(params, _CLIP)
            optimizer.step()
            elbo[step] = float(objective.detach())
        schedule.step()
        if progress is not None:
            progress(step)
    for p in params:
        p.requires_grad_(False)
    return TransportFit(elbo, steps * particles, steps * particles, failed)
