"""The VAE training objective: reconstruction + beta * KL + lambda * |F - F_c| + mmd_lambda * MMD.

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

- MMD (the maximum-mean-discrepancy term of InfoVAE, Zhao et al. 2019, and WAE-MMD,
  Tolstikhin et al. 2018): the unbiased estimate of ``MMD^2`` between the batch's latent draws
  ``z_b = mu_b + sigma_b * eps_b`` (one per field) and as many draws of ``N(0, I)``, with the
  inverse multiquadratic kernel ``k(a, b) = sum_s C_s / (C_s + |a - b|^2)``, ``C_s = 2 d s`` for
  ``s`` in ``MMD_SCALES`` (``d`` the latent size). Where the KL term pulls each ``q(z | x)``
  towards ``N(0, I)``, this one pulls the aggregate ``q(z) = mean_x q(z | x)`` towards it, so
  that decoded prior draws look like decoded posterior draws. It is one number per batch (not
  per field), weighted by ``mmd_lambda``.

``total = reconstruction + beta * kl + fisher_lambda * fisher_penalty + mmd_lambda * mmd``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "MMD_SCALES",
    "fisher_information",
    "kl_divergence",
    "mmd_imq",
    "reconstruction_loss",
    "vae_loss",
]

MMD_SCALES = (0.2, 0.5, 1.0, 2.0, 5.0)


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


def mmd_imq(a: torch.Tensor, b: torch.Tensor, scales=MMD_SCALES) -> torch.Tensor:
    """Unbiased ``MMD^2`` between the samples ``a`` and ``b`` under the summed IMQ kernel.

    Args:
        a, b: ``(n, d)`` each, ``n >= 2`` samples of two distributions on ``R^d``.
        scales: the kernel scales ``s``; ``C_s = 2 d s`` (``2 d`` is the mean squared distance
            between two draws of ``N(0, I)``).

    Returns:
        A scalar, zero in expectation when ``a`` and ``b`` share a distribution (it can be
        negative).
    """
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(
            f"mmd_imq needs two (n, d) samples with n >= 2, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    n, d = a.shape
    off = 1.0 - torch.eye(n, dtype=a.dtype, device=a.device)
    d_aa, d_bb, d_ab = (torch.cdist(u, v).square() for u, v in ((a, a), (b, b), (a, b)))
    total = a.new_zeros(())
    for s in scales:
        c = 2.0 * d * s
        within = (c / (c + d_aa) + c / (c + d_bb)) * off
        total = total + within.sum() / (n * (n - 1)) - 2.0 * (c / (c + d_ab)).mean()
    return total


def vae_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    output: str = "linear",
    beta: float = 1.0,
    fisher_lambda: float = 0.0,
    fisher_target: float = 0.0,
    mmd_lambda: float = 0.0,
    latent_draws: tuple[torch.Tensor, torch.Tensor] | None = None,
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
        mmd_lambda: weight of the MMD term.
        latent_draws: ``(eps, w)``, two ``(B, latent_dim)`` standard-normal draws: ``eps``
            makes the batch's latent draws ``mu + sigma * eps``, ``w`` is the sample of
            ``N(0, I)``. Required when ``mmd_lambda > 0``.

    Returns:
        ``reconstruction``, ``kl`` (unweighted), ``fisher_information`` (batch mean of ``F``),
        ``fisher_penalty`` (batch mean of ``|F - F_c|``, unweighted), ``mmd`` (unweighted; 0
        when ``mmd_lambda`` is 0) and ``total``; scalars.
    """
    recon = reconstruction_loss(raw, target, output)
    kl = kl_divergence(mu, logvar)
    info = fisher_information(logvar)
    penalty = (info - fisher_target).abs().mean()
    total = recon + beta * kl
    if fisher_lambda:
        total = total + fisher_lambda * penalty
    mmd = torch.zeros((), dtype=recon.dtype, device=recon.device)
    if mmd_lambda:
        if latent_draws is None:
            raise ValueError("mmd_lambda > 0 needs latent_draws=(eps, w)")
        eps, w = latent_draws
        z = mu.flatten(1) + torch.exp(0.5 * logvar.flatten(1)) * eps
        mmd = mmd_imq(z, w)
        total = total + mmd_lambda * mmd
    return {
        "reconstruction": recon,
        "kl": kl,
        "fisher_information": info.mean(),
        "fisher_penalty": penalty,
        "mmd": mmd,
        "total": total,
    }
