"""One subdomain's inverse problem: its local prior, its Darcy problem with modelled interface
pressures, its sensors, and a likelihood that carries the interface model's uncertainty.

On subdomain ``k`` the local flow keeps the global problem's boundary conditions on the sides
that lie on the global boundary, the restriction of its source and wells, and on each interface
side a Dirichlet pressure: the interface model's predictive mean ``g`` there
([`InterfaceGP`][vaeinv.decomposition.interface.InterfaceGP]). The local sensors are the global
sensors inside the subdomain (overlap included), read in local coordinates (the local grid has
its origin at the subdomain's corner, like the local prior's).

The interface pressure is uncertain, ``N(g, C)``. For a fixed field the pressure is affine in
the boundary data, so the local readings are ``G(k; g') = G(k; g) + H(k) (g' - g)``, with
``H = S A(k)^-1 E T`` (the sensors ``S``, the local system ``A``, the boundary cells ``E`` and
their boundary-face transmissibilities ``T``). Marginalising ``g'`` gives the likelihood

    y ~ N(G(k; g), diag(sd^2) + H C H^T),

exact for that ``k``. ``H`` is evaluated once, at a reference field (the local MAP of a first
pass; the prior mean before), rather than at every step: the interface's weight in the
likelihood is then fixed, and the local posterior a standard one. The correlated covariance is
handled by whitening: with ``L`` its Cholesky factor, ``l = diag(L)`` and ``W = diag(l) L^-1``,
the posterior reads ``W y`` against ``W G`` with noise ``l``, which is the same Gaussian density
(``log det = 2 sum log l``); with ``C = 0``, ``W = I`` and the likelihood is the plain one.
A subdomain with no sensors gets a likelihood that is constant (prior-only).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse.linalg as spla
import torch

from ..grid import Grid
from ..physics.darcy import DarcyFlow
from ..physics.sensors import PointSensors

__all__ = ["LocalReadings", "LocalSpec", "build_local", "interface_sensitivity"]


@dataclass(frozen=True, eq=False)
class LocalSpec:
    """Everything needed to build one subdomain's posterior: plain arrays, so that it travels
    to a worker cheaply.

    Attributes:
        index: the subdomain's number.
        prior: the local prior, or its name or folder (`vaeinv.Prior.load`, in the task).
        grid: ``(nx, ny, lx, ly)`` of the local grid (origin at 0).
        dirichlet: ``{side: (n,) pressures}``: the global boundary's and the interfaces'.
        interfaces: the interface sides, in the order of `vaeinv.grid.SIDES`.
        source: ``(ny, nx)`` the source per unit area (wells included).
        sensor_xy: ``(m, 2)`` the local sensors, local coordinates.
        data: ``(m,)`` their observations.
        noise_std: ``(m,)`` their noise.
        interface_cov: ``(q, q)`` the interface model's covariance over the interface values
            (the sides in order, each along its cells).
        sensitivity: ``(m, q)`` ``H``: the readings' derivative in the interface values.
        solver: the Darcy solver's name.
        truth: the true local field, if known.
        whitener: ``(W, l, W y)`` of the likelihood covariance (`whitening`; ``None``
            without sensors), computed when the spec is made and carried with it, so that
            every process that builds the posterior reads the same numbers (LAPACK's last
            bits depend on its threads).
    """

    index: int
    prior: object
    grid: tuple[int, int, float, float]
    dirichlet: dict
    interfaces: tuple[str, ...]
    source: np.ndarray
    sensor_xy: np.ndarray
    data: np.ndarray
    noise_std: np.ndarray
    interface_cov: np.ndarray
    sensitivity: np.ndarray
    solver: str = "auto"
    truth: np.ndarray | None = field(default=None)
    whitener: tuple | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.num_sensors:
            w, scale = whitening(self.likelihood_covariance())
            object.__setattr__(self, "whitener", (w, scale, w @ self.data))

    @property
    def num_sensors(self) -> int:
        return int(self.data.shape[0])

    def local_grid(self) -> Grid:
        nx, ny, lx, ly = self.grid
        return Grid(nx, ny, lx=lx, ly=ly)

    def flow(self) -> DarcyFlow:
        return DarcyFlow(self.local_grid(), self.dirichlet, self.source, solver=self.solver)

    def likelihood_covariance(self) -> np.ndarray:
        """``diag(sd^2) + H C H^T``, ``(m, m)``."""
        h = self.sensitivity
        return np.diag(self.noise_std**2) + h @ self.interface_cov @ h.T


class LocalReadings:
    """The whitened local readings ``W S p(k)`` (module docstring); a forward model."""

    cost = 1

    def __init__(self, flow: DarcyFlow, sensors: PointSensors | None, whitener: torch.Tensor):
        self.physics = flow
        self.sensors = sensors
        self.grid = flow.grid
        self.whitener = whitener
        self.num_outputs = 1 if sensors is None else int(sensors.num_sensors)

    def __call__(self, log_k: torch.Tensor) -> torch.Tensor:
        if self.sensors is None:  # prior-only: one constant pseudo-datum
            return torch.zeros(*log_k.shape[:-2], 1, dtype=torch.float64, device=log_k.device)
        readings = self.sensors(self.physics.solve(log_k.to(torch.float64)))
        return readings @ self.whitener.to(readings.device).T

    def __repr__(self) -> str:
        return f"LocalReadings({self.physics!r}, {self.num_outputs} sensors, whitened)"


def whitening(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W, l)`` with ``W = diag(l) L^-1``, ``L L^T = covariance``, ``l = diag(L)``."""
    chol = np.linalg.cholesky(covariance)
    scale = np.diag(chol).copy()
    w = scale[:, None] * np.linalg.solve(chol, np.eye(chol.shape[0]))
    return w, scale


def build_local(spec: LocalSpec, prior=None):
    """``(posterior, {})``: the subdomain's posterior (module docstring), for a task."""
    from ..posterior import Posterior
    from ..priors import Prior

    if prior is None:
        prior = Prior.load(spec.prior) if isinstance(spec.prior, str) else spec.prior
    flow = spec.flow()
    if spec.num_sensors == 0:
        readings = LocalReadings(flow, None, torch.eye(1, dtype=torch.float64))
        data, noise = np.zeros(1), np.ones(1)
    else:
        w, noise, data = spec.whitener
        sensors = PointSensors(flow.grid, spec.sensor_xy)
        readings = LocalReadings(flow, sensors, torch.as_tensor(w))
    truth = None if spec.truth is None else torch.as_tensor(spec.truth)
    posterior = Posterior(prior, readings, None, data, noise, truth=truth)
    return posterior, {}


def interface_sensitivity(flow: DarcyFlow, sensors: PointSensors, log_k, interfaces):
    """``H (m, q)``: the derivative of the sensors' readings in the Dirichlet values on the
    ``interfaces`` sides of ``flow`` (in order, each along its cells), at the field ``log_k``.

    The pressure is affine in the boundary values, ``A p = b0 + E T g``, so
    ``H = S A^-1 E T``; computed with one sparse factorisation and ``m`` solves (``A`` is
    symmetric).
    """
    lk = torch.as_tensor(log_k, dtype=torch.float64)
    a, _ = flow.linear_system(lk)
    s = sensors.matrix().numpy()  # (m, N)
    solved = spla.splu(a.tocsc()).solve(np.ascontiguousarray(s.T))  # A^-1 S^T: (N, m)
    tx, ty = (t.numpy() for t in flow.transmissibilities(lk))
    ny, nx = flow.grid.shape
    index = np.arange(ny * nx).reshape(ny, nx)
    blocks = []
    for side in interfaces:
        if side == "left":
            cells, t = index[:, 0], tx[:, 0]
        elif side == "right":
            cells, t = index[:, -1], tx[:, -1]
        elif side == "bottom":
            cells, t = index[0, :], ty[0, :]
        else:
            cells, t = index[-1, :], ty[-1, :]
        blocks.append(solved[cells, :].T * t[None, :])
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((s.shape[0], 0))
