"""Resumable training state (weights, Adam moments, RNG, progress) without pickle.

``train_state.safetensors`` holds every tensor (``model.*`` weights, ``optim.<i>.<key>`` Adam
state, ``rng`` the generator state); ``train_state.json`` holds the rest (optimizer
hyper-parameters, epoch, history, ...) and the sha256 of the tensor file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from .calibration import with_latent_prior
from .checkpoint import check_safetensors, sha256_file, versions, write_json, write_safetensors

__all__ = ["load_train_state", "save_train_state"]

FORMAT = "vaeinv-train-state"
STEM = "train_state"


def save_train_state(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    info: dict[str, Any],
) -> None:
    """Write the state needed to resume training exactly.

    Args:
        out_dir: the training folder.
        model: the network being trained.
        optimizer: its optimizer.
        generator: the training generator (shuffling and latent noise).
        info: JSON-serialisable progress (epoch, history, best loss, configs, ...).
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors["rng"] = generator.get_state()
    state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    digest = write_safetensors(tensors, out_dir / f"{STEM}.safetensors")
    meta = {
        "format": FORMAT,
        "param_groups": state["param_groups"],
        "optimizer_scalars": scalars,
        "info": info,
        "versions": versions(),
        "sha256": digest,
    }
    write_json(meta, out_dir / f"{STEM}.json")


def load_train_state(
    out_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore model, optimizer and generator in place; return the saved ``info``.

    Args:
        out_dir: the training folder.
        model: a network of the same architecture.
        optimizer: an optimizer over its parameters.
        generator: the generator to restore.

    Raises:
        ValueError: no saved state, a file that is not safetensors, or a hash mismatch.
    """
    weights, meta_path = out_dir / f"{STEM}.safetensors", out_dir / f"{STEM}.json"
    if not (weights.is_file() and meta_path.is_file()):
        raise ValueError(f"cannot resume: no {STEM}.safetensors/.json in {out_dir}")
    check_safetensors(weights)
    meta = json.loads(meta_path.read_text())
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a vaeinv training state")
    actual = sha256_file(weights)
    if actual != meta["sha256"]:
        raise ValueError(f"sha256 mismatch for {weights}: expected {meta['sha256']}, got {actual}")
    tensors = safetensors.torch.load_file(str(weights))
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(with_latent_prior(state, model), strict=True)
    generator.set_state(tensors["rng"])
    entries: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            entries.setdefault(int(index), {})[name] = value
    for index, values in meta["optimizer_scalars"].items():
        entries.setdefault(int(index), {}).update(values)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    optimizer.load_state_dict({"state": entries, "param_groups": groups})
    return meta["info"]
