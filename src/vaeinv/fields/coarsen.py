"""Coarsening of log-permeability by block log-mean-exp (the upscaling MDGM uses)."""

from __future__ import annotations

import math

import torch

__all__ = ["coarsen"]


def coarsen(log_k: torch.Tensor, factor: int | tuple[int, int]) -> torch.Tensor:
    """Coarsen ``(..., ny, nx)`` log-k by blocks: ``log(mean over the block of exp(log_k))``.

    Each coarse cell is the arithmetic mean of the permeability ``k = exp(log_k)`` over a
    ``factor x factor`` block of fine cells (``(fy, fx)`` blocks for a pair), taken in log space
    stably with ``logsumexp``. Leading dimensions are batch dimensions.

    Args:
        log_k: fine log-k, at least 2-D, floating point.
        factor: block size, a positive integer or a ``(fy, fx)`` pair of them.

    Returns:
        Coarse log-k, ``(..., ny // fy, nx // fx)``.

    Raises:
        ValueError: a non-positive or non-integer factor, a field with fewer than two
            dimensions, or a side that the factor does not divide.
    """
    pair = tuple(factor) if isinstance(factor, (tuple, list)) else (factor, factor)
    if len(pair) != 2 or not all(
        isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in pair
    ):
        raise ValueError(
            f"factor must be a positive integer or a (fy, fx) pair of them, got {factor!r}"
        )
    if not isinstance(log_k, torch.Tensor) or log_k.dim() < 2:
        shape = tuple(log_k.shape) if isinstance(log_k, torch.Tensor) else type(log_k).__name__
        raise ValueError(f"log_k must be a tensor shaped (..., ny, nx), got {shape}")
    fy, fx = pair
    *batch, ny, nx = log_k.shape
    if ny % fy or nx % fx:
        raise ValueError(
            f"coarsening factor ({fy}, {fx}) must divide the field's (ny, nx) = ({ny}, {nx})"
        )
    blocks = log_k.reshape(*batch, ny // fy, fy, nx // fx, fx)
    return torch.logsumexp(blocks, dim=(-3, -1)) - math.log(fy * fx)
