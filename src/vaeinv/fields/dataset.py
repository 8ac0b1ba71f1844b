"""Reproducible datasets of sampled fields on disk (safetensors, never pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..provenance import package_version
from .registry import GENERATORS, FieldGenerator, generator_from_config
from .validation import grid_config, grid_from_config

__all__ = ["DATASET_FORMAT", "FieldDataset", "generate_dataset", "load_dataset"]

#: Format tag written into every dataset's metadata.
DATASET_FORMAT = "vaeinv.fields.dataset/1"
_METADATA_KEY = "vaeinv"


@dataclass(frozen=True)
class FieldDataset:
    """Fields read from (or just written to) disk.

    Args:
        fields: ``(num, ny, nx)`` float32 samples (log-k, or 0/1 for binary media).
        facies: ``(num, ny, nx)`` boolean facies (channel = ``True``), or ``None``.
        metadata: generator ``kind``, its class name and ``config``, ``seed``, ``num``,
            ``version`` of vaeinv, ``grid`` and the ``format`` tag.
    """

    fields: torch.Tensor
    facies: torch.Tensor | None
    metadata: dict[str, Any]

    def generator(self) -> FieldGenerator:
        """The generator that made the dataset, rebuilt from its config."""
        return generator_from_config(self.metadata["config"])

    @property
    def grid(self):
        """The :class:`~vaeinv.Grid` the fields live on."""
        return grid_from_config(self.metadata["grid"])


def generate_dataset(
    generator_obj: FieldGenerator, num: int, seed: int, path: str | os.PathLike
) -> FieldDataset:
    """Sample ``num`` fields with ``torch.Generator().manual_seed(seed)`` and write them.

    The same generator config and seed give identical arrays. Generators with facies
    (``sample_with_facies``) also store the facies.

    Args:
        generator_obj: a field generator (one of :data:`~vaeinv.fields.GENERATORS`' classes).
        num: number of fields, ``>= 1``.
        seed: the seed, a non-negative integer (written into the file).
        path: the ``.safetensors`` file to write (its folder is created).

    Returns:
        The dataset as written.

    Raises:
        ValueError: an unknown generator object, or a bad ``num`` or ``seed``.
    """
    if type(generator_obj) not in GENERATORS.values():
        raise ValueError(
            f"generator_obj must be one of {', '.join(c.__name__ for c in GENERATORS.values())}, "
            f"got {type(generator_obj).__name__}"
        )
    for name, value, least in (("num", num, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    gen = torch.Generator().manual_seed(seed)
    facies = None
    if hasattr(generator_obj, "sample_with_facies"):
        fields, facies = generator_obj.sample_with_facies(num, gen, torch.float32, "cpu")
    else:
        fields = generator_obj.sample(num, gen, torch.float32, "cpu")
    metadata = {
        "format": DATASET_FORMAT,
        "kind": generator_obj.kind,
        "generator": type(generator_obj).__name__,
        "config": generator_obj.config(),
        "seed": seed,
        "num": num,
        "version": package_version("vaeinv"),
        "grid": grid_config(generator_obj.grid),
    }
    tensors = {"fields": fields.contiguous()}
    if facies is not None:
        tensors["facies"] = facies.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={_METADATA_KEY: json.dumps(metadata)})
    return FieldDataset(fields, facies, metadata)


def load_dataset(path: str | os.PathLike) -> FieldDataset:
    """Read a dataset written by :func:`generate_dataset`.

    Args:
        path: the ``.safetensors`` file.

    Returns:
        The dataset (CPU tensors).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a vaeinv field dataset, or fields that do not match the metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {path}")
    with safe_open(str(path), framework="pt") as handle:
        raw = (handle.metadata() or {}).get(_METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is not a vaeinv field dataset (no {_METADATA_KEY!r} metadata)")
    metadata = json.loads(raw)
    if metadata.get("format") != DATASET_FORMAT:
        raise ValueError(
            f"{path} has dataset format {metadata.get('format')!r}, expected {DATASET_FORMAT!r}"
        )
    tensors = load_file(str(path))
    fields = tensors.get("fields")
    grid = grid_from_config(metadata["grid"])
    expected = (metadata["num"], *grid.shape)
    if fields is None or tuple(fields.shape) != expected:
        shape = None if fields is None else tuple(fields.shape)
        raise ValueError(f"{path}: fields have shape {shape}, metadata says {expected}")
    return FieldDataset(fields, tensors.get("facies"), metadata)
