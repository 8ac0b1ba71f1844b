"""The multiscale prior (MDGM, Xia & Zabaras 2022): one prior over the joint latent of every
level, each level also a prior on its own grid.

The latent is the concatenation ``z = (z_0, z_1, ..., z_L)`` of the levels' white latents,
coarsest first, with ``z ~ N(0, I)``; level ``k`` decodes from ``(z_0, ..., z_k)`` to its own
grid (`vaeinv.vae.multiscale`: each finer decoder conditioned on the coarser level's latent and
field), and the prior's field is the finest level's. ``prior.level(k)`` is the prior of level
``k`` alone: its latent is the first ``latent_dims[0] + ... + latent_dims[k]`` coordinates of
the joint latent and its grid level ``k``'s, so that a coarse posterior over it can use a
coarse solver and multilevel samplers can pass latents between levels by slicing.

```python
prior = vaeinv.Prior.load("channel16-32-64")     # a MultiscalePrior, 336 latents
prior.levels, prior.latent_dims                  # 3, (16, 64, 256)
coarse = prior.level(0)                          # 16 latents, 16 x 16 fields
```
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..grid import check_nested
from .base import LatentPrior

__all__ = ["MultiscalePrior", "is_multiscale_folder"]

_FORMAT = "vaeinv-multiscale"


def is_multiscale_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding a multiscale prior (``multiscale.json``)."""
    return path.is_dir() and (path / "multiscale.json").is_file()


class MultiscalePrior(LatentPrior):
    """Trained multiscale VAEs as one prior over the joint white latent (module docstring).

    Args:
        models: the levels' [`VAE`][vaeinv.vae.VAE]s, coarsest first; level ``k >= 1``
            conditional (``cond_channels`` = the coarser latent channels + 1).
        grids: each level's grid; every grid nests in the next (integer refinement, same
            domain).
        name: a label (a shipped name or a path).
        weights_sha256: the levels' weight hashes, joined (recorded with results).

    Raises:
        ValueError: fewer than one level, grids and models that disagree, grids that do not
            nest, or a level whose conditioning does not fit the coarser level.
    """

    def __init__(self, models, grids, name: str | None = None, weights_sha256=None) -> None:
        from ..vae.multiscale import cond_channels

        models, grids = list(models), list(grids)
        if not models or len(models) != len(grids):
            raise ValueError(
                f"a multiscale prior needs one grid per level, got {len(models)} models and "
                f"{len(grids)} grids"
            )
        for k, (model, grid) in enumerate(zip(models, grids, strict=True)):
            if (model.config.ny, model.config.nx) != grid.shape:
                raise ValueError(
                    f"level {k}: the network is {model.config.ny} x {model.config.nx} but its "
                    f"grid is {grid.ny} x {grid.nx}"
                )
            wanted = cond_channels(models[k - 1].config) if k else 0
            if model.config.cond_channels != wanted:
                raise ValueError(
                    f"level {k}: cond_channels is {model.config.cond_channels}, expected {wanted}"
                    " (the coarser level's latent channels + 1; 0 for the coarsest)"
                )
            if k:
                check_nested(grids[k - 1], grid, f"level {k - 1}", f"level {k}")
            model.eval().requires_grad_(False)
        self.models = models
        self.grids = grids
        self.levels = len(models)
        self.latent_dims = tuple(int(m.config.latent_dim) for m in models)
        self.latent_dim = sum(self.latent_dims)
        self.grid = grids[-1]
        self.name = name
        self.weights_sha256 = weights_sha256

    def __repr__(self) -> str:
        sizes = "-".join(str(g.ny) for g in self.grids)
        dims = self.latent_dims
        return f"MultiscalePrior(name={self.name!r}, levels={sizes}, latent_dims={dims})"

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> MultiscalePrior:
        """Load a multiscale prior: a folder with ``multiscale.json`` (as written by
        ``vaeinv train`` of a multiscale recipe), or the name of a shipped one.

        Raises:
            ValueError: an unknown name, a folder without ``multiscale.json``, a malformed
                one, a level file that is missing (named) or any bad level checkpoint.
        """
        from ..vae.checkpoint import load_checkpoint
        from .vae import priors_folder, shipped_priors

        path = Path(name_or_path)
        if not path.exists():
            if str(name_or_path) not in shipped_priors():
                raise ValueError(
                    f"unknown prior {str(name_or_path)!r} (not a folder either); known: "
                    f"{', '.join(shipped_priors())}"
                )
            path = priors_folder() / str(name_or_path)
        if not is_multiscale_folder(path):
            raise ValueError(f"{path} is not a multiscale prior folder (no multiscale.json)")
        try:
            meta = json.loads((path / "multiscale.json").read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path / 'multiscale.json'} is not valid JSON: {err}") from None
        files = meta.get("levels") if isinstance(meta, dict) else None
        if meta.get("format") != _FORMAT or not isinstance(files, list) or not files:
            raise ValueError(
                f"{path / 'multiscale.json'} is not a multiscale prior description (format "
                f"{_FORMAT!r} with a list of level files expected)"
            )
        models, grids, digests = [], [], []
        for k, file in enumerate(files):
            if not isinstance(file, str) or "/" in file or "\\" in file:
                raise ValueError(f"level {k}: bad file name {file!r} in multiscale.json")
            if not (path / file).is_file():
                raise ValueError(
                    f"the multiscale prior in {path} is missing level {k}: {file} not found "
                    f"({len(files)} levels listed in multiscale.json)"
                )
            ckpt = load_checkpoint(path / file)
            models.append(ckpt.model)
            grids.append(ckpt.grid)
            digests.append(ckpt.weights_sha256)
        digest = hashlib.sha256(":".join(digests).encode()).hexdigest()
        return cls(models, grids, name=str(name_or_path), weights_sha256=digest)

    # ------------------------------------------------------------------ the protocol
    def _param(self) -> torch.Tensor:
        return next(self.models[0].parameters())

    @property
    def device(self) -> torch.device:
        return self._param().device

    @property
    def dtype(self) -> torch.dtype:
        return self._param().dtype

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> MultiscalePrior:
        """Move every level in place; returns ``self``."""
        for model in self.models:
            model.to(device=device, dtype=dtype)
        return self

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The levels' white latents of ``z (..., d)`` for ``d`` the latent size of the first
        levels (``latent_dim`` or that of some ``level(k)``)."""
        ends, total = [], 0
        for d in self.latent_dims:
            total += d
            ends.append(total)
        if z.shape[-1] not in ends:
            raise ValueError(
                f"latent z has {z.shape[-1]} entries; a multiscale latent of the levels "
                f"{self.latent_dims} has one of {ends}"
            )
        return list(torch.split(z, self.latent_dims[: ends.index(z.shape[-1]) + 1], dim=-1))

    def decode_levels(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The field of every level ``(..., ny_k, nx_k)`` from ``z`` (the joint latent, or the
        first levels' part of it), coarsest first; differentiable in ``z``."""
        from ..vae.multiscale import decode_levels

        if not isinstance(z, torch.Tensor) or z.dim() < 1:
            raise ValueError(f"latent z must be a tensor (..., d), got {type(z).__name__}")
        lead = z.shape[:-1]
        parts = [w.reshape(-1, w.shape[-1]).to(self.device, self.dtype) for w in self.split(z)]
        latents = [m.latent_prior(w) for m, w in zip(self.models, parts, strict=False)]
        fields = decode_levels(self.models, latents)
        return [f.reshape(*lead, *f.shape[-2:]) for f in fields]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z (..., latent_dim) -> log_k (..., ny, nx)``: the finest level's field."""
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.latent_dim:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"latent z has shape {got}, expected (..., {self.latent_dim})")
        return self.decode_levels(z)[-1]

    def encode(self, log_k: torch.Tensor) -> torch.Tensor:
        """The joint white latent ``(..., latent_dim)`` of fields on the finest grid: each
        level encodes the field coarsened to its grid (encoder means), conditioned on the
        coarser levels' encodings."""
        from ..vae.multiscale import encode_levels

        self.grid.check_field(log_k, "log_k")
        lead = log_k.shape[:-2]
        flat = log_k.reshape(-1, *self.grid.shape).to(self.device, self.dtype)
        means, _ = encode_levels(self.models, flat)
        white = [
            m.latent_prior.inverse(mu.to(self.device))
            for m, mu in zip(self.models, means, strict=True)
        ]
        return torch.cat(white, dim=-1).reshape(*lead, self.latent_dim)

    def level(self, k: int) -> MultiscalePrior:
        """The prior of level ``k`` (0 the coarsest; negative counts from the finest): the
        first ``k + 1`` levels, its latent the first ``sum(latent_dims[:k + 1])`` coordinates
        of the joint latent, its fields on level ``k``'s grid."""
        if isinstance(k, bool) or not isinstance(k, int) or not -self.levels <= k < self.levels:
            raise ValueError(f"level must be an integer in [0, {self.levels}), got {k!r}")
        k = k % self.levels
        if k == self.levels - 1:
            return self
        sizes = "-".join(str(g.ny) for g in self.grids[: k + 1])
        return MultiscalePrior(
            self.models[: k + 1],
            self.grids[: k + 1],
            name=f"{self.name}[{sizes}]",
            weights_sha256=self.weights_sha256,
        )
