"""Variational autoencoders that learn a prior from sample fields.

Networks ([`VAE`][vaeinv.vae.VAE], [`Encoder`][vaeinv.vae.Encoder],
[`Decoder`][vaeinv.vae.Decoder]) built from a [`VAEConfig`][vaeinv.vae.VAEConfig], the loss
([`vae_loss`][vaeinv.vae.vae_loss]), the training loop ([`train`][vaeinv.vae.train] with a
[`TrainConfig`][vaeinv.vae.TrainConfig]; [`train_on`][vaeinv.vae.train_on] for a user's own
fields, with a quality report) and checkpoint I/O
([`save_checkpoint`][vaeinv.vae.save_checkpoint], [`load_checkpoint`][vaeinv.vae.load_checkpoint]).
"""

from __future__ import annotations

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, VAEConfig, from_dict, from_toml, to_dict
from .losses import fisher_information, kl_divergence, mmd_imq, reconstruction_loss, vae_loss
from .networks import VAE, Decoder, Encoder, init_vae
from .training import TrainResult, train
from .user_data import TrainOnOptions, TrainOnResult, train_on

__all__ = [
    "VAE",
    "Checkpoint",
    "Decoder",
    "Encoder",
    "TrainConfig",
    "TrainOnOptions",
    "TrainOnResult",
    "TrainResult",
    "VAEConfig",
    "fisher_information",
    "from_dict",
    "from_toml",
    "init_vae",
    "kl_divergence",
    "load_checkpoint",
    "mmd_imq",
    "reconstruction_loss",
    "save_checkpoint",
    "to_dict",
    "train",
    "train_on",
    "vae_loss",
]
