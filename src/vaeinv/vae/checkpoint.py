"""VAE checkpoints: safetensors weights plus a human-readable JSON file next to them.

A checkpoint ``<stem>.safetensors`` has its metadata in ``<stem>.json``: the format tag, the
architecture (``model_config``), the grid, the data generator's config (optional), the training
config and final losses (optional), package versions, and the sha256 of the weights file.
Loading never unpickles anything: it checks that the weights file *is* safetensors, that the
metadata has exactly the expected keys, that the hash matches, and loads the weights strictly.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from ..grid import Grid
from ..provenance import versions, write_json
from .calibration import with_latent_prior
from .config import VAEConfig, from_dict, to_dict
from .networks import VAE, init_vae

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "vaeinv-vae-checkpoint"
FORMAT_VERSION = 1
METADATA_KEYS = (
    "format",
    "format_version",
    "model_config",
    "grid",
    "generator_config",
    "train_config",
    "losses",
    "versions",
    "weights_file",
    "weights_sha256",
)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Args:
        model: the VAE, in eval mode.
        grid: the grid it was trained on.
        metadata: the whole JSON metadata.
        weights_sha256: hash of the weights file.
        path: the weights file.
    """

    model: VAE
    grid: Grid
    metadata: dict[str, Any]
    weights_sha256: str
    path: Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: Path) -> None:
    """Raise ``ValueError`` unless ``path`` is a safetensors file (header length + JSON)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        ok = 0 < length <= min(size - 8, 100_000_000)
        if ok:
            try:
                ok = isinstance(json.loads(handle.read(length)), dict)
            except (UnicodeDecodeError, json.JSONDecodeError):
                ok = False
    if not ok:
        hint = (
            " (it looks like a torch.save pickle/zip)" if head[:2] in (b"PK", b"\x80\x02") else ""
        )
        raise ValueError(
            f"{path} is not a safetensors file{hint}; vaeinv never unpickles checkpoints"
        )


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    """Write ``tensors`` atomically (temporary file + rename); return the file's sha256."""
    tmp = path.with_name(path.name + ".tmp")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    safetensors.torch.save_file(cpu, str(tmp))
    os.replace(tmp, path)
    return sha256_file(path)


def resolve(path: str | Path, default_stem: str = "model") -> tuple[Path, Path]:
    """``(weights, metadata)`` paths for a ``.safetensors`` or ``.json`` file.

    Any other path (an existing folder, or a path without one of these suffixes that is not a
    file) is a folder holding ``<default_stem>.safetensors`` and ``<default_stem>.json``.
    """
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    elif path.is_dir() or (path.suffix != ".safetensors" and not path.is_file()):
        path = path / f"{default_stem}.safetensors"
    return path, path.with_suffix(".json")


def save_checkpoint(
    path: str | Path,
    model: VAE,
    grid: Grid | None = None,
    generator_config: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    losses: dict[str, float] | None = None,
) -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json``; return the weights path.

    Args:
        path: the weights file (``.safetensors``), or a folder (``model.safetensors`` in it).
        model: the VAE to save.
        grid: its grid (default ``Grid(nx, ny)`` from the model config); shape must match.
        generator_config: the training data generator's settings (JSON-serialisable).
        train_config: the training settings (JSON-serialisable).
        losses: final loss values.

    Raises:
        ValueError: a grid whose shape differs from the model's.
    """
    config = model.config
    grid = grid if grid is not None else Grid(nx=config.nx, ny=config.ny)
    if grid.shape != (config.ny, config.nx):
        raise ValueError(f"grid {grid} does not match the model's (ny, nx)={config.ny, config.nx}")
    weights, meta_path = resolve(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    digest = write_safetensors(model.state_dict(), weights)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": to_dict(config),
        "grid": {"nx": grid.nx, "ny": grid.ny, "lx": grid.lx, "ly": grid.ly},
        "generator_config": generator_config,
        "train_config": train_config,
        "losses": losses,
        "versions": versions(),
        "weights_file": weights.name,
        "weights_sha256": digest,
    }
    write_json(metadata, meta_path)
    return weights


def read_metadata(meta_path: Path) -> dict[str, Any]:
    """Read and check the JSON metadata of a checkpoint (keys, format tag)."""
    if not meta_path.is_file():
        raise ValueError(f"checkpoint metadata {meta_path} is missing")
    try:
        metadata = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta_path} is not JSON checkpoint metadata: {err}") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{meta_path} is not JSON checkpoint metadata (not an object)")
    missing = [k for k in METADATA_KEYS if k not in metadata]
    unknown = sorted(set(metadata) - set(METADATA_KEYS))
    if missing or unknown:
        raise ValueError(f"{meta_path}: missing metadata keys {missing}, unknown keys {unknown}")
    if metadata["format"] != FORMAT or metadata["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path}: format {metadata['format']!r} v{metadata['format_version']!r}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    return metadata


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint written by [`save_checkpoint`][vaeinv.vae.save_checkpoint].

    Args:
        path: the ``.safetensors`` file, its ``.json``, or a directory with ``model.*``.

    Raises:
        ValueError: a missing file, a file that is not safetensors (a pickle, garbage),
            metadata with missing or unknown keys, a sha256 mismatch (both hashes named), or
            weights that do not fit the architecture exactly.
    """
    weights, meta_path = resolve(path)
    if not weights.is_file():
        raise ValueError(f"checkpoint weights {weights} not found")
    check_safetensors(weights)
    metadata = read_metadata(meta_path)
    actual = sha256_file(weights)
    if actual != metadata["weights_sha256"]:
        raise ValueError(
            f"sha256 mismatch for {weights}: expected {metadata['weights_sha256']} "
            f"(from {meta_path.name}), got {actual}"
        )
    config = from_dict(VAEConfig, metadata["model_config"])
    try:
        grid = Grid(**metadata["grid"])
    except TypeError as err:
        raise ValueError(f"{meta_path}: bad grid {metadata['grid']!r}: {err}") from None
    model = init_vae(config, seed=0)
    try:
        state = with_latent_prior(safetensors.torch.load_file(str(weights)), model)
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit its architecture: {err}") from None
    model.eval()
    return Checkpoint(
        model=model, grid=grid, metadata=metadata, weights_sha256=actual, path=weights
    )
