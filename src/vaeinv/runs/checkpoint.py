"""The checkpoint folder of a run (``OUT.partial/``): chunk files of kept draws and the sampler
state, each written under a temporary name and renamed into place, and the run fingerprint that
a resume must match (see [`sample`][vaeinv.runs.sampling.sample])."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from ..provenance import jsonable, write_json
from ..vae.checkpoint import check_safetensors, write_safetensors

__all__ = ["FORMAT", "FORMAT_VERSION", "RunCheckpoint", "check_fingerprint", "flatten", "jsonable"]

FORMAT = "vaeinv-run-checkpoint"
FORMAT_VERSION = 2  # 2: num_draws counts iterations, log_k on every kept draw
_STATE = "state.safetensors"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_fingerprint(folder: Path, saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    old, new = flatten(saved), flatten(now)

    def show(d: Mapping[str, Any], key: str) -> str:
        return repr(d[key]) if key in d else "<absent>"

    differ = [
        f"{k}: {show(old, k)} in the checkpoint, {show(new, k)} now"
        for k in sorted(set(old) | set(new))
        if show(old, k) != show(new, k)
    ]
    if differ:
        raise ValueError(
            f"cannot resume: the checkpoint {folder} belongs to another run; " + "; ".join(differ)
        )


class RunCheckpoint:
    """The checkpoint folder: chunk files and the state file (atomic writes)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def chunk_path(self, index: int) -> Path:
        return self.folder / f"chunk_{index:05d}.safetensors"

    def exists(self) -> bool:
        return (self.folder / _STATE).is_file()

    def write_chunk(self, index: int, chunk: dict[str, torch.Tensor]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_safetensors(chunk, self.chunk_path(index))

    def write_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / _STATE
        tmp = path.with_name(path.name + ".tmp")
        cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        safetensors.torch.save_file(cpu, str(tmp), metadata={"vaeinv_state": json.dumps(meta)})
        os.replace(tmp, path)
        write_json(meta, self.folder / "state.json")  # a readable copy; the header rules

    def read_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        path = self.folder / _STATE
        try:
            check_safetensors(path)
            with safetensors.safe_open(str(path), "pt") as handle:
                meta = json.loads((handle.metadata() or {})["vaeinv_state"])
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        except (KeyError, json.JSONDecodeError, OSError, safetensors.SafetensorError) as err:
            raise ValueError(f"{path} is not a vaeinv run checkpoint: {err}") from None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: format {meta.get('format')!r} v{meta.get('format_version')!r}, "
                f"expected {FORMAT!r} v{FORMAT_VERSION}"
            )
        return tensors, meta

    def read_chunk(self, index: int) -> dict[str, torch.Tensor]:
        path = self.chunk_path(index)
        if not path.is_file():
            raise ValueError(f"checkpoint chunk {path} is missing; cannot resume")
        check_safetensors(path)
        return safetensors.torch.load_file(str(path))
