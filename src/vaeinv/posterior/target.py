"""The latent posterior, the sampling target: a prior on ``z``, a forward model and a Gaussian
likelihood of the data.

With ``d = latent_dim`` and ``m = num_data`` data,

    log p(z | y) = log_prior(z) + log N(y; G(z), diag(sd^2)) + const,
    G(z) = forward(decode(z)),
    log N(y; G, diag(sd^2)) = -1/2 sum(((G - y) / sd)^2) - sum(log sd) - m/2 log(2 pi),

``log_prior`` the prior's own (``log N(z; 0, I)`` for the shipped priors). Prior and likelihood
stay separate (pCN needs the likelihood alone). Everything is batched over leading dimensions
of ``z``, differentiable in ``z`` and returned in float64 on the posterior's device. A
prediction with any NaN or infinite entry (a failed solve) has log-likelihood ``-inf``, never an
error, so samplers count it as a rejection or a divergence.

Samplers evaluate the posterior through [`evaluate`][vaeinv.posterior.target.Posterior.evaluate]
(and Pyro through [`potential`][vaeinv.posterior.target.Posterior.potential]): one place that
silences the solver's warnings, turns a failed solve into a rejected point, and counts the
forward solves and gradients in [`work`][vaeinv.posterior.evaluation.Work].

The composition is checked once, when the posterior is built: shapes, grids, data and noise, and
one probe evaluation ``predict(zeros(1, latent_dim))``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Literal

import torch

from ..grid import Grid
from ..physics.base import CallableForward, SensorReadings
from ..physics.darcy import SolverError, SolverWarning
from ..priors.base import CallablePrior
from .evaluation import Evaluation, Work
from .noise import NOISE_KINDS, check_data, resolve_noise

__all__ = ["Evaluation", "Posterior", "Work"]

NoiseKind = Literal["absolute", "relative"]
_LOG_2PI = math.log(2.0 * math.pi)
#: what a solver raises for a field it cannot solve: a rejected point, not an error.
_FAILURES = (SolverError, torch.linalg.LinAlgError)


class Posterior:
    """The posterior of the latent ``z`` of a prior, given data predicted by a forward model.

    ``Posterior(prior, physics, sensors, data, noise)`` reads Darcy pressures at sensors;
    ``Posterior(prior, forward, None, data, noise)`` takes any forward model ``log_k ->
    predictions`` (see `vaeinv.physics.base`).

    Args:
        prior: a prior (see `vaeinv.priors.base`: ``latent_dim``, ``grid``, ``decode``,
            ``log_prior``, ``device``), e.g. [`Prior`][vaeinv.priors.vae.Prior] or
            [`GaussianFieldPrior`][vaeinv.priors.gaussian_field.GaussianFieldPrior].
        physics: a [`DarcyFlow`][vaeinv.physics.darcy.DarcyFlow] on the prior's grid, or (with
            ``sensors=None``) a forward model.
        sensors: [`PointSensors`][vaeinv.physics.sensors.PointSensors] on the same grid, or
            ``None``.
        data: the observed values, ``(num_data,)``, finite.
        noise: the noise standard deviation: a scalar or one value per datum; with
            ``noise_kind="relative"``, a fraction of each observed value (``sd = noise * |data|``,
            as in the MDGM benchmark).
        noise_kind: ``"absolute"`` or ``"relative"``.
        truth: the true ``log_k`` when known (for reporting errors).

    Attributes:
        latent_dim: the number of latents ``d``.
        num_data: the number of observations ``m``.
        data: ``(m,)`` float64 on ``device``.
        noise_std: ``(m,)`` float64 on ``device``: the resolved absolute standard deviations.
        prior: the prior.
        forward_model: the forward model (``log_k -> predictions``).
        physics, sensors: the solver and the sensors of a Darcy posterior (else ``None``).
        grid: the grid of the fields (``None`` when unknown).
        field_shape: the trailing shape of one decoded field.
        truth: the true ``log_k`` (float64 on ``device``) or ``None``.
        name: the prior's name, or ``"custom"``.
        device: where every evaluation happens (the prior's device).
        work: the [`Work`][vaeinv.posterior.evaluation.Work] counted by ``evaluate``.

    Raises:
        ValueError: data not 1-D, not finite, or not one value per datum; a noise standard
            deviation that is not positive and finite (the datum named); an unknown
            ``noise_kind``; grids that differ; a bad ``latent_dim``; a prior without
            ``log_prior``; a truth that does not fit the grid; a probe evaluation that fails or
            gives a prediction of the wrong shape.
    """

    def __init__(
        self,
        prior,
        physics,
        sensors,
        data,
        noise,
        *,
        noise_kind: NoiseKind = "absolute",
        truth=None,
    ) -> None:
        forward = physics if sensors is None else SensorReadings(physics, sensors)
        grid = getattr(forward, "grid", None)
        prior_grid = getattr(prior, "grid", None)
        if grid is not None and prior_grid != grid:
            raise ValueError(
                f"the prior grid {prior_grid} differs from the physics grid {grid}; "
                "prior, physics and sensors must share one grid"
            )
        latent_dim = getattr(prior, "latent_dim", None)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if not callable(getattr(prior, "log_prior", None)):
            raise ValueError(
                f"the prior {prior!r} has no log_prior(z); subclass vaeinv.priors.LatentPrior "
                "for a standard-normal latent, or define it"
            )
        if noise_kind not in NOISE_KINDS:
            raise ValueError(
                f"unknown noise_kind {noise_kind!r}; expected one of {', '.join(NOISE_KINDS)}"
            )
        self.prior = prior
        self.forward_model = forward
        self.physics = getattr(forward, "physics", None)
        self.sensors = getattr(forward, "sensors", None)
        self.latent_dim = latent_dim
        self.noise_kind = noise_kind
        self.device = torch.device(prior.device)
        self.grid = prior_grid if grid is None else grid
        self.name = str(prior.name) if getattr(prior, "name", None) is not None else "custom"
        self.data = check_data(data, self.device, getattr(forward, "num_outputs", None))
        self.num_data = self.data.numel()
        self.noise_std = resolve_noise(noise, noise_kind, self.data)
        self._log_norm = -(torch.log(self.noise_std) + 0.5 * _LOG_2PI)  # (m,)
        self._cost = getattr(forward, "cost", 1)
        self.work = Work()
        self.field_shape = None if self.grid is None else self.grid.shape
        self._probe()
        self.truth = self._check_truth(truth)

    @classmethod
    def from_callables(
        cls,
        decode: Callable[[torch.Tensor], torch.Tensor],
        forward: Callable[[torch.Tensor], torch.Tensor],
        data,
        noise_std,
        latent_dim: int,
        *,
        noise_kind: NoiseKind = "absolute",
        grid: Grid | None = None,
        name: str | None = None,
        truth=None,
    ) -> Posterior:
        """A posterior from plain functions over a standard-normal latent, e.g. a
        linear-Gaussian test problem.

        Leading dimensions are flattened before the callables see them: ``decode`` receives
        float64 ``(B, latent_dim)`` and returns ``(B, *field_shape)``; ``forward`` receives
        ``(B, *field_shape)`` and returns ``(B, m)``. Both must be differentiable for
        gradient-based samplers. The device is the device of ``data`` (CPU for non-tensors);
        ``to(device)`` moves the data only, so the callables must follow their inputs' device.

        Args:
            decode: ``z -> field``.
            forward: ``field -> prediction``.
            data: ``(m,)`` observations.
            noise_std: scalar or ``(m,)`` noise (see the class; ``noise_kind`` likewise).
            latent_dim: the dimension of ``z``, a positive integer.
            noise_kind: ``"absolute"`` or ``"relative"``.
            grid: the grid of the fields, when they are fields on one (checked by the probe).
            name: a label (default ``"custom"``).
            truth: the true field, shaped like one decoded field.

        Raises:
            ValueError: as for the class.
        """
        device = data.device if isinstance(data, torch.Tensor) else torch.device("cpu")
        prior = CallablePrior(decode, latent_dim, grid, name, device)
        model = CallableForward(forward, grid)
        return cls(prior, model, None, data, noise_std, noise_kind=noise_kind, truth=truth)

    # ------------------------------------------------------------------ construction checks
    def _probe(self) -> None:
        z0 = torch.zeros(1, self.latent_dim, dtype=torch.float64, device=self.device)
        try:
            with torch.no_grad():
                field = self.prior.decode(z0)
                if self.field_shape is None:
                    self.field_shape = tuple(field.shape[1:])
                elif field.dim() < 1 or tuple(field.shape[1:]) != tuple(self.field_shape):
                    raise ValueError(
                        f"decode gave shape {tuple(field.shape)} for z of shape (1, "
                        f"{self.latent_dim}), expected (1, *{tuple(self.field_shape)})"
                    )
                pred = self.forward_model(field)
        except Exception as err:
            raise ValueError(
                f"the probe evaluation predict(zeros(1, {self.latent_dim})) of {self.name!r} "
                f"failed: {type(err).__name__}: {err}"
            ) from err
        if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != (1, self.num_data):
            got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
            raise ValueError(
                f"the probe evaluation predict(zeros(1, {self.latent_dim})) gave shape {got}, "
                f"expected (1, {self.num_data}) (one value per datum)"
            )

    def _check_truth(self, truth) -> torch.Tensor | None:
        if truth is None:
            return None
        t = torch.as_tensor(truth, dtype=torch.float64).detach().to(self.device)
        if tuple(t.shape) != tuple(self.field_shape):
            raise ValueError(
                f"truth has shape {tuple(t.shape)}, expected {tuple(self.field_shape)}"
                + (f" for {self.grid}" if self.grid is not None else "")
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError("truth has non-finite values; expected a finite log_k field")
        return t

    # ------------------------------------------------------------------ evaluation
    def __repr__(self) -> str:
        return (
            f"Posterior(name={self.name!r}, latent_dim={self.latent_dim}, "
            f"num_data={self.num_data}, noise_kind={self.noise_kind!r}, device={self.device})"
        )

    def _check_z(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"latent z has shape {got}, expected (..., {self.latent_dim})")
        if not z.is_floating_point():
            raise ValueError(f"latent z must be floating point, got dtype {z.dtype}")
        return z.to(self.device)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z (..., latent_dim) -> field (..., *field_shape)``, in the prior's dtype.

        Raises:
            ValueError: ``z`` not a floating tensor ending in ``latent_dim``.
        """
        z = self._check_z(z)
        lead = z.shape[:-1]
        field = self.prior.decode(z.reshape(-1, self.latent_dim))
        return field.reshape(*lead, *self.field_shape)

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        """``field (..., *field_shape) -> prediction (..., m)``, float64."""
        n = len(self.field_shape)
        if not isinstance(field, torch.Tensor) or tuple(field.shape[field.dim() - n :]) != tuple(
            self.field_shape
        ):
            got = tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
            raise ValueError(f"field has shape {got}, expected (..., *{tuple(self.field_shape)})")
        lead = field.shape[: field.dim() - n]
        flat = field.to(self.device).reshape(-1, *self.field_shape)
        pred = self.forward_model(flat)
        return pred.reshape(*lead, self.num_data).to(torch.float64)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """``forward(decode(z))``: ``(..., m)`` float64."""
        return self.forward(self.decode(z))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """The prior's ``log_prior(z)``: ``(...)`` float64."""
        return self.prior.log_prior(self._check_z(z).to(torch.float64)).to(torch.float64)

    def log_likelihood_of(self, prediction: torch.Tensor, pointwise: bool = False) -> torch.Tensor:
        """The Gaussian log-likelihood of predictions ``(..., m)``.

        Args:
            prediction: predicted data; cast to float64 on the posterior's device.
            pointwise: return the per-datum terms ``(..., m)`` instead of their sum ``(...)``.

        Returns:
            float64; ``-inf`` for a row (and each of its pointwise terms) with any NaN or
            infinite prediction. Such rows get a zero (not NaN) gradient from this function.

        Raises:
            ValueError: a last dimension other than ``num_data``.
        """
        if not isinstance(prediction, torch.Tensor) or prediction.dim() < 1:
            got = type(prediction).__name__
            raise ValueError(f"prediction must be a tensor (..., {self.num_data}), got {got}")
        if prediction.shape[-1] != self.num_data:
            raise ValueError(
                f"prediction has shape {tuple(prediction.shape)}, expected (..., {self.num_data})"
            )
        pred = prediction.to(self.device, torch.float64)
        bad = ~torch.isfinite(pred).all(-1, keepdim=True)
        safe = torch.where(bad, self.data, pred)
        r = (safe - self.data) / self.noise_std
        terms = -0.5 * r * r + self._log_norm
        if pointwise:
            return terms.masked_fill(bad, -math.inf)
        return terms.sum(-1).masked_fill(bad[..., 0], -math.inf)

    def log_likelihood(self, z: torch.Tensor, pointwise: bool = False) -> torch.Tensor:
        """``log_likelihood_of(predict(z))``: ``(...)``, or ``(..., m)`` when ``pointwise``."""
        return self.log_likelihood_of(self.predict(z), pointwise=pointwise)

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """The unnormalised log posterior ``log_prior(z) + log_likelihood(z)``: ``(...)``."""
        return self.log_prior(z) + self.log_likelihood(z)

    def evaluate(self, z: torch.Tensor, *, grad: bool = False) -> Evaluation:
        """The posterior at ``z (B, d)`` for a sampler: never raises for a failed solve.

        Without ``grad``: one decode and one solve under ``no_grad``, the decoded field kept.
        With ``grad``: the log density's gradient too (one reverse pass). A solver that raises
        [`SolverError`][vaeinv.physics.darcy.SolverError] (or ``torch.linalg.LinAlgError``)
        fails the whole batch (NaN predictions, ``-inf`` densities, NaN gradients); any other
        exception is a bug and propagates. The work is added to `work`.
        """
        batch = z.shape[0]
        self.work.forward_solves += batch * self._cost
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SolverWarning)
            if grad:
                self.work.gradient_evaluations += batch
                return self._evaluate_with_grad(z)
            return self._evaluate_field(z)

    def _evaluate_field(self, z: torch.Tensor) -> Evaluation:
        with torch.no_grad():
            field = self.decode(z)
            try:
                prediction = self._forward_finite(field)
            except _FAILURES:
                shape = (z.shape[0], self.num_data)
                prediction = torch.full(shape, math.nan, dtype=torch.float64, device=z.device)
            log_likelihood = self.log_likelihood_of(prediction).to(torch.float64)
            log_likelihood = torch.where(torch.isnan(log_likelihood), -math.inf, log_likelihood)
            log_density = self.log_prior(z) + log_likelihood
        return Evaluation(log_density, log_likelihood, prediction, None, field)

    def _forward_finite(self, field: torch.Tensor) -> torch.Tensor:
        """``forward`` (float64) of the rows of ``field (B, ...)`` that are finite (a latent far
        out can decode to inf or NaN); NaN predictions, a failed point, for the others."""
        bad = ~torch.isfinite(field.reshape(field.shape[0], -1)).all(-1)
        if not bool(bad.any()):
            return self.forward(field).to(torch.float64)
        mask = bad.reshape(-1, *([1] * (field.dim() - 1)))
        pred = self.forward(torch.where(mask, torch.zeros_like(field), field)).to(torch.float64)
        return torch.where(bad[:, None], math.nan, pred)

    def _evaluate_with_grad(self, z: torch.Tensor) -> Evaluation:
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            try:
                prediction = self._forward_finite(self.decode(z))
                log_likelihood = self.log_likelihood_of(prediction).to(torch.float64)
                log_density = self.log_prior(z).to(torch.float64) + log_likelihood
                (grad,) = torch.autograd.grad(log_density.sum(), z)
            except _FAILURES:
                c, m = z.shape[0], self.num_data
                nan = torch.full((c, m), math.nan, dtype=torch.float64, device=z.device)
                ninf = torch.full((c,), -math.inf, dtype=torch.float64, device=z.device)
                return Evaluation(
                    ninf, ninf.clone(), nan, torch.full_like(z, math.nan).detach(), None
                )
        log_density = log_density.detach()
        bad = ~torch.isfinite(log_density) | ~torch.isfinite(grad).all(-1)
        log_density = torch.where(bad, -math.inf, log_density)
        return Evaluation(
            log_density, log_likelihood.detach(), prediction.detach(), grad.detach(), None
        )

    def potential(self, z: torch.Tensor) -> torch.Tensor:
        """``-log_density(z)`` with its autograd graph, for samplers that differentiate it
        themselves (Pyro's NUTS): a failed solve gives ``+inf`` (a divergence, not a crash).
        Counted in `work` as one solve and one gradient per latent."""
        batch = 1 if z.dim() == 1 else z.shape[0]
        self.work.forward_solves += batch * self._cost
        self.work.gradient_evaluations += batch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SolverWarning)
            try:
                return -self.log_density(z).to(torch.float64)
            except SolverError:
                return z.sum() * 0.0 + math.inf  # keeps the graph

    def to(self, device: str | torch.device) -> Posterior:
        """A posterior on ``device``: the prior (``prior.to``, in place for a
        [`Prior`][vaeinv.priors.vae.Prior]), data, noise and truth moved. Nothing is re-checked.
        The copy counts its own `work`."""
        out = copy.copy(self)
        out.prior = self.prior.to(torch.device(device))
        out.device = torch.device(out.prior.device)
        out.data = self.data.to(out.device)
        out.noise_std = self.noise_std.to(out.device)
        out._log_norm = self._log_norm.to(out.device)
        out.truth = None if self.truth is None else self.truth.to(out.device)
        out.work = Work()
        return out
