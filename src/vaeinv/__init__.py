"""vaeinv: Bayesian inversion of subsurface properties with deep generative priors.

The public API, in the order data flows through it: the grid, the prior's training fields, the
VAE and the prior users import, then the physics.
"""

from importlib.metadata import PackageNotFoundError, version

from . import fields, physics, vae
from .grid import Grid
from .physics import DarcyFlow, DarcyFlowFiPy, PointSensors
from .prior import Prior

try:
    __version__ = version("vaeinv")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "DarcyFlow",
    "DarcyFlowFiPy",
    "Grid",
    "PointSensors",
    "Prior",
    "__version__",
    "fields",
    "physics",
    "vae",
]
