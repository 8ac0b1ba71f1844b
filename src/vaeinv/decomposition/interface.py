"""The unknown pressure on the subdomains' interfaces, modelled by a Gaussian process.

A subdomain's Darcy problem needs a pressure on every side that faces another subdomain. It is
not known: it depends on the permeability everywhere.
[`InterfaceGP`][vaeinv.decomposition.interface.InterfaceGP] models the global pressure
``p(x, y)`` as

    p(x) = a + b x + c y + r(x),    r ~ GP(0, Matern-3/2),

the plane fitted to the pressure observations by weighted least squares (the dominant, linear
part of a head-driven flow, which the model therefore reproduces exactly when the pressure is
linear) and the residual a Gaussian process whose variance and length scale are fitted by
maximum marginal likelihood with Pyro's ``pyro.contrib.gp`` (``GPRegression``, Matern-3/2
kernel; the observation noise held at the sensors' noise variance). Its predictive mean on the
interface points is the local problems' Dirichlet data; its predictive covariance enters the
local likelihoods (`vaeinv.decomposition.local`).

Conditioning after the fit uses each observation's own variance, so that observations of other
kinds can join the sensors:
[`refine_interfaces`][vaeinv.decomposition.interface.refine_interfaces] adds, one at a time,
the interface point of largest predictive variance with
the pressure a global solve gives there, until the largest variance on the interfaces falls
under a set fraction of the noise variance (active learning). The errors of one global solve
of an estimated field are not independent from point to point: they can be given as one smooth
error field (``correlated=True``), which many points along an interface cannot average away.

[`face_pressures`][vaeinv.decomposition.interface.face_pressures] gives, from a global solve,
the pressure on a subdomain's interface faces that makes the local two-point flux equal the
global one: ``(k_i p_i + k_j p_j) / (k_i + k_j)`` between the cells ``i`` (inside) and ``j``
(outside). With those values a local solve reproduces the global solution on the subdomain.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..partition import Subdomain

__all__ = ["InterfaceGP", "face_pressures", "refine_interfaces"]


def face_pressures(log_k: torch.Tensor, pressure: torch.Tensor, subdomain: Subdomain):
    """The pressure on ``subdomain``'s interface faces from a global field and its pressure.

    Args:
        log_k: the global field ``(ny, nx)``.
        pressure: its global cell pressures ``(ny, nx)``.
        subdomain: a subdomain of a partition of that grid.

    Returns:
        ``{side: (n,) float64}`` for each interface side, in the order of the side's cells.
    """
    k = torch.exp(log_k.detach().to(torch.float64))
    p = pressure.detach().to(torch.float64)
    rows, cols = subdomain.rows, subdomain.cols
    out = {}
    for side in subdomain.interfaces:
        if side in ("left", "right"):
            inside = cols.start if side == "left" else cols.stop - 1
            outside = inside - 1 if side == "left" else inside + 1
            ki, kj = k[rows, inside], k[rows, outside]
            pi, pj = p[rows, inside], p[rows, outside]
        else:
            inside = rows.start if side == "bottom" else rows.stop - 1
            outside = inside - 1 if side == "bottom" else inside + 1
            ki, kj = k[inside, cols], k[outside, cols]
            pi, pj = p[inside, cols], p[outside, cols]
        out[side] = (ki * pi + kj * pj) / (ki + kj)
    return out


def _as64(value, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value, dtype=np.float64))
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} has non-finite values; expected finite numbers")
    return t


class InterfaceGP:
    """A plane plus a Matern-3/2 Gaussian process for the global pressure (module docstring).

    Args:
        xy: ``(n, 2)`` the observation points (sensors).
        values: ``(n,)`` the observed pressures.
        variance: ``(n,)`` or a scalar, the observations' noise variance, ``> 0``.
        fit_steps: Adam steps of the marginal-likelihood fit of the kernel (``0``: keep the
            initial variance and length scale).
        lr: Adam's learning rate.
        length_scale: the initial length scale (default a fifth of the points' extent).

    Raises:
        ValueError: bad shapes, non-finite values, a variance not ``> 0``, fewer than 3 points.
    """

    def __init__(self, xy, values, variance, *, fit_steps=150, lr=0.05, length_scale=None):
        x = _as64(xy, "xy")
        if x.dim() != 2 or x.shape[1] != 2 or x.shape[0] < 3:
            raise ValueError(f"xy must have shape (n >= 3, 2), got {tuple(x.shape)}")
        n = x.shape[0]
        y = _as64(values, "values", (n,))
        var = _as64(variance, "variance").expand(n).clone()
        if bool((var <= 0).any()):
            raise ValueError(f"observation variances must be > 0, got min {float(var.min())}")
        if isinstance(fit_steps, bool) or not isinstance(fit_steps, int) or fit_steps < 0:
            raise ValueError(f"fit_steps must be an integer >= 0, got {fit_steps!r}")
        design = torch.cat([torch.ones(n, 1, dtype=torch.float64), x], dim=1)
        # the normal equations of the weighted fit (3 x 3): LAPACK's least-squares drivers
        # give last bits that depend on where the arrays sit in memory
        weighted = design / var[:, None]
        normal = design.T @ weighted
        factor = torch.linalg.cholesky(normal)
        self.trend = torch.cholesky_solve((weighted.T @ y)[:, None], factor)[:, 0]
        residual = y - design @ self.trend
        extent = float((x.max(0).values - x.min(0).values).max())
        scale = extent / 5 if length_scale is None else float(length_scale)
        self.kernel = self._fit(x, residual, var, fit_steps, lr, scale)
        self.xy, self.values, self.noise = x, y, torch.diag(var)
        self._correlated: list[int] = []
        self._correlated_variance: float | None = None
        self._factor()

    @staticmethod
    def _fit(x, residual, var, steps, lr, length_scale):
        import pyro
        import pyro.contrib.gp as gp

        spread = float(residual.var()) if residual.numel() > 1 else 0.0
        # parameters local to the modules: nothing read from or left in Pyro's global store
        with pyro.settings.context(module_local_params=True):
            kernel = gp.kernels.Matern32(
                input_dim=2,
                variance=torch.tensor(max(spread, 1e-12), dtype=torch.float64),
                lengthscale=torch.tensor(length_scale, dtype=torch.float64),
            )
            if steps > 0 and spread > 0:
                model = gp.models.GPRegression(
                    x, residual, kernel, noise=var.mean().clone(), jitter=1e-10
                )
                # the noise is the sensors' known variance: only the kernel is fitted
                optimizer = torch.optim.Adam(kernel.parameters(), lr=lr)
                gp.util.train(model, optimizer, num_steps=steps)
        return kernel

    def _k(self, a, b=None, diag=False) -> torch.Tensor:
        """The kernel's matrix, its parameters read from the module (not Pyro's store)."""
        import pyro

        with pyro.settings.context(module_local_params=True), torch.no_grad():
            return self.kernel(a, b, diag=diag)

    def _factor(self) -> None:
        with torch.no_grad():
            gram = self._k(self.xy) + self.noise
            scale = float(gram.diagonal().max())
            # a relative jitter, grown until the factorisation succeeds: points of a smooth
            # (correlated) error field close together make the matrix nearly singular
            for jitter in (1e-12, 1e-10, 1e-8, 1e-6):
                eye = torch.eye(gram.shape[0], dtype=gram.dtype)
                chol, info = torch.linalg.cholesky_ex(gram + jitter * scale * eye)
                if int(info) == 0:
                    break
            else:
                raise ValueError("the interface GP's covariance is not positive definite")
            self._chol = chol
            residual = self.values - self._design(self.xy) @ self.trend
            self._alpha = torch.cholesky_solve(residual[:, None], self._chol)[:, 0]

    @staticmethod
    def _design(xy: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.ones(xy.shape[0], 1, dtype=torch.float64), xy], dim=1)

    @property
    def num_points(self) -> int:
        """Observations conditioned on (sensors and added interface points)."""
        return int(self.xy.shape[0])

    @property
    def length_scale(self) -> float:
        import pyro

        with pyro.settings.context(module_local_params=True):
            return float(self.kernel.lengthscale.detach())

    @property
    def kernel_variance(self) -> float:
        import pyro

        with pyro.settings.context(module_local_params=True):
            return float(self.kernel.variance.detach())

    def with_points(self, xy, values, variance, *, correlated: bool = False) -> InterfaceGP:
        """A copy conditioned on more observations (the kernel and the plane kept).

        Args:
            xy: ``(m, 2)`` their points.
            values: ``(m,)`` their values.
            variance: ``(m,)`` or a scalar, their error variance, ``> 0``.
            correlated: their errors are one smooth field, ``variance`` times the kernel's
                correlation, shared with every point added before with ``correlated=True``
                (the errors of one pilot solve, which averaging many points cannot remove);
                ``variance`` is then one number for all of them. Otherwise independent.
        """
        x = _as64(xy, "xy").reshape(-1, 2)
        m, n0 = x.shape[0], self.num_points
        y = _as64(values, "values", (m,))
        var = _as64(variance, "variance").expand(m)
        if bool((var <= 0).any()):
            raise ValueError(f"observation variances must be > 0, got min {float(var.min())}")
        out = object.__new__(InterfaceGP)
        out.trend, out.kernel = self.trend, self.kernel
        out.xy, out.values = torch.cat([self.xy, x]), torch.cat([self.values, y])
        out.noise = torch.zeros(n0 + m, n0 + m, dtype=torch.float64)
        out.noise[:n0, :n0] = self.noise
        out._correlated, out._correlated_variance = list(self._correlated), None
        if correlated:
            v = float(var[0])
            if bool((var != v).any()) or self._correlated_variance not in (None, v):
                raise ValueError("correlated observations take one variance for all of them")
            out._correlated += list(range(n0, n0 + m))
            out._correlated_variance = v
            idx = torch.tensor(out._correlated)
            rho = out._k(out.xy[idx]) / out.kernel_variance
            out.noise[idx[:, None], idx[None, :]] = v * rho
        else:
            out._correlated_variance = self._correlated_variance
            out.noise[n0:, n0:] = torch.diag(var)
        out._factor()
        return out

    def predict(self, xy, full_cov: bool = True):
        """``(mean (n,), covariance (n, n))`` (or the variances ``(n,)`` with
        ``full_cov=False``) of the pressure at the points ``xy``, float64."""
        x = _as64(xy, "xy").reshape(-1, 2)
        with torch.no_grad():
            cross = self._k(x, self.xy)
            mean = self._design(x) @ self.trend + cross @ self._alpha
            half = torch.linalg.solve_triangular(self._chol, cross.T, upper=False)
            if full_cov:
                cov = self._k(x) - half.T @ half
                return mean, 0.5 * (cov + cov.T)
            var = self._k(x, diag=True) - (half**2).sum(0)
            return mean, var.clamp_min(0.0)


def refine_interfaces(
    gp: InterfaceGP,
    candidates,
    values,
    variance,
    *,
    target_variance: float,
    max_points: int,
    correlated: bool = False,
) -> tuple[InterfaceGP, list[int], list[float]]:
    """Active learning of the interface pressure: add the candidate of largest predictive
    variance, with its value, until the largest variance is under ``target_variance`` or
    ``max_points`` have been added.

    Args:
        gp: the model fitted to the sensors.
        candidates: ``(n, 2)`` the interface points.
        values: ``(n,)`` the pressure a global solve gives there.
        variance: ``(n,)`` or a scalar, the variance of those values as observations, ``> 0``.
        target_variance: stop when every candidate's predictive variance is below it.
        max_points: the most points added.
        correlated: the values' errors are one smooth field (`InterfaceGP.with_points`).

    Returns:
        ``(refined model, indices added, largest variance before each addition and at the
        end)``.
    """
    x = _as64(candidates, "candidates").reshape(-1, 2)
    y = _as64(values, "values", (x.shape[0],))
    var = _as64(variance, "variance").expand(x.shape[0])
    if not (isinstance(target_variance, float | int) and math.isfinite(target_variance)):
        raise ValueError(f"target_variance must be a finite number, got {target_variance!r}")
    added: list[int] = []
    history: list[float] = []
    while True:
        _, pv = gp.predict(x, full_cov=False)
        worst = int(torch.argmax(pv))
        history.append(float(pv[worst]))
        if pv[worst] < target_variance or len(added) >= max_points:
            return gp, added, history
        gp = gp.with_points(
            x[worst : worst + 1], y[worst : worst + 1], var[worst : worst + 1],
            correlated=correlated,
        )  # fmt: skip
        added.append(worst)
