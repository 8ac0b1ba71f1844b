"""Tiny configs and data shared by the VAE tests (kept small so every test runs in seconds)."""

from __future__ import annotations

import torch

from vaeinv.vae import TrainConfig, VAEConfig

from conftest import random_log_k


def tiny_config(**overrides) -> VAEConfig:
    """An 8 x 8 grid, two stages of 4 and 8 channels: a 1 x 4 x 4 = 16-dimensional latent."""
    settings = {"ny": 8, "nx": 8, "channels": (4, 8), "norm_groups": 2}
    return VAEConfig(**{**settings, **overrides})


def tiny_train_config(**overrides) -> TrainConfig:
    settings = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "val_fraction": 0.25, "seed": 7}
    settings["num_threads"] = 1
    return TrainConfig(**{**settings, **overrides})


def tiny_fields(generator: torch.Generator, n: int = 48, ny: int = 8, nx: int = 8) -> torch.Tensor:
    """Smooth float32 fields with values in [-1, 1]."""
    return random_log_k((n, ny, nx), generator, contrast=2.0).float()
