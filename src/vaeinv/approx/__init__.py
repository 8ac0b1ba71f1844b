"""Approximations of the posterior that kernels build on: the Laplace (Gauss-Newton)
approximation, the pooled cross-chain covariance, and transport maps fitted by variational
inference."""

from .laplace import LaplaceApproximation, laplace_approximation
from .pooled import pooled_schedule, spiked_covariance
from .transport import CouplingFlow, TransportMap, fit_transport

__all__ = [
    "CouplingFlow",
    "LaplaceApproximation",
    "TransportMap",
    "fit_transport",
    "laplace_approximation",
    "pooled_schedule",
    "spiked_covariance",
]
