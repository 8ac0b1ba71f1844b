"""Flow physics: the forward-model protocol, the differentiable Darcy solver, its FiPy
reference, and sensors."""

from .base import CallableForward, SensorReadings
from .darcy import DarcyFlow, SolverError, SolverWarning
from .fipy_backend import DarcyFlowFiPy
from .sensors import PointSensors
from .tolerance import noise_tied_rtol

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
