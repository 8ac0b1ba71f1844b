"""The likelihood's data and noise: finite observations, and one absolute standard deviation
per datum, from a scalar or a vector, absolute or relative to the data."""

from __future__ import annotations

import torch

__all__ = ["NOISE_KINDS", "check_data", "resolve_noise"]

#: how ``noise`` is read: absolute standard deviations, or fractions of ``|data|``.
NOISE_KINDS = ("absolute", "relative")


def resolve_noise(noise, noise_kind: str, data: torch.Tensor) -> torch.Tensor:
    """The absolute standard deviation per datum, ``(m,)`` float64, checked positive and finite."""
    m = data.numel()
    try:
        value = torch.as_tensor(noise, dtype=torch.float64).detach().to(data.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"noise must be a number or one per sensor, got {noise!r}") from err
    if value.dim() > 1 or (value.dim() == 1 and value.numel() != m):
        raise ValueError(
            f"noise has shape {tuple(value.shape)}, expected a scalar or ({m},) (one per sensor)"
        )
    sd = value.expand(m).clone()
    if noise_kind == "relative":
        sd = sd * data.abs()
    bad = (~(torch.isfinite(sd) & (sd > 0))).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        what = (
            f"noise fraction {float(value.expand(m)[i])} of |data| = {float(data[i].abs())}"
            if noise_kind == "relative"
            else f"noise {float(sd[i])}"
        )
        raise ValueError(
            f"noise standard deviation of sensor {i} is {float(sd[i])} ({what}); "
            f"expected positive and finite ({bad.numel()} sensor(s) affected)"
        )
    return sd


def check_data(data, device: torch.device, expected: int | None) -> torch.Tensor:
    """The observations as ``(m,)`` float64 on ``device``, checked finite and (when
    ``expected`` is given) one per sensor."""
    y = torch.as_tensor(data, dtype=torch.float64).detach().to(device)
    if y.dim() != 1 or y.numel() < 1:
        raise ValueError(f"data must be 1-D (num_data,), got shape {tuple(y.shape)}")
    bad = (~torch.isfinite(y)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"data has {bad.numel()} non-finite value(s), the first at index {i} "
            f"({float(y[i])}); expected finite observations"
        )
    if expected is not None and y.numel() != expected:
        raise ValueError(
            f"data has {y.numel()} values but the number of sensors is {expected}; "
            "expected one value per sensor"
        )
    return y
