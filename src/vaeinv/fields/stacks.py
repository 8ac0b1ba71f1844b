"""Users' own training data on disk: stacks of fields read lazily (training images and their
patches: `vaeinv.fields.training_image`).

:func:`open_stack` reads only a stack's shape, dtype and grid metadata; each read opens the file
anew (a :class:`FieldStack` holds no open file). Formats: ``.npy`` (memory-mapped), ``.npz`` (a
member is read whole when accessed), ``.h5``/``.hdf5``, ``.zarr`` (or a ``.zip`` store; a group
or an array), ``.safetensors``; the array is ``key`` (a path in HDF5 or zarr) or the only one of
the right rank. Nothing is unpickled. The grid comes from ``lx, ly`` (or ``dx, dy``; ``nx, ny``,
if given, must match the array) in the HDF5 dataset's attributes (else the root's), the zarr
array's (else the root group's), the safetensors metadata, or an npz's scalar members.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from ..grid import Grid

__all__ = ["FieldStack", "check_stack", "open_stack"]

_SUFFIXES = ".npy, .npz, .h5, .hdf5, .zarr, .zip (a zarr zip store), .safetensors"
_GRID_KEYS = ("nx", "ny", "lx", "ly", "dx", "dy")
_BAD = ("NaN or infinite (expected finite)", "<= 0 (log=True takes positive raw values)")
Rows = slice | np.ndarray  # a step-1 slice, or increasing unique int64 indices
Source = str | os.PathLike | np.ndarray | torch.Tensor


@dataclass(frozen=True, eq=False)
class FieldStack:
    """``(num, ny, nx)`` fields read on demand (from :func:`open_stack` or the like):
    ``fetch(rows)`` gives the raw values ``(k, ny, nx)`` (numpy or torch) of ``rows``, a step-1
    slice or increasing unique int64 numpy indices, never empty; ``source`` names the fields in
    messages (``"path.h5:key"``); ``grid`` is theirs or ``None`` (unknown: the caller decides);
    ``log`` applies the natural log on read (the file holds permeabilities, not log-k)."""

    shape: tuple[int, int, int]
    fetch: Callable[[Rows], Any] = field(repr=False)
    source: str = "<memory>"
    grid: Grid | None = None
    log: bool = False

    def __post_init__(self) -> None:
        shape = tuple(map(int, self.shape))
        if len(shape) != 3 or shape[0] < 0 or min(shape[1:]) < 1:
            raise ValueError(f"{self.source}: shape {self.shape!r} is not (num, ny, nx)")
        object.__setattr__(self, "shape", shape)
        if not isinstance(self.log, bool):
            raise ValueError(f"log must be True or False, got {self.log!r}")
        _check_grid(self.grid, shape, self.source)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Fields ``index`` (a slice, or a 1-D integer tensor in any order) as float32
        ``(k, ny, nx)`` on the CPU in ``index``'s order, the log applied if ``log``."""
        raw = self._raw(index)
        return raw.log_() if self.log else raw

    def batches(self, batch_size: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, block)``: blocks of up to ``batch_size`` fields in file order, as read."""
        _check_int("batch_size", batch_size, 1)
        for start in range(0, len(self), batch_size):
            yield start, self.read(slice(start, start + batch_size))

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the shape, the ``log`` flag and the values as read."""
        digest = hashlib.sha256(f"shape={self.shape} log={self.log}".encode())
        for _, block in self.batches(256):
            digest.update(block.numpy().astype("<f4", copy=False).tobytes())
        return digest.hexdigest()

    def _raw(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The raw values (no log) of ``index``, float32, in ``index``'s order."""
        rows, inverse = _rows(index, len(self), self.source)
        if (rows.start >= rows.stop) if isinstance(rows, slice) else rows.size == 0:
            return torch.empty((0, *self.shape[1:]), dtype=torch.float32)
        values = _as_float32(self.fetch(rows))
        return values if inverse is None else values[inverse]


def open_stack(
    source: Source, *, key: str | None = None, log: bool = False, grid: Grid | None = None
) -> FieldStack:
    """Open the stack ``(num, ny, nx)`` of a file ``source`` (module docstring; or an in-memory
    array), its array ``key`` (``None``: the only 3-D one), reading no values; ``log`` applies
    the log on read; ``grid`` must agree with the metadata's grid, the default.

    Raises:
        ValueError: a missing file, an unknown suffix, a missing or ambiguous key, an array that
            is not 3-D or not numeric, metadata that disagrees with the array or with ``grid``.
    """
    shape, fetch, meta, where = _open_array(source, key, rank=3)
    found = _grid_from_meta(meta, shape, where)
    if grid is not None and found is not None and not found.same_cells(grid):
        raise ValueError(f"grid argument {grid} differs from {where}'s metadata grid {found}")
    return FieldStack(shape, fetch, where, found if grid is None else grid, log)


def check_stack(stack: FieldStack, *, min_fields: int = 1, batch_size: int = 256) -> dict:
    """Check a stack's values in one streaming pass (``batch_size`` fields at a time); return
    ``{"mean", "std", "min", "max", "num"}`` of the values as read (after the log) in float64,
    ``std`` with ``ddof = 0``, ``num`` the fields, at least ``min_fields`` (the latent dimension).

    Raises:
        ValueError: fewer fields than ``min_fields``; NaN or infinite values; with ``log``, raw
            values ``<= 0`` (their count and first positions ``(field, iy, ix)`` named).
    """
    _check_int("min_fields", min_fields, 1)
    _check_int("batch_size", batch_size, 1)
    if len(stack) < min_fields:
        raise ValueError(
            f"{stack.source}: {len(stack)} fields, fewer than the latent dimension {min_fields}"
        )
    bad = {what: [0, []] for what in _BAD}
    count, mean, m2, lo, hi = 0, 0.0, 0.0, math.inf, -math.inf
    for start in range(0, len(stack), batch_size):
        raw = stack._raw(slice(start, start + batch_size))
        if _tally_bad(bad, raw, stack.log, start):
            continue  # only counting now
        values = (raw.log() if stack.log else raw).double()
        n, (var, batch_mean) = values.numel(), torch.var_mean(values, correction=0)
        delta, total = batch_mean.item() - mean, count + n  # Chan et al.'s merge of (mean, M2)
        m2 += var.item() * n + delta**2 * count * n / total
        mean, count = mean + delta * n / total, total
        lo, hi = min(lo, values.min().item()), max(hi, values.max().item())
    _raise_bad(bad, stack.source, "(field, iy, ix)")
    return {"mean": mean, "std": math.sqrt(m2 / count), "min": lo, "max": hi, "num": len(stack)}


def _open_array(source: Any, key: str | None, rank: int) -> tuple:
    """``(shape, fetch, meta, where)`` of ``source``'s array ``key`` (or only ``rank``-D one)."""
    kind, target, name, meta = "memory", source, None if key is None else key.strip("/"), {}
    if isinstance(source, np.ndarray | torch.Tensor):
        shape, dtype, where = source.shape, source.dtype, f"<in-memory {type(source).__name__}>"
        name = _pick(None, key, rank, where)
    elif not isinstance(source, str | os.PathLike):
        raise ValueError(f"source must be a path or an array, got {type(source).__name__}")
    else:
        target = path = Path(source)
        kind = {".hdf5": "h5", ".zip": "zarr"}.get(path.suffix.lower(), path.suffix.lower()[1:])
        if not path.exists():
            raise ValueError(f"no such file: {path}")
        if kind == "npy":
            data = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype, name = data.shape, data.dtype, _pick(None, key, rank, path)
        elif kind == "npz":
            with np.load(path, allow_pickle=False) as npz:  # headers first: (shape, _, dtype)
                heads = {n: _npy_header(npz.zip, f"{n}.npy") for n in npz.files}
                name = _pick({n: h[0] for n, h in heads.items() if h[0] != ()}, key, rank, path)
                (shape, _, dtype), kind = heads[name], "memory"
                meta = {n: npz[n] for n in _GRID_KEYS if n in heads and heads[n][0] == ()}
                target = npz[name] if dtype.kind in "biuf" and len(shape) == rank else None
        elif kind == "h5":
            import h5py

            with h5py.File(path, "r") as handle:
                handle.visit((names := []).append)  # every group and dataset, by path
                shapes = {n: handle[n].shape for n in names if isinstance(handle[n], h5py.Dataset)}
                node = handle[_pick(shapes, name, rank, path)]
                shape, dtype, name = node.shape, node.dtype, node.name[1:]
                meta = _grid_keys(node.attrs, handle.attrs)
        elif kind == "zarr":
            import zarr

            root = node = _zarr_open(path, None)
            if not isinstance(root, zarr.Array):
                members = root.members(max_depth=None)
                shapes = {n: a.shape for n, a in members if isinstance(a, zarr.Array)}
                node = root[_pick(shapes, name, rank, path)]
            shape, dtype, meta = node.shape, node.dtype, _grid_keys(node.attrs, root.attrs)
            name = _pick(None, key, rank, path) if node is root else node.path
        elif kind == "safetensors":
            with safe_open(str(path), framework="pt") as handle:
                shapes = {n: tuple(handle.get_slice(n).get_shape()) for n in handle.keys()}
                name = _pick(shapes, key, rank, path)
                dtype, meta = handle.get_slice(name).get_dtype(), _grid_keys(handle.metadata())
            shape = shapes[name]
        else:
            raise ValueError(f"{path}: unknown extension {path.suffix!r}; supported: {_SUFFIXES}")
        where = str(path) if name is None else f"{path}:{name}"
    shape = tuple(shape)
    if len(shape) == 2 and rank == 3:
        raise ValueError(f"{where} is a single image {shape}; use patches (--patches SIZE)")
    if len(shape) != rank or min(shape[-2:], default=0) < 1:
        expected = "a stack of fields (num, ny, nx)" if rank == 3 else "an image (ny, nx)"
        raise ValueError(f"{where} has shape {shape}; expected {expected}")
    text = str(dtype).lower().removeprefix("torch.")  # safetensors: "F32", "BF16", "BOOL", ...
    if (dtype.kind not in "biuf") if isinstance(dtype, np.dtype) else text.startswith("c"):
        raise ValueError(f"{where} has dtype {dtype}; expected integers, floats or booleans")
    return shape, partial(_fetch, kind, target, name), meta, where


def _npy_header(archive: Any, member: str) -> tuple:
    """``(shape, fortran_order, dtype)`` of an ``.npy`` member of a zip, its values unread."""
    with archive.open(member) as handle:
        major = np.lib.format.read_magic(handle)[0]
        return getattr(np.lib.format, f"read_array_header_{min(major, 2)}_0")(handle)


def _pick(shapes: dict[str, tuple] | None, key: str | None, rank: int, path: Any) -> str | None:
    """``key``, or the only array of ``rank`` dimensions (or the only array); ``None`` if none."""
    if shapes is None:
        if key is not None:
            raise ValueError(f"{path} holds a single array, not named ones; got key = {key!r}")
        return None
    listing = ", ".join(f"{n!r} {tuple(s)}" for n, s in sorted(shapes.items())) or "none"
    if key is not None:
        if key not in shapes:
            raise ValueError(f"{path}: no array {key!r}; the arrays there are {listing}")
        return key
    fits = [n for n, s in shapes.items() if len(s) == rank]
    if len(fits) == 1 or (not fits and len(shapes) == 1):
        return (fits or list(shapes))[0]
    what = f"several {rank}-D arrays" if fits else f"no {rank}-D array"
    raise ValueError(f"{path} has {what} ({listing}); pass key = one of them")


def _grid_keys(*attributes: Any) -> dict[str, Any]:
    for attrs in filter(None, attributes):
        if found := {k: attrs[k] for k in _GRID_KEYS if k in attrs}:
            return found
    return {}


def _zarr_open(path: Path, name: str | None) -> Any:
    import zarr
    from zarr.storage import ZipStore

    store = ZipStore(path, mode="r") if path.suffix.lower() == ".zip" else str(path)
    return zarr.open(store=store, mode="r", path=name or "")


def _fetch(kind: str, source: Any, name: str | None, rows: Rows) -> Any:
    """The raw ``rows`` of the array ``name`` of a file (opened anew), or of an array in memory."""
    if kind == "memory":
        return source[rows]
    if kind == "npy":
        return np.load(source, mmap_mode="r", allow_pickle=False)[rows]
    if kind == "zarr":
        node = _zarr_open(source, name)
        return node[rows] if isinstance(rows, slice) else node.oindex[rows]
    if kind == "h5":
        import h5py

        with h5py.File(source, "r") as handle:
            return handle[name][rows]  # h5py takes increasing indices only: rows are
    with safe_open(str(source), framework="pt") as handle:
        data = handle.get_slice(name)
        if isinstance(rows, slice):
            return data[rows]
        runs = np.split(rows, np.flatnonzero(np.diff(rows) != 1) + 1)  # contiguous runs
        return torch.cat([data[int(run[0]) : int(run[-1]) + 1] for run in runs])


def _as_float32(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 CPU tensor of its own (a copy, never a view of a file or of the caller's)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
    return torch.from_numpy(np.array(values, dtype=np.float32, order="C"))


def _rows(index: torch.Tensor | slice, num: int, source: str) -> tuple[Rows, torch.Tensor | None]:
    """What to fetch for ``index``, and the permutation that puts it in ``index``'s order."""
    if isinstance(index, slice):
        start, stop, step = index.indices(num)
        if step == 1:
            return slice(start, max(start, stop)), None
        index = torch.arange(start, stop, step)
    idx = torch.as_tensor(index)
    if idx.dim() != 1 or idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise ValueError(f"index must be a slice or 1-D ints, got {idx.dtype} {tuple(idx.shape)}")
    idx = idx.to(device="cpu", dtype=torch.int64).numpy()
    outside = idx[(idx < 0) | (idx >= num)]
    if outside.size:
        raise ValueError(f"index {outside[0]} is out of range for {source} ({num} fields)")
    unique, inverse = np.unique(idx, return_inverse=True)
    return unique, torch.from_numpy(inverse)


def _tally_bad(bad: dict, raw: torch.Tensor, log: bool, start: int) -> bool:
    """Count ``raw``'s non-finite (with ``log``, also ``<= 0``) values into ``bad``; any yet?"""
    finite = torch.isfinite(raw)
    for record, mask in zip(bad.values(), (~finite, finite & (raw <= 0) & log), strict=True):
        record[0] += int(mask.sum())
        for position in mask.nonzero()[: 5 - len(record[1])].tolist():
            record[1].append((position[0] + start, *position[1:]))
    return any(count for count, _ in bad.values())


def _raise_bad(bad: dict, source: str, axes: str) -> None:
    """Raise the error for the values :func:`_tally_bad` counted, if any."""
    for what, (count, positions) in bad.items():
        if count:
            first = ", ".join(map(str, positions))
            raise ValueError(f"{source}: {count} values {what}, first at {axes} = {first}")


def _grid_from_meta(meta: dict[str, Any], shape: tuple[int, ...], where: str) -> Grid | None:
    """The grid that ``meta`` (``nx, ny``, and ``lx, ly`` or ``dx, dy``) gives, or ``None``."""
    ny, nx = shape[-2:]
    try:
        values = {k: float(np.asarray(v).item()) for k, v in meta.items()}
        for name, n in (("nx", nx), ("ny", ny)):
            if values.get(name, n) != n:
                raise ValueError(f"{name} = {values[name]:g}, but the array has {shape}")
        if {"lx", "ly", "dx", "dy"}.isdisjoint(values):
            return None
        lx = values.get("lx", values.get("dx", math.nan) * nx)
        return Grid(nx, ny, lx, values.get("ly", values.get("dy", math.nan) * ny))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where}: grid metadata {meta}: {error}; expected numbers nx, ny equal to the "
            "array's, and lx, ly (or dx, dy) positive"
        ) from None


def _check_grid(grid: Any, shape: tuple[int, ...], where: str) -> None:
    if grid is not None and (not isinstance(grid, Grid) or grid.shape != tuple(shape[-2:])):
        raise ValueError(f"grid {grid!r} does not fit {where}'s {shape[-2]} x {shape[-1]} cells")


def _check_int(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
