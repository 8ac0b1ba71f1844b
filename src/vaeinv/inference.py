"""The names ``vaeinv.inference`` used to hold, kept so that code written for them still runs;
each access warns (``DeprecationWarning``) and names where the name lives now."""

from __future__ import annotations

import warnings
from importlib import import_module

_MOVED = {
    "GaussianFieldPrior": "vaeinv.priors.gaussian_field",
    "NUTSResult": "vaeinv.kernels.nuts",
    "PCNInfo": "vaeinv.kernels.pcn",
    "PCNState": "vaeinv.kernels.pcn",
    "Posterior": "vaeinv.posterior.target",
    "extend_run": "vaeinv.runs.extend",
    "freeze_adaptation": "vaeinv.kernels.pcn",
    "nuts_run": "vaeinv.kernels.nuts",
    "pcn_init": "vaeinv.kernels.pcn",
    "pcn_step": "vaeinv.kernels.pcn",
    "sample": "vaeinv.runs.sampling",
}
_MODULES = {"results": "vaeinv.results", "report": "vaeinv.results.report"}

__all__ = sorted([*_MOVED, *_MODULES])


def __getattr__(name: str):
    if name in _MOVED:
        where = _MOVED[name]
        value = getattr(import_module(where), name)
    elif name in _MODULES:
        where = _MODULES[name]
        value = import_module(where)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"vaeinv.inference.{name} has moved to {where}; import it from there",
        DeprecationWarning,
        stacklevel=2,
    )
    return value
