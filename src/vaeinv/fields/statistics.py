"""One- and two-point statistics of stacks of fields, and the connectivity of a facies.

Everything here takes fields shaped ``(n, ny, nx)`` (index ``[field, iy, ix]``) and pools over
the fields; the statistics are computed in float64 and returned as Python floats (lists of
floats for functions of the lag), so they go straight into a JSON report.

- :func:`semivariogram`: ``gamma(h) = 0.5 * mean((f[i + h] - f[i])**2)`` along x and along y.
- :func:`moments`: the mean and standard deviation over all cells of all fields.
- :func:`is_binary`, :func:`is_two_facies`, :func:`facies_threshold`: whether fields are made
  of two facies, and the value that separates them.
- :func:`facies_proportion`, :func:`connectivity`, :func:`largest_cluster_fraction`,
  :func:`percolation_fraction`: the geometry of a facies mask (``True`` = in the facies).

The connectivity function follows Renard & Allard (2013), "Connectivity metrics for subsurface
flow and transport", Adv. Water Resour. 51: the probability that two cells ``h`` apart, both in
the facies, belong to the same connected cluster. Clusters are 4-connected (cells sharing a
side), labelled per field with ``scipy.ndimage.label``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "connectivity",
    "facies_proportion",
    "facies_threshold",
    "is_binary",
    "is_two_facies",
    "largest_cluster_fraction",
    "moments",
    "percolation_fraction",
    "semivariogram",
]

AXES = ("x", "y")
_MAX_SPLIT_ITERATIONS = 200
_MIN_PER_BIN = 25  # values expected per histogram bin of the two-facies test


def _check_stack(fields: torch.Tensor, name: str = "fields") -> None:
    if not isinstance(fields, torch.Tensor) or fields.dim() != 3 or fields.numel() == 0:
        shape = tuple(fields.shape) if isinstance(fields, torch.Tensor) else type(fields).__name__
        raise ValueError(f"{name} must be a non-empty tensor shaped (n, ny, nx), got {shape}")


def _check_lags(lags: Sequence[int], sizes: dict[str, int]) -> list[int]:
    lags = list(lags)
    if not lags:
        raise ValueError("lags must name at least one lag")
    largest = min(sizes.values()) - 1
    for h in lags:
        if isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= largest:
            along = " and ".join(f"{k} = {v}" for k, v in sizes.items())
            raise ValueError(
                f"lags must be integers in 1..{largest} (fields of {along} cells), got {h!r}"
            )
    return lags


def _check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}; got {axis!r}")


def _check_mask(mask: torch.Tensor) -> None:
    _check_stack(mask, "mask")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True in the facies), got {mask.dtype}")


def semivariogram(fields: torch.Tensor, lags: Sequence[int]) -> tuple[list[float], list[float]]:
    """The semivariograms ``(gamma_x, gamma_y)`` of ``fields`` at integer ``lags`` (in cells).

    ``gamma(h) = 0.5 * mean((f[i + h] - f[i])**2)``, pooled over every pair of cells ``h``
    apart along x (within a row) or along y (within a column) in every field; float64.

    Args:
        fields: ``(n, ny, nx)``.
        lags: positive lags, each smaller than both ``ny`` and ``nx``.

    Returns:
        Two lists of floats, one value per lag: along x and along y.

    Raises:
        ValueError: fields not shaped ``(n, ny, nx)``, no lags, or a lag out of range.
    """
    _check_stack(fields)
    lags = _check_lags(lags, {"ny": fields.shape[-2], "nx": fields.shape[-1]})
    f = fields.detach().double()
    gamma_x = [0.5 * (f[..., :, h:] - f[..., :, :-h]).square().mean().item() for h in lags]
    gamma_y = [0.5 * (f[..., h:, :] - f[..., :-h, :]).square().mean().item() for h in lags]
    return gamma_x, gamma_y


def moments(fields: torch.Tensor) -> dict[str, float]:
    """``{"mean", "std"}`` over all cells of all fields (float64; ``std`` with Bessel's
    correction, 0 for a single cell).

    Raises:
        ValueError: fields not shaped ``(n, ny, nx)``.
    """
    _check_stack(fields)
    f = fields.detach().double()
    std = f.std().item() if f.numel() > 1 else 0.0
    return {"mean": f.mean().item(), "std": std}


def is_binary(fields: torch.Tensor) -> bool:
    """Whether ``fields`` hold exactly two distinct values (over all fields together).

    Raises:
        ValueError: fields not shaped ``(n, ny, nx)``.
    """
    _check_stack(fields)
    return torch.unique(fields.detach()).numel() == 2


def _two_means(values: torch.Tensor) -> tuple[float, float, float]:
    """``(threshold, low_mean, high_mean)`` of the 2-means split of float64 ``values``:
    ``threshold`` is halfway between the means of the values at or below it and above it."""
    lo_value, hi_value = values.min().item(), values.max().item()
    if lo_value == hi_value:
        raise ValueError(f"the fields hold the single value {lo_value}: there is no facies split")
    threshold = values.mean().item()  # min < threshold < max, and so it stays
    if not lo_value < threshold < hi_value:  # the mean rounded onto an end
        threshold = 0.5 * (lo_value + hi_value)
    for _ in range(_MAX_SPLIT_ITERATIONS):
        high = values > threshold
        low_mean, high_mean = values[~high].mean().item(), values[high].mean().item()
        updated = 0.5 * (low_mean + high_mean)
        if updated == threshold or not lo_value < updated < hi_value:
            break
        threshold = updated
    high = values > threshold
    return threshold, values[~high].mean().item(), values[high].mean().item()


def facies_threshold(fields: torch.Tensor) -> float:
    """The value that separates two facies: cells above it are the high (permeable) facies.

    For binary fields, halfway between the two values. Otherwise the 2-means split of all
    values (the iteration ``t = (mean(f <= t) + mean(f > t)) / 2`` from the overall mean, as in
    the isodata threshold), i.e. halfway between the means of the two facies.

    Raises:
        ValueError: fields not shaped ``(n, ny, nx)``, or fields of a single value.
    """
    _check_stack(fields)
    values = fields.detach().double().flatten()
    distinct = torch.unique(values)
    if distinct.numel() == 2:
        return 0.5 * (distinct[0].item() + distinct[1].item())
    return _two_means(values)[0]


def is_two_facies(
    fields: torch.Tensor, dip: float = 0.5, min_share: float = 0.02, bins: int = 24
) -> bool:
    """Whether ``fields`` are made of two facies: binary, or with a bimodal histogram.

    A continuous stack counts as two-facies when, between the means of its 2-means split, the
    histogram (``bins`` bins, fewer where that would leave under 25 values a bin) has a valley
    deeper than ``dip`` times the lower of the two peaks either side of it, and each facies
    holds at least ``min_share`` of the cells. A unimodal distribution (Gaussian, uniform,
    skewed) has no such valley between its split means. A handful of fields with a length
    scale near the domain size can pool into a spurious second mode: judge on many fields.

    Args:
        fields: ``(n, ny, nx)``.
        dip: the valley must be below ``dip`` times the lower peak (0 < dip < 1).
        min_share: the smallest share of cells in either facies.
        bins: histogram bins between the two facies means (at least 4).

    Raises:
        ValueError: fields not shaped ``(n, ny, nx)``, or a bad ``dip``, ``min_share`` or
            ``bins``.
    """
    _check_stack(fields)
    if not 0 < dip < 1 or not 0 <= min_share < 0.5 or isinstance(bins, bool) or bins < 4:
        raise ValueError(
            f"need 0 < dip < 1, 0 <= min_share < 0.5 and bins >= 4; got dip={dip!r}, "
            f"min_share={min_share!r}, bins={bins!r}"
        )
    values = fields.detach().double().flatten()
    distinct = torch.unique(values).numel()
    if distinct <= 2:
        return distinct == 2
    threshold, low_mean, high_mean = _two_means(values)
    share = (values > threshold).double().mean().item()
    if min(share, 1 - share) < min_share:
        return False
    between = int(((values >= low_mean) & (values <= high_mean)).sum())
    bins = max(4, min(bins, between // _MIN_PER_BIN))  # few values: coarser, less noisy bins
    hist = torch.histc(values, bins=bins, min=low_mean, max=high_mean)
    half = bins // 2
    left = int(hist[:half].argmax())
    right = half + int(hist[half:].argmax())
    valley = hist[left : right + 1].min().item()
    return valley < dip * min(hist[left].item(), hist[right].item())


def facies_proportion(mask: torch.Tensor) -> float:
    """The share of cells in the facies, over all fields of a bool ``mask (n, ny, nx)``.

    Raises:
        ValueError: a mask that is not a bool tensor shaped ``(n, ny, nx)``.
    """
    _check_mask(mask)
    return mask.double().mean().item()


def _labels(mask: torch.Tensor) -> np.ndarray:
    """4-connected cluster labels of every field, unique over the stack (0 = not in facies)."""
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # no link between fields
    labels, _ = ndimage.label(mask.detach().cpu().numpy(), structure=structure)
    return labels


def connectivity(mask: torch.Tensor, lags: Sequence[int], axis: str) -> list[float]:
    """The connectivity function ``tau(h)`` of a facies along ``axis``, pooled over fields.

    ``tau(h) = P(x and x + h in the same cluster | x and x + h in the facies)``: of all pairs of
    facies cells ``h`` cells apart along the axis, in every field, the share joined by a
    4-connected path of facies cells. ``nan`` at a lag with no such pair.

    Args:
        mask: bool ``(n, ny, nx)``, ``True`` in the facies.
        lags: positive lags, each smaller than both ``ny`` and ``nx``.
        axis: ``"x"`` (within rows) or ``"y"`` (within columns).

    Returns:
        One probability per lag.

    Raises:
        ValueError: a bad mask, lag or axis.
    """
    _check_mask(mask)
    lags = _check_lags(lags, {"ny": mask.shape[-2], "nx": mask.shape[-1]})
    _check_axis(axis)
    labels = _labels(mask)
    dim = 2 if axis == "x" else 1
    size = labels.shape[dim]
    out = []
    for h in lags:
        a = labels.take(np.arange(size - h), axis=dim)
        b = labels.take(np.arange(h, size), axis=dim)
        both = (a > 0) & (b > 0)
        pairs = int(both.sum())
        joined = int((both & (a == b)).sum())
        out.append(joined / pairs if pairs else math.nan)
    return out


def largest_cluster_fraction(mask: torch.Tensor) -> float:
    """The share of a field's facies cells in its largest 4-connected cluster, averaged over
    the fields that have facies cells (``nan`` when none has).

    Raises:
        ValueError: a mask that is not a bool tensor shaped ``(n, ny, nx)``.
    """
    _check_mask(mask)
    labels = _labels(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    field_of = np.zeros(sizes.size, dtype=np.int64)
    field_of[labels.ravel()] = np.repeat(np.arange(labels.shape[0]), labels[0].size)
    largest = np.zeros(labels.shape[0])
    np.maximum.at(largest, field_of[1:], sizes[1:])
    cells = labels.reshape(labels.shape[0], -1).astype(bool).sum(axis=1)
    occupied = cells > 0
    if not occupied.any():
        return math.nan
    return float(np.mean(largest[occupied] / cells[occupied]))


def percolation_fraction(mask: torch.Tensor, axis: str) -> float:
    """The share of fields in which one 4-connected facies cluster spans the domain along
    ``axis``: touches both ``left`` and ``right`` (``"x"``) or ``bottom`` and ``top`` (``"y"``).

    Raises:
        ValueError: a bad mask or axis.
    """
    _check_mask(mask)
    _check_axis(axis)
    labels = _labels(mask)
    first, last = (
        (labels[:, :, 0], labels[:, :, -1]) if axis == "x" else (labels[:, 0], labels[:, -1])
    )
    spans = [
        bool(np.intersect1d(a[a > 0], b[b > 0]).size) for a, b in zip(first, last, strict=True)
    ]
    return float(np.mean(spans))
