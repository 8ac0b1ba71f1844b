"""Two-level delayed acceptance (MLDA; Christen & Fox 2005, Lykkegaard et al. 2023) as the
registered kernel ``"mlda"``: ``vaeinv.sample(posterior, "mlda", coarse=[coarse_posterior])``.

The fine latent is ``z = (z_c, z_r)``: its first ``d_c`` coordinates are the coarse posterior's
latent (the same standard-normal prior on them), the rest ``z_r`` (none when both levels have
the same latent) are the fine level's own. One iteration, for every chain at once:

1. ``z_r' = sqrt(1 - b_r^2) z_r + b_r xi`` (pCN on the fine-only coordinates, prior-reversible);
2. a subchain of ``subchain_length`` pCN steps on the coarse posterior from ``z_c`` (each one
   batched coarse decode and solve, accepted with the coarse likelihood ratio), ending at
   ``z_c'``;
3. one fine evaluation at ``z' = (z_c', z_r')``, accepted with probability

       min(1, [L_f(z') L_c(z_c)] / [L_f(z) L_c(z_c')]),

   the fine and coarse likelihoods ``L_f``, ``L_c``. The subchain is reversible with respect to
   the coarse posterior and the fine-only move with respect to the prior, so the chain targets
   the fine posterior exactly, however wrong the coarse model is (a worse one only accepts
   less).

The **error model** (option ``error_model``, on by default; Cui, Fox & O'Sullivan 2011): the
coarse likelihood is taken as ``N(y; G_c(z_c) + mu, diag(sd^2 + s^2))``, with ``mu`` and ``s^2``
the running mean and variance per datum of the fine-minus-coarse predictions at the fine
evaluations. It is estimated during warm-up only and fixed from then on, so the sampling phase
is an exact, fixed Markov kernel; the coarse model it corrects need not be close.

During warm-up the coarse pCN's step adapts (Robbins-Monro, as pCN's) towards
``target_accept`` (the coarse subchains' acceptance); the fine-only move keeps
``fine_step_size`` (the fine decisions' acceptance is bounded by the coarse model's misfit, so
adapting to it would shrink that step towards zero and freeze the fine-only coordinates).
Coarse solves are counted in the result's ``coarse_forward_solves`` attribute, fine ones in
``forward_solves``. Random numbers, per iteration: ``xi_r (C, d_r)``, then for each subchain
step ``xi (C, d_c)`` and ``u (C,)``, then the fine decision's ``u (C,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .adaptation import robbins_monro
from .base import Kernel, Options, check_fraction, check_positive
from .pcn import check_standard_normal

__all__ = ["MLDAInfo", "MLDAKernel", "MLDAOptions", "MLDAState"]


class MLDAState(NamedTuple):
    """The state of ``C`` MLDA chains (float64 on the fine posterior's device).

    Attributes:
        z: ``(C, d)`` the fine latents; ``z[:, :d_c]`` the coarse ones.
        log_likelihood: ``(C,)`` fine log-likelihood of ``z``.
        prediction: ``(C, m)`` fine prediction of ``z``.
        field: ``(C, ny, nx)`` the fine decode of ``z``.
        coarse_prediction: ``(C, m)`` the coarse prediction of ``z[:, :d_c]``.
        log_step_size: ``(C, 2)`` ``log beta`` of the coarse pCN (adapted in warm-up) and of
            the fine-only move (fixed).
        log_step_avg: ``(C, 2)`` their averaged iterates (used once warm-up ends).
        adapt_count: ``()`` adaptation steps so far.
        error_count: ``()`` fine evaluations in the error model.
        error_mean: ``(m,)`` running mean of fine-minus-coarse predictions.
        error_m2: ``(m,)`` running sum of squared deviations (Welford).
    """

    z: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    field: torch.Tensor
    coarse_prediction: torch.Tensor
    log_step_size: torch.Tensor
    log_step_avg: torch.Tensor
    adapt_count: torch.Tensor
    error_count: torch.Tensor
    error_mean: torch.Tensor
    error_m2: torch.Tensor


class MLDAInfo(NamedTuple):
    """One MLDA iteration per chain: ``accepted``, ``acceptance_rate`` (of the fine decision),
    ``failed`` (the fine solve failed), ``step_size`` (the coarse pCN's ``beta``)."""

    accepted: torch.Tensor
    acceptance_rate: torch.Tensor
    failed: torch.Tensor
    step_size: torch.Tensor


@dataclass(frozen=True)
class MLDAOptions(Options):
    """MLDA's options.

    Attributes:
        subchain_length: coarse pCN steps per fine proposal, ``>= 1``.
        step_size: the coarse pCN's initial ``beta`` in ``(0, 1]``.
        target_accept: the coarse subchains' acceptance the adaptation aims at.
        fine_step_size: the ``beta`` of the fine-only coordinates' pCN move (fixed).
        error_model: correct the coarse likelihood by the fine-minus-coarse error model.
    """

    subchain_length: int = 5
    step_size: float = 0.25
    target_accept: float = 0.3
    fine_step_size: float = 0.5
    error_model: bool = True

    def validate(self) -> None:
        check_positive("subchain_length", self.subchain_length, integer=True, minimum=1)
        check_fraction("step_size (coarse pCN beta)", self.step_size, closed=True)
        check_fraction("fine_step_size (pCN beta)", self.fine_step_size, closed=True)
        check_fraction("target_accept", self.target_accept)
        if not isinstance(self.error_model, bool):
            raise ValueError(f"error_model must be true or false, got {self.error_model!r}")


def _check_levels(coarse) -> list:
    if isinstance(coarse, (list, tuple)):
        levels = list(coarse)
    else:
        levels = [coarse]
    if len(levels) != 1:
        raise ValueError(
            f"mlda takes one coarse posterior (coarse=[posterior]), got {len(levels)}; "
            "more levels are not supported yet"
        )
    return levels


class MLDAKernel(Kernel):
    """Two-level delayed acceptance (module docstring).

    Args:
        coarse: ``[posterior]``, the coarse posterior: the same data and noise as the fine
            one, a standard-normal latent of at most the fine latent's size (the fine latent's
            first coordinates).
    """

    name = "mlda"
    Options = MLDAOptions
    state_type = MLDAState
    inputs = ("coarse",)

    def __init__(self, coarse=None) -> None:
        if coarse is None:
            raise ValueError("method 'mlda' needs coarse=[coarse_posterior]")
        self.coarse = _check_levels(coarse)[0]

    def describe_inputs(self) -> dict:
        from ..provenance import tensor_sha256 as sha256

        c = self.coarse
        return {
            "coarse": {
                "name": c.name,
                "latent_dim": c.latent_dim,
                "grid": str(c.grid),
                "prior_weights_sha256": getattr(c.prior, "weights_sha256", None),
                "noise_std_sha256": sha256(c.noise_std),
            }
        }

    def _check(self, target) -> None:
        c = self.coarse
        check_standard_normal(target, self.name)
        check_standard_normal(c, self.name)
        if c.latent_dim > target.latent_dim:
            raise ValueError(
                f"the coarse latent has {c.latent_dim} dimensions, more than the fine "
                f"{target.latent_dim}; the coarse latent must be the fine latent's first part"
            )
        same = c.num_data == target.num_data and torch.equal(c.data.cpu(), target.data.cpu())
        if not same or not torch.equal(c.noise_std.cpu(), target.noise_std.cpu()):
            raise ValueError(
                "the coarse posterior must have the fine one's data and noise (the same "
                "sensors read on the coarse grid)"
            )

    # ------------------------------------------------------------------ the protocol
    def init(self, run):
        target = run.target
        self._check(target)
        z = run.z0.to(target.device, torch.float64)
        fine = target.evaluate(z)
        coarse = self._coarse(z[:, : self.coarse.latent_dim])
        run.count("coarse_forward_solves", z.shape[0])
        c, m = z.shape[0], target.num_data
        f64 = {"dtype": torch.float64, "device": z.device}
        opts = run.options
        log_step = torch.tensor([opts.step_size, opts.fine_step_size], **f64).log().expand(c, 2)
        return MLDAState(
            z=z,
            log_likelihood=fine.log_likelihood,
            prediction=fine.prediction,
            field=fine.field,
            coarse_prediction=coarse.prediction,
            log_step_size=log_step.clone(),
            log_step_avg=log_step.clone(),
            adapt_count=torch.zeros((), dtype=torch.int64, device=z.device),
            error_count=torch.zeros((), dtype=torch.int64, device=z.device),
            error_mean=torch.zeros(m, **f64),
            error_m2=torch.zeros(m, **f64),
        )

    def _coarse(self, zc):
        return self.coarse.evaluate(zc)

    def step(self, target, state, generator, *, adapt, options):
        dc = self.coarse.latent_dim
        z = state.z
        c, d = z.shape
        on = {"generator": generator, "dtype": torch.float64, "device": generator.device}
        beta = state.log_step_size.exp()
        xi_r = torch.randn(c, d - dc, **on).to(z.device)
        z_r = torch.sqrt(1 - beta[:, 1:] ** 2) * z[:, dc:] + beta[:, 1:] * xi_r
        ll_c = self._coarse_ll(state, state.coarse_prediction, options)
        zc, pc, llc, rate = z[:, :dc], state.coarse_prediction, ll_c, 0.0
        for _ in range(options.subchain_length):
            prop = torch.sqrt(1 - beta[:, :1] ** 2) * zc + beta[:, :1] * torch.randn(
                c, dc, **on
            ).to(z.device)
            u = torch.rand(c, **on).to(z.device)
            out = self._coarse(prop)
            ll_new = self._coarse_ll(state, out.prediction, options)
            a = torch.where(torch.isfinite(ll_new), (ll_new - llc).clamp(max=0.0).exp(), 0.0)
            take = u < a
            zc = torch.where(take[:, None], prop, zc)
            pc = torch.where(take[:, None], out.prediction, pc)
            llc = torch.where(take, ll_new, llc)
            rate = rate + a
        proposal = torch.cat([zc, z_r], dim=1)
        fine = target.evaluate(proposal)
        failed = ~torch.isfinite(fine.log_likelihood)
        log_ratio = (fine.log_likelihood - state.log_likelihood) + (ll_c - llc)
        alpha = torch.where(failed, 0.0, log_ratio.clamp(max=0.0).exp())
        accepted = torch.rand(c, **on).to(z.device) < alpha
        keep = accepted[:, None]
        new = state._replace(
            z=torch.where(keep, proposal, z),
            log_likelihood=torch.where(accepted, fine.log_likelihood, state.log_likelihood),
            prediction=torch.where(keep, fine.prediction, state.prediction),
            field=torch.where(keep[..., None], fine.field.to(state.field.dtype), state.field),
            coarse_prediction=torch.where(keep, pc, state.coarse_prediction),
        )
        if adapt:
            new = _adapted(new, rate / options.subchain_length, options)
            if options.error_model:
                new = _with_error(new, fine.prediction - pc, failed)
        info = MLDAInfo(accepted, alpha, failed, beta[:, 0].clone())
        return new, info

    def _coarse_ll(self, state, prediction, options) -> torch.Tensor:
        """The coarse log-likelihood of coarse predictions, with the error model if on."""
        c = self.coarse
        if not options.error_model or int(state.error_count) < 2:
            return c.log_likelihood_of(prediction)
        var = state.error_m2 / (state.error_count - 1).to(torch.float64)
        sd2 = c.noise_std**2 + var
        r = prediction - (c.data + state.error_mean)
        value = -0.5 * (r * r / sd2 + torch.log(2 * math.pi * sd2)).sum(-1)
        return torch.where(torch.isfinite(value), value, -math.inf)

    def end_warmup(self, state):
        return state._replace(log_step_size=state.log_step_avg.clone())

    def advance(self, run, state, iterations, *, adapt, thin):
        before = self.coarse.work.forward_solves
        out = super().advance(run, state, iterations, adapt=adapt, thin=thin)
        run.count("coarse_forward_solves", self.coarse.work.forward_solves - before)
        return out


def _adapted(state: MLDAState, coarse_rate, options) -> MLDAState:
    """Robbins-Monro on the coarse pCN's ``log beta`` (column 0); column 1 stays."""
    log_step, count, log_avg = robbins_monro(
        state.log_step_size[:, 0], state.adapt_count, state.log_step_avg[:, 0], coarse_rate,
        options.target_accept,
    )  # fmt: skip
    return state._replace(
        log_step_size=torch.stack([log_step, state.log_step_size[:, 1]], dim=1),
        log_step_avg=torch.stack([log_avg, state.log_step_avg[:, 1]], dim=1),
        adapt_count=count,
    )


def _with_error(state: MLDAState, difference: torch.Tensor, failed: torch.Tensor) -> MLDAState:
    """Welford's update of the error model by each chain's finite fine-minus-coarse row."""
    count, mean, m2 = state.error_count, state.error_mean, state.error_m2
    for row in difference[~failed & torch.isfinite(difference).all(-1)]:
        count = count + 1
        delta = row - mean
        mean = mean + delta / count.to(torch.float64)
        m2 = m2 + delta * (row - mean)
    return state._replace(error_count=count, error_mean=mean, error_m2=m2)
