"""HMC's warm-up: the step size by dual averaging towards ``target_accept`` on the chains' mean
acceptance statistic, and the mass re-estimated at the end of each of two windows from the
pooled draws of all chains ([`spiked_covariance`][vaeinv.approx.pooled.spiked_covariance]),
the averaging restarted from the current step after each (see `vaeinv.kernels.hmc`)."""

from __future__ import annotations

import torch

from ..approx.pooled import spiked_covariance
from .adaptation import DualAveraging

__all__ = ["adapt_hmc"]


def adapt_hmc(state, mean_rate: float, target: float):
    """One warm-up update of an HMC state after an iteration whose mean acceptance statistic
    was ``mean_rate``: the step size, the window's draws, the mass at a window's end."""
    k = int(state.adapt_count)
    f64 = dict(dtype=torch.float64, device=state.z.device)
    log_eps, hbar, log_avg = DualAveraging.update(
        float(state.da_mu),
        float(state.da_hbar),
        int(state.da_count),
        float(state.log_step_avg),
        mean_rate,
        target,
    )
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


def _new_mass(state, length: int, index: int):
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
        da_mu=torch.tensor(DualAveraging.restart_point(log_eps), **f64),
        da_hbar=torch.tensor(0.0, **f64),
        da_count=torch.zeros_like(state.da_count),
        log_step_avg=torch.tensor(log_eps, **f64),
    )
