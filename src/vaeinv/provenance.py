"""What every file vaeinv writes records about itself, and how it writes JSON: the versions of
the packages that made it, values made JSON-safe, and atomic JSON files. The lowest floor of the
library: it imports nothing of vaeinv."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["jsonable", "package_version", "tensor_sha256", "versions", "write_json"]

_RECORDED = ("vaeinv", "torch", "pyro-ppl", "arviz", "xarray", "safetensors")


def package_version(name: str) -> str:
    """The installed version of ``name`` (``"0+unknown"`` when it is not installed, e.g. a
    source tree run without installing)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "0+unknown"


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    return tuple((name, package_version(name)) for name in _RECORDED)


def versions() -> dict[str, str]:
    """Versions of vaeinv, torch, pyro-ppl, arviz, xarray and safetensors, recorded in every
    result, checkpoint and dataset."""
    return dict(_versions())


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (keys sorted; anything else by its ``str``)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def write_json(data: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def tensor_sha256(tensor) -> str:
    """The sha256 of a tensor's float64 bytes (C order, on the CPU): how runs record data,
    noise and mass matrices in their fingerprints."""
    import torch

    array = tensor.detach().to("cpu", torch.float64).contiguous().numpy()
    return hashlib.sha256(array.tobytes()).hexdigest()
