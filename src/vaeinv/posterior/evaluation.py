"""What an evaluation of the posterior returns to a sampler, and the work it counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

__all__ = ["Evaluation", "Work"]


@dataclass
class Work:
    """The posterior evaluations a sampler spent (counted by ``evaluate`` and ``potential``).

    Attributes:
        forward_solves: fields solved (each decoded latent of each evaluation, times the
            forward model's ``cost``).
        gradient_evaluations: reverse passes (one per latent of a gradient evaluation).
    """

    forward_solves: int = 0
    gradient_evaluations: int = 0


class Evaluation(NamedTuple):
    """The posterior at a batch of latents ``z (B, d)``, float64, detached.

    Attributes:
        log_density: ``(B,)`` ``log_prior + log_likelihood``, ``-inf`` where it failed.
        log_likelihood: ``(B,)`` ``-inf`` where the prediction failed.
        prediction: ``(B, m)``; NaN rows where the solve failed.
        grad: ``(B, d)`` gradient of ``log_density`` (``evaluate(grad=True)``), else ``None``.
        field: ``(B, *field_shape)`` the decoded latents (``evaluate(grad=False)``), else
            ``None``.
    """

    log_density: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    grad: torch.Tensor | None
    field: torch.Tensor | None
