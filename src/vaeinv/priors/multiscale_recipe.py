"""Recipes of multiscale priors and their training, level by level.

A multiscale recipe is a prior recipe (`vaeinv.priors.recipes`) with a list of levels instead
of one ``[vae]`` / ``[training]`` pair, coarsest first; the last level's grid is the
generator's, every coarser grid divides it::

    name = "gaussian16-64"
    description = "..."
    calibrate = true            # fit each level's latent Gaussian after its training

    [data]
    num = 8000
    seed = 641
    [data.generator]            # fields on the finest grid
    kind = "gaussian"
    grid = { nx = 64, ny = 64 }

    [[levels]]                  # level 0: a plain VAE of the coarsened fields
    vae = { ny = 16, nx = 16, channels = [32, 64, 64] }
    training = { epochs = 30, beta = 0.05, seed = 1 }

    [[levels]]                  # level 1: a conditional VAE (cond_channels filled in)
    vae = { ny = 64, nx = 64, channels = [16, 32, 64] }
    training = { epochs = 20, beta = 0.05, seed = 2 }

``vaeinv train RECIPE --out DIR`` trains level after level (``DIR/level<k>-run/``, each
resumable) and writes the finished prior to ``DIR/prior/`` (``level<k>.safetensors`` and
``.json`` per level and ``multiscale.json``), which
[`MultiscalePrior.load`][vaeinv.priors.multiscale.MultiscalePrior.load] reads.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..fields import generator_from_config
from ..fields.coarsen import coarsen
from ..grid import Grid
from ..provenance import write_json
from ..vae import TrainConfig, VAEConfig, from_dict
from ..vae.multiscale import cond_channels, encode_levels, level_cond

__all__ = [
    "MULTISCALE_FORMAT",
    "MultiscaleRecipe",
    "is_multiscale_recipe",
    "load_multiscale_recipe",
    "train_multiscale",
]

#: the ``format`` tag of ``multiscale.json``.
MULTISCALE_FORMAT = "vaeinv-multiscale"

_TOP_KEYS = ("name", "description", "calibrate", "data", "levels")
_LEVEL_KEYS = ("vae", "training")


@dataclass(frozen=True)
class MultiscaleRecipe:
    """A validated multiscale recipe (module docstring).

    Args:
        name: the prior's name.
        description: one line on what it is for.
        num: training fields (on the finest grid; each level coarsens them).
        seed: the seed of the training data.
        generator: the field generator config.
        levels: ``((VAEConfig, TrainConfig), ...)``, coarsest first.
        calibrate: fit each level's latent Gaussian to its aggregate posterior.
    """

    name: str
    description: str
    num: int
    seed: int
    generator: dict[str, Any]
    levels: tuple[tuple[VAEConfig, TrainConfig], ...]
    calibrate: bool = True

    def field_generator(self):
        """The field generator the recipe trains on."""
        return generator_from_config(self.generator)


def is_multiscale_recipe(path: str | Path) -> bool:
    """Whether the TOML file at ``path`` has a ``[[levels]]`` list (a multiscale recipe)."""
    try:
        return "levels" in tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def load_multiscale_recipe(path: str | Path) -> MultiscaleRecipe:
    """Read and validate a multiscale recipe.

    Raises:
        ValueError: a missing file, invalid TOML, an unknown or missing key, fewer than two
            levels, grids that do not grow from level to level or do not divide the
            generator's grid, or a last level not on the generator's grid.
    """
    from .recipes import read_recipe

    _, raw = read_recipe(path, _TOP_KEYS, ("name", "data", "levels"))
    data = raw["data"]
    generator = generator_from_config(data["generator"])
    tables = raw["levels"]
    if not isinstance(tables, list) or len(tables) < 2:
        raise ValueError(f"a multiscale recipe needs at least two [[levels]], got {tables!r}")
    levels = _levels(tables, (generator.grid.ny, generator.grid.nx))
    calibrate = raw.get("calibrate", True)
    if not isinstance(calibrate, bool):
        raise ValueError(f"calibrate must be true or false, got {calibrate!r}")
    return MultiscaleRecipe(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        num=data["num"],
        seed=data["seed"],
        generator=dict(data["generator"]),
        levels=levels,
        calibrate=calibrate,
    )


def _levels(tables: list, fine: tuple[int, int]) -> tuple[tuple[VAEConfig, TrainConfig], ...]:
    out: list[tuple[VAEConfig, TrainConfig]] = []
    for k, table in enumerate(tables):
        where = f"[[levels]] entry {k}"
        if not isinstance(table, dict):
            raise ValueError(f"{where} must be a table, got {table!r}")
        unknown = [key for key in table if key not in _LEVEL_KEYS]
        missing = [key for key in _LEVEL_KEYS if key not in table]
        if unknown or missing:
            raise ValueError(
                f"{where} must have exactly the keys vae and training; unknown {unknown}, "
                f"missing {missing}"
            )
        vae = dict(table["vae"])
        if k:
            wanted = cond_channels(out[-1][0])
            if vae.setdefault("cond_channels", wanted) != wanted:
                raise ValueError(
                    f"{where}: cond_channels is {vae['cond_channels']}, but the coarser level "
                    f"gives {wanted} (its latent channels + 1); leave it out"
                )
        elif vae.get("cond_channels", 0):
            raise ValueError(f"{where}: the coarsest level takes no cond (cond_channels 0)")
        config = from_dict(VAEConfig, vae)
        shape = (config.ny, config.nx)
        if fine[0] % config.ny or fine[1] % config.nx:
            raise ValueError(
                f"{where}: its {config.ny} x {config.nx} grid does not divide the generator's "
                f"{fine[0]} x {fine[1]} grid"
            )
        if out and not (shape[0] > out[-1][0].ny and shape[1] > out[-1][0].nx):
            raise ValueError(f"{where}: levels must grow from coarse to fine, got {shape} after "
                             f"{(out[-1][0].ny, out[-1][0].nx)}")  # fmt: skip
        out.append((config, from_dict(TrainConfig, table["training"])))
    if (out[-1][0].ny, out[-1][0].nx) != fine:
        raise ValueError(
            f"the last level is {out[-1][0].ny} x {out[-1][0].nx}, but the generator's grid is "
            f"{fine[0]} x {fine[1]}: the finest level must be the generator's grid"
        )
    return tuple(out)


def _level_grid(fine: Grid, config: VAEConfig) -> Grid:
    return Grid(nx=config.nx, ny=config.ny, lx=fine.lx, ly=fine.ly)


def train_multiscale(
    recipe: MultiscaleRecipe,
    fields: torch.Tensor,
    grid: Grid,
    out: str | Path,
    *,
    generator_config: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    log=print,
) -> Path:
    """Train every level of ``recipe`` on ``fields`` (the finest grid); return the folder of
    the finished prior (``out/prior``).

    Each level trains in ``out/level<k>-run`` (resumable with ``resume``); the coarser levels
    are frozen (eval mode) and give the finer one its conditioning (`vaeinv.vae.multiscale`).
    """
    from ..vae import load_checkpoint, save_checkpoint, train
    from ..vae.calibration import fit_latent_gaussian

    out = Path(out)
    prior_dir = out / "prior"
    models = []
    for k, (config, train_config) in enumerate(recipe.levels):
        level_fields = coarsen(fields, grid.ny // config.ny)
        cond = None
        if k:
            means, decoded = encode_levels(models, fields)
            cond = _cond(recipe.levels[k - 1][0], means[-1], decoded[-1], config)
        log(f"level {k}: {config.ny} x {config.nx}, latent {config.latent_dim}")
        result = train(
            config,
            train_config,
            level_fields,
            out / f"level{k}-run",
            resume=resume,
            progress=progress,
            cond=cond,
            grid=_level_grid(grid, config),
            generator_config=generator_config,
        )
        model = result.model.eval().requires_grad_(False)
        if recipe.calibrate:
            fit_latent_gaussian(model, level_fields, cond=cond)
        saved = load_checkpoint(out / f"level{k}-run" / "model.safetensors")
        save_checkpoint(
            prior_dir / f"level{k}.safetensors",
            model,
            grid=_level_grid(grid, config),
            generator_config=generator_config,
            train_config=saved.metadata.get("train_config"),
            losses=saved.metadata.get("losses"),
        )
        models.append(model)
    write_json(
        {
            "format": MULTISCALE_FORMAT,
            "format_version": 1,
            "name": recipe.name,
            "description": recipe.description,
            "levels": [f"level{k}.safetensors" for k in range(len(recipe.levels))],
        },
        prior_dir / "multiscale.json",
    )
    return prior_dir


def _cond(coarse: VAEConfig, means, decoded, fine: VAEConfig, batch: int = 512) -> torch.Tensor:
    parts = [
        level_cond(coarse, means[i : i + batch], decoded[i : i + batch], fine)
        for i in range(0, means.shape[0], batch)
    ]
    return torch.cat(parts)
