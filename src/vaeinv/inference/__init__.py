"""Inference: the latent posterior, the samplers, the chain runner, results and reports.

```
Posterior(prior, physics, sensors, data, noise)      log_prior / log_likelihood / log_density
GaussianFieldPrior(grid, ...)                         the classical baseline prior
pcn_init / pcn_step                                   batched pCN, (init, step) over a NamedTuple
nuts_run                                              NUTS through Pyro, chain by chain
sample(posterior, method=...)                         chains, chunks on disk, resume -> ArviZ
extend_run(idata, posterior, num_draws=...)           a finished run's chains continued
results.load / save / diagnostics                     netCDF I/O and convergence figures
report.write_report                                   the summary table and figures of a run
```

``sample``, ``extend_run``, ``results`` and ``report`` are imported on first use: ``results``
is the one module of vaeinv that imports ArviZ, so ``import vaeinv`` stays light.
"""

from importlib import import_module

from .gaussian_prior import GaussianFieldPrior
from .nuts import NUTSResult, nuts_run
from .pcn import PCNInfo, PCNState, freeze_adaptation, pcn_init, pcn_step
from .posterior import Posterior

__all__ = [
    "GaussianFieldPrior",
    "NUTSResult",
    "PCNInfo",
    "PCNState",
    "Posterior",
    "extend_run",
    "freeze_adaptation",
    "nuts_run",
    "pcn_init",
    "pcn_step",
    "report",
    "results",
    "sample",
]


def __getattr__(name: str):
    if name == "sample":
        return import_module(".runner", __name__).sample
    if name == "extend_run":
        return import_module(".extend", __name__).extend_run
    if name in ("results", "report", "runner"):
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
