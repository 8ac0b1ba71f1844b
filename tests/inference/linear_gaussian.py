"""A linear-Gaussian inverse problem with a closed-form, correlated posterior (a test helper).

The latent ``z ~ N(0, I_d)`` decodes linearly to a field on a tiny grid, ``field = A z + b``
(reshaped to ``(ny, nx)``); the forward map is linear, ``prediction = G field``; the data are
``y = H z_true + c + e`` with ``H = G A``, ``c = G b`` and ``e ~ N(0, diag(s^2))``. Then

    cov  = (I + H^T S^-1 H)^-1,    mean = cov H^T S^-1 (y - c),    S = diag(s^2).

Also here: a simple effective-sample-size estimator (Geyer's initial monotone sequence on the
chain-averaged autocorrelation) and the Monte Carlo standard errors built on it, so that
sampler tests gate their tolerances on the MCSE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaeinv import Grid
from vaeinv.posterior.target import Posterior

__all__ = ["LinearGaussian", "ess", "linear_gaussian", "mcse_mean"]


@dataclass(frozen=True)
class LinearGaussian:
    """The problem and its exact posterior (float64 CPU tensors)."""

    posterior: Posterior
    A: torch.Tensor  # (ny * nx, d) decoder matrix
    b: torch.Tensor  # (ny * nx,) decoder offset
    G: torch.Tensor  # (m, ny * nx) forward matrix
    H: torch.Tensor  # (m, d) = G A
    z_true: torch.Tensor  # (d,)
    mean: torch.Tensor  # (d,) posterior mean
    cov: torch.Tensor  # (d, d) posterior covariance

    @property
    def correlation(self) -> torch.Tensor:
        """The posterior correlation matrix."""
        sd = self.cov.diagonal().sqrt()
        return self.cov / (sd[:, None] * sd[None, :])


def linear_gaussian(
    latent_dim: int = 2,
    num_data: int = 3,
    noise_std: float = 0.2,
    seed: int = 5,
    nx: int = 3,
    ny: int = 2,
    forward_hook=None,
    device: str | torch.device = "cpu",
) -> LinearGaussian:
    """Build the problem from a seed (entries of ``A``, ``G``, ``b``, ``z_true`` and noise).

    Args:
        latent_dim: ``d``.
        num_data: ``m``.
        noise_std: the absolute noise sd ``s`` of every datum.
        seed: seeds a ``torch.Generator`` for every random entry.
        nx, ny: the tiny grid of the decoded field.
        forward_hook: optional ``hook(field, prediction) -> prediction`` applied after ``G``
            (e.g. to inject NaN for some rows, or count calls).
        device: where the data live, hence the posterior's device (the exact moments and
            matrices stay on the CPU).
    """
    gen = torch.Generator().manual_seed(seed)
    f64 = {"dtype": torch.float64, "generator": gen}
    n = nx * ny
    grid = Grid(nx=nx, ny=ny)
    A = torch.randn(n, latent_dim, **f64) / math.sqrt(latent_dim)
    b = 0.3 * torch.randn(n, **f64)
    G = torch.randn(num_data, n, **f64) / math.sqrt(n)
    H = G @ A
    z_true = torch.randn(latent_dim, **f64)
    data = H @ z_true + G @ b + noise_std * torch.randn(num_data, **f64)

    def decode(z: torch.Tensor) -> torch.Tensor:
        field = z.to(torch.float64) @ A.to(z.device).T + b.to(z.device)
        return field.reshape(*z.shape[:-1], ny, nx)

    def forward(field: torch.Tensor) -> torch.Tensor:
        prediction = field.reshape(*field.shape[:-2], n) @ G.to(field.device).T
        return prediction if forward_hook is None else forward_hook(field, prediction)

    posterior = Posterior.from_callables(
        decode, forward, data.to(device), noise_std, latent_dim, grid=grid, name="linear-gaussian"
    )
    precision = torch.eye(latent_dim, dtype=torch.float64) + H.T @ H / noise_std**2
    cov = torch.linalg.inv(precision)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ H.T @ (data - G @ b) / noise_std**2
    return LinearGaussian(posterior, A, b, G, H, z_true, mean, cov)


def _autocorrelation(x: torch.Tensor) -> torch.Tensor:
    """Autocorrelation of each row of ``x (C, N)`` by FFT, averaged over rows: ``(N,)``."""
    n = x.shape[-1]
    x = x - x.mean(-1, keepdim=True)
    size = 2 ** math.ceil(math.log2(2 * n))
    f = torch.fft.rfft(x, size)
    acov = torch.fft.irfft(f * f.conj(), size)[..., :n] / n
    acov = acov.mean(0)
    return acov / acov[0]


def ess(x: torch.Tensor) -> float:
    """Effective sample size of draws ``x (C, N)`` (chains, draws) of one quantity.

    Geyer's initial monotone sequence estimator on the chain-averaged autocorrelation:
    ``ESS = C N / tau``, ``tau = -1 + 2 sum_k Gamma_k`` over the positive, non-increasing
    pair sums ``Gamma_k = rho_2k + rho_2k+1``.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() == 1:
        x = x[None]
    c, n = x.shape
    if float(x.var()) == 0.0:
        return float(c * n)
    rho = _autocorrelation(x)
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(-1)
    stop = torch.nonzero(pairs <= 0)
    k = int(stop[0]) if len(stop) else len(pairs)  # the initial positive sequence
    pairs = torch.cummin(pairs[: max(k, 1)], 0).values  # made monotone
    tau = max(-1.0 + 2.0 * float(pairs.sum()), 1.0 / math.log10(max(c * n, 10)))
    return c * n / tau


def mcse_mean(x: torch.Tensor) -> float:
    """Monte Carlo standard error of the mean of draws ``x (C, N)``: ``sd / sqrt(ESS)``."""
    x = torch.as_tensor(x, dtype=torch.float64)
    return float(x.std()) / math.sqrt(ess(x))


def assert_moments(draws: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, k: float = 4.0):
    """Assert each marginal mean and each covariance entry within ``k`` MCSE of the exact
    values. ``draws (C, N, d)``; a covariance entry is the mean of the product series
    ``(z_i - mean_i)(z_j - mean_j)`` (centred on the exact mean), with its own ESS."""
    d = draws.shape[-1]
    report = []
    for i in range(d):
        x = draws[..., i]
        err, se = float(x.mean() - mean[i]), mcse_mean(x)
        report.append(f"mean[{i}] err {err:+.4f} mcse {se:.4f} ess {ess(x):.0f}")
        assert abs(err) < k * se, report[-1]
    centred = draws - mean
    for i in range(d):
        for j in range(i, d):
            p = centred[..., i] * centred[..., j]
            err, se = float(p.mean() - cov[i, j]), mcse_mean(p)
            report.append(f"cov[{i},{j}] err {err:+.4f} mcse {se:.4f} ess {ess(p):.0f}")
            assert abs(err) < k * se, report[-1]
    return report
