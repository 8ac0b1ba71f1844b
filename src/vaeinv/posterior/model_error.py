"""A posterior whose forward model carries a Gaussian model error (the approximation error
model of Kaipio & Somersalo 2007, used adaptively by Cui, Fox & O'Sullivan 2011):

    y = G(z) + e + eta,    e ~ N(mean, diag(variance)),  eta ~ N(0, diag(sd^2)),

so that ``log N(y; G(z) + mean, diag(sd^2 + variance))`` is its likelihood: the posterior of a
cheap model ``G`` whose error against an expensive one has been estimated as ``mean`` and
``variance`` (fine minus cheap predictions, datum by datum). Multilevel delayed acceptance
(``method="mlda"``) builds each coarse level's corrected posterior with it."""

from __future__ import annotations

import copy
import math

import torch

__all__ = ["with_model_error"]

_LOG_2PI = math.log(2.0 * math.pi)


def with_model_error(posterior, mean, variance):
    """``posterior`` with the model error ``N(mean, diag(variance))`` added to its forward model:
    the data shifted to ``y - mean`` and each noise standard deviation widened to
    ``sqrt(sd^2 + variance)``.

    The result shares the prior, the forward model and the work counter (its solves count as
    the original's); nothing is re-evaluated.

    Args:
        posterior: a [`Posterior`][vaeinv.posterior.target.Posterior].
        mean: ``(num_data,)`` the model error's mean, finite.
        variance: ``(num_data,)`` its variance per datum, finite and ``>= 0``.

    Raises:
        ValueError: a shape other than ``(num_data,)``, a non-finite value or a negative
            variance (the datum named).
    """
    m = posterior.num_data
    values = {}
    for name, value in (("mean", mean), ("variance", variance)):
        t = torch.as_tensor(value, dtype=torch.float64).detach().to(posterior.device)
        if tuple(t.shape) != (m,):
            raise ValueError(f"model error {name} has shape {tuple(t.shape)}, expected ({m},)")
        bad = (~torch.isfinite(t)).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(f"model error {name} of datum {i} is {float(t[i])}; expected finite")
        values[name] = t
    negative = (values["variance"] < 0).nonzero().flatten()
    if negative.numel():
        i = int(negative[0])
        raise ValueError(
            f"model error variance of datum {i} is {float(values['variance'][i])}; expected >= 0"
        )
    out = copy.copy(posterior)  # the same prior, forward model, grid and work counter
    out.data = posterior.data - values["mean"]
    out.noise_std = torch.sqrt(posterior.noise_std**2 + values["variance"])
    out._log_norm = -(torch.log(out.noise_std) + 0.5 * _LOG_2PI)
    return out
