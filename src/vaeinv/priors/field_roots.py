"""The two square roots ``L`` (``L L^T = C``) of a Gaussian-field prior's covariance, one class
each, so that the prior holds one and never asks which (see `vaeinv.priors.gaussian_field`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from ..fields.embedding import initial_shape, sqrt_spectra
from ..grid import Grid

__all__ = ["ROOTS", "CirculantRoot", "KLRoot"]


def _cutoff(lam: torch.Tensor, num_cells: int) -> float:
    """Eigenvalues below ``N eps lam_max`` are treated as zero."""
    return float(lam.max()) * num_cells * torch.finfo(torch.float64).eps


#: grids above this many cells get their leading KL modes by Lanczos (when fewer than all
#: modes are asked for) instead of a dense eigendecomposition, which is O(N^3)
LANCZOS_MIN_CELLS = 4096


def _leading_modes(field, grid: Grid, covariance: Callable, k: int):
    """The ``k`` leading eigenpairs of the grid covariance by Lanczos (SciPy's ``eigsh``),
    its products computed with FFTs on the circulant embedding (``C v = P S S P^T v``), from a
    fixed start vector; each eigenvector's sign set so that its largest entry is positive."""
    import numpy as np
    import scipy.sparse.linalg as spla

    root = CirculantRoot(field, grid, covariance, None, torch.float64)
    shape, (ny, nx) = root.latent_shape, grid.shape

    def product(v):
        pad = torch.zeros(*shape, dtype=torch.float64)
        pad[:ny, :nx] = torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(ny, nx)
        return root.apply_sqrt(root.apply_sqrt(pad))[:ny, :nx].reshape(-1).numpy()

    n = grid.num_cells
    op = spla.LinearOperator((n, n), matvec=product, dtype=np.float64)
    lam, vec = spla.eigsh(op, k=k, which="LA", v0=np.ones(n))
    order = np.argsort(-lam)
    lam, vec = torch.as_tensor(lam[order]), torch.as_tensor(vec[:, order])
    top = vec.abs().argmax(0)
    vec = vec * torch.sign(vec[top, torch.arange(k)])
    return lam.clamp(min=0), vec


class KLRoot:
    """Karhunen-Loeve: ``L = V_k diag(sqrt(lam_k))`` over the ``k`` leading modes of the
    covariance; ``latent_shape = (k,)``. All modes come from a dense eigendecomposition;
    fewer than all on a grid of more than `LANCZOS_MIN_CELLS` cells come from Lanczos
    iterations (`_leading_modes`), and ``eigenvalues`` then holds those ``k`` only (the
    explained variance is taken against the trace, ``N std^2``).

    Raises:
        ValueError: ``num_modes`` not an integer in ``[1, N]``.
    """

    def __init__(self, field, grid: Grid, covariance: Callable, num_modes, dtype) -> None:
        n = grid.num_cells
        if num_modes is None:
            num_modes = n
        if isinstance(num_modes, bool) or not isinstance(num_modes, int) or not 1 <= num_modes <= n:
            raise ValueError(f"num_modes must be an integer in [1, {n}], got {num_modes!r}")
        if num_modes < n and n > LANCZOS_MIN_CELLS:
            lam, vec = _leading_modes(field, grid, covariance, num_modes)
            total = n * field.std**2
        else:
            lam, vec = torch.linalg.eigh(covariance())
            lam, vec = lam.flip(0).clamp(min=0), vec.flip(1)
            total = float(lam.sum())
        self.grid = grid
        self.num_modes = num_modes
        self.eigenvalues = lam
        self.explained_variance = float(lam[:num_modes].sum() / total)
        self.embedding_info = None
        self.sqrt_lam = lam[:num_modes].sqrt().to(dtype)
        self.modes = vec[:, :num_modes].to(dtype)
        self.basis = self.modes * self.sqrt_lam  # (N, k): L
        self.latent_shape = (num_modes,)
        self.label = f"kl{num_modes}"

    @property
    def tensor(self) -> torch.Tensor:
        return self.basis

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """``L z`` for ``z (..., k)``: ``(..., N)``."""
        return z @ self.basis.mT

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """``diag(lam_k)^-1/2 V_k^T u`` for centred fields ``u (..., N)``."""
        cut = _cutoff(self.eigenvalues, self.grid.num_cells)
        inv = torch.where(self.sqrt_lam**2 > cut, 1 / self.sqrt_lam, 0.0)
        return (u @ self.modes) * inv

    def to(self, device, dtype) -> KLRoot:
        out = copy.copy(self)
        for name in ("basis", "modes", "sqrt_lam"):
            setattr(out, name, getattr(self, name).to(device=device, dtype=dtype))
        return out


class CirculantRoot:
    """Circulant embedding: ``L = P S`` with ``S = F^-1 diag(sqrt(lam)) F`` the real symmetric
    square root of the covariance embedded on a periodic torus and ``P`` the crop to the grid;
    ``latent_shape`` is the torus.

    Raises:
        ValueError: a ``num_modes`` (a KL setting).
    """

    def __init__(self, field, grid: Grid, covariance: Callable, num_modes, dtype) -> None:
        if num_modes is not None:
            raise ValueError(f"num_modes is for method 'kl' only, got num_modes={num_modes!r}")
        first = initial_shape(grid, field.length_scale * max(1.0, field.anisotropy))
        sqrt_eig, info = sqrt_spectra(
            grid,
            torch.tensor([field.length_scale], dtype=torch.float64),
            field.kernel,
            field.nu,
            field.anisotropy,
            field.angle,
            first,
            onesided=True,
        )
        self.grid = grid
        self.num_modes = None
        self.eigenvalues = None
        self.explained_variance = 1.0
        self.embedding_info = info
        self.sqrt_eig = (field.std * sqrt_eig[0]).to(dtype)  # (My, Mx // 2 + 1)
        self.latent_shape = info.shape
        self.label = "circulant"
        self._covariance = covariance
        self._eigh: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def tensor(self) -> torch.Tensor:
        return self.sqrt_eig

    def apply_sqrt(self, w: torch.Tensor) -> torch.Tensor:
        """``S w = F^-1 sqrt(lam) F w`` on the torus (real, symmetric)."""
        return torch.fft.irfft2(self.sqrt_eig * torch.fft.rfft2(w), s=self.latent_shape)

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """``P S z`` for ``z (..., My * Mx)``: ``(..., ny, nx)``."""
        lead = z.shape[:-1]
        u = self.apply_sqrt(z.reshape(*lead, *self.latent_shape))
        return u[..., : self.grid.ny, : self.grid.nx]

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """The minimum-norm latent ``S P^T C^+ u`` of centred fields ``u (..., N)``."""
        lead = u.shape[:-1]
        lam, vec = self._dense_eigh(u)
        inv = torch.where(lam > _cutoff(lam, self.grid.num_cells), 1 / lam, 0.0)
        w = ((u @ vec) * inv) @ vec.mT  # C^+ u
        pad = torch.zeros(*lead, *self.latent_shape, dtype=u.dtype, device=u.device)
        pad[..., : self.grid.ny, : self.grid.nx] = w.reshape(*lead, *self.grid.shape)
        return self.apply_sqrt(pad).reshape(*lead, math.prod(self.latent_shape))

    def _dense_eigh(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._eigh is None:
            lam, vec = torch.linalg.eigh(self._covariance())
            self._eigh = (lam.to(like.device, like.dtype), vec.to(like.device, like.dtype))
        return self._eigh

    def to(self, device, dtype) -> CirculantRoot:
        out = copy.copy(self)
        out._eigh = None
        out.sqrt_eig = self.sqrt_eig.to(device=device, dtype=dtype)
        return out


#: ``GaussianFieldPrior(method=...)``: the square root each method names.
ROOTS = {"kl": KLRoot, "circulant": CirculantRoot}
