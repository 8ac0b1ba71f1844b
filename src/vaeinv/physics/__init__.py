"""Flow physics: the differentiable Darcy solver, its FiPy reference, and sensors."""

from .darcy import DarcyFlow, SolverError, SolverWarning
from .fipy_backend import DarcyFlowFiPy
from .sensors import PointSensors

__all__ = ["DarcyFlow", "DarcyFlowFiPy", "PointSensors", "SolverError", "SolverWarning"]
