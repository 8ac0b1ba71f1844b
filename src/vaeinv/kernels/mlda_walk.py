"""One MLDA iteration's walk down the levels (see `vaeinv.kernels.mlda`): the subchains of
every coarse level, the delayed decisions, and the coarsest kernel's state kept consistent with
them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

__all__ = ["Walk"]

if TYPE_CHECKING:
    from .mlda import MLDAKernel, MLDAState


class Walk:
    """One MLDA iteration's recursion over the coarse levels (the module docstring's steps),
    drawing every random number from one generator in a fixed order; ``rates[k]`` sums level
    ``k``'s acceptance probabilities over its steps."""

    def __init__(self, kernel: MLDAKernel, state: MLDAState, generator, options, adapt) -> None:
        self.levels = kernel.levels
        self.state = state
        self.options = options
        self.adapt = adapt
        self.generator = generator
        self.on = {"generator": generator, "dtype": torch.float64, "device": generator.device}
        self.device = state.z.device
        self.beta = state.log_step_size.exp()
        self.step_size = self.beta[:, 0]
        self.rates = [0.0] * len(self.levels)
        # each level's posterior with the error model, N(y; G + mean, sd^2 + var), fixed
        # within a step; the level's own while there is none (fewer than two rows yet)
        self.targets = kernel.corrected_levels(state, options.error_model)
        # the coarsest kernel's state, evaluated afresh when its likelihood has changed
        self.coarse = kernel.coarse_kernel
        self.inner = self.evaluated_at = None
        self.snapshots: dict = {}
        if self.coarse is not None:
            self.inner = self.coarse.unpack(state)
            self.evaluated_at = state.coarse_evaluated_at
            if bool(state.error_count[0] != self.evaluated_at):
                self.evaluated_at = state.error_count[0].clone()
                if self.targets[0] is not self.levels[0]:
                    self.inner = self.coarse.relocate(self.targets[0], self.inner)

    def uniform(self) -> torch.Tensor:
        return torch.rand(self.state.z.shape[0], **self.on).to(self.device)

    def own_move(self, level: int, z_r: torch.Tensor) -> torch.Tensor:
        """pCN on level ``level``'s own coordinates (``beta`` column ``level``)."""
        xi = torch.randn(*z_r.shape, **self.on).to(self.device)
        b = self.beta[:, level : level + 1]
        return torch.sqrt(1 - b**2) * z_r + b * xi

    def log_likelihood(self, k: int, prediction: torch.Tensor) -> torch.Tensor:
        """Coarse level ``k``'s log-likelihood of ``prediction``, with the error model if on."""
        return self.targets[k].log_likelihood_of(prediction)

    def subchain(self, k: int, z, preds, ll):
        """``subchain_length`` steps of level ``k`` from ``z (C, d_k)`` whose predictions at
        levels ``0..k`` are ``preds`` and whose level-``k`` log-likelihood is ``ll``."""
        length = self.options.subchain_length
        self.snapshots[k] = self.inner  # where the coarsest kernel returns if level k+1 rejects
        if k == 0 and self.inner is not None:
            self.inner, rate, self.step_size = self.coarse.subchain(
                self.targets[0], self.inner, self.generator, adapt=self.adapt, length=length
            )
            self.rates[0] = self.rates[0] + rate
            prediction = self.inner.prediction
            return self.inner.z, [prediction], self.log_likelihood(0, prediction)
        preds = list(preds[: k + 1])
        for _ in range(length):
            z, preds, ll = self._step(k, z, preds, ll)
        return z, preds, ll

    def decided(self, k: int, take: torch.Tensor) -> None:
        """Level ``k + 1`` took (``take``) or refused its proposal from level ``k``'s subchain:
        the coarsest kernel's chains that refused go back to where that subchain started."""
        if self.inner is not None:
            self.inner = self.coarse.keep_where(take, self.inner, self.snapshots[k])

    def _step(self, k: int, z, preds, ll):
        level = self.levels[k]
        if k == 0:
            b = self.beta[:, :1]
            xi = torch.randn(*z.shape, **self.on).to(self.device)
            proposal, proposed, ll_below, ll_below_new = torch.sqrt(1 - b**2) * z + b * xi, [], 0, 0
        else:
            d_c = self.levels[k - 1].latent_dim
            z_r = self.own_move(k, z[:, d_c:])
            ll_below = self.log_likelihood(k - 1, preds[k - 1])
            zc, proposed, ll_below_new = self.subchain(k - 1, z[:, :d_c], preds, ll_below)
            proposal = torch.cat([zc, z_r], dim=1)
        u = self.uniform()
        out = level.evaluate(proposal)
        ll_new = self.log_likelihood(k, out.prediction)
        log_ratio = (ll_new - ll) + (ll_below - ll_below_new)
        a = torch.where(torch.isfinite(ll_new), log_ratio.clamp(max=0.0).exp(), 0.0)
        take = u < a
        if k > 0:
            self.decided(k - 1, take)
        self.rates[k] = self.rates[k] + a
        proposed = [*proposed, out.prediction]
        preds = [torch.where(take[:, None], p, q) for p, q in zip(proposed, preds, strict=True)]
        return torch.where(take[:, None], proposal, z), preds, torch.where(take, ll_new, ll)
