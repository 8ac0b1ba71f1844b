"""Sampling kernels: the protocol, the registry, and the built-in kernels.

```
Kernel, Options               the protocol (init / step / end_warmup over a NamedTuple state)
register / available / get    the registry: method names to kernels
pcn, gpcn, tpcn, hmc          batched over chains (one decode and solve per step for all)
nuts                          Pyro's NUTS, chain by chain
```

The functional forms (``pcn_init`` / ``pcn_step``, ``hmc_init`` / ``hmc_step``, ``nuts_run``,
...) are in the kernels' modules.
"""

from .base import KEPT_STATS, Kernel, Options, check_fraction, check_positive
from .registry import available, get, register, unregister

__all__ = [
    "KEPT_STATS",
    "Kernel",
    "Options",
    "available",
    "check_fraction",
    "check_positive",
    "get",
    "register",
    "unregister",
]
