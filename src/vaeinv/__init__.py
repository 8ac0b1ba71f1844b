"""vaeinv: Bayesian inversion of subsurface properties with deep generative priors.

The public API, in the order data flows through it: the grid, the prior's training fields, the
VAE and the prior users import, the physics, then inference (the posterior, the samplers and
``sample``, which returns ArviZ ``InferenceData``).
"""

from importlib.metadata import PackageNotFoundError, version

from . import fields, inference, physics, vae
from .grid import Grid
from .inference import GaussianFieldPrior, Posterior
from .physics import DarcyFlow, DarcyFlowFiPy, PointSensors
from .prior import Prior

try:
    __version__ = version("vaeinv")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "DarcyFlow",
    "DarcyFlowFiPy",
    "GaussianFieldPrior",
    "Grid",
    "PointSensors",
    "Posterior",
    "Prior",
    "__version__",
    "fields",
    "inference",
    "physics",
    "sample",
    "vae",
]


def __getattr__(name: str):
    # `sample` imports ArviZ (through vaeinv.inference.results): loaded on first use
    if name == "sample":
        from .inference.runner import sample

        return sample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
