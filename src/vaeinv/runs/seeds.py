"""The run's random streams (defined in `vaeinv.kernels.starts`, where kernels read them)."""

from ..kernels.starts import (
    INIT_SCALE,
    STREAM_INIT,
    STREAM_KERNEL,
    STREAM_NUTS,
    STREAM_POOLED,
    STREAM_TRANSPORT,
    derived_seed,
)

__all__ = [
    "INIT_SCALE",
    "STREAM_INIT",
    "STREAM_KERNEL",
    "STREAM_NUTS",
    "STREAM_POOLED",
    "STREAM_TRANSPORT",
    "derived_seed",
]
