"""Poisson blending of local fields into one global field on the overlaps (Pérez, Gangnet &
Blake 2003, "Poisson image editing"; the gradient-domain mosaics of image stitching).

Local fields of a [`Partition`][vaeinv.partition.Partition] (local posterior draws, say) agree
only roughly where subdomains overlap; taking each cell from one subdomain
([`Partition.gather`][vaeinv.partition.Partition.gather]) leaves a seam wherever two neighbours
disagree. The blend changes only the overlaps, the cells that two or more subdomains hold
(``Omega``): every other cell keeps the value of the one subdomain that holds it, and inside
``Omega`` the field keeps what the local fields say about *differences* between neighbouring
cells. It is the field ``f``, equal to the gathered one outside ``Omega``, that minimises

    sum over faces (i, j) with a cell in Omega of  (f_j - f_i - g_ij)^2,

``g_ij`` the guidance difference across the face: the mean of ``u_j - u_i`` over the local
fields ``u`` that hold both cells (every such face has one). The minimiser solves the graph
Poisson equation on ``Omega`` with the gathered values on its edge as Dirichlet data,
``L_OO f_O = D_O^T (g - D_K f_K)`` (``D`` the face-difference matrix, ``O`` the overlap cells,
``K`` the others). Where the local fields are restrictions of one global field the guidance is
that field's own differences and the blend returns it exactly. Where two neighbours disagree
by a constant, the blend moves from one value to the other harmonically across the overlap
instead of jumping on a line, and keeps each subdomain's own values elsewhere.

Why on the overlaps only. A blend of the guidance over the whole grid, its constant fixed by
the mean, would also remove seams, but it keeps no local field's *level*: the level of each
region is then the guidance integrated from far away, and the small errors of every local
gradient add up along the way. The local posteriors determine their levels from their data;
the blend on the overlaps keeps them.

The overlaps' Laplacian is factorised once per partition with SciPy's sparse LU and reused
for every draw. With no overlap there is nothing to blend: the blend is the gathered field.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from .partition import Partition

__all__ = ["PoissonBlend", "seam_error"]


class PoissonBlend:
    """The Poisson blend of a partition's local fields (module docstring).

    Args:
        partition: the partition the local fields come from.

    Call it with the local fields (one per subdomain, ``(..., ny_k, nx_k)``, the same leading
    shape) to get the blended global fields ``(..., ny, nx)`` in their dtype and device.
    """

    def __init__(self, partition: Partition) -> None:
        if not isinstance(partition, Partition):
            raise ValueError(
                f"partition must be a vaeinv.Partition, got {type(partition).__name__}"
            )
        self.partition = partition
        ny, nx = partition.grid.shape
        index = np.arange(ny * nx).reshape(ny, nx)
        # faces: along x (between [iy, ix] and [iy, ix + 1]) then along y
        self.faces = np.concatenate(
            [
                np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], 1),
                np.stack([index[:-1, :].ravel(), index[1:, :].ravel()], 1),
            ]
        )
        f = len(self.faces)
        rows = np.repeat(np.arange(f), 2)
        vals = np.tile([-1.0, 1.0], f)
        d = sp.csr_matrix((vals, (rows, self.faces.ravel())), shape=(f, ny * nx))
        shared = partition.copies().numpy().ravel() > 1
        self.overlap_cells = np.flatnonzero(shared)
        self.kept_cells = np.flatnonzero(~shared)
        self.blend_faces = np.flatnonzero(shared[self.faces].any(1))
        d = d[self.blend_faces].tocsc()
        self._d_overlap = d[:, self.overlap_cells].tocsr()
        self._d_kept = d[:, self.kept_cells].tocsr()
        if self.overlap_cells.size:
            laplacian = (self._d_overlap.T @ self._d_overlap).tocsc()
            self._solve = spla.splu(laplacian).solve
        self._holders = self._face_holders()

    def _face_holders(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per subdomain: the blend faces it holds (both cells local; positions in
        ``blend_faces``) and their two local indices."""
        gy, gx = np.divmod(self.faces[self.blend_faces], self.partition.grid.nx)  # (F, 2) each
        out = []
        for s in self.partition.subdomains:
            inside = (
                (gy >= s.rows.start)
                & (gy < s.rows.stop)
                & (gx >= s.cols.start)
                & (gx < s.cols.stop)
            ).all(1)
            faces = np.flatnonzero(inside)
            local = (gy[faces] - s.rows.start) * s.grid.nx + (gx[faces] - s.cols.start)
            out.append((faces, local[:, 0], local[:, 1]))
        return out

    def guidance(self, fields) -> np.ndarray:
        """``(F, B)`` float64: the guidance difference of each face with a cell in an overlap
        (``blend_faces``), for each of ``B`` fields."""
        self.partition.check_local_fields(fields)
        flat = [
            f.detach().reshape(-1, f.shape[-2] * f.shape[-1]).cpu().double().numpy().T
            for f in fields
        ]
        total = np.zeros((len(self.blend_faces), flat[0].shape[1]))
        count = np.zeros(len(self.blend_faces))
        for (faces, i, j), u in zip(self._holders, flat, strict=True):
            total[faces] += u[j] - u[i]
            count[faces] += 1
        return total / count[:, None]

    def __call__(self, fields) -> torch.Tensor:
        part = self.partition
        gathered = part.gather(list(fields))
        if not self.overlap_cells.size:
            return gathered
        g = self.guidance(fields)
        lead = gathered.shape[:-2]
        f = _columns(gathered)
        rhs = self._d_overlap.T @ (g - self._d_kept @ f[self.kept_cells])
        f[self.overlap_cells] = self._solve(np.asarray(rhs))
        out = torch.as_tensor(f.T.copy()).reshape(*lead, *part.grid.shape)
        return out.to(dtype=fields[0].dtype, device=fields[0].device)


def _columns(field: torch.Tensor) -> np.ndarray:
    """``(cells, B)`` float64: the fields ``(..., ny, nx)`` as columns."""
    flat = field.detach().reshape(-1, field.shape[-2] * field.shape[-1])
    return flat.cpu().double().numpy().T


def seam_error(partition: Partition, fields, reference: torch.Tensor) -> float:
    """The root-mean-square error against ``reference`` of the differences across the faces
    between the partition's cores: what a seam adds (0 when ``fields`` are the restrictions
    of ``reference``)."""
    ny, nx = partition.grid.shape
    by, bx = partition.core_shape
    errors = []
    field = fields if isinstance(fields, torch.Tensor) else partition.gather(list(fields))
    for ix in range(bx, nx, bx):
        d = field[..., :, ix] - field[..., :, ix - 1]
        errors.append(d - (reference[..., :, ix] - reference[..., :, ix - 1]))
    for iy in range(by, ny, by):
        d = field[..., iy, :] - field[..., iy - 1, :]
        errors.append(d - (reference[..., iy, :] - reference[..., iy - 1, :]))
    if not errors:
        return 0.0
    return float(torch.cat([e.reshape(-1) for e in errors]).square().mean().sqrt())
