"""Domain-decomposed inversion (DD-VAE): local priors on overlapping subdomains, Gaussian-process
interface pressures, local posteriors sampled in parallel, and Poisson blending of the local
draws into global ones (`vaeinv.partition`, `vaeinv.blending`)."""

from .interface import InterfaceGP, face_pressures, refine_interfaces
from .local import LocalReadings, LocalSpec, build_local, interface_sensitivity
from .setup import Decomposition, InterfaceSettings, PriorOnlyWarning

__all__ = [
    "Decomposition",
    "InterfaceGP",
    "InterfaceSettings",
    "LocalReadings",
    "LocalSpec",
    "PriorOnlyWarning",
    "build_local",
    "face_pressures",
    "interface_sensitivity",
    "refine_interfaces",
]
