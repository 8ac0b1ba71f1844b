"""A normalising flow from the white latent to the aggregate posterior: the second stage.

The Gaussian calibration ([`LatentGaussian`][vaeinv.vae.calibration.LatentGaussian]) matches
the first two moments of the aggregate posterior ``q(z) = E_x q(z | x)``, but ``q(z)`` of a
sharp VAE is not Gaussian: decoding Gaussian draws of it gives fields between the modes (for
channels: blobs instead of connected channels, and too little contrast). The second stage of a
two-stage VAE (Dai & Wipf 2019) learns ``q(z)`` with a second generative model; here it is a
RealNVP flow (Dinh et al. 2017) of affine couplings, so that it stays exactly invertible and
samplers keep working in a white latent:

    w ~ N(0, I)  ->  u = flow(w)  ->  z = loc + S u  (the Gaussian calibration)  ->  decoder

Each coupling splits the latent by a checkerboard mask ``m`` (over the latent map) and maps
``u = m * w + (1 - m) * (w * exp(s) + t)``, where ``(s, t)`` are computed by an MLP
from ``m * w`` alone; ``s = scale_limit * tanh(.)`` keeps the Jacobian
bounded. Masks alternate between couplings; the last layer of every network starts at zero, so
an untrained flow is the identity. The flow is fitted by maximum likelihood on draws
``z = mu(x) + sigma(x) * eps`` of the aggregate posterior over the training fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from ..coupling import AffineCouplings

__all__ = ["FlowConfig", "LatentFlow", "fit_latent_flow"]


@dataclass(frozen=True)
class FlowConfig:
    """Architecture of a [`LatentFlow`][vaeinv.vae.flow.LatentFlow].

    Args:
        latent_shape: the decoder's latent shape, e.g. ``(1, 16, 16)`` or ``(64,)``.
        couplings: number of affine couplings (even: every coordinate is transformed equally
            often).
        hidden: width of the coupling networks.
        depth: hidden layers per coupling network.
        scale_limit: bound of the log-scale ``s``.
    """

    latent_shape: tuple[int, ...]
    couplings: int = 8
    hidden: int = 256
    depth: int = 2
    scale_limit: float = 2.0

    def __post_init__(self) -> None:
        shape = tuple(self.latent_shape)
        if not shape or any(int(s) != s or s < 1 for s in shape) or math.prod(shape) < 2:
            raise ValueError(
                f"latent_shape must be positive integers with at least 2 elements, got {shape!r}"
            )
        object.__setattr__(self, "latent_shape", tuple(int(s) for s in shape))
        for name in ("couplings", "hidden", "depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.couplings % 2:
            raise ValueError(f"couplings must be even, got {self.couplings}")
        if not (isinstance(self.scale_limit, int | float) and self.scale_limit > 0):
            raise ValueError(f"scale_limit must be positive, got {self.scale_limit!r}")

    @property
    def dim(self) -> int:
        return math.prod(self.latent_shape)

    def to_dict(self) -> dict:
        return {**asdict(self), "latent_shape": list(self.latent_shape)}


def _checkerboard(shape: tuple[int, ...]) -> torch.Tensor:
    """Indices of the "black" sites: a checkerboard over the last two axes (spatial latents),
    alternate entries for vector latents."""
    if len(shape) >= 2:
        h, w = shape[-2:]
        board = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0
        mask = board.expand(*shape)
    else:
        mask = torch.arange(shape[0]) % 2 == 0
    return mask.reshape(-1).nonzero()[:, 0]


def _masks(config: FlowConfig) -> torch.Tensor:
    """``(couplings, dim)``: coupling ``i`` keeps one checkerboard colour, alternating."""
    black = torch.zeros(config.dim)
    black[_checkerboard(config.latent_shape)] = 1.0
    return torch.stack([black if i % 2 == 0 else 1.0 - black for i in range(config.couplings)])


class LatentFlow(AffineCouplings):
    """``u = flow(w)``: white latents ``(..., dim)`` to whitened aggregate-posterior latents.

    Coupling ``i`` keeps the sites of one checkerboard colour (alternating with ``i``) and maps
    the others by ``x_b -> x_b * exp(s(x_a)) + t(x_a)``; the layers are
    [`AffineCouplings`][vaeinv.coupling.AffineCouplings].

    Args:
        config: the architecture.
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__(_masks(config), config.hidden, config.depth, config.scale_limit)
        self.config = config
        self.dim = config.dim

    def _flat(self, x: torch.Tensor):
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"latent has shape {tuple(x.shape)}, expected (..., {self.dim})")
        return x.shape[:-1], x.reshape(-1, self.dim)

    def forward_and_logdet(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, log |det du/dw|)``."""
        lead, x = self._flat(w)
        u, logdet = super().forward_and_logdet(x)
        return u.reshape(*lead, self.dim), logdet.reshape(lead)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """White latents ``w (..., dim)`` to ``u (..., dim)``."""
        return self.forward_and_logdet(w)[0]

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        """``w = flow^{-1}(u)``, exact up to round-off."""
        lead, x = self._flat(u)
        return self.inverse_and_logdet(x)[0].reshape(*lead, self.dim)

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        """Log density of ``u`` under the flow (change of variables)."""
        lead, x = self._flat(u)
        w, logdet = self.inverse_and_logdet(x)
        base = -0.5 * w.square().sum(1) - 0.5 * self.dim * math.log(2 * math.pi)
        return (base + logdet).reshape(lead)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights, also those saved by the earlier layout of this class (networks that
        saw the kept half only, no masks stored): embedded exactly into this one."""
        if "masks" not in state_dict:
            state_dict = _from_split_layout(state_dict, self.masks)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def _from_split_layout(state: dict, masks: torch.Tensor) -> dict:
    """Weights of couplings whose network mapped the kept coordinates ``x[keep]`` to ``(s, t)``
    of the moved ones, as the same maps of the masked full vector: the first layer's columns
    placed at ``keep`` (zeros elsewhere), the last layer's rows at ``move`` and ``dim + move``."""
    out = {"masks": masks.clone()}
    dim = masks.shape[1]
    for i, mask in enumerate(masks):
        keep, move = mask.nonzero()[:, 0], (1 - mask).nonzero()[:, 0]
        names = sorted({k.split(".")[2] for k in state if k.startswith(f"nets.{i}.")}, key=int)
        for name in names:
            weight, bias = state[f"nets.{i}.{name}.weight"], state[f"nets.{i}.{name}.bias"]
            if name == names[0]:
                wide = weight.new_zeros(weight.shape[0], dim)
                wide[:, keep] = weight
                weight = wide
            if name == names[-1]:
                rows = torch.cat([move, dim + move])
                wide_w = weight.new_zeros(2 * dim, weight.shape[1])
                wide_b = bias.new_zeros(2 * dim)
                wide_w[rows], wide_b[rows] = weight, bias
                weight, bias = wide_w, wide_b
            out[f"nets.{i}.{name}.weight"], out[f"nets.{i}.{name}.bias"] = weight, bias
    return out


def fit_latent_flow(
    flow: LatentFlow,
    u_mean: torch.Tensor,
    u_std: torch.Tensor,
    *,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    log=print,
) -> dict:
    """Fit ``flow`` by maximum likelihood to draws ``u = u_mean + u_std * eps`` (fresh per epoch).

    Args:
        flow: the flow to train (in place).
        u_mean: ``(num, dim)`` whitened posterior means of the training fields.
        u_std: ``(num, dim)`` their posterior sds.
        epochs: passes over the data; the weights of the best validation epoch are kept.
        batch_size: draws per Adam step.
        lr: Adam's learning rate (cosine-annealed to zero).
        val_fraction: fields held out for validation (a seeded split).
        seed: seeds the split, the draws and the batches.
        log: called with one line per epoch.

    Returns:
        A history: per-epoch train and validation negative log-likelihood per dimension.
    """
    g = torch.Generator().manual_seed(seed)
    num = u_mean.shape[0]
    perm = torch.randperm(num, generator=g)
    n_val = max(1, round(val_fraction * num))
    val, tr = perm[:n_val], perm[n_val:]
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    val_u = u_mean[val] + u_std[val] * torch.randn(u_mean[val].shape, generator=g)
    history: dict[str, list[float]] = {"train_nll": [], "val_nll": []}
    best, best_state = math.inf, None
    for epoch in range(epochs):
        flow.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            u = u_mean[idx] + u_std[idx] * torch.randn(u_mean[idx].shape, generator=g)
            loss = -flow.log_prob(u).mean() / flow.dim
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        flow.eval()
        with torch.no_grad():
            v = (-flow.log_prob(val_u).mean() / flow.dim).item()
        history["train_nll"].append(total / len(tr))
        history["val_nll"].append(v)
        log(f"flow epoch {epoch + 1}/{epochs}: train nll/dim {total / len(tr):.4f}, val {v:.4f}")
        if v < best:
            best = v
            best_state = {k: t.clone() for k, t in flow.state_dict().items()}
    if best_state is not None:
        flow.load_state_dict(best_state)
    flow.eval()
    return history
