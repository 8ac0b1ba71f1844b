"""The VAE training objective: reconstruction + beta * KL + lambda * |F - F_c|.

Every term is computed per field and then averaged over the batch (never over pixels or latent
dimensions), so the terms keep the scale of a per-field negative log-likelihood:

- reconstruction, ``output="linear"`` or ``"facies"``: ``sum_pixels (x - x_hat)^2``, the sum
  of squared errors of the field in network units (a Gaussian likelihood with variance 1/2 up
  to a constant); ``output="logits"``: ``sum_pixels BCEWithLogits(logits, x)`` for ``x`` in [0, 1].
- KL: ``KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_i (mu_i^2 + sigma_i^2 - log sigma_i^2 - 1)``
  summed over latent dimensions, weighted by ``beta`` (beta-VAE, Higgins et al. 2017).
- Fisher (information VAE of Zheng et al. 2019, as used by Zhang et al. 2022): for a Gaussian
  encoder the Fisher information about its location is ``F = sum_i 1 / sigma_i^2 =
  sum_i exp(-logvar_i)``; the penalty is ``lambda * |F - F_c|``, i.e. the batch mean of
  ``|F_b - F_c|`` times ``lambda``. It steers how much information the encoder carries.

``total = reconstruction + beta * kl + fisher_lambda * fisher_penalty``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fisher_information", "kl_divergence", "reconstruction_loss", "vae_loss"]


def reconstruction_loss(raw: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """Per-field reconstruction error, mean over the batch.

    Args:
        raw: decoder output in network units (values or logits), ``(B, ny, nx)``.
        target: the fields in network units, ``(B, ny, nx)`` (in [0, 1] for logits).
        output: ``"linear"`` or ``"facies"`` (sum of squared errors) or ``"logits"`` (summed
            BCE with logits).
    """
    if output in ("linear", "facies"):
        per_pixel = (raw - target) ** 2
    elif output == "logits":
        per_pixel = F.binary_cross_entropy_with_logits(raw, target, reduction="none")
    else:
        raise ValueError(f"unknown output {output!r}; expected linear, facies or logits")
    return per_pixel.flatten(1).sum(1).mean()


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over latent dimensions, mean over the batch.

    Args:
        mu: encoder means, ``(B, latent_dim)``.
        logvar: encoder log-variances, ``(B, latent_dim)``.
    """
    per_dim = 0.5 * (mu**2 + torch.exp(logvar) - logvar - 1.0)
    return per_dim.flatten(1).sum(1).mean()


def fisher_information(logvar: torch.Tensor) -> torch.Tensor:
    """Per-field Fisher information about the encoder's location, ``sum_i exp(-logvar_i)``.

    Args:
        logvar: encoder log-variances, ``(B, latent_dim)``.

    Returns:
        ``(B,)``: one value per field.
    """
    return torch.exp(-logvar).flatten(1).sum(1)


def vae_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    output: str = "linear",
    beta: float = 1.0,
    fisher_lambda: float = 0.0,
    fisher_target: float = 0.0,
) -> dict[str, torch.Tensor]:
    """The objective and its terms (see the module docstring for the exact forms).

    Args:
        raw: decoder output in network units, ``(B, ny, nx)``.
        target: fields in network units, ``(B, ny, nx)``.
        mu: encoder means, ``(B, latent_dim)``.
        logvar: encoder log-variances, ``(B, latent_dim)``.
        output: ``"linear"``, ``"facies"`` or ``"logits"``.
        beta: KL weight.
        fisher_lambda: weight of the Fisher penalty.
        fisher_target: the target ``F_c``.

    Returns:
        ``reconstruction``, ``kl`` (unweighted), ``fisher_information`` (batch mean of ``F``),
        ``fisher_penalty`` (batch mean of ``|F - F_c|``, unweighted) and ``total``; scalars.
    """
    recon = reconstruction_loss(raw, target, output)
    kl = kl_divergence(mu, logvar)
    info = fisher_information(logvar)
    penalty = (info - fisher_target).abs().mean()
    total = recon + beta * kl
    if fisher_lambda:
        total = total + fisher_lambda * penalty
    return {
        "reconstruction": recon,
        "kl": kl,
        "fisher_information": info.mean(),
        "fisher_penalty": penalty,
        "total": total,
    }
