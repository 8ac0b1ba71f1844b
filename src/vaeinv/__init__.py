"""vaeinv: Bayesian inversion of subsurface properties with deep generative priors.

The public API, in the order data flows through it: the grid, the prior's training fields, the
VAE and the priors users import, the physics, the posterior, the kernels, and ``sample``, which
runs any registered kernel and returns ArviZ ``InferenceData``.
"""

from . import fields, kernels, physics, vae
from .grid import Grid
from .partition import Partition
from .physics import DarcyFlow, DarcyFlowFiPy, PointSensors
from .posterior import Posterior
from .priors import GaussianFieldPrior, LatentPrior, Prior
from .provenance import package_version

__version__ = package_version("vaeinv")

__all__ = [
    "DarcyFlow",
    "DarcyFlowFiPy",
    "GaussianFieldPrior",
    "Grid",
    "LatentPrior",
    "Partition",
    "PointSensors",
    "Posterior",
    "Prior",
    "__version__",
    "extend_run",
    "fields",
    "kernels",
    "merge_runs",
    "physics",
    "sample",
    "vae",
]

_LAZY = {"sample": "sample", "extend_run": "extend_run", "merge_runs": "merge_runs"}


def __getattr__(name: str):
    # the run functions import ArviZ (through vaeinv.results): loaded on first use
    if name in _LAZY:
        from . import runs

        return getattr(runs, _LAZY[name])
    if name in ("results", "runs"):
        from importlib import import_module

        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
