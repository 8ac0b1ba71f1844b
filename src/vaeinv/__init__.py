"""vaeinv: Bayesian inversion of subsurface properties with deep generative priors.

The public API, in the order data flows through it: the grid, then the physics.
"""

from importlib.metadata import PackageNotFoundError, version

from . import physics
from .grid import Grid
from .physics import DarcyFlow, DarcyFlowFiPy, PointSensors

try:
    __version__ = version("vaeinv")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["DarcyFlow", "DarcyFlowFiPy", "Grid", "PointSensors", "__version__", "physics"]
