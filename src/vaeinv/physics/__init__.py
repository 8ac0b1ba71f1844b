"""Flow physics: the forward-model protocol, the differentiable Darcy solver, its FiPy
reference, and sensors."""

from .base import CallableForward, SensorReadings
from .darcy import DarcyFlow, SolverError, SolverWarning, noise_tied_rtol
from .fipy_backend import DarcyFlowFiPy
from .sensors import PointSensors

__all__ = [
    "CallableForward",
    "DarcyFlow",
    "DarcyFlowFiPy",
    "PointSensors",
    "SensorReadings",
    "SolverError",
    "SolverWarning",
    "noise_tied_rtol",
]
