"""Configurations of the VAE (architecture) and of its training, validated on construction.

Both are frozen dataclasses. [`from_dict`][vaeinv.vae.config.from_dict] builds one from a plain
mapping (a TOML table, a checkpoint's JSON) and rejects unknown keys;
[`from_toml`][vaeinv.vae.config.from_toml] reads one from a TOML file.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

__all__ = ["TrainConfig", "VAEConfig", "from_dict", "from_toml", "to_dict"]

ACTIVATIONS = ("silu", "relu", "elu", "gelu", "tanh")
LATENTS = ("spatial", "vector")
OUTPUTS = ("linear", "logits", "facies")

C = TypeVar("C")


def _positive_int(owner: str, name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner} {name} must be an integer >= {minimum}, got {value!r}")


def _finite(owner: str, name: str, value: Any, positive: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or (positive and number <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{owner} {name} must be {kind}, got {value!r}")
    return number


def _choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner} {name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a convolutional VAE on an ``ny x nx`` grid; every shape derives from it.

    The encoder has one stage per entry of ``channels``: the first works at full resolution,
    each following one halves the resolution, so the downsampling factor is
    ``2 ** (len(channels) - 1)`` (4 for the default ``(16, 32, 64)``: a 64 x 64 grid gives a
    16 x 16 x ``latent_channels`` spatial latent, 256 dimensions as in MDGM). A grid not
    divisible by the factor is padded (replicating the edge) at its high-index side on the way
    in and cropped on the way out.

    Args:
        ny: rows of the grid.
        nx: columns of the grid.
        latent: ``"spatial"`` (a ``latent_channels`` x coarse-grid latent, convolutional heads)
            or ``"vector"`` (a flat ``latent_dim`` latent, linear heads).
        latent_channels: channels of a spatial latent.
        latent_dim: size of a vector latent (required for ``"vector"``). For ``"spatial"``
            leave it ``None``: it is filled in as ``latent_channels * (ny/f) * (nx/f)``.
        channels: convolution widths, one per stage (full resolution first).
        blocks_per_stage: extra same-resolution convolutions in each stage (0 or more).
        output: ``"linear"`` (real fields, squared-error loss), ``"logits"`` (binary media,
            Bernoulli loss; the decoded field is ``field_shift + field_scale * sigmoid``) or
            ``"facies"`` (real fields of two facies, squared-error loss: the last convolution
            gives three maps ``a, u1, u0`` and the output is the blend
            ``sigmoid(a) * u1 + (1 - sigmoid(a)) * u0``, so a sharp facies boundary is the
            zero line of a smooth map ``a`` rather than a step the convolutions must draw).
        activation: one of ``silu``, ``relu``, ``elu``, ``gelu``, ``tanh``.
        norm_groups: GroupNorm groups (``gcd(norm_groups, width)`` per layer); 0 for none.
            GroupNorm behaves the same in train and eval mode, so decoding is deterministic.
        cond_channels: channels of an optional conditioning field (e.g. an upsampled coarse
            field of a multiscale prior) given to both encoder and decoder; 0 for none.
        field_shift: the network works on ``(field - field_shift) / field_scale``.
        field_scale: see ``field_shift``; for ``"logits"`` the scaled fields must be in [0, 1].

    Raises:
        ValueError: a bad size, choice or combination (named in the message).
    """

    ny: int
    nx: int
    latent: Literal["spatial", "vector"] = "spatial"
    latent_channels: int = 1
    latent_dim: int | None = None
    channels: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = 0
    output: Literal["linear", "logits", "facies"] = "linear"
    activation: str = "silu"
    norm_groups: int = 8
    cond_channels: int = 0
    field_shift: float = 0.0
    field_scale: float = 1.0

    def __post_init__(self) -> None:
        own = "VAEConfig"
        _positive_int(own, "ny", self.ny)
        _positive_int(own, "nx", self.nx)
        _choice(own, "latent", self.latent, LATENTS)
        _choice(own, "output", self.output, OUTPUTS)
        _choice(own, "activation", self.activation, ACTIVATIONS)
        _positive_int(own, "latent_channels", self.latent_channels)
        _positive_int(own, "blocks_per_stage", self.blocks_per_stage, minimum=0)
        _positive_int(own, "norm_groups", self.norm_groups, minimum=0)
        _positive_int(own, "cond_channels", self.cond_channels, minimum=0)
        if isinstance(self.channels, str | bytes) or not isinstance(self.channels, list | tuple):
            raise ValueError(f"{own} channels must be a sequence of widths, got {self.channels!r}")
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.channels:
            raise ValueError(f"{own} channels must name at least one stage width")
        for width in self.channels:
            _positive_int(own, "channels entry", width)
        object.__setattr__(self, "field_shift", _finite(own, "field_shift", self.field_shift))
        scale = _finite(own, "field_scale", self.field_scale, positive=True)
        object.__setattr__(self, "field_scale", scale)
        h, w = self.latent_grid
        if self.latent == "spatial":
            derived = self.latent_channels * h * w
            if self.latent_dim is not None and self.latent_dim != derived:
                raise ValueError(
                    f"{own} latent_dim={self.latent_dim!r} contradicts the spatial latent "
                    f"{self.latent_channels} x {h} x {w} = {derived}; leave it out"
                )
            object.__setattr__(self, "latent_dim", derived)
        elif self.latent_dim is None:
            raise ValueError(f"{own} latent='vector' needs latent_dim (a positive integer)")
        _positive_int(own, "latent_dim", self.latent_dim)

    @property
    def factor(self) -> int:
        """Downsampling factor of the encoder, ``2 ** (len(channels) - 1)``."""
        return 2 ** (len(self.channels) - 1)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` rounded up to multiples of :attr:`factor`."""
        f = self.factor
        return (-(-self.ny // f) * f, -(-self.nx // f) * f)

    @property
    def latent_grid(self) -> tuple[int, int]:
        """Rows and columns of the coarsest feature map (the spatial latent's grid)."""
        py, px = self.padded_shape
        return (py // self.factor, px // self.factor)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent as the decoder takes it: ``(C, h, w)`` or ``(latent_dim,)``."""
        if self.latent == "spatial":
            return (self.latent_channels, *self.latent_grid)
        return (self.latent_dim,)


LR_SCHEDULES = ("constant", "cosine")


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based) under ``config.lr_schedule``."""
    if config.lr_schedule == "constant":
        return config.lr
    cos = math.cos(math.pi * (epoch - 1) / config.epochs)
    return config.lr_min + (config.lr - config.lr_min) * (1 + cos) / 2


@dataclass(frozen=True)
class TrainConfig:
    """How a VAE is trained (see [`train`][vaeinv.vae.train]).

    Args:
        epochs: passes over the training split.
        batch_size: fields per optimizer step.
        lr: Adam learning rate.
        beta: weight of the KL term (beta-VAE; 1 is the plain ELBO).
        fisher_lambda: weight of the Fisher-information penalty (0 disables it).
        fisher_target: the target Fisher information ``F_c`` of that penalty.
        mmd_lambda: weight of the MMD term between the aggregate posterior and ``N(0, I)``
            (InfoVAE; 0 disables it; see ``vaeinv.vae.losses``).
        val_fraction: share of the fields held out for validation, in ``[0, 0.5]``; with 0 the
            training loss is monitored instead.
        patience: stop after this many epochs without a better monitored loss; ``None`` never.
        seed: the one seed of initial weights, the split, shuffling and latent noise.
        num_threads: torch CPU threads during training (``None`` keeps the current setting).
        grad_clip: clip the gradient norm to this value (``None`` for no clipping).
        lr_schedule: ``"constant"`` keeps ``lr``; ``"cosine"`` sets the rate of epoch ``e`` (of
            ``E = epochs``) to ``lr_min + (lr - lr_min) * (1 + cos(pi * (e - 1) / E)) / 2``, from
            ``lr`` at the first epoch down towards ``lr_min`` at the last (cosine annealing,
            Loshchilov & Hutter 2017). The rate is a function of the epoch alone, so a resumed
            run follows the same schedule; with ``"cosine"`` a resume must keep ``epochs``.
        lr_min: the floor of the cosine schedule, in ``[0, lr]``.

    Raises:
        ValueError: a value out of range (named in the message).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 1.0
    fisher_lambda: float = 0.0
    fisher_target: float = 0.0
    mmd_lambda: float = 0.0
    val_fraction: float = 0.1
    patience: int | None = 10
    seed: int = 0
    num_threads: int | None = None
    grad_clip: float | None = None
    lr_schedule: str = "constant"
    lr_min: float = 0.0

    def __post_init__(self) -> None:
        own = "TrainConfig"
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"{own} lr_schedule must be one of {', '.join(map(repr, LR_SCHEDULES))}, "
                f"got {self.lr_schedule!r}"
            )
        _positive_int(own, "epochs", self.epochs)
        _positive_int(own, "batch_size", self.batch_size)
        _positive_int(own, "seed", self.seed, minimum=0)
        if self.patience is not None:
            _positive_int(own, "patience", self.patience)
        if self.num_threads is not None:
            _positive_int(own, "num_threads", self.num_threads)
        object.__setattr__(self, "lr", _finite(own, "lr", self.lr, positive=True))
        for name in ("beta", "fisher_lambda", "fisher_target", "mmd_lambda", "val_fraction"):
            value = _finite(own, name, getattr(self, name))
            if value < 0:
                raise ValueError(f"{own} {name} must be >= 0, got {value!r}")
            object.__setattr__(self, name, value)
        if self.val_fraction > 0.5:
            raise ValueError(f"{own} val_fraction must be in [0, 0.5], got {self.val_fraction}")
        lr_min = _finite(own, "lr_min", self.lr_min)
        if not 0 <= lr_min <= self.lr:
            raise ValueError(f"{own} lr_min must be in [0, lr={self.lr}], got {lr_min}")
        object.__setattr__(self, "lr_min", lr_min)
        if self.grad_clip is not None:
            clip = _finite(own, "grad_clip", self.grad_clip, positive=True)
            object.__setattr__(self, "grad_clip", clip)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON/TOML-ready dict of a config (tuples become lists)."""
    return {
        f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
        for f in dataclasses.fields(config)
    }


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build config class ``cls`` from ``data``; unknown keys are a ``ValueError``.

    Args:
        cls: [`VAEConfig`][vaeinv.vae.VAEConfig] or [`TrainConfig`][vaeinv.vae.TrainConfig].
        data: the keyword arguments.

    Raises:
        ValueError: keys that are not fields of ``cls``, or invalid values.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} needs a table of settings, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys: {', '.join(known)}")
    try:
        return cls(**data)
    except TypeError as err:  # a missing required field
        raise ValueError(f"{cls.__name__}: {err}") from None


def from_toml(cls: type[C], path: str | Path, table: str | None = None) -> C:
    """Read config class ``cls`` from a TOML file (optionally from one of its tables).

    Args:
        cls: the config class.
        path: the TOML file.
        table: the table holding the settings (``None``: the whole file).

    Raises:
        ValueError: a missing table, unknown keys or invalid values.
    """
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    if table is not None:
        if table not in data:
            raise ValueError(f"{path} has no [{table}] table; tables: {', '.join(data)}")
        data = data[table]
    return from_dict(cls, data)
