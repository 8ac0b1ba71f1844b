"""Steady single-phase Darcy flow, batched and differentiable, in torch.

The problem is ``-div(k grad p) = f`` on the grid's rectangle, with ``k = exp(log_k)``.
Discretisation: cell-centred finite volumes with two-point fluxes. An interior face between
cells ``a`` and ``b`` has transmissibility ``T = (A / h) * 2 k_a k_b / (k_a + k_b)`` (harmonic
mean; ``A`` the face length, ``h`` the centre distance); a Dirichlet face has the half-cell
transmissibility ``T = A * 2 k / h``; every side not named in ``dirichlet`` is no-flow. The
cell balance reads ``sum_faces T_f (p_i - p_j) = f_i |V_i| + wells_i``.

Gradients with respect to ``log_k`` (and the source) come from a discrete adjoint: with
``A(T) p = b``, the backward pass solves ``A lambda = dL/dp`` with the forward's factorisation
(or preconditioner) and returns ``dL/dT_f = -(lambda_i - lambda_j)(p_i - p_j)``, from which
autograd continues to ``log_k``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch

from ..grid import Grid
from ._boundary import FlowSetup
from ._linalg import BlockCholesky, FluxOperator, SolveInfo
from ._multigrid import MultigridPCG

__all__ = ["DarcyFlow", "SolverError", "SolverWarning"]

SolverName = Literal["auto", "direct", "multigrid"]
_SOLVERS = ("auto", "direct", "multigrid")
_FAILURE_MODES = ("nan", "raise")
#: ``solver="auto"`` on the CPU picks the direct solver when the shorter grid side is at most
#: ``DIRECT_MAX_SIDE``, or at most ``DIRECT_SMALL_BATCH_SIDE`` with fewer than
#: ``DIRECT_SMALL_BATCH`` fields: the crossovers measured by ``benchmarks/forward.py``.
DIRECT_MAX_SIDE = 32
DIRECT_SMALL_BATCH_SIDE = 64
DIRECT_SMALL_BATCH = 4


#: The multigrid V-cycle's dtype (CG and its convergence test stay float64): float32 halves the
#: memory traffic of the memory-bound V-cycle (``benchmarks/forward.py`` compares both).
MULTIGRID_PRECISION = "single"


class SolverError(RuntimeError):
    """A linear solve failed (factorisation breakdown or no convergence)."""


class SolverWarning(RuntimeWarning):
    """Some fields of a batch could not be solved; their pressures were set to NaN."""


class DarcyFlow:
    """Steady Darcy flow on a [`Grid`][vaeinv.Grid], solved in torch (see the module docstring).

    Args:
        grid: the grid; fields are ``(..., ny, nx)``.
        dirichlet: fixed pressures, ``{side: value}`` with sides ``left``, ``right``, ``bottom``,
            ``top``; a value is a scalar or one value per cell along the side. At least one side.
        source: ``f``, per unit area: a scalar or a ``(ny, nx)`` array.
        wells: point rates ``(x, y, rate)`` (volume per time, positive injects), each added to
            the cell that contains it.
        solver: ``"direct"`` (exact block Cholesky, ``O(ny nx^3)``), ``"multigrid"``
            (multigrid-preconditioned conjugate gradients, ``O(nx ny)`` per iteration) or
            ``"auto"``: on the CPU, direct when the shorter side has at most 32 cells, or at
            most 64 with fewer than 4 fields in the batch; multigrid otherwise and on GPUs
            (the crossovers measured in ``benchmarks/forward.py``).
        rtol: relative residual at which multigrid CG stops (default ``1e-10``, far below any
            sensor noise; a problem's posterior ties it to its noise with
            [`noise_tied_rtol`][vaeinv.physics.tolerance.noise_tied_rtol]); the direct solver
            reaches round-off.
        max_iter: iteration cap of multigrid CG.
        adjoint_rtol: the multigrid tolerance of the adjoint solve of a gradient (default:
            ``rtol``). A problem's posterior uses ``tolerance.GRADIENT_RTOL``: the gradient
            to about 1e-3 relative, for about half the adjoint's iterations.
        on_failure: what a failed solve does: ``"nan"`` (default) sets that field's pressure to
            NaN and warns with [`SolverWarning`][vaeinv.physics.SolverWarning] (a sampler
            counts it as a rejection);
            ``"raise"`` raises [`SolverError`][vaeinv.physics.SolverError].

    All arithmetic is in float64 whatever the input dtype; the result is cast back to the dtype
    of ``log_k``, so float32 input gets float32-rounded pressures (relative error ~1e-7).
    ``last_info`` holds the `SolveInfo` of the latest solve (forward, or adjoint in a backward).
    """

    def __init__(
        self,
        grid: Grid,
        dirichlet=None,
        source=0.0,
        wells=(),
        solver: SolverName = "auto",
        rtol: float = 1e-10,
        max_iter: int = 1000,
        adjoint_rtol: float | None = None,
        on_failure: Literal["nan", "raise"] = "nan",
    ) -> None:
        if dirichlet is None:
            dirichlet = {"left": 1.0, "right": 0.0}
        self.setup = FlowSetup.build(grid, dirichlet, source, wells)
        if solver not in _SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; expected one of {_SOLVERS}")
        if not (isinstance(rtol, float | int) and 0 < rtol < 1):
            raise ValueError(f"rtol must be in (0, 1), got {rtol!r}")
        if adjoint_rtol is not None and not (
            isinstance(adjoint_rtol, float | int) and 0 < adjoint_rtol < 1
        ):
            raise ValueError(f"adjoint_rtol must be None or in (0, 1), got {adjoint_rtol!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        if on_failure not in _FAILURE_MODES:
            raise ValueError(f"unknown on_failure {on_failure!r}; expected one of {_FAILURE_MODES}")
        self.grid = grid
        self.solver = solver
        self.rtol = float(rtol)
        self.adjoint_rtol = self.rtol if adjoint_rtol is None else float(adjoint_rtol)
        self.max_iter = max_iter
        self.on_failure = on_failure
        self.last_info: SolveInfo | None = None
        self._rates = torch.as_tensor(self.setup.cell_rates(), dtype=torch.float64)
        self._side_mask = {s: s in self.setup.dirichlet for s in ("left", "right", "bottom", "top")}

    def __repr__(self) -> str:
        sides = ", ".join(f"{s}={v.mean():g}" for s, v in self.setup.dirichlet.items())
        return f"DarcyFlow({self.grid}, dirichlet({sides}), wells={len(self.setup.wells)})"

    # ------------------------------------------------------------------ discretisation
    def _check(self, log_k: torch.Tensor) -> None:
        self.grid.check_field(log_k, "log_k")
        if not log_k.is_floating_point():
            raise ValueError(f"log_k must be a floating-point tensor, got dtype {log_k.dtype}")
        bad = ~torch.isfinite(log_k.detach())
        if bool(bad.any()):
            first = tuple(int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"log_k has {int(bad.sum())} non-finite value(s), the first at index {first}; "
                "expected finite natural-log permeabilities"
            )

    def transmissibilities(self, log_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face transmissibilities ``(tx, ty)`` shaped ``(..., ny, nx+1)`` and ``(..., ny+1, nx)``.

        Boundary faces carry the half-cell value on Dirichlet sides and zero on no-flow sides.
        Differentiable; computed in the dtype of ``log_k``.
        """
        g = self.grid
        inv_k = torch.exp(-log_k)
        k = torch.exp(log_k)
        rx, ry = g.dy / g.dx, g.dx / g.dy  # face length over centre distance
        zeros_x = torch.zeros_like(log_k[..., :, :1])
        zeros_y = torch.zeros_like(log_k[..., :1, :])
        left = 2 * rx * k[..., :, :1] if self._side_mask["left"] else zeros_x
        right = 2 * rx * k[..., :, -1:] if self._side_mask["right"] else zeros_x
        bottom = 2 * ry * k[..., :1, :] if self._side_mask["bottom"] else zeros_y
        top = 2 * ry * k[..., -1:, :] if self._side_mask["top"] else zeros_y
        tx_in = 2 * rx / (inv_k[..., :, 1:] + inv_k[..., :, :-1])
        ty_in = 2 * ry / (inv_k[..., 1:, :] + inv_k[..., :-1, :])
        return torch.cat([left, tx_in, right], dim=-1), torch.cat([bottom, ty_in, top], dim=-2)

    def _boundary_values(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            s: torch.as_tensor(v, dtype=like.dtype, device=like.device)
            for s, v in self.setup.dirichlet.items()
        }

    def rhs(self, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
        """The right-hand side ``b``: cell sources and wells plus the Dirichlet face terms."""
        b = self._rates.to(dtype=tx.dtype, device=tx.device).expand(*tx.shape[:-1], -1)
        b = b.clone()
        pd = self._boundary_values(tx)
        if "left" in pd:
            b[..., :, 0] = b[..., :, 0] + tx[..., :, 0] * pd["left"]
        if "right" in pd:
            b[..., :, -1] = b[..., :, -1] + tx[..., :, -1] * pd["right"]
        if "bottom" in pd:
            b[..., 0, :] = b[..., 0, :] + ty[..., 0, :] * pd["bottom"]
        if "top" in pd:
            b[..., -1, :] = b[..., -1, :] + ty[..., -1, :] * pd["top"]
        return b

    # ------------------------------------------------------------------ solving
    def resolved_solver(self, batch: int, device: torch.device | str = "cpu") -> str:
        """The solver (``"direct"`` or ``"multigrid"``) used for ``batch`` fields on ``device``."""
        if self.solver != "auto":
            return self.solver
        side = min(self.grid.nx, self.grid.ny)
        small = side <= DIRECT_MAX_SIDE or (
            side <= DIRECT_SMALL_BATCH_SIDE and batch < DIRECT_SMALL_BATCH
        )
        return "direct" if (torch.device(device).type == "cpu" and small) else "multigrid"

    def _factorise(self, tx: torch.Tensor, ty: torch.Tensor):
        if self.resolved_solver(tx.shape[0], tx.device) == "direct":
            if self.grid.nx > self.grid.ny:
                return _Transposed(tx, ty)
            return BlockCholesky(FluxOperator(tx, ty))
        return MultigridPCG(
            FluxOperator(tx, ty),
            rtol=self.rtol,
            max_iter=self.max_iter,
            precision=MULTIGRID_PRECISION,
        )

    def solve(self, log_k: torch.Tensor) -> torch.Tensor:
        """Cell-centre pressures for a batch of log-permeability fields.

        Args:
            log_k: ``(..., ny, nx)``, float32 or float64, any device.

        Returns:
            pressure with the shape, dtype and device of ``log_k``; differentiable.
        """
        self._check(log_k)
        batch_shape = log_k.shape[:-2]
        flat = log_k.reshape(-1, *self.grid.shape).to(torch.float64)
        p = _AdjointSolve.apply(flat, self)
        return p.reshape(*batch_shape, *self.grid.shape).to(log_k.dtype)

    def _report(self, info: SolveInfo, rtol: float | None = None) -> None:
        self.last_info = info
        failed = (~info.converged).nonzero().flatten().tolist()
        if failed:
            msg = (
                f"{len(failed)} of {info.converged.numel()} Darcy solve(s) failed (batch indices "
                f"{failed[:10]}{'...' if len(failed) > 10 else ''}; relative residuals "
                f"{[f'{float(info.relative_residual[i]):.2e}' for i in failed[:3]]}, "
                f"rtol {self.rtol if rtol is None else rtol:g}, {info.iterations} iterations)"
            )
            if self.on_failure == "raise":
                raise SolverError(msg)
            warnings.warn(msg + "; their pressures are NaN", SolverWarning, stacklevel=4)

    def fluxes(
        self, log_k: torch.Tensor, pressure: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Volumetric face fluxes ``(qx, qy)``, positive along +x / +y.

        ``qx`` is ``(..., ny, nx+1)`` (column 0 the left side, ``nx`` the right), ``qy`` is
        ``(..., ny+1, nx)``. No-flow sides carry zero. With ``pressure`` omitted it is solved for.
        Mass balance: ``qx[..., 1:] - qx[..., :-1] + qy[..., 1:, :] - qy[..., :-1, :]`` equals the
        cell rates (source times area plus wells).
        """
        self._check(log_k)
        if pressure is None:
            pressure = self.solve(log_k)
        self.grid.check_field(pressure, "pressure")
        work = torch.promote_types(log_k.dtype, pressure.dtype)
        tx, ty = self.transmissibilities(log_k.to(work))
        p = pressure.to(work)
        pd = self._boundary_values(p)
        pad_x = [p[..., :, :1], p, p[..., :, -1:]]
        pad_y = [p[..., :1, :], p, p[..., -1:, :]]
        if "left" in pd:
            pad_x[0] = pd["left"][:, None].expand_as(pad_x[0])
        if "right" in pd:
            pad_x[2] = pd["right"][:, None].expand_as(pad_x[2])
        if "bottom" in pd:
            pad_y[0] = pd["bottom"].expand_as(pad_y[0])
        if "top" in pd:
            pad_y[2] = pd["top"].expand_as(pad_y[2])
        px = torch.cat(pad_x, dim=-1)
        py = torch.cat(pad_y, dim=-2)
        qx = tx * (px[..., :, :-1] - px[..., :, 1:])
        qy = ty * (py[..., :-1, :] - py[..., 1:, :])
        return qx, qy

    def cell_rates(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """The volumetric source of each cell, ``(ny, nx)``: ``f |V|`` plus the wells."""
        return self._rates.to(dtype=dtype, device=device)

    def linear_system(self, log_k: torch.Tensor):
        """The assembled system of one field as ``(A, b)``: a ``scipy.sparse.csr_matrix`` and a
        numpy vector, cells numbered ``iy * nx + ix`` (for inspection and external solvers)."""
        import numpy as np
        import scipy.sparse as sp

        self._check(log_k)
        if log_k.dim() != 2:
            raise ValueError(
                f"linear_system takes one field (ny, nx), got shape {tuple(log_k.shape)}"
            )
        with torch.no_grad():
            lk = log_k.detach().to("cpu", torch.float64)
            tx, ty = self.transmissibilities(lk)
            b = self.rhs(tx, ty).numpy().ravel()
            op = FluxOperator(tx[None], ty[None])
            diag = op.diag[0].numpy().ravel()
            txi, tyi = op.txi[0].numpy(), op.tyi[0].numpy()
        ny, nx = self.grid.shape
        idx = np.arange(nx * ny).reshape(ny, nx)
        rows = [
            idx.ravel(),
            idx[:, :-1].ravel(),
            idx[:, 1:].ravel(),
            idx[:-1].ravel(),
            idx[1:].ravel(),
        ]
        cols = [
            idx.ravel(),
            idx[:, 1:].ravel(),
            idx[:, :-1].ravel(),
            idx[1:].ravel(),
            idx[:-1].ravel(),
        ]
        vals = [diag, -txi.ravel(), -txi.ravel(), -tyi.ravel(), -tyi.ravel()]
        a = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(nx * ny,) * 2,
        )
        return a, b


class _Transposed:
    """Direct solver on the transposed grid, so that the dense blocks have the shorter side."""

    def __init__(self, tx, ty):
        self.inner = BlockCholesky(FluxOperator(ty.mT, tx.mT))

    def solve(self, b, rtol=None):
        x, info = self.inner.solve(b.mT.contiguous())
        return x.mT.contiguous(), info


class _AdjointSolve(torch.autograd.Function):
    """``p = A(log_k)^{-1} b(log_k)`` with a discrete-adjoint backward.

    The backward solves ``A lambda = dL/dp`` with the forward's factorisation (or multigrid
    hierarchy), forms ``dL/dT_f = -(lambda_i - lambda_j)(p_i - p_j)`` on every face (``b`` held
    fixed) and ``dL/db = lambda``, and carries both back to ``log_k`` through the
    transmissibilities by autograd. It is first-order only (``once_differentiable``): a second
    derivative raises instead of coming out silently wrong.
    """

    @staticmethod
    def forward(ctx, log_k, flow: DarcyFlow):
        tx, ty = flow.transmissibilities(log_k)
        solver = flow._factorise(tx, ty)
        p, info = solver.solve(flow.rhs(tx, ty))
        flow._report(info)
        p = torch.where(info.converged[:, None, None], p, torch.nan)
        ctx.solver = solver
        ctx.flow = flow
        ctx.save_for_backward(log_k, p)
        return p

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_p):
        log_k, p = ctx.saved_tensors
        lam, info = ctx.solver.solve(grad_p.contiguous(), rtol=ctx.flow.adjoint_rtol)
        # a failed adjoint solve is reported like a failed forward solve; its gradient is NaN
        ctx.flow._report(info, ctx.flow.adjoint_rtol)
        lam = torch.where(info.converged[:, None, None], lam, torch.nan)
        grad_tx = torch.zeros_like(p[..., :1]).expand(-1, -1, p.shape[-1] + 1).clone()
        grad_tx[..., 1:-1] = -(lam[..., 1:] - lam[..., :-1]) * (p[..., 1:] - p[..., :-1])
        grad_tx[..., 0] = -lam[..., 0] * p[..., 0]
        grad_tx[..., -1] = -lam[..., -1] * p[..., -1]
        grad_ty = torch.zeros_like(p[..., :1, :]).expand(-1, p.shape[-2] + 1, -1).clone()
        grad_ty[..., 1:-1, :] = -(lam[..., 1:, :] - lam[..., :-1, :]) * (
            p[..., 1:, :] - p[..., :-1, :]
        )
        grad_ty[..., 0, :] = -lam[..., 0, :] * p[..., 0, :]
        grad_ty[..., -1, :] = -lam[..., -1, :] * p[..., -1, :]
        with torch.enable_grad():
            m = log_k.detach().requires_grad_()
            tx, ty = ctx.flow.transmissibilities(m)
            b = ctx.flow.rhs(tx, ty)
            (grad_log_k,) = torch.autograd.grad((tx, ty, b), m, (grad_tx, grad_ty, lam))
        return grad_log_k, None
