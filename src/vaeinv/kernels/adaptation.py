"""Adaptation rules, the warm-up layer the kernels share: Robbins-Monro on a log step size
towards an acceptance target (the pCN family) and Nesterov dual averaging (HMC).

Both work on tensors of the kernel's state and return new ones; a kernel applies them in
``step(..., adapt=True)`` and fixes the averaged iterate in ``end_warmup``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "ADAPT_GAIN_EXPONENT",
    "AVERAGE_EXPONENT",
    "MIN_LOG_STEP_SIZE",
    "DualAveraging",
    "robbins_monro",
]

#: Robbins-Monro gain exponent on ``log beta``: gain ``(t + 1)^-ADAPT_GAIN_EXPONENT``.
ADAPT_GAIN_EXPONENT = 0.6
#: Weight exponent of the averaged iterate: ``avg += (t + 1)^-AVERAGE_EXPONENT (x - avg)``.
AVERAGE_EXPONENT = 0.75
#: Lower clip of ``log beta`` during adaptation (keeps ``beta > 0``).
MIN_LOG_STEP_SIZE = math.log(1e-8)


def robbins_monro(
    log_step: torch.Tensor,
    adapt_count: torch.Tensor,
    log_avg: torch.Tensor,
    acceptance: torch.Tensor,
    target_accept: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Robbins-Monro update of ``log beta`` (per chain) towards ``target_accept``, clipped
    to ``[MIN_LOG_STEP_SIZE, 0]``, and of its averaged iterate, using the acceptance
    probability (not the 0/1 outcome) as the signal: ``(log_step, adapt_count, log_avg)``."""
    t1 = (adapt_count + 1).to(torch.float64)
    log_step = (log_step + t1.pow(-ADAPT_GAIN_EXPONENT) * (acceptance - target_accept)).clamp(
        MIN_LOG_STEP_SIZE, 0.0
    )
    log_avg = log_avg + t1.pow(-AVERAGE_EXPONENT) * (log_step - log_avg)
    return log_step, adapt_count + 1, log_avg


class DualAveraging:
    """Nesterov dual averaging of a log step size (Hoffman & Gelman 2014), Stan's constants.

    The state is four scalars kept in the kernel's state: ``mu`` (the shrinkage point,
    ``log(10 eps_0)``), ``hbar`` (the averaged error), ``count`` (iterations since the last
    restart) and the averaged iterate ``log_avg``.
    """

    GAMMA, T0, KAPPA = 0.05, 10.0, 0.75

    @classmethod
    def update(
        cls, mu: float, hbar: float, count: int, log_avg: float, rate: float, target: float
    ) -> tuple[float, float, float]:
        """``(log_eps, hbar, log_avg)`` after one iteration whose mean acceptance statistic
        was ``rate`` (``count`` iterations done before it since the restart)."""
        t = count + 1
        w = 1.0 / (t + cls.T0)
        hbar = (1.0 - w) * hbar + w * (target - rate)
        log_eps = mu - math.sqrt(t) / cls.GAMMA * hbar
        eta = t ** (-cls.KAPPA)
        return log_eps, hbar, eta * log_eps + (1.0 - eta) * log_avg

    @staticmethod
    def restart_point(log_eps: float) -> float:
        """``mu`` for a (re)start from ``log_eps``: ``log(10) + log_eps``."""
        return math.log(10.0) + log_eps
