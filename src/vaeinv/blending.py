"""Poisson blending of local fields into one global field (Pérez, Gangnet & Blake 2003,
"Poisson image editing"; the gradient-domain mosaics of image stitching).

Local fields of a [`Partition`][vaeinv.partition.Partition] (local posterior draws, say) agree
only roughly where subdomains overlap; taking each cell from one subdomain
([`Partition.gather`][vaeinv.partition.Partition.gather]) leaves a seam wherever two neighbours
disagree. The blend keeps what each local field says about *differences* between neighbouring
cells and lets the values follow: it is the global field ``f`` that minimises

    sum over faces (i, j) of  (f_j - f_i - g_ij)^2,

``g_ij`` the guidance difference across the face: the mean of ``u_j - u_i`` over the local
fields ``u`` that hold both cells (every face has one when the overlap is at least one cell;
with no overlap, a face between two cores takes the gathered field's difference, seam and all).
The minimiser solves the graph Poisson equation ``L f = D^T g`` (``D`` the face-difference
matrix, ``L = D^T D`` the Neumann Laplacian); its constant is fixed by giving ``f`` the mean of
the gathered field. Where the local fields are restrictions of one global field the guidance
is that field's own differences and the blend returns it exactly; elsewhere the disagreement
is spread smoothly over the whole overlap instead of sitting on a line.

The Laplacian (one node pinned, so that it is positive definite) is factorised once per
partition with SciPy's sparse LU and reused for every draw.
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
        self.D = sp.csr_matrix((vals, (rows, self.faces.ravel())), shape=(f, ny * nx))
        laplacian = (self.D.T @ self.D).tocsc()
        self._solve = spla.splu(laplacian[1:, 1:]).solve  # node 0 pinned
        self._holders = self._face_holders()

    def _face_holders(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per subdomain: the faces it holds (both cells local) and their two local indices."""
        gy, gx = np.divmod(self.faces, self.partition.grid.nx)  # (F, 2) each
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
        """``(F, B)`` float64: each face's guidance difference for each of ``B`` fields."""
        part = self.partition
        part.check_local_fields(fields)
        flat = [
            f.detach().reshape(-1, f.shape[-2] * f.shape[-1]).cpu().double().numpy().T
            for f in fields
        ]
        b = flat[0].shape[1]
        total = np.zeros((len(self.faces), b))
        count = np.zeros(len(self.faces))
        for (faces, i, j), u in zip(self._holders, flat, strict=True):
            total[faces] += u[j] - u[i]
            count[faces] += 1
        orphan = count == 0
        if orphan.any():  # no overlap: the gathered field's own difference
            g = _columns(part.gather(list(fields)))
            a, c = self.faces[orphan, 0], self.faces[orphan, 1]
            total[orphan] = g[c] - g[a]
            count[orphan] = 1
        return total / count[:, None]

    def __call__(self, fields) -> torch.Tensor:
        part = self.partition
        g = self.guidance(fields)
        rhs = np.asarray(self.D.T @ g)
        f = np.zeros_like(rhs)
        f[1:] = self._solve(rhs[1:])
        gathered = part.gather(list(fields))
        lead = gathered.shape[:-2]
        target = _columns(gathered)
        f += target.mean(0) - f.mean(0)
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
