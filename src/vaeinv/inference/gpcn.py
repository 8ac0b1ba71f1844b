"""Generalized pCN (gpCN): pCN proposals around a Gaussian (Laplace) approximation of the posterior.

Plain pCN proposes moves that leave the prior ``N(0, I)`` invariant; when the data are informative
the posterior is far narrower than the prior in a few directions and the step size collapses.
gpCN (Rudolf & Sprungk 2018, *Found. Comput. Math.* 18; Pinski, Simpson, Stuart & Weber 2015)
uses the same autoregressive move around a Gaussian ``N(m, C)`` close to the posterior,

    z' = m + rho (z - m) + beta L xi,    rho = sqrt(1 - beta^2),  L L^T = C,  xi ~ N(0, I),

which is reversible with respect to ``N(m, C)``; the Metropolis-Hastings ratio is therefore

    log alpha = [log pi(z') - log N(z'; m, C)] - [log pi(z) - log N(z; m, C)],

with ``pi`` the posterior density (``log_prior + log_likelihood``). It is exact for any ``m`` and
any positive definite ``C``; the closer ``N(m, C)`` is to the posterior, the larger the steps
(``beta = 1`` is an independence sampler, exact draws when the posterior is Gaussian).

[`laplace_approximation`][vaeinv.inference.gpcn.laplace_approximation] builds ``N(m, C)``: ``m``
the best MAP estimate over several starts (Adam, then a few Gauss-Newton steps with a batched
backtracking line search), ``C = H^-1`` with the Gauss-Newton Hessian
``H = J^T diag(1 / noise_std^2) J + I`` (``J = d predict / d z`` at ``m``, one reverse pass per
datum; the Darcy adjoint is first-order only, so no second derivatives are used).

[`gpcn_init`][vaeinv.inference.gpcn.gpcn_init] and [`gpcn_step`][vaeinv.inference.gpcn.gpcn_step]
mirror [`pcn_init`][vaeinv.inference.pcn.pcn_init] / [`pcn_step`][vaeinv.inference.pcn.pcn_step]:
one batched ``posterior.predict`` per step, the same [`PCNInfo`][vaeinv.inference.pcn.PCNInfo],
the same Robbins-Monro adaptation of ``log beta`` (and
[`freeze_adaptation`][vaeinv.inference.pcn.freeze_adaptation] works on a
[`GPCNState`][vaeinv.inference.gpcn.GPCNState]), random numbers drawn in a fixed order (``xi``
then ``u``) so that a resumed run is bit-identical, and a failed prediction counted as a
rejection.

Where gpCN works well, and where not. The ratio ``pi / N(m, C)`` should stay bounded: the
posterior's tails no heavier than the reference's. A forward map that grows at least linearly
in the informed directions gives that; a saturating one (a likelihood that flattens far from the
data, so prior-like tails in directions where ``C`` is much narrower than the prior) does not,
and then gpCN, still exact, under-visits those tails for a very long time while its ESS
estimate looks fine. Start the chains at draws of the approximation
([`LaplaceApproximation.sample`][vaeinv.inference.gpcn.LaplaceApproximation.sample]), not at
over-dispersed prior draws: far out, ``-log N(z; m, C)`` is huge, the chain's weight
``pi / N(m, C)`` too, and a chain started there can take very long to come in. ``inflation``
(``C`` scaled by 1.2-1.5) makes the reference's tails heavier at a small cost in acceptance.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from ..physics.darcy import SolverError, SolverWarning
from .pcn import (
    ADAPT_GAIN_EXPONENT,
    AVERAGE_EXPONENT,
    MIN_LOG_STEP_SIZE,
    PCNInfo,
    _evaluate,
    freeze_adaptation,
)

__all__ = [
    "GPCNState",
    "LaplaceApproximation",
    "freeze_adaptation",
    "gpcn_init",
    "gpcn_step",
    "laplace_approximation",
]

_LOG_2PI = math.log(2.0 * math.pi)
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


class GPCNState(NamedTuple):
    """The state of ``C`` gpCN chains (immutable; every tensor on the posterior's device).

    Attributes:
        z: ``(C, d)`` float64 current latents.
        log_likelihood: ``(C,)`` float64 cached log-likelihood (``-inf`` for a failed start).
        prediction: ``(C, m)`` float64 cached ``posterior.predict(z)``.
        log_step_size: ``(C,)`` float64 ``log beta`` of the next step, ``<= 0``.
        adapt_count: ``()`` int64 adaptation steps taken so far.
        log_step_avg: ``(C,)`` float64 averaged ``log beta``, used once frozen.
        log_weight: ``(C,)`` float64 cached ``log pi(z) - log N(z; mean, C)`` (``-inf`` for a
            failed start).
        mean: ``(d,)`` float64 centre ``m`` of the proposal (shared by all chains).
        scale_tril: ``(d, d)`` float64 lower-triangular ``L`` of the proposal (shared).
    """

    z: torch.Tensor
    log_likelihood: torch.Tensor
    prediction: torch.Tensor
    log_step_size: torch.Tensor
    adapt_count: torch.Tensor
    log_step_avg: torch.Tensor
    log_weight: torch.Tensor
    mean: torch.Tensor
    scale_tril: torch.Tensor


# ---------------------------------------------------------------------------- Laplace
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
    _, log_likelihood = _evaluate(posterior, z)
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
        posterior: a [`Posterior`][vaeinv.inference.posterior.Posterior] (``predict``,
            ``log_prior``, ``log_likelihood_of``, ``noise_std``, differentiable in ``z``).
        z_starts: ``(S, d)`` (or ``(d,)``) starting latents, e.g. prior draws.
        steps: Adam iterations (``0``: start the Gauss-Newton steps from the best start).
        lr: Adam learning rate, ``> 0``.
        newton_steps: Gauss-Newton refinements of the best point (``0``: none).
        tolerance: stop the refinement when ``max |step| < tolerance``.

    Returns:
        The [`LaplaceApproximation`][vaeinv.inference.gpcn.LaplaceApproximation], with the
        forward solves and reverse passes it spent.

    Raises:
        ValueError: bad ``z_starts`` shape, ``steps``, ``lr``, ``newton_steps`` or
            ``tolerance``; every start failed; a non-finite Jacobian at the MAP.
    """
    d = posterior.latent_dim
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


# ---------------------------------------------------------------------------- gpCN
def _log_reference(z: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """``log N(z; mean, L L^T)`` for ``z (C, d)``: ``(C,)``."""
    w = torch.linalg.solve_triangular(scale_tril, (z - mean).T, upper=False)
    d = z.shape[-1]
    log_det = scale_tril.diagonal().log().sum()
    return -0.5 * (w * w).sum(0) - log_det - 0.5 * d * _LOG_2PI


def _log_weight(posterior, z, log_likelihood, mean, scale_tril) -> torch.Tensor:
    weight = posterior.log_prior(z) + log_likelihood - _log_reference(z, mean, scale_tril)
    return torch.where(torch.isnan(weight), torch.full_like(weight, -math.inf), weight)


def gpcn_init(
    posterior,
    z0: torch.Tensor,
    laplace,
    step_size: float | torch.Tensor = 0.5,
    *,
    inflation: float = 1.0,
) -> GPCNState:
    """Start ``C`` gpCN chains at ``z0`` around the Gaussian ``laplace`` (one batched prediction).

    Args:
        posterior: a [`Posterior`][vaeinv.inference.posterior.Posterior] (``latent_dim``,
            ``num_data``, ``device``, ``predict``, ``log_prior``, ``log_likelihood_of``).
        z0: ``(C, d)`` finite initial latents.
        laplace: the proposal's Gaussian: a
            [`LaplaceApproximation`][vaeinv.inference.gpcn.LaplaceApproximation], or any object
            with ``mean (d,)`` and lower-triangular ``scale_tril (d, d)`` (positive diagonal).
        step_size: initial ``beta`` in ``(0, 1]``: a number or a ``(C,)`` tensor.
        inflation: the proposal covariance is ``inflation * L L^T`` (``> 0``; values a little
            above 1 make the proposal more robust to a too narrow approximation).

    Returns:
        The initial [`GPCNState`][vaeinv.inference.gpcn.GPCNState].

    Raises:
        ValueError: bad ``z0``, ``step_size``, ``inflation``, or a ``laplace`` whose mean or
            scale is of the wrong shape, not finite, not lower triangular or not positive on the
            diagonal.
    """
    d = posterior.latent_dim
    if not isinstance(z0, torch.Tensor) or z0.dim() != 2 or z0.shape[0] < 1 or z0.shape[1] != d:
        got = tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__
        raise ValueError(f"z0 has shape {got}, expected (num_chains, {d}) with num_chains >= 1")
    z = z0.detach().to(device=posterior.device, dtype=torch.float64)
    if not torch.isfinite(z).all():
        bad = tuple(int(i) for i in torch.nonzero(~torch.isfinite(z))[0])
        raise ValueError(f"z0 must be finite, got {z[bad].item()} at index {bad}")
    if not (math.isfinite(float(inflation)) and float(inflation) > 0):
        raise ValueError(f"inflation must be positive and finite, got {inflation!r}")
    mean = torch.as_tensor(laplace.mean, dtype=torch.float64).detach().to(posterior.device)
    tril = torch.as_tensor(laplace.scale_tril, dtype=torch.float64).detach().to(posterior.device)
    if mean.shape != (d,) or not bool(torch.isfinite(mean).all()):
        raise ValueError(f"laplace.mean has shape {tuple(mean.shape)}, expected finite ({d},)")
    if tril.shape != (d, d) or not bool(torch.isfinite(tril).all()):
        raise ValueError(
            f"laplace.scale_tril has shape {tuple(tril.shape)}, expected finite ({d}, {d})"
        )
    if not torch.equal(tril, tril.tril()):
        raise ValueError("laplace.scale_tril must be lower triangular (L with L L^T = C)")
    if not bool((tril.diagonal() > 0).all()):
        i = int((tril.diagonal() <= 0).nonzero()[0])
        raise ValueError(
            f"laplace.scale_tril has diagonal entry {float(tril[i, i])} at {i}; expected > 0"
        )
    tril = math.sqrt(float(inflation)) * tril
    num_chains = z.shape[0]
    beta = torch.as_tensor(step_size, dtype=torch.float64).detach().to(posterior.device)
    if beta.dim() == 0:
        beta = beta.expand(num_chains).clone()
    if beta.shape != (num_chains,):
        raise ValueError(
            f"step_size has shape {tuple(beta.shape)}, expected a number or ({num_chains},)"
        )
    if not ((beta > 0) & (beta <= 1)).all():
        bad = beta[~((beta > 0) & (beta <= 1))][0].item()
        raise ValueError(f"step_size (beta) must be in (0, 1], got {bad}")
    prediction, log_likelihood = _evaluate(posterior, z)
    log_likelihood = torch.where(
        torch.isnan(log_likelihood), torch.full_like(log_likelihood, -math.inf), log_likelihood
    )
    log_step = beta.log()
    return GPCNState(
        z=z,
        log_likelihood=log_likelihood,
        prediction=prediction,
        log_step_size=log_step,
        adapt_count=torch.zeros((), dtype=torch.int64, device=z.device),
        log_step_avg=log_step.clone(),
        log_weight=_log_weight(posterior, z, log_likelihood, mean, tril),
        mean=mean,
        scale_tril=tril,
    )


def gpcn_step(
    posterior,
    state: GPCNState,
    generator: torch.Generator,
    *,
    adapt: bool,
    target_accept: float = 0.25,
) -> tuple[GPCNState, PCNInfo]:
    """One gpCN step for every chain: one batched prediction, then accept or reject per chain.

    Args:
        posterior: the posterior the state was initialised with.
        state: the current [`GPCNState`][vaeinv.inference.gpcn.GPCNState].
        generator: the ``torch.Generator`` of every random number (``xi (C, d)`` then
            ``u (C,)``, float64 on its device, moved to the posterior's device).
        adapt: update ``log beta`` (Robbins-Monro, as pCN) and its averaged iterate; after
            warm-up call [`freeze_adaptation`][vaeinv.inference.pcn.freeze_adaptation].
        target_accept: the acceptance probability the adaptation aims at, in ``(0, 1)``.

    Returns:
        ``(new_state, info)``; ``info.acceptance_rate`` is ``min(1, exp(log alpha))`` with the
        gpCN ratio (0 for a failed proposal).

    Raises:
        ValueError: ``target_accept`` outside ``(0, 1)``.
    """
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    z, mean, tril = state.z, state.mean, state.scale_tril
    num_chains, d = z.shape
    xi = torch.randn(
        num_chains, d, generator=generator, dtype=torch.float64, device=generator.device
    ).to(z.device)
    u = torch.rand(
        num_chains, generator=generator, dtype=torch.float64, device=generator.device
    ).to(z.device)
    beta = state.log_step_size.exp()
    rho = torch.sqrt(1.0 - beta * beta)
    proposal = mean + rho[:, None] * (z - mean) + beta[:, None] * (xi @ tril.T)
    prediction, log_likelihood = _evaluate(posterior, proposal)
    log_weight = _log_weight(posterior, proposal, log_likelihood, mean, tril)
    failed = ~(torch.isfinite(prediction).all(-1) & torch.isfinite(log_weight))
    log_ratio = (log_weight - state.log_weight).clamp(max=0.0)
    acceptance = torch.where(failed, torch.zeros_like(log_ratio), log_ratio.exp())
    accepted = u < acceptance
    minus_inf = torch.full_like(log_likelihood, -math.inf)
    log_likelihood = torch.where(failed, minus_inf, log_likelihood)
    log_weight = torch.where(failed, minus_inf, log_weight)

    log_step, adapt_count, log_avg = state.log_step_size, state.adapt_count, state.log_step_avg
    if adapt:
        t1 = (adapt_count + 1).to(torch.float64)
        log_step = (log_step + t1.pow(-ADAPT_GAIN_EXPONENT) * (acceptance - target_accept)).clamp(
            MIN_LOG_STEP_SIZE, 0.0
        )
        log_avg = log_avg + t1.pow(-AVERAGE_EXPONENT) * (log_step - log_avg)
        adapt_count = adapt_count + 1

    keep = accepted[:, None]
    new_state = GPCNState(
        z=torch.where(keep, proposal, z),
        log_likelihood=torch.where(accepted, log_likelihood, state.log_likelihood),
        prediction=torch.where(keep, prediction, state.prediction),
        log_step_size=log_step,
        adapt_count=adapt_count,
        log_step_avg=log_avg,
        log_weight=torch.where(accepted, log_weight, state.log_weight),
        mean=mean,
        scale_tril=tril,
    )
    info = PCNInfo(
        accepted=accepted,
        acceptance_rate=acceptance,
        failed=failed,
        step_size=beta,
        log_likelihood_proposed=log_likelihood,
    )
    return new_state, info
