"""A prior from the user's own fields: a stack of realisations, or patches of one training image.

[`train_on`][vaeinv.vae.train_on] (and ``vaeinv train --data FILE --out DIR``) opens the data
lazily ([`open_stack`][vaeinv.fields.open_stack]: ``.npy``, ``.npz``, HDF5, zarr,
safetensors), checks every value in one streaming pass (NaN, infinities, non-positive values
under ``log``) before any training, builds the default recipe for the data's grid (or reads a
recipe file), trains ([`train`][vaeinv.vae.train], checkpointed every epoch, resumable), fits
the latent Gaussian on the training split and writes the quality report
([`quality_report`][vaeinv.vae.quality.quality_report]) against the held-out split. ``DIR``
then loads with ``Prior.load(DIR)``.

The default recipe is the shipped ``gaussian64`` prior's, sized to the data: a convolutional VAE
with widths ``(16, 32, 64)`` and a spatial latent of one channel on the grid coarsened 4 times
(256 latents on 64 x 64 cells), inputs standardised by the data's mean and sd (binary media:
Bernoulli outputs between their two values), beta 0.05, Adam at 1e-3, batches of 64, 30 epochs
with early stopping after 8 without progress. ``latent_dim`` picks the number of latent
channels when it is a multiple of the coarse grid's cells, else a vector latent of that size.
A recipe file (TOML) may hold ``calibrate`` and the tables ``[vae]`` and ``[training]``; their
keys replace the defaults' (the keyword arguments replace both).

Under ``torchrun`` the training runs on every process (see ``vaeinv.vae.training``); the first
process fits the latent Gaussian and writes the report while the others wait.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..fields import check_stack, open_stack, read_image, stack_from_patches
from ..grid import Grid
from ._distributed import Parallel, init_from_environment
from .calibration import fit_latent_gaussian
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig, VAEConfig, from_dict, to_dict
from .quality import quality_report, write_quality_report
from .training import TrainResult, split_fields, train

__all__ = ["DEFAULT_RECIPE", "TrainOnOptions", "TrainOnResult", "train_on"]

#: the default recipe's tables (``field_shift``/``field_scale``, ``ny``/``nx`` and the latent
#: come from the data)
DEFAULT_RECIPE: dict[str, Any] = {
    "calibrate": True,
    "vae": {"latent": "spatial", "latent_channels": 1, "channels": [16, 32, 64]},
    "training": {
        "epochs": 30,
        "batch_size": 64,
        "lr": 1e-3,
        "beta": 0.05,
        "val_fraction": 0.1,
        "patience": 8,
    },
}
#: held-out fields the quality report compares with at most
REPORT_FIELDS = 1000
_RECIPE_KEYS = ("calibrate", "vae", "training")


@dataclass(frozen=True)
class TrainOnOptions:
    """What [`train_on`][vaeinv.vae.train_on] does with the data (``None``: the recipe's).

    Attributes:
        key: the array's name inside an ``.npz``, HDF5, zarr or safetensors file holding
            several.
        latent_dim: latent dimensions.
        epochs: training epochs at most.
        log: take the natural log of the values (a permeability stack to log k); every value
            must be positive.
        validation_fraction: share of the fields held out (validation, early stopping, the
            quality report), in ``[0, 0.5]``.
        patches: cut ``patches x patches`` patches from a single 2-D training image.
        stride: the patches' stride in cells (default ``patches // 4``).
        recipe: a recipe file replacing the default recipe's entries.
        lx, ly: the physical size of a field when the file does not say.
        seed: the seed of the weights, the split, the shuffling and the noise.
        batch_size: fields per optimizer step.
    """

    key: str | None = None
    latent_dim: int | None = None
    epochs: int | None = None
    log: bool = False
    validation_fraction: float | None = None
    patches: int | None = None
    stride: int | None = None
    recipe: str | Path | None = None
    lx: float | None = None
    ly: float | None = None
    seed: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("latent_dim", "epochs", "patches", "stride", "batch_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        fraction = self.validation_fraction
        if fraction is not None and not (
            isinstance(fraction, int | float) and not isinstance(fraction, bool)
            and 0 <= fraction <= 0.5
        ):  # fmt: skip
            raise ValueError(f"validation_fraction must be in [0, 0.5], got {fraction!r}")
        for name in ("lx", "ly"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value > 0):
                raise ValueError(f"{name} must be a positive length, got {value!r}")
        if self.stride is not None and self.patches is None:
            raise ValueError("stride is given without patches (it is the patches' stride)")
        if not isinstance(self.log, bool):
            raise ValueError(f"log must be True or False, got {self.log!r}")


@dataclass(frozen=True)
class TrainOnResult:
    """What [`train_on`][vaeinv.vae.train_on] returns.

    Attributes:
        folder: the prior's folder (``Prior.load(folder)``).
        training: the training run's [`TrainResult`][vaeinv.vae.TrainResult].
        quality: the quality report (``quality.json`` in the folder).
        grid: the prior's grid.
        num_fields: fields trained and validated on.
        rank: this process's rank under ``torchrun`` (0 otherwise).
    """

    folder: Path
    training: TrainResult
    quality: dict[str, Any]
    grid: Grid
    num_fields: int
    rank: int = 0


def train_on(
    data,
    out: str | Path,
    options: TrainOnOptions | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device = "cpu",
    **settings,
) -> TrainOnResult:
    """Train a VAE prior on the user's fields and write it, loadable, to ``out``.

    Args:
        data: a stack ``(N, ny, nx)`` or, with ``patches``, a training image ``(ny, nx)``: a
            file path (``.npy``, ``.npz``, ``.h5``/``.hdf5``, ``.zarr``, ``.safetensors``),
            a numpy array or a torch tensor.
        out: the prior's folder (created; checkpoints, history, report).
        options: a [`TrainOnOptions`][vaeinv.vae.TrainOnOptions]; ``**settings`` replace its
            attributes by name (``train_on("k.npy", "out/k", latent_dim=64, log=True)``).
        resume: continue the run in ``out`` (after an interruption).
        progress: show progress bars.
        device: where to train.

    Raises:
        ValueError: a bad option, or data that cannot be trained on (named with where it
            fails: NaN or infinite values, non-positive values under ``log``, a stack that is
            not 3-D, fewer fields than latent dimensions, a patch larger than the image), all
            before any training.
    """
    options = _options(options, settings)
    init_from_environment(device)
    stack, grid = _open(data, options)
    recipe = _recipe(options)
    vae_cfg = _vae_config(recipe["vae"], stack, options.latent_dim)
    if len(stack) <= vae_cfg.latent_dim:
        raise ValueError(
            f"{len(stack)} fields from {stack.source}, fewer than the latent dimension "
            f"{vae_cfg.latent_dim} needs (more than {vae_cfg.latent_dim}, to fit the latent "
            "Gaussian); give more fields or a smaller latent_dim"
        )
    stats = check_stack(stack)
    vae_cfg = replace(vae_cfg, **_scaling(stack, stats, recipe["vae"]))
    train_cfg = _train_config(recipe["training"], options)
    described = {"kind": "user-data", "source": stack.source, "log": options.log}
    if options.patches is not None:
        stride = options.stride if options.stride is not None else max(1, options.patches // 4)
        described.update(patches=options.patches, stride=stride)
    folder = Path(out)
    result = train(
        vae_cfg, train_cfg, stack, folder, resume=resume, progress=progress, grid=grid,
        generator_config=described, device=device,
    )  # fmt: skip
    group = Parallel()
    quality: dict[str, Any] = {}
    if group.main:
        quality = _finish(result, stack, train_cfg, recipe["calibrate"], grid, described)
    group.wait()
    best = load_checkpoint(folder / "model.safetensors").model.to(device)
    result = replace(result, model=best)
    return TrainOnResult(folder, result, group.share(quality), grid, len(stack), group.rank)


def _options(options: TrainOnOptions | None, settings: dict[str, Any]) -> TrainOnOptions:
    options = TrainOnOptions() if options is None else options
    if not isinstance(options, TrainOnOptions):
        raise ValueError(f"options must be a TrainOnOptions, got {type(options).__name__}")
    known = {f.name for f in fields(TrainOnOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
    return replace(options, **settings)


def _open(data, options: TrainOnOptions):
    """The stack (or the patches of an image) and its grid: the file's metadata's, else
    ``lx`` x ``ly``, else the longer side of length 1."""
    if options.patches is not None:
        image, found = read_image(data, key=options.key, log=options.log)
        ny, nx = image.shape
        grid = _agreed(found, options, data) or Grid(nx, ny, *_size(nx, ny, options))
        stack = stack_from_patches(image, options.patches, options.stride, grid=grid)
        return stack, stack.grid
    stack = open_stack(data, key=options.key, log=options.log)
    ny, nx = stack.shape[1:]
    grid = _agreed(stack.grid, options, stack.source) or Grid(nx, ny, *_size(nx, ny, options))
    return stack, grid


def _agreed(found: Grid | None, options: TrainOnOptions, source) -> Grid | None:
    """The file's grid, checked against ``lx``/``ly`` when those are given too."""
    if found is not None:
        for name, value in (("lx", found.lx), ("ly", found.ly)):
            given = getattr(options, name)
            if given is not None and not math.isclose(given, value):
                raise ValueError(f"{name}={given} disagrees with {source}'s metadata ({value})")
    return found


def _size(nx: int, ny: int, options: TrainOnOptions) -> tuple[float, float]:
    side = max(nx, ny)
    lx = options.lx if options.lx is not None else nx / side
    ly = options.ly if options.ly is not None else ny / side
    return float(lx), float(ly)


def _recipe(options: TrainOnOptions) -> dict[str, Any]:
    recipe = {
        "calibrate": DEFAULT_RECIPE["calibrate"],
        "vae": dict(DEFAULT_RECIPE["vae"]),
        "training": dict(DEFAULT_RECIPE["training"]),
    }
    if options.recipe is None:
        return recipe
    path = Path(options.recipe)
    if not path.is_file():
        raise ValueError(f"recipe file {str(path)!r} does not exist")
    try:
        given = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"recipe file {path}: {error}") from None
    unknown = sorted(set(given) - set(_RECIPE_KEYS))
    if unknown:
        raise ValueError(f"recipe file {path}: unknown key(s) {unknown}; known: {_RECIPE_KEYS}")
    if "calibrate" in given:
        if not isinstance(given["calibrate"], bool):
            raise ValueError(f"recipe file {path}: calibrate must be true or false")
        recipe["calibrate"] = given["calibrate"]
    for table in ("vae", "training"):
        value = given.get(table, {})
        if not isinstance(value, dict):
            raise ValueError(f"recipe file {path}: [{table}] must be a table")
        recipe[table].update(value)
    return recipe


def _vae_config(table: dict[str, Any], stack, latent_dim: int | None) -> VAEConfig:
    """The architecture for the stack's grid; ``latent_dim`` as latent channels on the coarse
    grid when it is a multiple of its cells, else a vector latent."""
    ny, nx = stack.shape[1:]
    table = {"ny": ny, "nx": nx, **table}
    if (table["ny"], table["nx"]) != (ny, nx):
        raise ValueError(
            f"the recipe's [vae] grid {table['ny']} x {table['nx']} differs from the data's "
            f"{ny} x {nx}"
        )
    config = from_dict(VAEConfig, table)
    if latent_dim is None:
        return config
    h, w = config.latent_grid
    if latent_dim % (h * w) == 0:
        return replace(config, latent="spatial", latent_channels=latent_dim // (h * w),
                       latent_dim=None)  # fmt: skip
    return replace(config, latent="vector", latent_dim=latent_dim)


def _scaling(stack, stats: dict[str, float], table: dict[str, Any]) -> dict[str, Any]:
    """Standardise by the data's mean and sd; two-valued (binary) data get Bernoulli outputs
    spanning the two values. A recipe's own ``output``/``field_shift``/``field_scale`` win."""
    given = {k: table[k] for k in ("output", "field_shift", "field_scale") if k in table}
    first = stack.read(slice(0, min(len(stack), 256)))
    values = torch.unique(first)
    binary = values.numel() == 2 and float(values[0]) == stats["min"]
    binary = binary and float(values[1]) == stats["max"]
    if binary:
        scaling = {"output": "logits", "field_shift": stats["min"]}
        scaling["field_scale"] = stats["max"] - stats["min"]
    else:
        scaling = {"field_shift": stats["mean"], "field_scale": max(stats["std"], 1e-12)}
    return {**scaling, **given}


def _train_config(table: dict[str, Any], options: TrainOnOptions) -> TrainConfig:
    table = dict(table)
    for name, key in (
        ("epochs", "epochs"),
        ("validation_fraction", "val_fraction"),
        ("batch_size", "batch_size"),
    ):
        if getattr(options, name) is not None:
            table[key] = getattr(options, name)
    table.setdefault("seed", options.seed)
    return from_dict(TrainConfig, table)


def _finish(result: TrainResult, stack, cfg: TrainConfig, calibrate: bool, grid, described):
    """Fit the latent Gaussian on the training split, rewrite the best checkpoint, and write
    the quality report against the held-out split."""
    folder = result.out_dir
    checkpoint = folder / "model.safetensors"
    saved = load_checkpoint(checkpoint)
    model = saved.model
    held, trained = split_fields(len(stack), cfg)  # the training run's split
    num_val = len(held)
    if calibrate:
        fit_latent_gaussian(model, _Rows(stack, trained))
        save_checkpoint(
            checkpoint, model, grid=grid, generator_config=described,
            train_config=to_dict(cfg), losses=saved.metadata.get("losses"),
        )  # fmt: skip
    if not len(held):  # nothing held out: compare with training fields (said in the report)
        held = trained
    held = held[:REPORT_FIELDS]
    report = quality_report(model, stack.read(held), seed=cfg.seed)
    report["held_out_is_training_data"] = num_val == 0
    write_quality_report(report, folder)
    return report


class _Rows:
    """The rows ``index`` of a stack, read by slices of that list (for the calibration)."""

    def __init__(self, stack, index: torch.Tensor) -> None:
        self.stack, self.index = stack, index
        self.shape = (len(index), *stack.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows: slice) -> torch.Tensor:
        return self.stack.read(self.index[rows])
