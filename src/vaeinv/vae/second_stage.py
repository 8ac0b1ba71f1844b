"""Optional parts of a prior beside its VAE checkpoint: the latent flow and the residual field.

A prior folder holds ``model.safetensors`` + ``model.json`` (the VAE, with its Gaussian latent
calibration) and may hold

- ``latent_flow.safetensors`` + ``latent_flow.json``: a [`LatentFlow`][vaeinv.vae.flow.LatentFlow]
  between the white latent and the calibrated one (the second stage);
- ``residual.safetensors`` + ``residual.json``: a
  [`ResidualField`][vaeinv.vae.residual.ResidualField], the decoder's residual.

Each JSON names its format, the sha256 of its weights and the sha256 of the VAE weights it was
fitted to: loading refuses a file fitted to another VAE, a hash mismatch, or a file that is not
safetensors (nothing is ever unpickled).
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from .checkpoint import check_safetensors, sha256_file, write_json, write_safetensors
from .flow import FlowConfig, LatentFlow
from .residual import ResidualField

__all__ = [
    "FLOW_STEM",
    "RESIDUAL_STEM",
    "FlowThenGaussian",
    "load_latent_flow",
    "load_residual",
    "save_latent_flow",
    "save_residual",
]

FLOW_STEM = "latent_flow"
RESIDUAL_STEM = "residual"
_FORMATS = {FLOW_STEM: "vaeinv-latent-flow", RESIDUAL_STEM: "vaeinv-residual-field"}


class FlowThenGaussian(nn.Module):
    """``z = gaussian(flow(w))`` with the exact inverse; the prior's latent transform."""

    def __init__(self, flow: LatentFlow, gaussian: nn.Module | None) -> None:
        super().__init__()
        self.flow = flow
        self.gaussian = gaussian

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        u = self.flow(w)
        return u if self.gaussian is None else self.gaussian(u)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        u = z if self.gaussian is None else self.gaussian.inverse(z)
        return self.flow.inverse(u)


def _write(stem: str, folder: Path, tensors: dict, meta: dict, model_sha256: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    digest = write_safetensors(tensors, folder / f"{stem}.safetensors")
    write_json(
        {
            "format": _FORMATS[stem],
            "format_version": 1,
            "model_sha256": model_sha256,
            **meta,
            "weights_sha256": digest,
        },
        folder / f"{stem}.json",
    )
    return digest


def _read(stem: str, folder: Path, model_sha256: str) -> tuple[dict, dict, str]:
    weights, meta_path = folder / f"{stem}.safetensors", folder / f"{stem}.json"
    if not meta_path.is_file():
        raise ValueError(f"{weights} has no metadata file {meta_path.name}")
    check_safetensors(weights)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMATS[stem]:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{meta_path}: format {got!r}, expected {_FORMATS[stem]!r}")
    actual = sha256_file(weights)
    if actual != meta.get("weights_sha256"):
        raise ValueError(
            f"sha256 mismatch for {weights}: expected {meta.get('weights_sha256')}, got {actual}"
        )
    if meta.get("model_sha256") != model_sha256:
        raise ValueError(
            f"{weights} was fitted to the VAE with weights sha256 {meta.get('model_sha256')}, "
            f"but the VAE here has {model_sha256}: refit it (or remove it)"
        )
    return safetensors.torch.load_file(str(weights)), meta, actual


def save_latent_flow(flow: LatentFlow, folder: str | Path, model_sha256: str, info: dict) -> str:
    """Write ``latent_flow.{safetensors,json}`` into ``folder``; returns the weights' sha256."""
    meta = {"config": flow.config.to_dict(), "fit": info}
    return _write(FLOW_STEM, Path(folder), flow.state_dict(), meta, model_sha256)


def load_latent_flow(folder: str | Path, model_sha256: str) -> tuple[LatentFlow, str] | None:
    """The folder's latent flow and its sha256, or ``None`` if it has none."""
    folder = Path(folder)
    if not (folder / f"{FLOW_STEM}.safetensors").exists():
        return None
    state, meta, digest = _read(FLOW_STEM, folder, model_sha256)
    try:
        config = FlowConfig(
            **{**meta["config"], "latent_shape": tuple(meta["config"]["latent_shape"])}
        )
        flow = LatentFlow(config)
        flow.load_state_dict(state, strict=True)
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(
            f"{folder / FLOW_STEM}.safetensors does not fit its config: {err}"
        ) from None
    return flow.eval(), digest


def save_residual(field: ResidualField, folder: str | Path, model_sha256: str, info: dict) -> str:
    """Write ``residual.{safetensors,json}`` into ``folder``; returns the weights' sha256."""
    meta = {"shape": list(field.shape), "variance": field.variance, "fit": info}
    return _write(RESIDUAL_STEM, Path(folder), field.state_dict(), meta, model_sha256)


def load_residual(folder: str | Path, model_sha256: str) -> tuple[ResidualField, str] | None:
    """The folder's residual field and its sha256, or ``None`` if it has none."""
    folder = Path(folder)
    if not (folder / f"{RESIDUAL_STEM}.safetensors").exists():
        return None
    state, meta, digest = _read(RESIDUAL_STEM, folder, model_sha256)
    try:
        field = ResidualField(*meta["shape"])
        field.load_state_dict(state, strict=True)
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{folder / RESIDUAL_STEM}.safetensors does not fit: {err}") from None
    return field, digest


@torch.no_grad()
def _encode_whitened(model, fields: torch.Tensor, batch: int = 500):
    """Whitened posterior means and sds ``(n, d)`` of ``fields`` under ``model``'s calibration."""
    gaussian = model.latent_prior
    tril = gaussian.scale_tril.double()
    inv_sq = torch.linalg.inv(tril).square()
    means, sds = [], []
    for chunk in fields.split(batch):
        mu, logvar = model.encode(chunk)
        centred = (mu.double() - gaussian.loc.double()).T
        means.append(torch.linalg.solve_triangular(tril, centred, upper=False).T)
        # sd of each whitened coordinate of mu + sigma * eps (its off-diagonal part dropped)
        sds.append((logvar.double().exp() @ inv_sq.T).sqrt())
    return torch.cat(means).float(), torch.cat(sds).float()


def fit_second_stage(
    folder: str | Path,
    generator_obj,
    *,
    seed: int,
    residual_fields: int = 2000,
    flow_config: FlowConfig | None = None,
    flow_fields: int = 40000,
    flow_epochs: int = 15,
    log=print,
) -> dict:
    """Fit and write the residual field and (optionally) the latent flow of a trained prior.

    Both are fitted on fresh fields from the prior's own field generator (seeded by ``seed``),
    not on the VAE's training set: the residual of held-out fields is the honest one, and the
    flow needs more draws of the aggregate posterior than a training set holds.

    Args:
        folder: the prior folder with ``model.safetensors`` + ``model.json``.
        generator_obj: the field generator the VAE was trained on.
        seed: seeds the fields, the flow's split, draws and batches.
        residual_fields: fields whose reconstruction residuals give the residual field
            (0: none).
        flow_config: the flow's architecture, or ``None`` for no flow.
        flow_fields: fields encoded for the flow's training draws.
        flow_epochs: the flow's training epochs.
        log: progress lines.

    Returns:
        What was fitted: residual variance, flow validation negative log-likelihood per
        dimension (and that of the Gaussian calibration alone, for comparison).
    """
    from .checkpoint import load_checkpoint
    from .flow import fit_latent_flow
    from .residual import fit_residual_field

    ckpt = load_checkpoint(folder)
    model = ckpt.model.eval()
    folder = ckpt.path.parent
    g = torch.Generator().manual_seed(seed)
    summary: dict = {"seed": seed}
    if residual_fields:
        x = generator_obj.sample(residual_fields, g, torch.float32, "cpu")
        with torch.no_grad():
            recon = torch.cat([model.decoder(model.encode(c)[0]) for c in x.split(500)])
        recon = recon[:, 0] if recon.dim() == 4 else recon
        field = fit_residual_field(x - recon)
        info = {"fields": residual_fields, "seed": seed}
        save_residual(field, folder, ckpt.weights_sha256, info)
        summary["residual_variance"] = field.variance
        log(f"residual field: variance {field.variance:.4g} from {residual_fields} fields")
    if flow_config is not None:
        means, sds = [], []
        for start in range(0, flow_fields, 2000):
            x = generator_obj.sample(min(2000, flow_fields - start), g, torch.float32, "cpu")
            m, s = _encode_whitened(model, x)
            means.append(m)
            sds.append(s)
            log(f"encoded {start + len(x)} / {flow_fields} fields for the latent flow")
        u_mean, u_std = torch.cat(means), torch.cat(sds)
        flow = LatentFlow(flow_config)
        history = fit_latent_flow(
            flow, u_mean, u_std, epochs=flow_epochs, seed=seed, val_fraction=0.05, log=log
        )
        info = {"fields": flow_fields, "epochs": flow_epochs, "seed": seed, **history}
        save_latent_flow(flow, folder, ckpt.weights_sha256, info)
        summary["flow_val_nll"] = min(history["val_nll"])
    return summary
