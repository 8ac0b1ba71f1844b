"""Results: runs as ArviZ ``InferenceData`` (the only package that imports ArviZ), netCDF I/O,
convergence diagnostics and the report of a run.

``from vaeinv import results`` loads ArviZ; ``import vaeinv`` does not.
"""

from .inference_data import (
    LEVEL_STATS,
    NUTS_STATS,
    PCN_STATS,
    diagnostics,
    from_groups,
    load,
    netcdf_attrs,
    save,
    to_inference_data,
)
from .run_result import from_run

__all__ = [
    "LEVEL_STATS",
    "NUTS_STATS",
    "PCN_STATS",
    "diagnostics",
    "from_groups",
    "from_run",
    "load",
    "netcdf_attrs",
    "save",
    "to_inference_data",
]
