"""A user's training image (one 2-D array, the usual input of multiple-point geostatistics) and
the square patches cut from it: a stack to train a prior on. Files are read as
`vaeinv.fields.stacks` reads them (same formats, grid metadata and checks)."""

from __future__ import annotations

from functools import partial

import torch

from ..grid import Grid
from .stacks import (
    _BAD,
    FieldStack,
    Source,
    _as_float32,
    _check_grid,
    _check_int,
    _fetch,
    _grid_from_meta,
    _open_array,
    _raise_bad,
    _tally_bad,
)

__all__ = ["cut_patches", "open_image", "read_image", "stack_from_patches"]


def open_image(source: Source, *, key: str | None = None, log: bool = False) -> torch.Tensor:
    """Read a 2-D training image ``(ny, nx)`` whole, as float32, the log applied if ``log``;
    ``source`` and ``key`` as for :func:`open_stack` (``None`` takes the only 2-D array).

    Raises:
        ValueError: the file errors of :func:`open_stack`, an array that is not 2-D, NaN or
            infinite values, or with ``log`` values ``<= 0`` (positions ``(iy, ix)`` named).
    """
    return read_image(source, key=key, log=log)[0]


def read_image(
    source: Source, *, key: str | None = None, log: bool = False
) -> tuple[torch.Tensor, Grid | None]:
    """:func:`open_image`'s image and the grid its file's metadata gives (``None`` if none)."""
    shape, fetch, meta, where = _open_array(source, key, rank=2)
    image = _as_float32(fetch(slice(0, shape[0])))
    bad = {what: [0, []] for what in _BAD}
    _tally_bad(bad, image, log, 0)
    _raise_bad(bad, where, "(iy, ix)")
    return (image.log_() if log else image), _grid_from_meta(meta, shape, where)


def cut_patches(image: torch.Tensor, size: int, stride: int | None = None) -> torch.Tensor:
    """Square patches ``(n, size, size)`` of a 2-D image ``(ny, nx)`` in its dtype, covering all
    of it: the lower-left corners ``(iy, ix)`` are ``range(0, ny - size + 1, stride) x range(0,
    nx - size + 1, stride)`` plus a last row and column flush with the far edges where that
    lattice misses them, in row-major order; ``2 <= size <= min(ny, nx)``, ``stride >= 1`` (by
    default ``max(1, size // 4)``).

    Raises:
        ValueError: an image that is not 2-D, a bad size or stride, a patch larger than the image.
    """
    image = torch.as_tensor(image)
    if image.dim() != 2:
        raise ValueError(f"image has shape {tuple(image.shape)}; expected a 2-D image (ny, nx)")
    _check_int("patch size", size, 2)
    stride = max(1, size // 4) if stride is None else stride
    _check_int("patch stride", stride, 1)
    ny, nx = image.shape
    if size > min(ny, nx):
        raise ValueError(f"a patch of {size} x {size} cells is larger than the {ny} x {nx} image")
    corners = [sorted({*range(0, n - size + 1, stride), n - size}) for n in (ny, nx)]
    windows = image.unfold(0, size, 1).unfold(1, size, 1)  # (ny - size + 1, nx - size + 1, s, s)
    return windows[corners[0]][:, corners[1]].reshape(-1, size, size).contiguous()


def stack_from_patches(
    image: torch.Tensor, size: int, stride: int | None = None, *, grid: Grid | None = None
) -> FieldStack:
    """An in-memory float32 :class:`FieldStack` of the :func:`cut_patches` of ``image``; with
    ``grid``, the image's grid, the patches' is ``Grid(size, size, size * dx, size * dy)``.

    Raises:
        ValueError: the errors of :func:`cut_patches`, or a grid of another shape than the image.
    """
    patches = cut_patches(image, size, stride).to(torch.float32)
    ny, nx = torch.as_tensor(image).shape
    if grid is not None:
        _check_grid(grid, (ny, nx), "the image")
        grid = Grid(size, size, size * grid.dx, size * grid.dy)
    source = f"patches of {size} x {size} cells of a {ny} x {nx} image"
    return FieldStack(tuple(patches.shape), partial(_fetch, "memory", patches, None), source, grid)
