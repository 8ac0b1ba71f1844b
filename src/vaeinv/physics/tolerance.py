"""The multigrid tolerances a problem's flow gets: tied to its data's noise (the solve) and to
what a sampler needs of a gradient (the adjoint solve)."""

from __future__ import annotations

import torch

__all__ = [
    "GRADIENT_RTOL",
    "LOOSEST_RTOL",
    "NOISE_FRACTION_OF_ERROR",
    "RESIDUAL_TO_ERROR",
    "noise_tied_rtol",
]

#: ``noise_tied_rtol``: the pressure error allowed, as a fraction of the smallest noise sd.
NOISE_FRACTION_OF_ERROR = 1e-3
#: ``noise_tied_rtol``: a bound of the largest pressure error over the relative residual, both
#: relative to their scale. Measured on Gaussian log k fields, 32^2 to 128^2: 2-14 for sd 1,
#: 18-222 for sd 2, 7-735 for sd 3 (a contrast of 1e8), the largest for the shortest
#: correlation lengths.
RESIDUAL_TO_ERROR = 1000.0
#: the loosest tolerance ``noise_tied_rtol`` gives.
LOOSEST_RTOL = 1e-6
#: the adjoint (gradient) tolerance of a problem's flow: the gradient to about 1e-3 relative.
#: The samplers stay exact with it: a leapfrog or Gauss-Newton step only needs the gradient to
#: be a deterministic function of the field, which a CG solve from zero is.
GRADIENT_RTOL = 1e-3


def noise_tied_rtol(noise_std, data) -> float:
    """The multigrid tolerance for data with noise sd ``noise_std`` (a number or per datum).

    The pressure error of a solve stopped at relative residual ``rtol`` is at most about
    ``RESIDUAL_TO_ERROR * rtol * max|p|``; the tolerance keeps it below
    ``NOISE_FRACTION_OF_ERROR`` times the smallest noise sd, so that a log-likelihood moves
    by about ``1e-3`` nats per datum at most, far below anything a sampler can see:
    ``rtol = 1e-3 min(sd) / (1000 max|data|)``, clipped to ``[1e-12, 1e-6]``.
    """
    sd = torch.as_tensor(noise_std, dtype=torch.float64)
    values = torch.as_tensor(data, dtype=torch.float64)
    if sd.numel() == 0 or values.numel() == 0:
        return 1e-10  # nothing to tie it to: DarcyFlow's default
    scale = values.abs().max()
    if not bool(torch.isfinite(sd).all() & (sd > 0).all() & (scale > 0) & torch.isfinite(scale)):
        return 1e-10
    rtol = NOISE_FRACTION_OF_ERROR * float(sd.min()) / (RESIDUAL_TO_ERROR * float(scale))
    return min(max(rtol, 1e-12), LOOSEST_RTOL)
