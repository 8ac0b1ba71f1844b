"""The sampling target: prior + forward model + Gaussian likelihood, evaluated safely and
counted in one place."""

from .model_error import with_model_error
from .noise import NOISE_KINDS, resolve_noise
from .target import Evaluation, Posterior, Work

__all__ = ["NOISE_KINDS", "Evaluation", "Posterior", "Work", "resolve_noise", "with_model_error"]
