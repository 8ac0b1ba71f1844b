"""The latent posterior: a standard-normal prior on ``z`` and a Gaussian likelihood of the data.

With ``d = latent_dim`` and ``m = num_data`` sensors,

    log p(z | y) = log N(z; 0, I_d) + log N(y; G(z), diag(sd^2)) + const,
    G(z) = sensors(physics.solve(decode(z))),
    log N(y; G, diag(sd^2)) = -1/2 sum(((G - y) / sd)^2) - sum(log sd) - m/2 log(2 pi).

Prior and likelihood stay separate (pCN needs the likelihood alone). Everything is batched over
leading dimensions of ``z``, differentiable in ``z`` and returned in float64 on the posterior's
device. A prediction with any NaN or infinite entry (a failed solve) has log-likelihood ``-inf``,
never an error, so samplers count it as a rejection or a divergence.

The composition is checked once, when the posterior is built: shapes, grids, data and noise, and
one probe evaluation ``predict(zeros(1, latent_dim))``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Literal

import torch

from ..grid import Grid

__all__ = ["Posterior"]

NoiseKind = Literal["absolute", "relative"]
_NOISE_KINDS = ("absolute", "relative")
_LOG_2PI = math.log(2.0 * math.pi)


class Posterior:
    """The posterior of the latent ``z`` of a prior, given sensor data of Darcy pressures.

    Args:
        prior: a [`Prior`][vaeinv.prior.Prior] or any object with its interface (``latent_dim``,
            ``grid``, ``name``, ``device``, ``decode``, ``to``), e.g. a
            [`GaussianFieldPrior`][vaeinv.inference.gaussian_prior.GaussianFieldPrior].
        physics: a [`DarcyFlow`][vaeinv.physics.DarcyFlow] on the prior's grid.
        sensors: [`PointSensors`][vaeinv.physics.PointSensors] on the same grid.
        data: the observed values, ``(num_sensors,)``, finite.
        noise: the noise standard deviation: a scalar or one value per sensor; with
            ``noise_kind="relative"``, a fraction of each observed value (``sd = noise * |data|``,
            as in the MDGM benchmark).
        noise_kind: ``"absolute"`` or ``"relative"``.
        truth: the true ``log_k`` ``(ny, nx)`` when known (for reporting errors).

    Attributes:
        latent_dim: the number of latents ``d``.
        num_data: the number of observations ``m``.
        data: ``(m,)`` float64 on ``device``.
        noise_std: ``(m,)`` float64 on ``device``: the resolved absolute standard deviations.
        prior: the prior (``None`` for a posterior made by
            [`from_callables`][vaeinv.inference.posterior.Posterior.from_callables]).
        physics: the flow model (``None`` from ``from_callables``).
        sensors: the observation operator (``None`` from ``from_callables``).
        grid: the grid of the fields (``None`` when unknown).
        field_shape: the trailing shape of one decoded field.
        truth: the true ``log_k`` (float64 on ``device``) or ``None``.
        name: the prior's name, or ``"custom"``.
        device: where every evaluation happens (the prior's device).

    Raises:
        ValueError: data not 1-D, not finite, or not one value per sensor; a noise standard
            deviation that is not positive and finite (the sensor named); an unknown
            ``noise_kind``; grids that differ; a bad ``latent_dim``; a truth that does not fit
            the grid; a probe evaluation that fails or gives a prediction of the wrong shape.
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
        grid = getattr(physics, "grid", None)
        for part, label in ((prior, "prior"), (sensors, "sensors")):
            other = getattr(part, "grid", None)
            if other != grid:
                raise ValueError(
                    f"the {label} grid {other} differs from the physics grid {grid}; "
                    "prior, physics and sensors must share one grid"
                )
        num_sensors = sensors.num_sensors
        self._setup(
            latent_dim=getattr(prior, "latent_dim", None),
            data=data,
            noise=noise,
            noise_kind=noise_kind,
            device=prior.device,
            expected_num_data=(num_sensors, "the number of sensors"),
        )
        self.prior = prior
        self.physics = physics
        self.sensors = sensors
        self.grid = grid
        self.name = str(prior.name) if getattr(prior, "name", None) is not None else "custom"
        self._decode_fn: Callable | None = None
        self._forward_fn: Callable | None = None
        self.field_shape = grid.shape
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
        """A posterior from plain functions, e.g. a linear-Gaussian test problem.

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
        self = cls.__new__(cls)
        device = data.device if isinstance(data, torch.Tensor) else torch.device("cpu")
        self._setup(
            latent_dim=latent_dim,
            data=data,
            noise=noise_std,
            noise_kind=noise_kind,
            device=device,
            expected_num_data=None,
        )
        self.prior = None
        self.physics = None
        self.sensors = None
        self.grid = grid
        self.name = "custom" if name is None else str(name)
        self._decode_fn = decode
        self._forward_fn = forward
        self.field_shape = None if grid is None else grid.shape
        self._probe()
        self.truth = self._check_truth(truth)
        return self

    # ------------------------------------------------------------------ construction checks
    def _setup(self, *, latent_dim, data, noise, noise_kind, device, expected_num_data) -> None:
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        if noise_kind not in _NOISE_KINDS:
            raise ValueError(
                f"unknown noise_kind {noise_kind!r}; expected one of {', '.join(_NOISE_KINDS)}"
            )
        self.latent_dim = latent_dim
        self.noise_kind = noise_kind
        self.device = torch.device(device)
        y = torch.as_tensor(data, dtype=torch.float64).detach().to(self.device)
        if y.dim() != 1 or y.numel() < 1:
            raise ValueError(f"data must be 1-D (num_data,), got shape {tuple(y.shape)}")
        bad = (~torch.isfinite(y)).nonzero().flatten()
        if bad.numel():
            i = int(bad[0])
            raise ValueError(
                f"data has {bad.numel()} non-finite value(s), the first at index {i} "
                f"({float(y[i])}); expected finite observations"
            )
        if expected_num_data is not None and y.numel() != expected_num_data[0]:
            raise ValueError(
                f"data has {y.numel()} values but {expected_num_data[1]} is "
                f"{expected_num_data[0]}; expected one value per sensor"
            )
        self.data = y
        self.num_data = y.numel()
        self.noise_std = _resolve_noise(noise, noise_kind, y)
        self._log_norm = -(torch.log(self.noise_std) + 0.5 * _LOG_2PI)  # (m,)

    def _probe(self) -> None:
        z0 = torch.zeros(1, self.latent_dim, dtype=torch.float64, device=self.device)
        try:
            with torch.no_grad():
                field = self._decode_flat(z0)
                if self.field_shape is None:
                    self.field_shape = tuple(field.shape[1:])
                elif field.dim() < 1 or tuple(field.shape[1:]) != tuple(self.field_shape):
                    raise ValueError(
                        f"decode gave shape {tuple(field.shape)} for z of shape (1, "
                        f"{self.latent_dim}), expected (1, *{tuple(self.field_shape)})"
                    )
                pred = self._forward_flat(field)
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

    def _decode_flat(self, z: torch.Tensor) -> torch.Tensor:
        if self.prior is not None:
            return self.prior.decode(z)
        return self._decode_fn(z.to(torch.float64))

    def _forward_flat(self, field: torch.Tensor) -> torch.Tensor:
        if self.physics is not None:
            # the solver works in float64 anyway: feeding it float64 keeps the pressures exact
            return self.sensors(self.physics.solve(field.to(torch.float64)))
        return self._forward_fn(field)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z (..., latent_dim) -> field (..., *field_shape)``, in the prior's dtype.

        Raises:
            ValueError: ``z`` not a floating tensor ending in ``latent_dim``.
        """
        z = self._check_z(z)
        lead = z.shape[:-1]
        field = self._decode_flat(z.reshape(-1, self.latent_dim))
        return field.reshape(*lead, *self.field_shape)

    def forward(self, field: torch.Tensor) -> torch.Tensor:
        """``field (..., *field_shape) -> prediction (..., m)``, float64 (the sensor readings
        of the solved pressure)."""
        n = len(self.field_shape)
        if not isinstance(field, torch.Tensor) or tuple(field.shape[field.dim() - n :]) != tuple(
            self.field_shape
        ):
            got = tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__
            raise ValueError(f"field has shape {got}, expected (..., *{tuple(self.field_shape)})")
        lead = field.shape[: field.dim() - n]
        flat = field.to(self.device).reshape(-1, *self.field_shape)
        pred = self._forward_flat(flat)
        return pred.reshape(*lead, self.num_data).to(torch.float64)

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """``forward(decode(z))``: ``(..., m)`` float64."""
        return self.forward(self.decode(z))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, I)`` with its constant: ``(...)`` float64."""
        z = self._check_z(z).to(torch.float64)
        return -0.5 * (z * z).sum(-1) - 0.5 * self.latent_dim * _LOG_2PI

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

    def to(self, device: str | torch.device) -> Posterior:
        """A posterior on ``device``: the prior (``prior.to``, in place for a
        [`Prior`][vaeinv.prior.Prior]), data, noise and truth moved. Nothing is re-checked."""
        device = torch.device(device)
        out = copy.copy(self)
        if self.prior is not None:
            out.prior = self.prior.to(device)
            out.device = out.prior.device
        else:
            out.device = device
        out.data = self.data.to(out.device)
        out.noise_std = self.noise_std.to(out.device)
        out._log_norm = self._log_norm.to(out.device)
        out.truth = None if self.truth is None else self.truth.to(out.device)
        return out


def _resolve_noise(noise, noise_kind: str, data: torch.Tensor) -> torch.Tensor:
    """The absolute standard deviation per datum, ``(m,)`` float64, checked positive and finite."""
    m = data.numel()
    try:
        value = torch.as_tensor(noise, dtype=torch.float64).detach().to(data.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"noise must be a number or one per sensor, got {noise!r}") from err
    if value.dim() > 1 or (value.dim() == 1 and value.numel() != m):
        raise ValueError(
            f"noise has shape {tuple(value.shape)}, expected a scalar or ({m},) (one per sensor)"
        )
    sd = value.expand(m).clone()
    if noise_kind == "relative":
        sd = sd * data.abs()
    bad = (~(torch.isfinite(sd) & (sd > 0))).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        what = (
            f"noise fraction {float(value.expand(m)[i])} of |data| = {float(data[i].abs())}"
            if noise_kind == "relative"
            else f"noise {float(sd[i])}"
        )
        raise ValueError(
            f"noise standard deviation of sensor {i} is {float(sd[i])} ({what}); "
            f"expected positive and finite ({bad.numel()} sensor(s) affected)"
        )
    return sd
