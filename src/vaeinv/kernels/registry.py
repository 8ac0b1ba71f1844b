"""The kernel registry: method names to kernel classes. The only place that knows which
methods exist; everything else (``vaeinv.sample``, the run loop, ``extend``, problem files, the
CLI) asks it.

```python
import vaeinv

class MyKernel(vaeinv.kernels.Kernel):
    name = "my-rwm"
    ...

vaeinv.kernels.register(MyKernel)
vaeinv.sample(posterior, method="my-rwm")
```
"""

from __future__ import annotations

from .base import Kernel

__all__ = ["available", "get", "register", "unregister"]

_KERNELS: dict[str, type[Kernel]] = {}


def register(kernel: type[Kernel], *, replace: bool = False) -> type[Kernel]:
    """Register a kernel class under its ``name`` (usable as a class decorator).

    Raises:
        ValueError: not a `Kernel` subclass, no ``name``, an ``Options`` that is not an
            ``Options`` dataclass, or a name already registered (without ``replace``).
    """
    from .base import Options

    if not (isinstance(kernel, type) and issubclass(kernel, Kernel)):
        raise ValueError(f"register expects a subclass of vaeinv.kernels.Kernel, got {kernel!r}")
    name = kernel.name
    if not isinstance(name, str) or not name:
        raise ValueError(f"kernel {kernel.__name__} has no name (set the class attribute name)")
    if not (isinstance(kernel.Options, type) and issubclass(kernel.Options, Options)):
        raise ValueError(f"kernel {name!r}: Options must subclass vaeinv.kernels.Options")
    if name in _KERNELS and not replace and _KERNELS[name] is not kernel:
        raise ValueError(f"a kernel named {name!r} is already registered; pass replace=True")
    _KERNELS[name] = kernel
    return kernel


def unregister(name: str) -> None:
    """Remove a registered kernel (e.g. a test's).

    Raises:
        ValueError: an unknown name.
    """
    get(name)
    del _KERNELS[name]


def available() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_KERNELS)


def get(name: str) -> type[Kernel]:
    """The kernel class registered as ``name``.

    Raises:
        ValueError: an unknown name (the registered ones listed).
    """
    if name not in _KERNELS:
        raise ValueError(f"unknown method {name!r}; expected one of {available()}")
    return _KERNELS[name]


def _register_builtin() -> None:
    from .gpcn import GPCNKernel
    from .hmc import HMCKernel
    from .mlda import MLDAKernel
    from .nuts_kernel import NUTSKernel
    from .pcn import PCNKernel
    from .staged import StagedKernel
    from .tpcn import TPCNKernel

    builtin = (PCNKernel, GPCNKernel, TPCNKernel, HMCKernel, NUTSKernel, MLDAKernel, StagedKernel)
    for kernel in builtin:
        register(kernel)


_register_builtin()
