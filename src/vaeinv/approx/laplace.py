"""The Laplace (Gauss-Newton) approximation ``N(m, C)`` of the latent posterior.

[`laplace_approximation`][vaeinv.approx.laplace.laplace_approximation] builds ``N(m, C)``, the
Gaussian that gpCN proposes around and that NUTS may use as its mass matrix: ``m``
the best MAP estimate over several starts (Adam, then a few Gauss-Newton steps with a batched
backtracking line search), ``C = H^-1`` with the Gauss-Newton Hessian
``H = J^T diag(1 / noise_std^2) J + I`` (``J = d predict / d z`` at ``m``, one reverse pass per
datum; the Darcy adjoint is first-order only, so no second derivatives are used).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from ..physics.darcy import SolverError, SolverWarning

__all__ = ["LaplaceApproximation", "laplace_approximation"]

#: Step fractions of the Gauss-Newton line search, evaluated in one batched prediction.
LINE_SEARCH_FRACTIONS = (1.0, 0.5, 0.25, 0.125)
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
#: A start whose Adam learning rate was halved this many times (after failed evaluations) stops.
_MAX_LR_HALVINGS = 10


class LaplaceApproximation(NamedTuple):
    """A Gaussian approximation ``N(mean, scale_tril scale_tril^T)`` of the latent posterior.

    Attributes:
        mean: ``(d,)`` float64, the MAP estimate (best start).
        scale_tril: ``(d, d)`` float64 lower-triangular ``L`` with ``L L^T = C = precision^-1``.
        precision: ``(d, d)`` float64 Gauss-Newton Hessian ``J^T diag(1/sd^2) J + I`` at ``mean``.
        log_density_at_mean: ``()`` float64 ``posterior.log_density(mean)``.
        start_log_density: ``(S,)`` float64 best log density reached from each start (``-inf``
            for a start that never evaluated finitely); far apart values signal several modes.
        jacobian: ``(m, d)`` float64 ``d predict / d z`` at ``mean``.
        num_forward_solves: forward solves spent (every row of every prediction).
        num_gradient_evaluations: reverse passes spent (one per row of a batched gradient,
            one per datum for the Jacobian), each an adjoint solve.
    """

    mean: torch.Tensor
    scale_tril: torch.Tensor
    precision: torch.Tensor
    log_density_at_mean: torch.Tensor
    start_log_density: torch.Tensor
    jacobian: torch.Tensor
    num_forward_solves: int
    num_gradient_evaluations: int

    @property
    def num_evaluations(self) -> int:
        """Forward solves plus reverse passes."""
        return self.num_forward_solves + self.num_gradient_evaluations

    @property
    def covariance(self) -> torch.Tensor:
        """``C = L L^T``, ``(d, d)``."""
        return self.scale_tril @ self.scale_tril.T

    def sample(
        self, num_samples: int, generator: torch.Generator, inflation: float = 1.0
    ) -> torch.Tensor:
        """``num_samples`` draws ``(n, d)`` of ``N(mean, inflation * C)``, e.g. gpCN's initial
        latents (``randn (n, d)`` from ``generator``, float64 on its device, then moved)."""
        _check_int(num_samples, "num_samples", 1)
        xi = torch.randn(
            num_samples,
            self.mean.shape[0],
            generator=generator,
            dtype=torch.float64,
            device=generator.device,
        ).to(self.mean.device)
        return self.mean + math.sqrt(float(inflation)) * xi @ self.scale_tril.T


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class _Counter:
    def __init__(self) -> None:
        self.forward = 0
        self.gradient = 0


def _value_and_grad(posterior, z: torch.Tensor, count: _Counter):
    """Log density ``(S,)`` and its gradient ``(S, d)`` for independent rows; a failed row (or a
    solver error for the batch) gives ``-inf`` and a NaN gradient, never an exception."""
    z = z.detach().clone().requires_grad_(True)
    count.forward += z.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        try:
            prediction = posterior.predict(z).to(torch.float64)
            value = posterior.log_prior(z) + posterior.log_likelihood_of(prediction)
            ok = torch.isfinite(value)
            if bool(ok.any()):
                count.gradient += int(ok.sum())
                (grad,) = torch.autograd.grad(value.masked_fill(~ok, 0.0).sum(), z)
            else:
                grad = torch.zeros_like(z)
        except (SolverError, torch.linalg.LinAlgError):
            return torch.full_like(z[:, 0], -math.inf).detach(), torch.full_like(z, math.nan)
    value = value.detach()
    value = torch.where(torch.isnan(value), torch.full_like(value, -math.inf), value)
    grad = torch.where(torch.isfinite(value)[:, None], grad, torch.full_like(grad, math.nan))
    return value, grad


def _log_density(posterior, z: torch.Tensor, count: _Counter) -> torch.Tensor:
    count.forward += z.shape[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        try:
            prediction = posterior.forward(posterior.decode(z)).to(torch.float64)
        except (SolverError, torch.linalg.LinAlgError):
            prediction = torch.full(
                (z.shape[0], posterior.num_data), math.nan, dtype=torch.float64, device=z.device
            )
        log_likelihood = posterior.log_likelihood_of(prediction).to(torch.float64)
    value = posterior.log_prior(z) + log_likelihood
    return torch.where(torch.isnan(value), torch.full_like(value, -math.inf), value)


def _adam(posterior, z: torch.Tensor, steps: int, lr: float, count: _Counter):
    """Independent Adam ascents of the log density from each row of ``z (S, d)``.

    A row whose evaluation fails goes back to its best point so far, with its moments reset and
    its learning rate halved; a row that never evaluated finitely, or halved too often, stops.
    Returns the best point and value of each row."""
    num_starts = z.shape[0]
    b1, b2 = _ADAM_BETAS
    best_z = z.clone()
    best_value = torch.full((num_starts,), -math.inf, dtype=torch.float64, device=z.device)
    alive = torch.isfinite(z).all(-1)
    m1 = torch.zeros_like(z)
    m2 = torch.zeros_like(z)
    t = torch.zeros(num_starts, dtype=torch.float64, device=z.device)
    rate = torch.full((num_starts,), float(lr), dtype=torch.float64, device=z.device)
    halvings = torch.zeros(num_starts, dtype=torch.int64, device=z.device)
    for _ in range(steps):
        if not bool(alive.any()):
            break
        rows = alive.nonzero().flatten()
        value, grad = _value_and_grad(posterior, z[rows], count)
        good = torch.isfinite(value) & torch.isfinite(grad).all(-1)
        better = good & (value > best_value[rows])
        best_value[rows] = torch.where(better, value, best_value[rows])
        best_z[rows] = torch.where(better[:, None], z[rows], best_z[rows])
        bad_rows = rows[~good]
        if bad_rows.numel():
            never = bad_rows[~torch.isfinite(best_value[bad_rows])]
            alive[never] = False
            halvings[bad_rows] += 1
            alive[bad_rows[halvings[bad_rows] > _MAX_LR_HALVINGS]] = False
            rate[bad_rows] *= 0.5
            z[bad_rows] = best_z[bad_rows]
            m1[bad_rows] = 0.0
            m2[bad_rows] = 0.0
            t[bad_rows] = 0.0
        rows, g = rows[good], -grad[good]  # descend on -log density
        if rows.numel():
            t[rows] += 1
            m1[rows] = b1 * m1[rows] + (1 - b1) * g
            m2[rows] = b2 * m2[rows] + (1 - b2) * g * g
            m_hat = m1[rows] / (1 - b1 ** t[rows])[:, None]
            v_hat = m2[rows] / (1 - b2 ** t[rows])[:, None]
            z[rows] = z[rows] - rate[rows, None] * m_hat / (v_hat.sqrt() + _ADAM_EPS)
    return best_z, best_value


def _jacobian(posterior, z: torch.Tensor, count: _Counter):
    """``(prediction (m,), jacobian (m, d))`` at one point ``z (d,)``: one forward solve and one
    reverse pass per datum through the retained graph."""
    z = z.detach().clone()[None].requires_grad_(True)
    count.forward += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        prediction = posterior.predict(z).to(torch.float64)[0]
        rows = []
        for i in range(prediction.shape[0]):
            count.gradient += 1
            (row,) = torch.autograd.grad(prediction[i], z, retain_graph=i + 1 < prediction.shape[0])
            rows.append(row[0])
    return prediction.detach(), torch.stack(rows)


def _check_arguments(z_starts, d: int, steps, lr, newton_steps, tolerance) -> torch.Tensor:
    """``z_starts`` as ``(S, d)``, every argument checked (the errors of the public function)."""
    if isinstance(z_starts, torch.Tensor) and z_starts.dim() == 1:
        z_starts = z_starts[None]
    if (
        not isinstance(z_starts, torch.Tensor)
        or z_starts.dim() != 2
        or z_starts.shape[0] < 1
        or z_starts.shape[1] != d
    ):
        got = tuple(z_starts.shape) if isinstance(z_starts, torch.Tensor) else type(z_starts)
        raise ValueError(f"z_starts has shape {got}, expected (num_starts, {d}) or ({d},)")
    _check_int(steps, "steps", 0)
    _check_int(newton_steps, "newton_steps", 0)
    if not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    if not (math.isfinite(float(tolerance)) and float(tolerance) >= 0):
        raise ValueError(f"tolerance must be >= 0 and finite, got {tolerance!r}")
    return z_starts


def laplace_approximation(
    posterior,
    z_starts: torch.Tensor,
    *,
    steps: int = 200,
    lr: float = 0.05,
    newton_steps: int = 5,
    tolerance: float = 1e-8,
) -> LaplaceApproximation:
    """A Laplace (Gauss-Newton) approximation of the latent posterior around its best MAP.

    Each start ascends the log density independently (Adam, one batched prediction and one
    batched reverse pass per iteration for all starts), the best point over all starts is
    refined by up to ``newton_steps`` Gauss-Newton steps (each: the Jacobian, then the step
    ``H^-1 grad`` scaled by the first of 1, 1/2, 1/4, 1/8 that increases the density, all four
    evaluated in one batched prediction), and the covariance is the inverse of the Gauss-Newton
    Hessian there. A linear-Gaussian posterior is recovered exactly after one Gauss-Newton step.

    A start with non-finite entries, or whose evaluations fail (NaN prediction, solver error),
    never raises: it backs off (Adam moments reset, learning rate halved) or is dropped.

    Args:
        posterior: a [`Posterior`][vaeinv.posterior.target.Posterior] (``predict``,
            ``log_prior``, ``log_likelihood_of``, ``noise_std``, differentiable in ``z``).
        z_starts: ``(S, d)`` (or ``(d,)``) starting latents, e.g. prior draws.
        steps: Adam iterations (``0``: start the Gauss-Newton steps from the best start).
        lr: Adam learning rate, ``> 0``.
        newton_steps: Gauss-Newton refinements of the best point (``0``: none).
        tolerance: stop the refinement when ``max |step| < tolerance``.

    Returns:
        The [`LaplaceApproximation`][vaeinv.approx.laplace.LaplaceApproximation], with the
        forward solves and reverse passes it spent.

    Raises:
        ValueError: bad ``z_starts`` shape, ``steps``, ``lr``, ``newton_steps`` or
            ``tolerance``; every start failed; a non-finite Jacobian at the MAP.
    """
    d = posterior.latent_dim
    z_starts = _check_arguments(z_starts, d, steps, lr, newton_steps, tolerance)
    count = _Counter()
    z = z_starts.detach().to(device=posterior.device, dtype=torch.float64).clone()
    finite_rows = torch.isfinite(z).all(-1)
    if steps > 0:
        best_z, best_value = _adam(posterior, z, steps, lr, count)
    else:
        best_z = z
        best_value = torch.full((z.shape[0],), -math.inf, dtype=torch.float64, device=z.device)
        if bool(finite_rows.any()):
            best_value[finite_rows] = _log_density(posterior, z[finite_rows], count)
    if not bool(torch.isfinite(best_value).any()):
        raise ValueError(
            f"every one of the {z.shape[0]} start(s) failed (non-finite latents or log density); "
            "expected at least one start where the posterior evaluates finitely"
        )
    best = int(best_value.argmax())
    mean, value = best_z[best].clone(), best_value[best].clone()
    inv_var = posterior.noise_std.to(torch.float64).reciprocal().square()
    eye = torch.eye(d, dtype=torch.float64, device=mean.device)
    fractions = torch.tensor(LINE_SEARCH_FRACTIONS, dtype=torch.float64, device=mean.device)
    for it in range(newton_steps + 1):
        try:
            prediction, jac = _jacobian(posterior, mean, count)
        except (SolverError, torch.linalg.LinAlgError) as err:
            raise ValueError(f"the Jacobian at the MAP estimate failed: {err}") from err
        if not (torch.isfinite(jac).all() and torch.isfinite(prediction).all()):
            raise ValueError(
                "the Jacobian of predict at the MAP estimate is not finite (a failed forward "
                "or adjoint solve); expected a point where the solver converges"
            )
        precision = jac.T @ (inv_var[:, None] * jac) + eye
        precision = 0.5 * (precision + precision.T)
        value = posterior.log_prior(mean) + posterior.log_likelihood_of(prediction)
        if it == newton_steps:
            break
        grad = jac.T @ (inv_var * (posterior.data - prediction)) - mean
        step = torch.cholesky_solve(grad[:, None], torch.linalg.cholesky(precision))[:, 0]
        if float(step.abs().max()) < tolerance:
            break
        trial = mean + fractions[:, None] * step
        trial_value = _log_density(posterior, trial, count)
        improved = (trial_value > value).nonzero().flatten()
        if not improved.numel():
            break
        mean = trial[int(improved[0])]
    chol = torch.linalg.cholesky(precision)
    covariance = torch.cholesky_inverse(chol)
    scale_tril = torch.linalg.cholesky(0.5 * (covariance + covariance.T))
    return LaplaceApproximation(
        mean=mean.detach(),
        scale_tril=scale_tril,
        precision=precision,
        log_density_at_mean=value.detach().reshape(()),
        start_log_density=best_value,
        jacobian=jac,
        num_forward_solves=count.forward,
        num_gradient_evaluations=count.gradient,
    )
