"""The same Darcy problem through FiPy: the independent reference, and a backend users may pick.

FiPy discretises ``div(k grad p) + f = 0`` on a ``Grid2D`` with the same cell-centred finite
volumes: the face coefficient is the harmonic mean of the two cells' ``k`` (the cell value on a
boundary face) and a constrained (Dirichlet) face uses the half-cell distance. The linear system
is solved by FiPy's SciPy LU solver. No gradients: use [`DarcyFlow`][vaeinv.physics.DarcyFlow] for
inversion, this class to check it or to plug into FiPy-based workflows.
"""

from __future__ import annotations

import numpy as np
import torch

from ..grid import Grid
from ._boundary import FlowSetup

__all__ = ["DarcyFlowFiPy"]


class DarcyFlowFiPy:
    """Steady Darcy flow solved by FiPy; same constructor and `solve` as ``DarcyFlow``.

    Args:
        grid: as for [`DarcyFlow`][vaeinv.physics.DarcyFlow].
        dirichlet: as for `DarcyFlow`.
        source: as for `DarcyFlow`.
        wells: as for `DarcyFlow`.
        tolerance: residual tolerance handed to FiPy's LU solver.

    The mesh, variables and boundary constraints are built once; each `solve` only updates
    the permeability and re-solves. Fields of a batch are solved one after another.
    """

    def __init__(
        self, grid: Grid, dirichlet=None, source=0.0, wells=(), tolerance: float = 1e-12
    ) -> None:
        import fipy
        from fipy.solvers.scipy import LinearLUSolver

        if dirichlet is None:
            dirichlet = {"left": 1.0, "right": 0.0}
        self.setup = FlowSetup.build(grid, dirichlet, source, wells)
        self.grid = grid
        mesh = fipy.Grid2D(dx=grid.dx, dy=grid.dy, nx=grid.nx, ny=grid.ny)
        self._mesh = mesh
        self._p = fipy.CellVariable(mesh=mesh, name="pressure", value=0.0)
        faces = {
            "left": mesh.facesLeft,
            "right": mesh.facesRight,
            "bottom": mesh.facesBottom,
            "top": mesh.facesTop,
        }
        fc = mesh.faceCenters.value
        for side, values in self.setup.dirichlet.items():
            mask = np.asarray(faces[side])
            # order the side's faces along the side, then spread the per-cell values onto them
            coord = fc[1] if side in ("left", "right") else fc[0]
            h = grid.dy if side in ("left", "right") else grid.dx
            face_values = np.zeros(mesh.numberOfFaces)
            idx = np.nonzero(mask)[0]
            face_values[idx] = values[np.clip((coord[idx] / h).astype(int), 0, len(values) - 1)]
            self._p.constrain(fipy.FaceVariable(mesh=mesh, value=face_values), where=mask)
        self._k = fipy.CellVariable(mesh=mesh, name="k", value=1.0)
        rates = self.setup.cell_rates() / grid.cell_area  # per unit area, [iy, ix]
        f = fipy.CellVariable(mesh=mesh, value=rates.ravel())
        self._equation = fipy.DiffusionTerm(coeff=self._k.harmonicFaceValue) + f == 0
        self._solver = LinearLUSolver(tolerance=tolerance)

    def solve(self, log_k: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Cell-centre pressures, ``(..., ny, nx)``, with the input's dtype and device.

        Raises:
            ValueError: a field of the wrong shape, or a non-finite value.
        """
        tensor = torch.as_tensor(log_k)
        self.grid.check_field(tensor, "log_k")
        arr = tensor.detach().to("cpu", torch.float64).numpy()
        if not np.all(np.isfinite(arr)):
            raise ValueError("log_k contains non-finite values; expected finite log-permeabilities")
        flat = arr.reshape(-1, self.grid.num_cells)
        out = np.empty_like(flat)
        for i, field in enumerate(flat):
            self._k.setValue(np.exp(field))
            self._p.setValue(0.0)
            self._equation.solve(var=self._p, solver=self._solver)
            out[i] = self._p.value
        result = torch.from_numpy(out.reshape(arr.shape))
        if isinstance(log_k, torch.Tensor):
            return result.to(dtype=log_k.dtype, device=log_k.device)
        return result
