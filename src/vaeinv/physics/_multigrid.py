"""Multigrid-preconditioned conjugate gradients for the two-point-flux operator (private).

The preconditioner is one aggregation-multigrid V-cycle. The coarse operators are Galerkin
products with piecewise-constant prolongation over 2 x 2 aggregates; for a two-point-flux
operator they are again two-point-flux operators
([`FluxOperator.coarsen`][vaeinv.physics._linalg.FluxOperator.coarsen]). Smoothing is symmetric
red-black Gauss-Seidel, the coarsest level a dense batched Cholesky factorisation. Everything
is batched over the leading dimension and runs on any device.

The V-cycle is memory-bound on a CPU (every step is an elementwise pass over the batch), so it
is written to touch as little memory as possible:

* a Gauss-Seidel half-sweep of one colour is one multiply and five fused multiply-adds, with
  the weights ``T_f / D_i`` of that colour's cells precomputed once per operator (zero on the
  other colour's cells), instead of a full residual per colour;
* restriction is two strided additions, the over-corrected prolongation is added in place;
* the V-cycle may run in float32 (``precision="single"``) while the CG iteration, its
  residuals and its convergence test stay in float64. The preconditioner is then not exactly
  linear, so the CG direction update uses the flexible (Polak-Ribiere) form
  ``beta = r_new . (z_new - z_old) / r_old . z_old``, which equals the standard one for an
  exact preconditioner.
"""

from __future__ import annotations

import torch

from ._linalg import DenseCholesky, FluxOperator, SolveInfo, norm2

__all__ = ["MultigridPCG"]

_PRECISIONS = {"double": torch.float64, "single": torch.float32}
#: CG tests for its end every this many iterations: on the CPU every one; on an accelerator,
#: where the test makes the host wait for the device, every few.
CHECK_EVERY_ON_CPU = 1
CHECK_EVERY_ON_DEVICE = 4
#: right-hand sides whose largest entry lies in this range go to the float32 V-cycle as they
#: are: their residuals, at most 1e12 times smaller, stay far inside float32's range
FLOAT32_SAFE = (1e-12, 1e12)


class _Level:
    """One level's operator in the V-cycle's dtype: its residual, Gauss-Seidel half-sweeps,
    restriction and prolongation."""

    def __init__(self, op: FluxOperator, dtype: torch.dtype) -> None:
        self.ny, self.nx = op.ny, op.nx
        self.diag = op.diag.to(dtype)
        self.txi = op.txi.to(dtype)
        self.tyi = op.tyi.to(dtype)
        inv_diag = op.inv_diag.to(dtype)
        iy = torch.arange(op.ny, device=op.tx.device)[:, None]
        ix = torch.arange(op.nx, device=op.tx.device)[None, :]
        red = ((iy + ix) % 2 == 0).to(dtype)
        self.sweeps = []
        for mask in (red, 1.0 - red):
            w = inv_diag * mask  # 1 / D_i on this colour's cells, 0 elsewhere
            self.sweeps.append(
                (
                    1.0 - mask,
                    w,
                    self.txi * w[..., :, :-1],  # cell (i, j) from x[i, j + 1]
                    self.txi * w[..., :, 1:],  # cell (i, j + 1) from x[i, j]
                    self.tyi * w[..., :-1, :],  # cell (i, j) from x[i + 1, j]
                    self.tyi * w[..., 1:, :],  # cell (i + 1, j) from x[i, j]
                )
            )
        self.even = op.nx % 2 == 0 and op.ny % 2 == 0 and op.nx > 1 and op.ny > 1

    def sweep(self, x: torch.Tensor | None, b: torch.Tensor, colour: int) -> torch.Tensor:
        """Gauss-Seidel on the cells of ``colour`` (0 red, 1 black); ``x=None`` is zero."""
        keep, w, east, west, north, south = self.sweeps[colour]
        if x is None:
            return b * w
        y = x * keep
        y.addcmul_(b, w)
        y[..., :, :-1].addcmul_(east, x[..., :, 1:])
        y[..., :, 1:].addcmul_(west, x[..., :, :-1])
        y[..., :-1, :].addcmul_(north, x[..., 1:, :])
        y[..., 1:, :].addcmul_(south, x[..., :-1, :])
        return y

    def residual(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        r = torch.addcmul(b, self.diag, x, value=-1.0)
        r[..., :, :-1].addcmul_(self.txi, x[..., :, 1:])
        r[..., :, 1:].addcmul_(self.txi, x[..., :, :-1])
        r[..., :-1, :].addcmul_(self.tyi, x[..., 1:, :])
        r[..., 1:, :].addcmul_(self.tyi, x[..., :-1, :])
        return r

    def restrict(self, r: torch.Tensor) -> torch.Tensor:
        """Sums over the 2 x 2 aggregates (the transpose of the prolongation)."""
        if self.even:  # two strided adds: a strided reduction over 2 x 2 blocks is ~10 x slower
            rows = r[..., 0::2, :] + r[..., 1::2, :]
            return rows[..., 0::2] + rows[..., 1::2]
        if self.nx > 1:
            r = _sum_pairs(r, dim=-1)
        if self.ny > 1:
            r = _sum_pairs(r, dim=-2)
        return r

    def add_prolonged(self, x: torch.Tensor, e: torch.Tensor, weight: float) -> None:
        """``x += weight * P e`` in place, ``P`` the piecewise-constant injection."""
        if self.even:
            view = x.unflatten(-1, (-1, 2)).unflatten(-3, (-1, 2))
            view.add_(e[..., :, None, :, None], alpha=weight)
            return
        if self.nx > 1:
            e = e.repeat_interleave(2, dim=-1)[..., : self.nx]
        if self.ny > 1:
            e = e.repeat_interleave(2, dim=-2)[..., : self.ny, :]
        x.add_(e, alpha=weight)


def _sum_pairs(t: torch.Tensor, dim: int) -> torch.Tensor:
    if t.shape[dim] % 2:
        pad = [0, 0] * (-dim - 1) + [0, 1]
        t = torch.nn.functional.pad(t, pad)
    return t.unflatten(dim, (-1, 2)).sum(dim=dim)


class MultigridPCG:
    """Batched CG preconditioned by an aggregation multigrid V-cycle (see module docstring).

    Args:
        op: the finest-level operator (float64).
        rtol: stop when ``||b - A x|| <= rtol * ||b||`` for every system of the batch.
        max_iter: iteration cap; systems not converged by then are reported in
            [`SolveInfo`][vaeinv.physics._linalg.SolveInfo].
        coarsest: coarsen until a level has at most this many cells, then factorise it densely.
        smoothing: red-black Gauss-Seidel sweeps before (and, reversed, after) the coarse
            correction.
        over_correction: factor on the coarse-grid correction. Piecewise-constant prolongation
            underestimates smooth errors; scaling the correction (Braess 1995; Vanek et al.)
            restores near grid-independent convergence: on 64^2 / 128^2 / 256^2 random fields
            the CG iteration counts fell from 34 / 51 / 72 to 16 / 19 / 21 with 1.8. Any value in
            (0, 2) keeps the preconditioner symmetric positive definite.
        precision: ``"double"`` or ``"single"``: the dtype of the V-cycle (CG stays float64).
    """

    def __init__(
        self,
        op: FluxOperator,
        rtol: float = 1e-10,
        max_iter: int = 500,
        coarsest: int = 64,
        smoothing: int = 1,
        over_correction: float = 1.8,
        precision: str = "double",
    ) -> None:
        if precision not in _PRECISIONS:
            raise ValueError(
                f"unknown precision {precision!r}; expected one of {list(_PRECISIONS)}"
            )
        self.rtol = rtol
        self.over_correction = over_correction
        self.max_iter = max_iter
        self.smoothing = smoothing
        self.dtype = _PRECISIONS[precision]
        self.op = op
        ops = [op]
        while ops[-1].nx * ops[-1].ny > coarsest:
            ops.append(ops[-1].coarsen())
        self.levels = [_Level(o, self.dtype) for o in ops[:-1]]
        coarse = ops[-1]
        self.coarse_solver = DenseCholesky(
            FluxOperator(coarse.tx.to(self.dtype), coarse.ty.to(self.dtype))
        )

    def _vcycle(self, level: int, b: torch.Tensor) -> torch.Tensor:
        if level == len(self.levels):
            return self.coarse_solver.solve(b)[0]
        lev = self.levels[level]
        x = None
        for _ in range(self.smoothing):
            x = lev.sweep(lev.sweep(x, b, 0), b, 1)
        coarse = self._vcycle(level + 1, lev.restrict(lev.residual(x, b)))
        lev.add_prolonged(x, coarse, self.over_correction)
        for _ in range(self.smoothing):
            x = lev.sweep(lev.sweep(x, b, 1), b, 0)
        return x

    def precondition(self, r: torch.Tensor, unit: torch.Tensor | None = None) -> torch.Tensor:
        """One V-cycle on ``r``, in the V-cycle's dtype; ``unit`` (per system, from
        `_unit_of`) rescales it first. The V-cycle is linear, so in units where the
        right-hand side is of order 1 float32 neither underflows nor overflows."""
        if self.dtype == r.dtype:
            return self._vcycle(0, r)
        if unit is None:
            return self._vcycle(0, r.to(self.dtype)).to(r.dtype)
        return self._vcycle(0, (r / unit).to(self.dtype)).to(r.dtype) * unit

    def _unit_of(self, b: torch.Tensor) -> torch.Tensor | None:
        """The per-system scale of right-hand sides whose largest entry lies outside
        ``FLOAT32_SAFE`` (``None`` when all are inside: no extra work)."""
        if self.dtype == b.dtype:
            return None
        magnitude = b.abs().amax((-2, -1), keepdim=True)
        low, high = FLOAT32_SAFE
        if bool(((magnitude == 0) | ((magnitude > low) & (magnitude < high))).all()):
            return None
        return torch.where(magnitude > 0, magnitude, 1.0)

    def solve(
        self, b: torch.Tensor, x0: torch.Tensor | None = None, rtol: float | None = None
    ) -> tuple[torch.Tensor, SolveInfo]:
        """``A x = b`` to ``rtol`` (default: the solver's), from ``x0`` (default: zero)."""
        rtol = self.rtol if rtol is None else rtol
        unit = self._unit_of(b)
        op = self.op
        scale = norm2(b).clamp_min(torch.finfo(b.dtype).tiny)
        x = torch.zeros_like(b) if x0 is None else x0.clone()
        r = b - op.matvec(x) if x0 is not None else b.clone()
        active = norm2(r) / scale > rtol
        z = self.precondition(r, unit)
        d = z
        rz = (r * z).sum((-2, -1))
        it = 0
        # reading `active` makes the host wait for the device: on a GPU only every few
        # iterations (a converged system is left unchanged by the extra ones: same result)
        every = CHECK_EVERY_ON_CPU if b.device.type == "cpu" else CHECK_EVERY_ON_DEVICE
        while it < self.max_iter and (it % every or bool(active.any())):
            it += 1
            ad = op.matvec(d)
            dad = (d * ad).sum((-2, -1))
            alpha = torch.where(active & (dad > 0), rz / torch.where(dad > 0, dad, 1.0), 0.0)
            x.addcmul_(alpha[..., None, None], d)
            r.addcmul_(alpha[..., None, None], ad, value=-1.0)
            rel = norm2(r) / scale
            active = active & (rel > rtol) & torch.isfinite(rel)
            z_new = self.precondition(r, unit)
            rz_new = (r * z_new).sum((-2, -1))
            flexible = rz_new - (r * z).sum((-2, -1))
            beta = torch.where(active, flexible / torch.where(rz != 0, rz, 1.0), 0.0)
            d = z_new + beta[..., None, None] * d
            z, rz = z_new, rz_new
        # the true residual, not the recurrence, decides convergence
        rel = norm2(b - op.matvec(x)) / scale
        converged = torch.isfinite(rel) & (rel <= 10 * rtol)
        return x, SolveInfo(it, rel, converged)
