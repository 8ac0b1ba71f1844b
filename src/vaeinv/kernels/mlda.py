"""Multilevel delayed acceptance (MLDA; Christen & Fox 2005, Lykkegaard et al. 2023) as the
registered kernel ``"mlda"``: ``vaeinv.sample(posterior, "mlda", coarse=[coarsest, ...])``.

Levels are numbered from the coarsest, ``0``, to the fine posterior, ``L`` (``coarse`` lists
levels ``0 .. L-1``). Level ``l``'s latent is the first ``d_l`` coordinates of the fine latent
(``d_0 <= d_1 <= ... <= d_L``, the same standard-normal prior on them; a multiscale prior's
``level(k)`` has exactly this layout). One step of level ``l >= 1``, for every chain at once:

1. ``z_r' = sqrt(1 - b^2) z_r + b xi`` on level ``l``'s own coordinates ``d_{l-1} .. d_l``
   (pCN, prior-reversible; ``b`` is ``fine_step_size``);
2. a subchain of ``subchain_length`` steps of level ``l - 1`` from the current point's first
   ``d_{l-1}`` coordinates, ending at ``z_c'`` (level 0's steps are pCN on the coarsest
   posterior, accepted with its likelihood ratio, or the steps of the registered kernel the
   option ``coarse_kernel`` names: ``"hmc"``, ``"gpcn"``, ``"pcn"``; see
   `vaeinv.kernels.mlda_coarse`);
3. one evaluation of level ``l`` at ``z' = (z_c', z_r')``, accepted with probability

       min(1, [L_l(z') L_{l-1}(z_c)] / [L_l(z) L_{l-1}(z_c')]),

   ``L_l`` level ``l``'s likelihood. Each subchain is reversible with respect to its level's
   posterior and the own-coordinate move with respect to the prior, so level ``l``'s chain
   targets level ``l``'s posterior exactly, whatever the coarser models are (a worse one only
   accepts less); the fine level (one step per iteration) targets the fine posterior.

The **error model** (option ``error_model``, on by default; Cui, Fox & O'Sullivan 2011): each
coarse level's likelihood is taken as ``N(y; G_l(z_l) + mu_l, diag(sd^2 + s_l^2))``, with
``mu_l`` and ``s_l^2`` the running mean and variance per datum of the fine-minus-level-``l``
predictions at the fine evaluations, so that every level approximates the fine posterior
([`with_model_error`][vaeinv.posterior.model_error.with_model_error]). It
is estimated over the second half of warm-up only (the first half's chains are still on their
way in from over-dispersed starts, where the coarse models' errors are larger and would
inflate ``s_l^2``) and fixed from then on, so the sampling phase is an exact, fixed Markov
kernel. With no warm-up the coarse likelihoods are used as they are.

During warm-up the coarsest pCN's step adapts (Robbins-Monro, as pCN's) towards
``target_accept`` (its acceptance), or the ``coarse_kernel`` adapts as it does on its own (its
default options, its warm-up the coarsest steps of MLDA's); the own-coordinate moves keep
``fine_step_size`` (the delayed decisions' acceptance is bounded by the coarser model's misfit,
so adapting to it would shrink that step towards zero and freeze those coordinates). Level ``l``
is solved ``subchain_length ** (L - l)`` times per iteration and chain (the coarsest level, with
a ``coarse_kernel``, as many times as that kernel evaluates it): the result's attributes hold
each level's total (``forward_solves`` the fine one, ``forward_solves_level_<l>`` and their sum
``coarse_forward_solves`` the coarse ones), ``sample_stats`` the per-draw ``coarse_solves`` and
``coarse_acceptance_rate`` with a ``level`` dimension. Random numbers, per step of level ``l >=
1``: ``xi_r (C, d_l - d_{l-1})``, then the subchain's, then the decision's ``u (C,)``; per step
of level 0: ``xi (C, d_0)``, ``u (C,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..posterior.model_error import with_model_error
from .adaptation import robbins_monro
from .base import Kernel, Options, check_fraction, check_positive
from .levels import check_coarse_levels, check_levels, describe_levels
from .mlda_coarse import CoarseKernel, embeddable_kernels
from .mlda_walk import Walk

__all__ = ["MLDAInfo", "MLDAKernel", "MLDAOptions", "MLDAState"]


class MLDAState(NamedTuple):
    """The state of ``C`` MLDA chains over ``L`` coarse levels (float64 on the fine
    posterior's device).

    Attributes:
        z: ``(C, d)`` the fine latents; ``z[:, :d_l]`` level ``l``'s.
        log_likelihood: ``(C,)`` fine log-likelihood of ``z``.
        prediction: ``(C, m)`` fine prediction of ``z``.
        field: ``(C, ny, nx)`` the fine decode of ``z``.
        level_predictions: ``(C, L, m)`` each coarse level's prediction of its part of ``z``.
        log_step_size: ``(C, L + 1)`` ``log beta`` of the coarsest pCN (column 0, adapted in
            warm-up) and of each finer level's own-coordinate move (fixed).
        log_step_avg: ``(C, L + 1)`` their averaged iterates (used once warm-up ends).
        adapt_count: ``()`` adaptation steps so far.
        error_count: ``(L,)`` fine evaluations in each level's error model.
        error_mean: ``(L, m)`` running means of fine-minus-level predictions.
        error_m2: ``(L, m)`` running sums of squared deviations (Welford).
    """

    z: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    field: torch.Tensor
    level_predictions: torch.Tensor
    log_step_size: torch.Tensor
    log_step_avg: torch.Tensor
    adapt_count: torch.Tensor
    error_count: torch.Tensor
    error_mean: torch.Tensor
    error_m2: torch.Tensor


class MLDAInfo(NamedTuple):
    """One MLDA iteration per chain: ``accepted``, ``acceptance_rate`` (of the fine decision),
    ``failed`` (the fine solve failed), ``step_size`` (the coarsest pCN's ``beta``),
    ``coarse_acceptance_rate`` ``(C, L)`` (each coarse level's mean acceptance in this
    iteration: the pCN's on level 0, the delayed decisions' above) and ``coarse_solves``
    ``(C, L)`` (each coarse level's solves in this iteration)."""

    accepted: torch.Tensor
    acceptance_rate: torch.Tensor
    failed: torch.Tensor
    step_size: torch.Tensor
    coarse_acceptance_rate: torch.Tensor
    coarse_solves: torch.Tensor


@dataclass(frozen=True)
class MLDAOptions(Options):
    """MLDA's options.

    Attributes:
        subchain_length: steps of level ``l - 1`` per proposal of level ``l``, ``>= 1``.
        step_size: the coarsest pCN's initial ``beta`` in ``(0, 1]``.
        target_accept: the coarsest pCN's acceptance the adaptation aims at.
        fine_step_size: the ``beta`` of every finer level's own-coordinate pCN move (fixed).
        error_model: correct each coarse likelihood by the fine-minus-level error model.
        coarse_kernel: ``None`` for the coarsest pCN above, or the name of a registered kernel
            that runs the coarsest subchains instead (with its default options; ``step_size``
            and ``target_accept`` then go unused).
    """

    subchain_length: int = 5
    step_size: float = 0.25
    target_accept: float = 0.3
    fine_step_size: float = 0.5
    error_model: bool = True
    coarse_kernel: str | None = None

    def validate(self) -> None:
        check_positive("subchain_length", self.subchain_length, integer=True, minimum=1)
        check_fraction("step_size (coarse pCN beta)", self.step_size, closed=True)
        check_fraction("fine_step_size (pCN beta)", self.fine_step_size, closed=True)
        check_fraction("target_accept", self.target_accept)
        if not isinstance(self.error_model, bool):
            raise ValueError(f"error_model must be true or false, got {self.error_model!r}")
        if self.coarse_kernel is not None and self.coarse_kernel not in embeddable_kernels():
            raise ValueError(
                "coarse_kernel must name a kernel that can run inside MLDA, one of "
                f"{embeddable_kernels()}, got {self.coarse_kernel!r}"
            )


class MLDAKernel(Kernel):
    """Multilevel delayed acceptance (module docstring).

    Args:
        coarse: ``[coarsest, ..., next-to-fine]``, the coarse posteriors: the fine one's
            data and noise, standard-normal latents that grow from level to level up to at
            most the fine latent's size (each the first coordinates of the next), grids that
            nest in the next finer one.
    """

    name = "mlda"
    Options = MLDAOptions
    state_type = MLDAState
    inputs = ("coarse",)

    def __init__(self, coarse=None) -> None:
        if coarse is None:
            raise ValueError("method 'mlda' needs coarse=[coarsest_posterior, ...]")
        self.levels = check_levels(coarse)
        self.error_from = 0
        self.coarse_kernel: CoarseKernel | None = None
        self._corrected: tuple = ((), [])  # (error counts, the levels' corrected posteriors)

    def corrected_levels(self, state, error_model: bool) -> list:
        """Each coarse level's posterior with its error model (the level itself while it has
        fewer than two rows), rebuilt only when the counts change: fixed after warm-up."""
        counts = tuple(state.error_count.tolist()) if error_model else ()
        if counts != self._corrected[0] or not self._corrected[1]:
            targets = list(self.levels)
            for k, c in enumerate(counts):
                if c >= 2:
                    var = state.error_m2[k] / (state.error_count[k] - 1).to(torch.float64)
                    targets[k] = with_model_error(self.levels[k], state.error_mean[k], var)
            self._corrected = (counts, targets)
        return self._corrected[1]

    def check(self, options, *, num_warmup: int, fixed_mass: bool) -> None:
        """The error model learns from the warm-up iterations from ``num_warmup // 2`` on; a
        ``coarse_kernel`` checks its warm-up and its entries join the state."""
        self.error_from = num_warmup // 2
        self.coarse_kernel, self.state_type = None, MLDAState
        if options.coarse_kernel is not None:
            steps = options.subchain_length ** len(self.levels)
            self.coarse_kernel = CoarseKernel(
                options.coarse_kernel, MLDAState, steps_per_iteration=steps
            )
            self.coarse_kernel.check(num_warmup)
            self.state_type = self.coarse_kernel.state_type

    def describe_inputs(self) -> dict:
        return describe_levels(self.levels)

    def _check(self, target) -> None:
        check_coarse_levels(self.levels, target, self.name)

    # ------------------------------------------------------------------ the protocol
    def init(self, run):
        target = run.target
        self._check(target)
        z = run.z0.to(target.device, torch.float64)
        inner = None
        if self.coarse_kernel is not None:  # it picks the coarsest latents of the starts
            level, work = self.levels[0], self.levels[0].work
            before = (work.forward_solves, work.gradient_evaluations)
            inner = self.coarse_kernel.init(run, level, z[:, : level.latent_dim], run.num_warmup)
            z = torch.cat([inner.z.to(torch.float64), z[:, level.latent_dim :]], dim=1)
            run.count("forward_solves_level_0", work.forward_solves - before[0])
            run.count("coarse_forward_solves", work.forward_solves - before[0])
            if work.gradient_evaluations > before[1]:
                run.count("gradient_evaluations_level_0", work.gradient_evaluations - before[1])
        fine = target.evaluate(z)
        predictions = []
        for k, level in enumerate(self.levels):
            if k == 0 and inner is not None:
                predictions.append(inner.prediction)
                continue
            predictions.append(level.evaluate(z[:, : level.latent_dim]).prediction)
            run.count(f"forward_solves_level_{k}", z.shape[0])
            run.count("coarse_forward_solves", z.shape[0])
        c, m, n = z.shape[0], target.num_data, len(self.levels)
        f64 = {"dtype": torch.float64, "device": z.device}
        opts = run.options
        steps = [opts.step_size] + [opts.fine_step_size] * n
        log_step = torch.tensor(steps, **f64).log().expand(c, n + 1)
        state = MLDAState(
            z=z,
            log_likelihood=fine.log_likelihood,
            prediction=fine.prediction,
            field=fine.field,
            level_predictions=torch.stack(predictions, dim=1),
            log_step_size=log_step.clone(),
            log_step_avg=log_step.clone(),
            adapt_count=torch.zeros((), dtype=torch.int64, device=z.device),
            error_count=torch.zeros(n, dtype=torch.int64, device=z.device),
            error_mean=torch.zeros(n, m, **f64),
            error_m2=torch.zeros(n, m, **f64),
        )
        if inner is None:
            return state
        return self.coarse_kernel.packed(state, inner, state.error_count[0].clone())

    def step(self, target, state, generator, *, adapt, options):
        n = len(self.levels)
        before = [level.work.forward_solves for level in self.levels]
        walk = Walk(self, state, generator, options, adapt)
        top = n - 1
        d_c = self.levels[top].latent_dim
        z = state.z
        z_r = walk.own_move(n, z[:, d_c:])
        preds = list(state.level_predictions.unbind(1))
        ll_c = walk.log_likelihood(top, preds[top])
        zc, preds_c, llc = walk.subchain(top, z[:, :d_c], preds, ll_c)
        proposal = torch.cat([zc, z_r], dim=1)
        fine = target.evaluate(proposal)
        failed = ~torch.isfinite(fine.log_likelihood)
        log_ratio = (fine.log_likelihood - state.log_likelihood) + (ll_c - llc)
        alpha = torch.where(failed, 0.0, log_ratio.clamp(max=0.0).exp())
        accepted = walk.uniform() < alpha
        walk.decided(top, accepted)
        keep = accepted[:, None]
        proposed = torch.stack(preds_c, dim=1)
        new = state._replace(
            z=torch.where(keep, proposal, z),
            log_likelihood=torch.where(accepted, fine.log_likelihood, state.log_likelihood),
            prediction=torch.where(keep, fine.prediction, state.prediction),
            field=torch.where(keep[..., None], fine.field.to(state.field.dtype), state.field),
            level_predictions=torch.where(keep[..., None], proposed, state.level_predictions),
        )
        visits = [options.subchain_length ** (n - k) for k in range(n)]  # steps of level k
        if adapt:
            if self.coarse_kernel is None:
                new = _adapted(new, walk.rates[0] / visits[0], options)
            else:  # the coarse kernel adapts itself; only the warm-up count goes on
                new = new._replace(adapt_count=new.adapt_count + 1)
            if options.error_model and int(state.adapt_count) >= self.error_from:
                new = _with_error(new, fine.prediction[:, None] - proposed, failed)
        if walk.inner is not None:
            new = self.coarse_kernel.pack(new, walk.inner, coarse_evaluated_at=walk.evaluated_at)
        rates = torch.stack([walk.rates[k] / visits[k] for k in range(n)], dim=1)
        c = z.shape[0]
        solves = [
            (lv.work.forward_solves - b) // c for lv, b in zip(self.levels, before, strict=True)
        ]
        solves = torch.tensor(solves, device=z.device).expand(c, n)
        info = MLDAInfo(accepted, alpha, failed, walk.step_size, rates, solves)
        return new, info

    def end_warmup(self, state):
        state = state._replace(log_step_size=state.log_step_avg.clone())
        if self.coarse_kernel is None:
            return state
        inner = self.coarse_kernel.end_warmup(self.coarse_kernel.unpack(state))
        return self.coarse_kernel.pack(state, inner)

    def advance(self, run, state, iterations, *, adapt, thin):
        before = [(lv.work.forward_solves, lv.work.gradient_evaluations) for lv in self.levels]
        out = super().advance(run, state, iterations, adapt=adapt, thin=thin)
        for k, level in enumerate(self.levels):
            solves = level.work.forward_solves - before[k][0]
            run.count(f"forward_solves_level_{k}", solves)
            run.count("coarse_forward_solves", solves)
            grads = level.work.gradient_evaluations - before[k][1]
            if grads:  # a gradient-based coarse_kernel's (each also one of the solves)
                run.count(f"gradient_evaluations_level_{k}", grads)
        return out


def _adapted(state: MLDAState, coarse_rate, options) -> MLDAState:
    """Robbins-Monro on the coarsest pCN's ``log beta`` (column 0); the others stay."""
    log_step, count, log_avg = robbins_monro(
        state.log_step_size[:, 0], state.adapt_count, state.log_step_avg[:, 0], coarse_rate,
        options.target_accept,
    )  # fmt: skip
    return state._replace(
        log_step_size=torch.cat([log_step[:, None], state.log_step_size[:, 1:]], dim=1),
        log_step_avg=torch.cat([log_avg[:, None], state.log_step_avg[:, 1:]], dim=1),
        adapt_count=count,
    )


def _with_error(state: MLDAState, difference: torch.Tensor, failed: torch.Tensor) -> MLDAState:
    """Welford's update of each level's error model by each chain's finite fine-minus-level
    row (``difference (C, L, m)``)."""
    counts, means, m2s = [], [], []
    for k in range(difference.shape[1]):
        count, mean, m2 = state.error_count[k], state.error_mean[k], state.error_m2[k]
        rows = difference[:, k]
        for row in rows[~failed & torch.isfinite(rows).all(-1)]:
            count = count + 1
            delta = row - mean
            mean = mean + delta / count.to(torch.float64)
            m2 = m2 + delta * (row - mean)
        counts.append(count)
        means.append(mean)
        m2s.append(m2)
    return state._replace(
        error_count=torch.stack(counts), error_mean=torch.stack(means), error_m2=torch.stack(m2s)
    )
