"""A run's kept draws completed into a chunk: fields and predictions decoded where the sampler did
not keep them, the prior and pointwise log-likelihood, everything moved to the CPU."""

from __future__ import annotations

import torch

DECODE_BATCH = 256


def _decode_draws(posterior, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z (C, L, d)`` -> ``(fields (C, L, *field_shape)`` on the CPU, ``predictions (C, L, m)``
    float64 on the posterior's device), in batches of one decode and one solve, no gradient.

    A draw equal to the chain's previous one (a rejected step) reuses its field and prediction,
    so only distinct draws are decoded and solved.
    """
    num_chains, length = z.shape[:2]
    new = torch.ones(num_chains, length, dtype=torch.bool, device=z.device)
    new[:, 1:] = (z[:, 1:] != z[:, :-1]).any(-1)
    distinct = z[new]
    fields, predictions = [], []
    with torch.no_grad():
        for i in range(0, distinct.shape[0], DECODE_BATCH):
            field = posterior.decode(distinct[i : i + DECODE_BATCH])
            predictions.append(posterior.forward(field).to(torch.float64))
            fields.append(field.detach().to("cpu"))
    if not fields:
        empty = torch.zeros(num_chains, 0, posterior.num_data, dtype=torch.float64)
        return torch.zeros(num_chains, 0, *posterior.field_shape), empty.to(z.device)
    steps = torch.arange(length, device=z.device).expand(num_chains, length)
    source = torch.where(new, steps, torch.zeros_like(steps)).cummax(dim=1).values
    position = (new.flatten().cumsum(0) - 1).reshape(num_chains, length).gather(1, source)
    return torch.cat(fields)[position.cpu()], torch.cat(predictions)[position]


def finish_chunk(posterior, kept: dict[str, torch.Tensor], first: int):
    """Complete a chunk's draws (``log_k`` and predictions decoded here when the sampler did
    not keep them, lp, pointwise log-likelihood) and move them to the CPU.

    Draws are decoded chain by chain, so that a chain's fields do not depend on which other
    chains share the run (a batched matrix product may round differently in another batch).
    """
    z = kept["z"]
    if "log_k" not in kept:
        decoded = [_decode_draws(posterior, z[c : c + 1]) for c in range(z.shape[0])]
        kept["log_k"] = torch.cat([fields for fields, _ in decoded])
        kept["prediction"] = torch.cat([predictions for _, predictions in decoded])
    with torch.no_grad():
        pointwise = posterior.log_likelihood_of(kept["prediction"], pointwise=True)
        if "lp" not in kept:
            kept["lp"] = posterior.log_prior(z) + pointwise.sum(-1)
    kept["log_likelihood"] = pointwise
    chunk = {k: v.detach().to("cpu").contiguous() for k, v in kept.items()}
    chunk["draw"] = torch.arange(first, first + z.shape[1], dtype=torch.int64)
    return chunk
