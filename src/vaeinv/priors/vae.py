"""The generative prior users import: ``z ~ N(0, I)`` in ``R^latent_dim``, ``log_k = decode(z)``.

A [`Prior`][vaeinv.priors.vae.Prior] wraps any decoder module. It freezes the decoder (eval mode, no
parameter gradients) but stays differentiable in ``z``, and batches over any leading
dimensions: ``z (..., latent_dim) -> log_k (..., ny, nx)``.

In a Pyro model::

    z = pyro.sample("z", prior.latent_distribution())
    log_k = prior.decode(z)

**Extensions.** A decoder that takes extra inputs (e.g. the fine decoder of a multiscale prior
conditioned on an upsampled coarse field) receives them through ``decode(z, cond=...)``:
``cond`` has the same leading dimensions as ``z`` and is passed on as ``decoder(z, cond=cond)``.
A prior on a sub-grid is just a ``Prior`` whose ``grid`` is that sub-grid; a domain-decomposed
prior composes several of them and places their fields into the full grid.
"""

from __future__ import annotations

import hashlib
import math
from importlib.resources import files
from pathlib import Path

import torch

from ..grid import Grid
from .base import LatentPrior, _generator
from .multiscale import MultiscalePrior, is_multiscale_folder

__all__ = ["Prior", "priors_folder", "shipped_priors"]


def priors_folder() -> Path:
    """The folder of the shipped priors (``vaeinv/priors/shipped``)."""
    return Path(str(files("vaeinv.priors"))) / "shipped"


def shipped_priors() -> list[str]:
    """Names of the priors installed in ``vaeinv/priors/shipped/<name>/model.safetensors``."""
    folder = priors_folder()
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if (p / "model.safetensors").is_file() or (p / "multiscale.json").is_file()
    )


class Prior(LatentPrior):
    """A frozen VAE decoder over a standard-normal latent (a
    [`LatentPrior`][vaeinv.priors.base.LatentPrior]).

    Args:
        decoder: a module mapping ``(B, *latent_shape)`` latents (and an optional ``cond``
            keyword) to fields ``(B, ny, nx)`` or ``(B, 1, ny, nx)``. It is set to eval mode
            and its parameters stop requiring gradients.
        latent_shape: the shape of one latent as the decoder takes it, e.g. ``(1, 16, 16)``
            or ``(64,)``; ``latent_dim`` is its product.
        grid: the grid of the decoded fields (a sub-grid for a local prior).
        name: a label (a shipped name or a path).
        weights_sha256: hash of the weights, recorded with results.
        encoder: optional ``fields (B, ny, nx) -> (mu, logvar)`` (or ``mu``), for
            [`encode`][vaeinv.priors.vae.Prior.encode].
        latent_transform: optional module mapping the white latent ``w ~ N(0, I)`` to the
            decoder's latent, with an ``inverse`` (a fitted
            [`LatentGaussian`][vaeinv.vae.calibration.LatentGaussian], or a latent flow
            followed by it); ``decode`` applies it first and ``encode`` returns the white
            latent.
        residual: optional [`ResidualField`][vaeinv.vae.residual.ResidualField], the
            decoder's residual; ``sample(..., residual=True)`` adds a draw of it.

    Raises:
        ValueError: an empty or non-positive ``latent_shape``.
    """

    def __init__(
        self,
        decoder: torch.nn.Module,
        latent_shape: tuple[int, ...],
        grid: Grid,
        name: str | None = None,
        weights_sha256: str | None = None,
        encoder=None,
        latent_transform: torch.nn.Module | None = None,
        residual=None,
    ) -> None:
        latent_shape = tuple(latent_shape)
        if not latent_shape or any(int(s) != s or s < 1 for s in latent_shape):
            raise ValueError(f"latent_shape must be positive integers, got {latent_shape!r}")
        self.decoder = decoder.eval().requires_grad_(False)
        owner = getattr(encoder, "__self__", encoder)  # a bound method's module
        if isinstance(owner, torch.nn.Module):
            owner.eval().requires_grad_(False)
        self.encoder = encoder
        if latent_transform is not None:
            latent_transform = latent_transform.eval().requires_grad_(False)
        self.latent_transform = latent_transform
        self.residual = residual
        self.latent_shape = latent_shape
        self.latent_dim = math.prod(latent_shape)
        self.grid = grid
        self.name = name
        self.weights_sha256 = weights_sha256

    def __repr__(self) -> str:
        return f"Prior(name={self.name!r}, latent_shape={self.latent_shape}, grid={self.grid})"

    @classmethod
    def load(cls, name_or_path: str | Path) -> Prior | MultiscalePrior:
        """Load a VAE checkpoint, by path or by the name of a shipped prior.

        A folder holding a multiscale prior (``multiscale.json``; shipped: ``gaussian16-64``,
        ``channel16-32-64``) gives a [`MultiscalePrior`][vaeinv.priors.multiscale.MultiscalePrior].

        A folder may also hold a latent flow and a residual field (see
        `vaeinv.vae.second_stage`); they are loaded with it, and ``weights_sha256`` then hashes
        all three weight files together.

        Args:
            name_or_path: a checkpoint path (``.safetensors``, ``.json`` or a folder holding
                ``model.safetensors``), or a name listed by
                [`shipped_priors`][vaeinv.priors.vae.shipped_priors].

        Raises:
            ValueError: an unknown name (the known ones listed), or a bad checkpoint.
        """
        from ..vae.checkpoint import load_checkpoint
        from ..vae.second_stage import FlowThenGaussian, load_latent_flow, load_residual

        path = Path(name_or_path)
        if not path.exists():
            known = shipped_priors()
            if str(name_or_path) not in known:
                listing = f"known: {', '.join(known)}" if known else "no priors are installed"
                raise ValueError(
                    f"unknown prior {str(name_or_path)!r} (not a file either); {listing}"
                )
            path = priors_folder() / str(name_or_path)
        if is_multiscale_folder(path):
            return MultiscalePrior.load(name_or_path)
        ckpt = load_checkpoint(path)
        latent = None if ckpt.model.latent_prior.is_identity else ckpt.model.latent_prior
        digest = ckpt.weights_sha256
        folder = ckpt.path.parent
        flow = load_latent_flow(folder, ckpt.weights_sha256)
        residual = load_residual(folder, ckpt.weights_sha256)
        if flow is not None:
            latent = FlowThenGaussian(flow[0], latent)
        if flow is not None or residual is not None:
            parts = [digest] + [x[1] for x in (flow, residual) if x is not None]
            digest = hashlib.sha256(":".join(parts).encode()).hexdigest()
        if residual is not None and residual[0].shape != ckpt.grid.shape:
            raise ValueError(
                f"{folder}: residual field of shape {residual[0].shape} on a {ckpt.grid} prior"
            )
        return cls(
            ckpt.model.decoder,
            ckpt.model.config.latent_shape,
            ckpt.grid,
            name=str(name_or_path),
            weights_sha256=digest,
            encoder=ckpt.model.encode,
            latent_transform=latent,
            residual=None if residual is None else residual[0],
        )

    def _param(self) -> torch.Tensor | None:
        return next(iter(self.decoder.parameters()), None)

    @property
    def device(self) -> torch.device:
        """Device of the decoder's parameters (CPU for a parameter-free decoder)."""
        p = self._param()
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the decoder's parameters; latents are cast to it."""
        p = self._param()
        return p.dtype if p is not None else torch.get_default_dtype()

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> Prior:
        """Move the decoder (and a module encoder) in place; returns ``self``.

        Args:
            device: the target device.
            dtype: the target floating dtype (e.g. ``torch.float64`` for gradient checks).
        """
        self.decoder.to(device=device, dtype=dtype)
        owner = getattr(self.encoder, "__self__", self.encoder)
        if isinstance(owner, torch.nn.Module):
            owner.to(device=device, dtype=dtype)
        if self.latent_transform is not None:
            self.latent_transform.to(device=device, dtype=dtype)
        if self.residual is not None:
            self.residual.to(device=device)
        return self

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``z (..., latent_dim) -> log_k (..., ny, nx)``, differentiable in ``z``.

        Args:
            z: latents; cast to the prior's dtype and device.
            cond: optional conditioning input with the same leading dimensions as ``z``.

        Raises:
            ValueError: a last dimension other than ``latent_dim`` (got and expected named),
                or a decoder output that does not match the grid.
        """
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"latent z has shape {got}, expected (..., {self.latent_dim})")
        lead = z.shape[:-1]
        z = z.to(self.device, self.dtype)
        if self.latent_transform is not None:
            z = self.latent_transform(z)
        flat = z.reshape(-1, *self.latent_shape)
        if cond is None:
            out = self.decoder(flat)
        else:
            cond = cond.to(self.device, self.dtype)
            out = self.decoder(flat, cond=cond.reshape(flat.shape[0], *cond.shape[len(lead) :]))
        if out.dim() == 4 and out.shape[1] == 1:
            out = out[:, 0]
        if tuple(out.shape[1:]) != self.grid.shape:
            raise ValueError(
                f"decoder gave shape {tuple(out.shape)}, expected (B, *{self.grid.shape})"
            )
        return out.reshape(*lead, *self.grid.shape)

    def sample(
        self,
        n: int,
        generator: torch.Generator | int | None = None,
        cond: torch.Tensor | None = None,
        residual: bool = False,
    ) -> torch.Tensor:
        """``n`` prior draws ``log_k (n, ny, nx)`` (no gradient).

        Args:
            n: number of draws.
            generator: a CPU ``torch.Generator`` or a seed; ``None`` draws a fresh
                OS-entropy seed (the global RNG is never used).
            cond: optional conditioning input, ``(n, ...)``.
            residual: add a draw of the decoder's residual field (the full generative model
                ``decoder(z) + r``) instead of returning the decoded mean ``decoder(z)``.

        Raises:
            ValueError: ``residual=True`` for a prior without a residual field.
        """
        if residual and self.residual is None:
            raise ValueError(f"{self!r} has no residual field; sample with residual=False")
        generator = _generator(generator)
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.dtype)
        with torch.no_grad():
            fields = self.decode(z.to(self.device), cond)
        if residual:
            fields = fields + self.residual.sample(n, generator, fields.dtype, fields.device)
        return fields

    def encode(self, log_k: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's latent mean ``(..., latent_dim)`` of fields ``log_k (..., ny, nx)``.

        Args:
            log_k: fields on the prior's grid.
            cond: optional conditioning input with the same leading dimensions.

        Raises:
            ValueError: a prior without encoder, or fields that do not fit the grid.
        """
        if self.encoder is None:
            raise ValueError(f"{self!r} wraps a decoder only: it has no encoder to encode with")
        self.grid.check_field(log_k, "log_k")
        lead = log_k.shape[:-2]
        flat = log_k.to(self.device, self.dtype).reshape(-1, *self.grid.shape)
        if cond is not None:
            cond = cond.to(self.device, self.dtype).reshape(flat.shape[0], *cond.shape[len(lead) :])
        out = self.encoder(flat, cond) if cond is not None else self.encoder(flat)
        mu = out[0] if isinstance(out, tuple) else out
        if self.latent_transform is not None:
            mu = self.latent_transform.inverse(mu)
        return mu.reshape(*lead, self.latent_dim)
