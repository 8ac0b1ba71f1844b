"""Stationary covariance kernels: correlation functions of a scaled distance.

Every kernel is a correlation ``rho(h)`` with ``rho(0) = 1`` of the dimensionless distance
``h = |d| / length_scale``:

- ``"exponential"``: ``rho(h) = exp(-h)``;
- ``"gaussian"`` (squared exponential): ``rho(h) = exp(-h**2 / 2)``;
- ``"matern"`` with smoothness ``nu``:
  ``rho(h) = 2**(1 - nu) / Gamma(nu) * (sqrt(2 nu) h)**nu * K_nu(sqrt(2 nu) h)``,
  which is ``"exponential"`` for ``nu = 1/2`` and tends to ``"gaussian"`` as ``nu -> inf``.

Anisotropy and rotation enter through :func:`scaled_distance`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["KERNELS", "correlation", "scaled_distance"]

#: Names of the available kernels.
KERNELS = ("exponential", "gaussian", "matern")


def correlation(kernel: str, h: torch.Tensor, nu: float = 1.5) -> torch.Tensor:
    """The correlation ``rho(h)`` of ``kernel`` at scaled distances ``h >= 0``.

    Args:
        kernel: one of :data:`KERNELS`.
        h: scaled distances, any shape, floating point.
        nu: Matern smoothness (ignored by the other kernels), positive.

    Returns:
        ``rho(h)``, same shape, dtype and device as ``h``.

    Raises:
        ValueError: an unknown kernel.
    """
    if kernel == "exponential":
        return torch.exp(-h)
    if kernel == "gaussian":
        return torch.exp(-0.5 * h * h)
    if kernel != "matern":
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    if nu == 0.5:
        return torch.exp(-h)
    if nu == 1.5:
        s = math.sqrt(3.0) * h
        return (1.0 + s) * torch.exp(-s)
    if nu == 2.5:
        s = math.sqrt(5.0) * h
        return (1.0 + s + s * s / 3.0) * torch.exp(-s)
    return _matern_general(h, nu)


#: above this smoothness, K_nu comes from its uniform (Debye) expansion, in log space
_DEBYE_NU = 30.0


def _matern_general(h: torch.Tensor, nu: float) -> torch.Tensor:
    """Matern correlation for any ``nu > 0`` (float64 on the CPU, then back).

    Uses scipy's Bessel ``K_nu`` up to ``nu = 30``; beyond, where ``K_nu`` and ``Gamma(nu)``
    overflow, the uniform asymptotic expansion of ``K_nu(nu z)`` to third order (relative error
    about ``nu**-4``), all in log space.
    """
    from scipy.special import gammaln, kv

    s = np.sqrt(2.0 * nu) * h.detach().cpu().to(torch.float64).numpy()
    out = np.ones_like(s)
    pos = s > 0
    sp = s[pos]
    log_front = (1.0 - nu) * np.log(2.0) - gammaln(nu) + nu * np.log(sp)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if nu <= _DEBYE_NU:
            values = np.exp(log_front) * kv(nu, sp)
        else:
            values = np.exp(log_front + _log_kv_debye(nu, sp))
    # far out K_nu underflows to 0 (and the product to nan): the correlation is 0 there
    out[pos] = np.where(np.isfinite(values), values, 0.0)
    return torch.as_tensor(out, dtype=h.dtype, device=h.device)


def _log_kv_debye(nu: float, x: np.ndarray) -> np.ndarray:
    """``log K_nu(x)`` from the uniform asymptotic expansion for large ``nu`` (DLMF 10.41.4)."""
    z = x / nu
    root = np.sqrt(1.0 + z * z)
    eta = root + np.log(z / (1.0 + root))
    t = 1.0 / root
    u1 = (3 * t - 5 * t**3) / 24
    u2 = (81 * t**2 - 462 * t**4 + 385 * t**6) / 1152
    u3 = (30375 * t**3 - 369603 * t**5 + 765765 * t**7 - 425425 * t**9) / 414720
    series = 1.0 - u1 / nu + u2 / nu**2 - u3 / nu**3
    return 0.5 * np.log(np.pi / (2 * nu)) - nu * eta - 0.5 * np.log(root) + np.log(series)


def scaled_distance(
    dx: torch.Tensor,
    dy: torch.Tensor,
    length_scale: torch.Tensor | float,
    anisotropy: float = 1.0,
    angle: float = 0.0,
) -> torch.Tensor:
    """Dimensionless distance of displacements ``(dx, dy)`` under an anisotropic metric.

    The displacement is rotated into the principal axes (the first axis at ``angle`` radians
    counter-clockwise from x), where the length scales are ``length_scale`` along the first and
    ``anisotropy * length_scale`` along the second axis.

    Args:
        dx: displacements along x (broadcast with ``dy`` and ``length_scale``).
        dy: displacements along y.
        length_scale: the length scale along the first principal axis, positive.
        anisotropy: ratio of the second to the first principal length scale, positive.
        angle: rotation of the principal axes, radians.

    Returns:
        ``sqrt((u / l)**2 + (v / (anisotropy l))**2)`` with ``(u, v)`` the rotated displacement.
    """
    c, s = math.cos(angle), math.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return torch.sqrt((u / length_scale) ** 2 + (v / (anisotropy * length_scale)) ** 2)
