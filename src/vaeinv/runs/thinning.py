"""Thinning of a run: how many iterations per kept draw, and ``thin="auto"``, the smallest
thinning that keeps a result under a size budget (used by
[`sample`][vaeinv.runs.sampling.sample] and ``vaeinv invert``)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RESULT_BUDGET_BYTES", "auto_thin", "positive_int", "resolve_thin"]

#: ``thin="auto"`` keeps the (uncompressed) result under this many bytes.
RESULT_BUDGET_BYTES = 100_000_000


def positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def auto_thin(
    num_chains: int,
    num_draws: int,
    latent_dim: int,
    num_data: int,
    num_cells: int,
    itemsize: int,
    budget: int | None = None,
) -> int:
    """The smallest ``thin`` that keeps a result under ``budget`` bytes (uncompressed).

    A kept draw costs, per chain, its field (``num_cells * itemsize``) plus ``8 d + 16 m + 48``
    bytes (latents, prediction, pointwise log-likelihood, sample statistics); the groups without
    draws (observed data, noise, sensors, the truth) cost ``8 num_cells + 32 m``. With ``thin``
    a chain keeps ``num_draws // thin`` draws. At least one draw per chain is kept (``thin`` is
    at most ``num_draws``), even when that alone is over budget.

    Args:
        num_chains: chains.
        num_draws: post-warm-up iterations per chain.
        latent_dim: ``d``.
        num_data: ``m``, the sensors.
        num_cells: cells of one field.
        itemsize: bytes per field value (4 for a float32 decoder).
        budget: the bytes allowed (default
            `RESULT_BUDGET_BYTES`).

    Returns:
        ``thin`` in ``[1, num_draws]``.
    """
    budget = RESULT_BUDGET_BYTES if budget is None else budget
    per_draw = num_chains * (num_cells * itemsize + 8 * latent_dim + 16 * num_data + 48)
    fixed = 8 * num_cells + 32 * num_data
    fits = max(0, budget - fixed) // per_draw  # kept draws per chain within budget
    if fits >= num_draws:
        return 1
    if fits == 0:
        return num_draws
    # the smallest t with num_draws // t <= fits
    return num_draws // (fits + 1) + 1


def resolve_thin(posterior, thin: int | str, *, num_chains: int, num_draws: int) -> int:
    """The ``thin`` a run of ``posterior`` uses: ``thin`` itself, checked, or for ``"auto"``
    [`auto_thin`][vaeinv.runs.thinning.auto_thin] from the posterior's sizes (one probe
    decode gives the field's size and dtype).

    Args:
        posterior: the posterior to sample.
        thin: an integer in ``[1, num_draws]`` or ``"auto"``.
        num_chains: chains.
        num_draws: post-warm-up iterations per chain.

    Returns:
        the thinning, an integer in ``[1, num_draws]``.

    Raises:
        ValueError: ``thin`` not ``"auto"`` or an integer >= 1, or larger than ``num_draws``
            (no draw would be kept).
    """
    num_chains = positive_int("num_chains", num_chains)
    num_draws = positive_int("num_draws", num_draws)
    if isinstance(thin, str):
        if thin != "auto":
            raise ValueError(f"thin must be 'auto' or an integer >= 1, got {thin!r}")
        with torch.no_grad():
            probe = posterior.decode(torch.zeros(1, posterior.latent_dim, dtype=torch.float64))
        return auto_thin(
            num_chains,
            num_draws,
            posterior.latent_dim,
            posterior.num_data,
            probe[0].numel(),
            probe.element_size(),
        )
    thin = positive_int("thin", thin)
    if thin > num_draws:
        raise ValueError(
            f"thin={thin} is larger than num_draws={num_draws}: no draw would be kept; expected "
            "thin <= num_draws (a chain keeps num_draws // thin draws)"
        )
    return thin
