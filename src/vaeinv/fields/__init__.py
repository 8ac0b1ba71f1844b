"""Prior sample generators (training data) and reproducible datasets.

- :class:`GaussianRandomField`: stationary Gaussian log-k, exact by circulant embedding, with
  exponential, Gaussian or Matern covariance, anisotropy, rotation and uncertain length scales.
- :class:`ChannelizedField`: sinuous channels, each facies its own Gaussian field (MDGM-like).
- :class:`ThresholdedGaussianField`: binary media at a target porosity.
- :func:`generate_dataset` / :func:`load_dataset`: safetensors files with their metadata.
- :func:`coarsen`: block log-mean-exp upscaling of log-k.
- :func:`open_stack` / :class:`FieldStack` / :func:`check_stack`: users' own stacks of fields
  (``.npy``, ``.npz``, HDF5, zarr, safetensors), read lazily and checked in one streaming pass.
- :func:`open_image` / :func:`read_image` / :func:`cut_patches` / :func:`stack_from_patches`:
  a single training image cut into overlapping patches.
"""

from __future__ import annotations

from .binary import ThresholdedGaussianField
from .channels import ChannelizedField
from .coarsen import coarsen
from .dataset import DATASET_FORMAT, FieldDataset, generate_dataset, load_dataset
from .embedding import EmbeddingInfo, EmbeddingWarning
from .gaussian import GaussianRandomField
from .kernels import KERNELS, correlation
from .patches import PatchField
from .registry import GENERATORS, FieldGenerator, generator_from_config
from .stacks import FieldStack, check_stack, open_stack
from .training_image import cut_patches, open_image, read_image, stack_from_patches

__all__ = [
    "DATASET_FORMAT",
    "GENERATORS",
    "KERNELS",
    "ChannelizedField",
    "EmbeddingInfo",
    "EmbeddingWarning",
    "FieldDataset",
    "FieldGenerator",
    "FieldStack",
    "GaussianRandomField",
    "PatchField",
    "ThresholdedGaussianField",
    "check_stack",
    "coarsen",
    "correlation",
    "cut_patches",
    "generate_dataset",
    "generator_from_config",
    "load_dataset",
    "open_image",
    "open_stack",
    "read_image",
    "stack_from_patches",
]
