"""Prior recipes: the TOML files that say how a prior is made.

A recipe names the training data (a field generator config, a number of fields and a seed),
the VAE architecture and the training settings. ``vaeinv train RECIPE --out DIR`` turns it
into a checkpoint; the shipped priors keep their recipe next to their weights
(``vaeinv/priors/shipped/<name>/recipe.toml``), so every shipped prior can be rebuilt. Layout::

    name = "gaussian64"
    description = "..."
    calibrate = true        # fit the latent Gaussian after training (vaeinv.vae.calibration)

    [data]
    num = 8000
    seed = 1

    [data.generator]        # any field generator config (vaeinv.fields)
    kind = "gaussian"
    grid = { nx = 64, ny = 64 }

    [vae]                   # vaeinv.vae.VAEConfig
    [training]              # vaeinv.vae.TrainConfig

    [finetune]              # optional, after the calibration (vaeinv.vae.finetune)
    epochs = 3
    stats_lambda = 300.0

    [second_stage]          # optional, after training (vaeinv.vae.second_stage)
    seed = 7
    residual_fields = 2000  # the decoder's residual field (0: none)
    flow_fields = 40000     # fresh fields encoded to train the latent flow
    flow_epochs = 15
    [second_stage.flow]     # vaeinv.vae.flow.FlowConfig without latent_shape; absent: no flow
    couplings = 8

Unknown keys anywhere are errors.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fields import generator_from_config
from ..vae import TrainConfig, VAEConfig, from_dict
from ..vae.finetune import FinetuneConfig

__all__ = ["Recipe", "fit_recipe_second_stage", "load_recipe", "read_recipe"]

_TOP_KEYS = (
    "name",
    "description",
    "calibrate",
    "data",
    "vae",
    "training",
    "finetune",
    "second_stage",
)
_STAGE_KEYS = ("seed", "residual_fields", "flow_fields", "flow_epochs", "flow")
_FLOW_KEYS = ("couplings", "hidden", "depth", "scale_limit")
_DATA_KEYS = ("num", "seed", "generator")


@dataclass(frozen=True)
class Recipe:
    """A validated prior recipe.

    Args:
        name: the prior's name.
        description: one line on what the prior is for.
        num: number of training fields (validation taken from them).
        seed: the seed of the training data.
        generator: the field generator config (a dict as in ``vaeinv.fields``).
        vae: the architecture.
        training: the training settings.
        calibrate: after training, fit the latent prior to the aggregate posterior (see
            `vaeinv.vae.calibration`); default true.
        second_stage: the ``[second_stage]`` table (seed, residual_fields, flow_fields,
            flow_epochs and an optional ``flow`` table), or ``None``.
        finetune: the decoder's statistics fine-tune after the calibration (the
            ``[finetune]`` table, see `vaeinv.vae.finetune`), or ``None``.
    """

    name: str
    description: str
    num: int
    seed: int
    generator: dict[str, Any]
    vae: VAEConfig
    training: TrainConfig
    calibrate: bool = True
    second_stage: dict[str, Any] | None = None
    finetune: FinetuneConfig | None = None

    def flow_config(self):
        """The [`FlowConfig`][vaeinv.vae.flow.FlowConfig] of the second stage, or ``None``."""
        from ..vae.flow import FlowConfig

        if self.second_stage is None or "flow" not in self.second_stage:
            return None
        return FlowConfig(self.vae.latent_shape, **self.second_stage["flow"])

    def field_generator(self):
        """The field generator the recipe trains on."""
        return generator_from_config(self.generator)


def _check_keys(table: dict, known: tuple[str, ...], where: str) -> None:
    unknown = [k for k in table if k not in known]
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r} in {where}; expected keys: {', '.join(known)}"
        )


def read_recipe(
    path: str | Path, top_keys: tuple[str, ...], required: tuple[str, ...]
) -> tuple[Path, dict]:
    """``(file, table)`` of a recipe file whose top-level keys are among ``top_keys`` and
    include ``required`` and whose ``[data]`` table is valid (``num``, ``seed``,
    ``generator``).

    Raises:
        ValueError: a missing file, invalid TOML, an unknown or missing key, or a bad
            ``[data]`` value.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"recipe {str(path)!r} does not exist")
    try:
        raw = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    _check_keys(raw, top_keys, f"recipe {file.name}")
    for key in required:
        if key not in raw:
            raise ValueError(f"recipe {file.name} has no {key!r}")
    data = raw["data"]
    _check_keys(data, _DATA_KEYS, "[data]")
    for key in _DATA_KEYS:
        if key not in data:
            raise ValueError(f"[data] of recipe {file.name} has no {key!r}")
    for key, least in (("num", 1), ("seed", 0)):
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"[data] {key} must be an integer >= {least}, got {value!r}")
    return file, raw


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file.

    Args:
        path: the TOML file.

    Raises:
        ValueError: a missing file, invalid TOML, an unknown or missing key, an invalid value,
            or a generator grid that does not match the VAE's ``ny x nx``.
    """
    _, raw = read_recipe(path, _TOP_KEYS, ("name", "data", "vae", "training"))
    data = raw["data"]
    generator = generator_from_config(data["generator"])  # validates the generator config
    vae = from_dict(VAEConfig, raw["vae"])
    if (generator.grid.ny, generator.grid.nx) != (vae.ny, vae.nx):
        raise ValueError(
            f"the generator's grid is {generator.grid.ny} x {generator.grid.nx} but [vae] "
            f"expects {vae.ny} x {vae.nx}"
        )
    calibrate = raw.get("calibrate", True)
    if not isinstance(calibrate, bool):
        raise ValueError(f"calibrate must be true or false, got {calibrate!r}")
    stage = raw.get("second_stage")
    if stage is not None:
        stage = _check_second_stage(stage, vae)
    finetune = raw.get("finetune")
    if finetune is not None:
        finetune = from_dict(FinetuneConfig, finetune)
        if not finetune.max_lag < min(vae.ny, vae.nx):
            raise ValueError(
                f"[finetune] max_lag {finetune.max_lag} must be below the grid size "
                f"{vae.ny} x {vae.nx}"
            )
    return Recipe(
        finetune=finetune,
        second_stage=stage,
        calibrate=calibrate,
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        num=data["num"],
        seed=data["seed"],
        generator=dict(data["generator"]),
        vae=vae,
        training=from_dict(TrainConfig, raw["training"]),
    )


def _check_second_stage(stage: dict, vae: VAEConfig) -> dict:
    from ..vae.flow import FlowConfig

    _check_keys(stage, _STAGE_KEYS, "[second_stage]")
    out = {"seed": 0, "residual_fields": 2000, "flow_fields": 40000, "flow_epochs": 15}
    for key in ("seed", "residual_fields", "flow_fields", "flow_epochs"):
        value = stage.get(key, out[key])
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"[second_stage] {key} must be an integer >= 0, got {value!r}")
        out[key] = value
    if "flow" in stage:
        _check_keys(stage["flow"], _FLOW_KEYS, "[second_stage.flow]")
        FlowConfig(vae.latent_shape, **stage["flow"])  # validates
        out["flow"] = dict(stage["flow"])
    return out


def fit_recipe_second_stage(recipe: Recipe, folder: str | Path, log=print) -> dict | None:
    """Fit the recipe's ``[second_stage]`` (if any) for the trained prior in ``folder``."""
    from ..vae.second_stage import fit_second_stage

    stage = recipe.second_stage
    if stage is None:
        return None
    return fit_second_stage(
        folder,
        recipe.field_generator(),
        seed=stage["seed"],
        residual_fields=stage["residual_fields"],
        flow_config=recipe.flow_config(),
        flow_fields=stage["flow_fields"],
        flow_epochs=stage["flow_epochs"],
        log=log,
    )
