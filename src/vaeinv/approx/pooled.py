"""Cross-chain mass-matrix adaptation for NUTS (``vaeinv.sample(..., mass="pooled")``).

A fixed Laplace mass matrix is as good as the Gaussian approximation at the MAP. On a posterior
far from Gaussian it is not: on ``mdgm-channel`` the posterior's covariance, whitened by the
Laplace covariance, has variances from 0.12 up to 147 (docs/benchmarks.md), so the widest
directions need trajectories twelve times longer than the tree-depth limit allows and mix as
random walks. Stan's per-chain dense adaptation cannot fix this in a short warm-up: a few
hundred correlated draws of one chain do not estimate a 256 x 256 covariance.

``mass="pooled"`` splits the ``num_warmup`` iterations of every chain into stages:

1. the Laplace covariance as the mass; a step-size warm-up (``POOLED_STAGES[0][0]`` of the
   warm-up) and a window of draws at the adapted step size (``POOLED_STAGES[0][1]``);
2. the mass re-estimated from that window's draws pooled over all the run's chains
   ([`spiked_covariance`][vaeinv.approx.pooled.spiked_covariance]); again a step-size
   warm-up and a window (``POOLED_STAGES[1]``);
3. the mass re-estimated from the second window; a final step-size warm-up (the rest of
   ``num_warmup``), after which the run samples with mass and step size fixed.

Every stage is an ordinary NUTS run with a fixed mass, so the chains stay valid Markov chains
and the draws after warm-up target the posterior exactly; only the efficiency depends on the
estimate. The estimate pools the chains a call runs: a run split into parts
(``vaeinv.sample(chains=...)``) pools within each part, so, unlike the other mass options, its
parts do not reproduce the whole run's draws.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "MIN_POOLED_WARMUP",
    "POOLED_STAGES",
    "pooled_schedule",
    "spiked_covariance",
]

#: (step-size warm-up, window of draws) of the two estimation stages, as fractions of
#: ``num_warmup``; the rest (0.20) is the final step-size warm-up under the last estimate.
POOLED_STAGES = ((0.15, 0.20), (0.10, 0.35))
#: the smallest ``num_warmup`` that gives every stage at least one iteration.
MIN_POOLED_WARMUP = 20
#: the largest factor by which one estimate changes the variance along a direction (a window
#: of a few badly adapted draws can show any spread; the next estimate corrects further).
MAX_CORRECTION = 100.0
#: draws per effective draw assumed when setting the noise edges of the eigenvalues (NUTS
#: draws of a window are correlated; a larger value trusts fewer directions).
DRAWS_PER_EFFECTIVE_DRAW = 2.0


def pooled_schedule(num_warmup: int) -> tuple[list[tuple[int, int]], int]:
    """The stages of a pooled warm-up of ``num_warmup`` iterations per chain.

    Returns:
        ``([(step_warmup, window), ...], final_step_warmup)``, summing to ``num_warmup``.

    Raises:
        ValueError: ``num_warmup < MIN_POOLED_WARMUP``.
    """
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int):
        raise ValueError(f"num_warmup must be an integer, got {num_warmup!r}")
    if num_warmup < MIN_POOLED_WARMUP:
        raise ValueError(
            f"mass='pooled' needs num_warmup >= {MIN_POOLED_WARMUP} (two estimation windows "
            f"and three step-size warm-ups), got {num_warmup}"
        )
    stages = [
        (max(1, round(a * num_warmup)), max(2, round(b * num_warmup))) for a, b in POOLED_STAGES
    ]
    final = num_warmup - sum(a + b for a, b in stages)
    return stages, final


def spiked_covariance(
    draws: torch.Tensor,
    reference: torch.Tensor,
    draws_per_effective: float = DRAWS_PER_EFFECTIVE_DRAW,
) -> tuple[torch.Tensor, int]:
    """Correct a reference covariance along the directions where the draws clearly disagree.

    With ``reference = L L^T``, the draws are whitened (``w = L^-1 (z - mean)``) and the
    eigen-decomposition ``V diag(lam) V^T`` of their sample covariance is compared with the
    identity. For ``n`` draws of dimension ``d`` from ``N(0, I)`` the sample eigenvalues fill
    the Marchenko-Pastur bulk ``[(1 - sqrt(g))^2, (1 + sqrt(g))^2]``, ``g = d / n_eff``, with
    ``n_eff = n / draws_per_effective`` for correlated draws. Eigenvalues above the upper edge
    (and, when ``n_eff > d``, below the lower edge) are taken as real; every other direction
    keeps the reference variance (eigenvalue clipping). Returns
    ``L (I + V_s diag(lam_s - 1) V_s^T) L^T``, each ``lam_s`` clipped to
    ``[1 / MAX_CORRECTION, MAX_CORRECTION]``, and the number of directions corrected.

    Args:
        draws: ``(n, d)`` draws, pooled over chains (their common mean is removed).
        reference: ``(d, d)`` symmetric positive-definite covariance.
        draws_per_effective: draws per effective draw, ``>= 1``.

    Returns:
        ``(covariance (d, d) float64, number of corrected directions)``.

    Raises:
        ValueError: non-finite draws (NUTS never keeps one), fewer than 2 draws, a reference
            of the wrong shape, or ``draws_per_effective < 1``.
    """
    if not float(draws_per_effective) >= 1.0:
        raise ValueError(f"draws_per_effective must be >= 1, got {draws_per_effective!r}")
    draws = draws.detach().to(torch.float64)
    n, d = draws.shape
    if not torch.isfinite(draws).all():
        raise ValueError("spiked_covariance got non-finite draws")
    if reference.shape != (d, d):
        raise ValueError(f"reference has shape {tuple(reference.shape)}, expected ({d}, {d})")
    if n < 2:
        raise ValueError(f"spiked_covariance needs at least 2 draws, got {n}")
    reference = reference.to(device=draws.device, dtype=torch.float64)
    chol = torch.linalg.cholesky(reference)
    centred = draws - draws.mean(0)
    white = torch.linalg.solve_triangular(chol, centred.T, upper=False).T
    lam, vec = torch.linalg.eigh(white.T @ white / (n - 1))
    ratio = d / (n / float(draws_per_effective))
    upper = (1.0 + math.sqrt(ratio)) ** 2
    lower = (1.0 - math.sqrt(ratio)) ** 2 if ratio < 1.0 else 0.0
    keep = (lam > upper) | ((lam < lower) & (lam > 0))
    v = vec[:, keep]
    factor = lam[keep].clamp(1.0 / MAX_CORRECTION, MAX_CORRECTION)
    inner = torch.eye(d, dtype=torch.float64, device=draws.device) + (v * (factor - 1.0)) @ v.T
    covariance = chol @ inner @ chol.T
    return 0.5 * (covariance + covariance.T), int(keep.sum())
