"""A Gaussian random field prior, a [`LatentPrior`][vaeinv.priors.base.LatentPrior].

``log_k = mean + L z`` with ``z ~ N(0, I)`` and ``L L^T = C``, the covariance of a stationary
kernel (see :mod:`vaeinv.fields.kernels`) between cell centres. Two square roots:

- ``"kl"`` (Karhunen-Loeve): the eigendecomposition ``C = V diag(lam) V^T`` of the dense
  ``N x N`` covariance (``N = nx * ny``), ``L = V_k diag(sqrt(lam_k))`` over the ``k`` leading
  modes: ``latent_dim = k`` (all ``N`` by default, exact). ``O(N^3)`` once, ``O(N k)`` per decode.
- ``"circulant"``: the covariance embedded in a circulant one on a periodic ``My x Mx`` torus
  (:mod:`vaeinv.fields.embedding`), ``C_circ = F^-1 diag(lam) F``; ``L = P S`` with
  ``S = F^-1 diag(sqrt(lam)) F`` its real symmetric square root and ``P`` the crop to the grid:
  ``latent_dim = My * Mx``, exact on the grid, ``O(M log M)`` per decode.

Either is a drop-in prior for [`Posterior`][vaeinv.posterior.target.Posterior] and the
samplers: a reference with a known covariance, and the Gaussian baseline of the MDGM benchmark.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch

from ..fields.gaussian import GaussianRandomField
from ..fields.kernels import KERNELS
from ..fields.validation import as_generator, check_choice, check_grid, check_number, grid_config
from ..fields.validation import grid_from_config as _grid_from_config
from ..grid import Grid
from .base import LatentPrior
from .field_roots import ROOTS

__all__ = ["GaussianFieldPrior"]

METHODS = tuple(ROOTS)
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
CONFIG_KEYS = (
    "kind",
    "grid",
    "mean",
    "std",
    "length_scale",
    "kernel",
    "nu",
    "anisotropy",
    "angle",
    "method",
    "num_modes",
    "dtype",
)


class GaussianFieldPrior(LatentPrior):
    """A stationary Gaussian random field of ``log_k`` over a white latent (module docstring).

    Args:
        grid: the grid of the fields.
        mean: the field's mean.
        std: the field's standard deviation, ``> 0``.
        length_scale: the length scale along the first principal axis, ``> 0`` (fixed).
        kernel: ``"exponential"``, ``"gaussian"`` or ``"matern"``.
        nu: Matern smoothness (``"matern"`` only; default 1.5 there).
        anisotropy: ratio of the second to the first principal length scale, ``> 0``.
        angle: rotation of the principal axes from x, radians.
        method: ``"kl"`` or ``"circulant"``.
        num_modes: ``"kl"`` only: the number of leading modes kept, in ``[1, N]`` (default N).
        dtype: ``torch.float64`` or ``torch.float32``, the dtype of decoded fields.

    Attributes:
        latent_dim: ``num_modes`` (kl) or ``My * Mx`` (circulant).
        latent_shape: ``(latent_dim,)`` (kl) or the torus ``(My, Mx)`` (circulant).
        explained_variance: the fraction of the total variance the kept modes carry (kl;
            ``1.0`` for circulant).
        eigenvalues: all ``N`` covariance eigenvalues, descending, float64 (kl; else ``None``).
        embedding_info: the `vaeinv.fields.embedding.EmbeddingInfo` (circulant;
            else ``None``).
        name: a label with the settings; ``weights_sha256`` is ``None``.

    Raises:
        ValueError: a value out of range, an unknown kernel or method, ``nu`` with a kernel
            other than Matern, ``num_modes`` out of range or given with ``"circulant"``, a range
            of length scales, or a dtype other than float32/float64.
    """

    kind = "gaussian-field"

    def __init__(
        self,
        grid: Grid,
        mean: float = 0.0,
        std: float = 1.0,
        length_scale: float = 0.1,
        kernel: str = "exponential",
        nu: float | None = None,
        anisotropy: float = 1.0,
        angle: float = 0.0,
        method: str = "kl",
        num_modes: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.grid = check_grid(grid)
        check_choice("kernel", kernel, KERNELS)
        check_choice("method", method, METHODS)
        if isinstance(length_scale, tuple | list):
            raise ValueError(
                f"length_scale must be one positive number (fixed), got {length_scale!r}"
            )
        if nu is not None and kernel != "matern":
            raise ValueError(f"nu is used by the matern kernel only, got nu={nu!r} with {kernel!r}")
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.mean = check_number("mean", mean)
        self.std = check_number("std", std, positive=True)
        self.length_scale = check_number("length_scale", length_scale, positive=True)
        self.kernel = kernel
        self.nu = (
            None
            if kernel != "matern"
            else check_number("nu", 1.5 if nu is None else nu, positive=True)
        )
        self.anisotropy = check_number("anisotropy", anisotropy, positive=True)
        self.angle = check_number("angle", angle)
        self.method = method
        self.field = GaussianRandomField(
            grid,
            self.mean,
            self.std,
            self.length_scale,
            kernel,
            1.5 if self.nu is None else self.nu,
            self.anisotropy,
            self.angle,
        )
        self.weights_sha256 = None
        self._root = ROOTS[method](self.field, grid, self.covariance_matrix, num_modes, dtype)
        self.num_modes = self._root.num_modes
        self.eigenvalues = self._root.eigenvalues
        self.explained_variance = self._root.explained_variance
        self.embedding_info = self._root.embedding_info
        self.latent_shape = self._root.latent_shape
        self.latent_dim = math.prod(self.latent_shape)
        self.name = self._make_name()

    def _make_name(self) -> str:
        parts = [self.kernel]
        if self.nu is not None:
            parts.append(f"nu={self.nu:g}")
        parts += [f"mean={self.mean:g}", f"std={self.std:g}", f"length_scale={self.length_scale:g}"]
        if self.anisotropy != 1.0 or self.angle != 0.0:
            parts += [f"anisotropy={self.anisotropy:g}", f"angle={self.angle:g}"]
        parts.append(self._root.label)
        return f"gaussian-field({', '.join(parts)})"

    def __repr__(self) -> str:
        return f"GaussianFieldPrior({self.name}, latent_dim={self.latent_dim}, grid={self.grid})"

    # ------------------------------------------------------------------ properties
    def _tensor(self) -> torch.Tensor:
        return self._root.tensor

    @property
    def device(self) -> torch.device:
        """Where fields are decoded."""
        return self._tensor().device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of decoded fields; latents are cast to it."""
        return self._tensor().dtype

    def covariance_matrix(self) -> torch.Tensor:
        """The target covariance between cell centres, ``(N, N)`` float64 on the CPU, cells
        numbered ``iy * nx + ix``."""
        x, y = self.grid.cell_centers()
        x, y = x.reshape(-1), y.reshape(-1)
        return self.field.kernel_value(x[:, None] - x[None, :], y[:, None] - y[None, :])

    # ------------------------------------------------------------------ the prior interface
    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``z (..., latent_dim) -> log_k (..., ny, nx)``, linear and differentiable in ``z``.

        Raises:
            ValueError: a last dimension other than ``latent_dim``, or a ``cond``.
        """
        if cond is not None:
            raise ValueError("a GaussianFieldPrior takes no cond (it is not conditioned)")
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"latent z has shape {got}, expected (..., {self.latent_dim})")
        z = z.to(self.device, self.dtype)
        lead = z.shape[:-1]
        u = self._root.apply(z)
        return self.mean + u.reshape(*lead, *self.grid.shape)

    def sample(
        self, n: int, generator: torch.Generator | int | None = None, cond=None
    ) -> torch.Tensor:
        """``n`` prior draws ``log_k (n, ny, nx)`` (no gradient).

        Args:
            n: number of draws.
            generator: a CPU ``torch.Generator`` or a seed; ``None`` draws a fresh OS-entropy
                seed (the global RNG is never used).
            cond: must be ``None``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        gen = as_generator(generator)
        z = torch.randn(n, self.latent_dim, generator=gen, dtype=self.dtype)
        with torch.no_grad():
            return self.decode(z.to(self.device), cond)

    def encode(self, log_k: torch.Tensor, cond=None) -> torch.Tensor:
        """The latent of fields ``log_k (..., ny, nx)``: ``(..., latent_dim)``.

        ``"kl"``: the coordinates ``diag(lam_k)^-1/2 V_k^T (log_k - mean)`` (so that
        ``encode(decode(z)) == z``; with fewer than ``N`` modes ``decode(encode(f))`` is the
        projection of ``f`` on the kept modes). ``"circulant"``: the minimum-norm latent
        ``S P^T C^-1 (log_k - mean)`` (so that ``decode(encode(f)) == f``), also the posterior
        mean of ``z`` given the field. Eigenvalues below ``N eps lam_max`` are treated as zero.

        Raises:
            ValueError: fields that do not fit the grid, or a ``cond``.
        """
        if cond is not None:
            raise ValueError("a GaussianFieldPrior takes no cond (it is not conditioned)")
        self.grid.check_field(log_k, "log_k")
        lead = log_k.shape[:-2]
        u = (log_k.to(self.device, self.dtype) - self.mean).reshape(*lead, -1)
        return self._root.encode(u)

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> GaussianFieldPrior:
        """A copy on ``device`` with fields in ``dtype`` (``None`` keeps either).

        Raises:
            ValueError: a dtype other than float32/float64.
        """
        if dtype is not None and dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        out = copy.copy(self)
        out._root = self._root.to(device, dtype)
        return out

    # ------------------------------------------------------------------ configuration
    def config(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (with ``"kind"``), inverse of ``from_config``."""
        return {
            "kind": self.kind,
            "grid": grid_config(self.grid),
            "mean": self.mean,
            "std": self.std,
            "length_scale": self.length_scale,
            "kernel": self.kernel,
            "nu": self.nu,
            "anisotropy": self.anisotropy,
            "angle": self.angle,
            "method": self.method,
            "num_modes": self.num_modes,
            "dtype": str(self.dtype).removeprefix("torch."),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GaussianFieldPrior:
        """Rebuild from ``config()``'s dict (``"grid"`` required, other keys optional).

        Raises:
            ValueError: not a mapping, a wrong ``kind``, an unknown key, no grid or an unknown
                dtype name.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a mapping, got {type(config).__name__}")
        kwargs = dict(config)
        for key in kwargs:
            if key not in CONFIG_KEYS:
                raise ValueError(
                    f"unknown GaussianFieldPrior config key {key!r}; valid keys are "
                    f"{', '.join(CONFIG_KEYS)}"
                )
        kind = kwargs.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"config kind {kind!r} does not match {cls.kind!r}")
        if "grid" not in kwargs:
            raise ValueError("GaussianFieldPrior config needs a 'grid' entry")
        kwargs["grid"] = _grid_from_config(kwargs["grid"])
        if "dtype" in kwargs:
            name = kwargs["dtype"]
            if name not in _DTYPES:
                raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(_DTYPES)}")
            kwargs["dtype"] = _DTYPES[name]
        return cls(**kwargs)
