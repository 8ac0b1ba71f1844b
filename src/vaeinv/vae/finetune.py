"""Fine-tune a trained decoder so that decoded prior draws share the two-point statistics of
decoded posterior draws.

A VAE trained with a small KL weight reconstructs well, but the latent Gaussian it is sampled
from (see `vaeinv.vae.calibration`) puts mass between the narrow posteriors
``q(z | x)`` of the training fields, where the decoder has never been asked for a field and
returns a blend: prior samples that are too smooth and of too small a variance (for channels:
blobs). This stage trains the **decoder only** (the encoder and the latent Gaussian are frozen,
so the calibration stays an exact fit of the aggregate posterior) on

    total = reconstruction + stats_lambda * S,

per batch of ``B`` training fields ``x_b``:

- ``reconstruction``: ``sum_pixels (x_b - decoder(z_b))^2`` in network units, mean over the batch,
  at ``z_b = mu(x_b) + sigma(x_b) * eps_b`` (the VAE's own term, so fields stay reconstructed);
- ``S``: the squared distance between the two-point statistics of ``prior_draws`` decoded prior
  draws ``decoder(loc + L w)``, ``w ~ N(0, I)``, and those of the batch's reconstructions
  ``decoder(z_b)`` (held fixed, no gradient), each pooled over its batch, in network units:

      S = mean_{d in (x, y), h = 1..max_lag} (log g_d,prior(h) - log g_d,ref(h))^2
          + (log v_prior - log v_ref)^2 + (m_prior - m_ref)^2 / v_ref,

  with the semivariogram ``g_d(h) = 1/2 mean (f[i + h e_d] - f[i])^2`` over every pair ``h``
  cells apart along ``d`` in every field of the batch, ``v`` the variance and ``m`` the mean of
  all values.

The reference is the decoded *posterior*, not the training fields: the decoder's residual
field (fitted afterwards, see `vaeinv.vae.residual`) restores what both lack below
the latent's resolution. Matching summary statistics of generated samples to those of data is
the "feature matching" of Salimans et al. (2016, for GANs) with hand-picked features; here it
only shapes the decoder where prior draws land, and the reconstruction term holds it to the
data elsewhere.

The random draws come from one ``torch.Generator`` seeded by ``seed``: the same model, fields
and config give the same weights on CPU (with the same thread count).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import _finite, _positive_int, to_dict
from .losses import reconstruction_loss
from .training import _check_fields, _threads

__all__ = [
    "FinetuneConfig",
    "finetune_checkpoint",
    "finetune_decoder",
    "statistics_loss",
    "two_point_statistics",
]


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of [`finetune_decoder`][vaeinv.vae.finetune.finetune_decoder].

    Args:
        epochs: passes over the fields.
        batch_size: training fields per optimizer step.
        prior_draws: decoded prior draws per step (``>= 2``).
        lr: Adam learning rate of the decoder.
        stats_lambda: weight of the statistics term ``S`` (0: reconstruction only).
        max_lag: largest variogram lag, in cells (smaller than the grid along x and y).
        seed: seeds the shuffling, the posterior noise and the prior draws.
        num_threads: torch CPU threads while fine-tuning (``None`` keeps the current setting).

    Raises:
        ValueError: a value out of range (named in the message).
    """

    epochs: int = 3
    batch_size: int = 64
    prior_draws: int = 64
    lr: float = 3e-4
    stats_lambda: float = 300.0
    max_lag: int = 16
    seed: int = 0
    num_threads: int | None = None

    def __post_init__(self) -> None:
        own = "FinetuneConfig"
        _positive_int(own, "epochs", self.epochs)
        _positive_int(own, "batch_size", self.batch_size)
        _positive_int(own, "prior_draws", self.prior_draws, minimum=2)
        _positive_int(own, "max_lag", self.max_lag)
        _positive_int(own, "seed", self.seed, minimum=0)
        if self.num_threads is not None:
            _positive_int(own, "num_threads", self.num_threads)
        object.__setattr__(self, "lr", _finite(own, "lr", self.lr, positive=True))
        weight = _finite(own, "stats_lambda", self.stats_lambda)
        if weight < 0:
            raise ValueError(f"{own} stats_lambda must be >= 0, got {self.stats_lambda!r}")
        object.__setattr__(self, "stats_lambda", weight)


def two_point_statistics(fields: torch.Tensor, max_lag: int) -> dict[str, torch.Tensor]:
    """Pooled two-point statistics of a batch of fields (differentiable).

    Args:
        fields: ``(B, ny, nx)``.
        max_lag: lags ``1..max_lag`` cells; must be below ``nx`` and ``ny``.

    Returns:
        ``gamma_x``, ``gamma_y`` (``(max_lag,)`` semivariograms along x (columns) and y
        (rows), pooled over all pairs in all fields), ``var`` and ``mean`` of all values.
    """
    if fields.ndim != 3:
        raise ValueError(f"fields must be (B, ny, nx), got shape {tuple(fields.shape)}")
    ny, nx = fields.shape[-2:]
    if not 1 <= max_lag < min(ny, nx):
        raise ValueError(
            f"max_lag must be in [1, {min(ny, nx) - 1}] for a {ny} x {nx} grid, got {max_lag}"
        )
    lags = range(1, max_lag + 1)
    gx = torch.stack(
        [0.5 * (fields[..., :, h:] - fields[..., :, :-h]).square().mean() for h in lags]
    )
    gy = torch.stack(
        [0.5 * (fields[..., h:, :] - fields[..., :-h, :]).square().mean() for h in lags]
    )
    return {"gamma_x": gx, "gamma_y": gy, "var": fields.var(), "mean": fields.mean()}


def statistics_loss(draws: torch.Tensor, reference: torch.Tensor, max_lag: int) -> torch.Tensor:
    """``S`` of the module docstring between two batches of fields (gradient through ``draws``).

    Args:
        draws: ``(B1, ny, nx)``, the fields to move.
        reference: ``(B2, ny, nx)``, the target (detached here).
        max_lag: largest variogram lag.
    """
    a = two_point_statistics(draws, max_lag)
    b = two_point_statistics(reference.detach(), max_lag)
    lags = torch.cat(
        [a["gamma_x"].log() - b["gamma_x"].log(), a["gamma_y"].log() - b["gamma_y"].log()]
    )
    return (
        lags.square().mean()
        + (a["var"].log() - b["var"].log()).square()
        + (a["mean"] - b["mean"]).square() / b["var"]
    )


def finetune_decoder(
    model,
    fields: torch.Tensor,
    config: FinetuneConfig,
    progress: bool = True,
    log=print,
) -> list[dict[str, float]]:
    """Fine-tune ``model.decoder`` in place (see the module docstring); return the history.

    Args:
        model: a trained [`VAE`][vaeinv.vae.VAE], normally with its latent Gaussian fitted; its
            encoder and latent Gaussian are left exactly as they are.
        fields: ``(num, ny, nx)`` training fields in field units.
        config: the settings.
        progress: show a tqdm bar.
        log: receives one line per epoch.

    Returns:
        Per epoch: ``epoch``, ``reconstruction`` and ``statistics`` (batch means), ``seconds``.

    Raises:
        ValueError: fields that are not ``(num, ny, nx)`` on the model's grid, NaN/inf in them,
            a binary (``"logits"``) or conditioned decoder, or ``max_lag`` not below the grid.
    """
    cfg = model.config
    if cfg.cond_channels:
        raise ValueError("the statistics fine-tune does not support conditioned decoders yet")
    if cfg.output == "logits":
        raise ValueError(
            "the statistics fine-tune is for continuous fields (output 'linear' or 'facies')"
        )
    if not config.max_lag < min(cfg.ny, cfg.nx):
        raise ValueError(
            f"max_lag {config.max_lag} must be below the grid size {cfg.ny} x {cfg.nx}"
        )
    fields = _check_fields(fields, cfg)
    param = next(model.parameters())
    frozen = list(model.encoder.parameters())  # the latent Gaussian holds buffers only
    flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    n_batches = math.ceil(len(fields) / config.batch_size)
    history: list[dict[str, float]] = []
    bar = tqdm(total=config.epochs * n_batches, disable=not progress, desc="fine-tune")
    with _threads(config.num_threads), bar:
        try:
            model.encoder.eval()
            for epoch in range(1, config.epochs + 1):
                start = time.perf_counter()
                model.decoder.train()
                sums = [0.0, 0.0]
                order = torch.randperm(len(fields), generator=generator)
                for index in order.split(config.batch_size):
                    x = fields[index].to(param.device, param.dtype)
                    with torch.no_grad():
                        mu, logvar = model.encode(x)
                        eps = torch.randn(mu.shape, generator=generator).to(mu)
                        z = mu + torch.exp(0.5 * logvar) * eps
                    raw = model.decoder.raw(z)
                    recon = reconstruction_loss(raw, model.normalize(x), cfg.output)
                    w = torch.randn(config.prior_draws, cfg.latent_dim, generator=generator).to(mu)
                    drawn = model.decoder.raw(model.latent_prior(w))
                    stats = statistics_loss(drawn, raw, config.max_lag)
                    total = recon + config.stats_lambda * stats
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    optimizer.step()
                    terms = float(recon.detach()), float(stats.detach())
                    sums[0] += terms[0] * len(index)
                    sums[1] += terms[1] * len(index)
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, recon=f"{terms[0]:.4g}", stats=f"{terms[1]:.3g}")
                if not all(math.isfinite(s) for s in sums):
                    raise RuntimeError(
                        f"fine-tune diverged at epoch {epoch}; lower lr or stats_lambda"
                    )
                record = {
                    "epoch": epoch,
                    "reconstruction": sums[0] / len(fields),
                    "statistics": sums[1] / len(fields),
                    "seconds": time.perf_counter() - start,
                }
                history.append(record)
                log(
                    f"fine-tune epoch {epoch}/{config.epochs}: reconstruction "
                    f"{record['reconstruction']:.4g}, statistics {record['statistics']:.4g}"
                )
        finally:
            model.eval()
            for p, flag in zip(frozen, flags, strict=True):
                p.requires_grad_(flag)
    return history


def finetune_checkpoint(
    source: str | Path,
    fields: torch.Tensor,
    config: FinetuneConfig,
    out: str | Path,
    progress: bool = True,
    log=print,
) -> dict[str, Any]:
    """Fine-tune the checkpoint ``source`` and write the result to ``out``.

    The new checkpoint keeps the source's grid, generator config and losses; a record of this
    fine-tune (the settings, the source's weight hash, the number of fields and the history) is
    appended to the list ``train_config["finetune"]``, so that every fine-tune is part of the
    prior's record. ``out`` may be ``source``: the source is read completely before anything is
    written.

    Args:
        source: a checkpoint (file or folder) as [`load_checkpoint`][vaeinv.vae.load_checkpoint]
            takes it.
        fields: the training fields, ``(num, ny, nx)``.
        config: the settings.
        out: the weights file or folder to write.
        progress: show a tqdm bar.
        log: receives progress lines.

    Returns:
        The record appended.
    """
    from .checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(source)
    history = finetune_decoder(ckpt.model, fields, config, progress=progress, log=log)
    record = {
        "config": to_dict(config),
        "pretrained_sha256": ckpt.weights_sha256,
        "num_fields": len(fields),
        "history": history,
    }
    train_config = dict(ckpt.metadata.get("train_config") or {})
    train_config["finetune"] = [*train_config.get("finetune", []), record]
    save_checkpoint(
        out,
        ckpt.model,
        grid=ckpt.grid,
        generator_config=ckpt.metadata.get("generator_config"),
        train_config=train_config,
        losses=ckpt.metadata.get("losses"),
    )
    return record
