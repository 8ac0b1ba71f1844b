"""Batched linear algebra for the two-point-flux Darcy operator (private).

The operator is stored by its face transmissibilities::

    tx: (B, ny, nx + 1)   faces normal to x; columns 0 and nx are the left/right sides
    ty: (B, ny + 1, nx)   faces normal to y; rows 0 and ny are the bottom/top sides

and acts on cell values ``p`` as ``(A p)_i = sum_faces T_f (p_i - p_j)``, where a boundary face
contributes ``T_f p_i`` (its Dirichlet value lives in the right-hand side; a no-flow side has
``T_f = 0``). ``A`` is symmetric, and positive definite as soon as one boundary face carries a
positive transmissibility.

Solvers:

* the multigrid-preconditioned CG of ``_multigrid`` builds its levels with
  :meth:`FluxOperator.coarsen`: for 2 x 2 aggregates the Galerkin coarse operator of a
  two-point-flux operator is again one, whose face transmissibilities are the sums of the fine
  ones along each aggregate boundary.
* :class:`BlockCholesky`: an exact direct solver. ``A`` is block tridiagonal over grid rows
  (tridiagonal ``nx x nx`` diagonal blocks, diagonal coupling blocks), so a block Cholesky sweep
  along y factorises it with dense batched ``nx x nx`` operations: ``O(ny nx^3)`` work,
  ``ny nx^2`` numbers stored per field. Fast for moderate ``nx`` (the grid is transposed by the
  caller so that ``nx`` is the shorter side).
* :class:`DenseCholesky`: the assembled dense matrix factorised once (coarsest multigrid level).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["BlockCholesky", "DenseCholesky", "FluxOperator", "SolveInfo", "norm2"]


@contextlib.contextmanager
def flush_denormals(device: torch.device, serial: bool = False):
    """On the CPU, flush subnormal floats to zero for the duration of the block, then restore.

    The inverse Cholesky factors of the Schur complements decay geometrically away from the
    diagonal; for high-contrast fields their far entries underflow into the subnormal range,
    where x86 arithmetic is about 50 x slower (measured: 245 ms instead of 5 ms per 64 x 64
    field). Entries below 2.2e-308 carry nothing at double precision, so they are flushed.
    The flag is per thread: with ``serial=True`` the block also runs torch (and MKL) on the
    calling thread only, so that no worker thread computes without the flag. Both settings are
    process-wide in torch: solves running concurrently from several Python threads may see each
    other's settings (slower, never wrong).
    """
    if device.type != "cpu":
        yield
        return
    tiny = torch.tensor([5e-324], dtype=torch.float64)
    was_flushing = bool((tiny * 1.0 == 0).item())
    threads = torch.get_num_threads()
    try:
        torch.set_flush_denormal(True)
        if serial:
            torch.set_num_threads(1)
        yield
    finally:
        if serial:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(was_flushing)


class FluxOperator:
    """The two-point-flux operator of one level, batched over the leading dimension."""

    def __init__(self, tx: torch.Tensor, ty: torch.Tensor) -> None:
        self.tx = tx
        self.ty = ty
        self.ny, self.nx = tx.shape[-2], ty.shape[-1]
        self.txi = tx[..., 1:-1]
        self.tyi = ty[..., 1:-1, :]
        self.diag = tx[..., :-1] + tx[..., 1:] + ty[..., :-1, :] + ty[..., 1:, :]
        self.inv_diag = 1.0 / self.diag

    def matvec(self, p: torch.Tensor) -> torch.Tensor:
        out = self.diag * p
        if self.nx > 1:
            out[..., :, :-1] -= self.txi * p[..., :, 1:]
            out[..., :, 1:] -= self.txi * p[..., :, :-1]
        if self.ny > 1:
            out[..., :-1, :] -= self.tyi * p[..., 1:, :]
            out[..., 1:, :] -= self.tyi * p[..., :-1, :]
        return out

    def dense(self) -> torch.Tensor:
        """The assembled matrix, ``(B, ny*nx, ny*nx)``, cells numbered ``iy * nx + ix``
        (differentiable: built from the transmissibilities by autograd-tracked operations)."""
        batch, n = self.tx.shape[0], self.nx * self.ny
        a = torch.diag_embed(self.diag.reshape(batch, n))
        cells = torch.arange(n, device=self.tx.device).reshape(self.ny, self.nx)
        couplings = (
            (cells[:, :-1].reshape(-1), 1, self.txi),  # cell and its +x neighbour
            (cells[:-1, :].reshape(-1), self.nx, self.tyi),  # cell and its +y neighbour
        )
        rows = torch.arange(batch, device=self.tx.device)[:, None]
        for index, step, t in couplings:
            if index.numel():
                value = -t.reshape(batch, -1)
                a = a.index_put((rows, index[None], index[None] + step), value)
                a = a.index_put((rows, index[None] + step, index[None]), value)
        return a

    def coarsen(self) -> FluxOperator:
        """The Galerkin coarse operator for 2 x 2 (or 2 x 1 on a single row/column) aggregates."""
        tx, ty = self.tx, self.ty
        # Faces on aggregate boundaries: every second face, plus the last side if the count is odd.
        if self.nx > 1:
            keep_x = list(range(0, self.nx + 1, 2))
            if self.nx % 2:
                keep_x.append(self.nx)
            tx = tx[..., keep_x]
            ty = _sum_pairs(ty, dim=-1)
        if self.ny > 1:
            keep_y = list(range(0, self.ny + 1, 2))
            if self.ny % 2:
                keep_y.append(self.ny)
            ty = ty[..., keep_y, :]
            tx = _sum_pairs(tx, dim=-2)
        return FluxOperator(tx, ty)


def _sum_pairs(t: torch.Tensor, dim: int) -> torch.Tensor:
    n = t.shape[dim]
    if n % 2:
        pad = [0, 0] * (-dim - 1) + [0, 1]
        t = torch.nn.functional.pad(t, pad)
    t = t.unflatten(dim, (-1, 2))
    return t.sum(dim=dim)


@dataclass(frozen=True)
class SolveInfo:
    """What a batched solve did: iterations, final relative residual per system, convergence."""

    iterations: int
    relative_residual: torch.Tensor
    converged: torch.Tensor


class DenseCholesky:
    """Exact solver: the dense matrix factorised by batched Cholesky (small systems only)."""

    def __init__(self, op: FluxOperator) -> None:
        self.op = op
        self.shape = (op.ny, op.nx)
        self.chol, info = torch.linalg.cholesky_ex(op.dense())
        self.ok = info == 0

    def solve(self, b: torch.Tensor, rtol: float | None = None) -> tuple[torch.Tensor, SolveInfo]:
        """Exact: ``rtol`` (the iterative solvers' argument) is ignored."""
        x = torch.cholesky_solve(b.flatten(-2)[..., None], self.chol)[..., 0]
        x = x.reshape(b.shape)
        res = norm2(b - self.op.matvec(x)) / norm2(b).clamp_min(torch.finfo(b.dtype).tiny)
        converged = self.ok & torch.isfinite(res)
        return x, SolveInfo(1, res, converged)


def norm2(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each field of a batch, ``(..., ny, nx) -> (...)``."""
    return torch.linalg.vector_norm(v, dim=(-2, -1))


class BlockCholesky:
    """Exact batched block-tridiagonal Cholesky factorisation (see module docstring).

    With ``D_j`` the diagonal block of grid row ``j`` and ``-C_j = -diag(ty[j])`` the coupling of
    rows ``j-1`` and ``j``, the Schur complements are ``S_0 = D_0`` and
    ``S_j = D_j - C_j S_{j-1}^{-1} C_j``. Each ``S_j = L_j L_j^T`` is factorised and the inverse
    factor ``M_j = L_j^{-1}`` is stored, so that every later solve (the forward solve, the adjoint
    solve of the gradient) costs only matrix-vector products.
    """

    def __init__(self, op: FluxOperator) -> None:
        self.op = op
        batch = op.tx.shape[0]
        ny, nx = op.ny, op.nx
        dtype, device = op.tx.dtype, op.tx.device
        eye = torch.eye(nx, dtype=dtype, device=device).expand(batch, nx, nx)
        self.inv_factors = torch.empty(batch, ny, nx, nx, dtype=dtype, device=device)
        self.ok = torch.ones(batch, dtype=torch.bool, device=device)
        with flush_denormals(device, serial=True):
            self._factorise(op, eye)

    def _factorise(self, op: FluxOperator, eye: torch.Tensor) -> None:
        batch, ny, nx = op.diag.shape
        dtype, device = op.diag.dtype, op.diag.device
        for j in range(ny):
            if j == 0:
                schur = torch.zeros(batch, nx, nx, dtype=dtype, device=device)
            else:
                w = self.inv_factors[:, j - 1] * op.ty[:, j, None, :]
                schur = torch.bmm(w.mT, w).neg_()
            # add the tridiagonal block D_j of grid row j in place
            schur.diagonal(dim1=-2, dim2=-1).add_(op.diag[:, j])
            if nx > 1:
                schur.diagonal(offset=1, dim1=-2, dim2=-1).sub_(op.txi[:, j])
                schur.diagonal(offset=-1, dim1=-2, dim2=-1).sub_(op.txi[:, j])
            chol, info = torch.linalg.cholesky_ex(schur)
            if bool(info.any()):
                # a failed factorisation is reported through `ok`; keep the sweep finite
                self.ok &= info == 0
                chol = torch.where((info == 0)[:, None, None], chol, eye)
            torch.linalg.solve_triangular(chol, eye, upper=False, out=self.inv_factors[:, j])

    def _apply_schur_inverse(self, j: int, v: torch.Tensor) -> torch.Tensor:
        m = self.inv_factors[:, j]
        return (m.mT @ (m @ v[..., None]))[..., 0]

    def solve(self, b: torch.Tensor, rtol: float | None = None) -> tuple[torch.Tensor, SolveInfo]:
        """Exact: ``rtol`` (the iterative solvers' argument) is ignored."""
        with flush_denormals(b.device, serial=True):
            return self._solve(b)

    def _solve(self, b: torch.Tensor) -> tuple[torch.Tensor, SolveInfo]:
        op = self.op
        ny = op.ny
        y = torch.empty_like(b)
        x = torch.empty_like(b)
        s_prev = torch.zeros_like(b[:, 0])
        for j in range(ny):
            y[:, j] = b[:, j] if j == 0 else b[:, j] + op.tyi[:, j - 1] * s_prev
            s_prev = self._apply_schur_inverse(j, y[:, j])
        x[:, ny - 1] = s_prev
        for j in range(ny - 2, -1, -1):
            x[:, j] = self._apply_schur_inverse(j, y[:, j] + op.tyi[:, j] * x[:, j + 1])
        res = norm2(b - op.matvec(x)) / norm2(b).clamp_min(torch.finfo(b.dtype).tiny)
        converged = self.ok & torch.isfinite(res)
        return x, SolveInfo(1, res, converged)
