"""The decoder's residual as a stationary Gaussian field: the VAE's observation noise.

A VAE is the generative model ``x = decoder(z) + r``: the decoder gives the mean field and the
residual ``r`` the detail it does not represent (below the latent's resolution: a 16 x 16 latent
cannot carry one-cell roughness). Decoded means alone are therefore smoother than the
training fields at short lags. ``ResidualField`` models ``r`` as a zero-mean stationary Gaussian
field whose covariance is the empirical autocovariance of held-out reconstruction residuals
``r = x - decoder(mu(x))``:

    c(h) = 1 / (n N) sum_fields sum_s r(s) r(s + h)      (the biased estimator: always PSD)

It is sampled exactly by circulant embedding on the doubled grid: with ``r`` zero-padded to
``(2 ny, 2 nx)``, the circular autocorrelation equals the linear one, its eigenvalues are the
periodogram ``P = mean |FFT(r_pad)|^2 / N >= 0``, and ``crop(F^-1 sqrt(P) F e)`` with white
``e`` has covariance ``c(h)`` on the grid. ``Prior.sample(..., residual=True)`` draws
``decoder(z) + r``: the full generative model, for prior statistics and figures. Inversion
works with the decoder's mean field (the residual's short-range detail is below what sensors
resolve); see the docs' prior page.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualField", "fit_residual_field"]


class ResidualField(nn.Module):
    """A stationary Gaussian field with a stored spectrum, sampled on ``(ny, nx)``.

    Args:
        ny: rows of the grid.
        nx: columns of the grid.
    """

    def __init__(self, ny: int, nx: int) -> None:
        super().__init__()
        self.shape = (int(ny), int(nx))
        self.register_buffer("sqrt_spectrum", torch.zeros(2 * ny, 2 * nx, dtype=torch.float64))

    @property
    def variance(self) -> float:
        """The field's pointwise variance ``c(0)``."""
        return float(self.sqrt_spectrum.square().mean())

    def covariance(self) -> torch.Tensor:
        """``c(h)`` on the doubled grid (lags wrap around), float64."""
        return torch.fft.ifft2(self.sqrt_spectrum.square()).real

    def sample(
        self, n: int, generator: torch.Generator, dtype=torch.float32, device=None
    ) -> torch.Tensor:
        """``n`` draws ``(n, ny, nx)``; the white noise comes from ``generator`` (CPU)."""
        ny, nx = self.shape
        white = torch.randn(n, 2 * ny, 2 * nx, generator=generator, dtype=torch.float64)
        spec = self.sqrt_spectrum.cpu()
        out = torch.fft.ifft2(spec * torch.fft.fft2(white)).real[:, :ny, :nx]
        return out.to(device=device, dtype=dtype)


@torch.no_grad()
def fit_residual_field(residuals: torch.Tensor) -> ResidualField:
    """The [`ResidualField`][vaeinv.vae.residual.ResidualField] of residuals ``(n, ny, nx)``.

    Each residual field is centred by its own mean first (a mean offset would otherwise
    appear as long-range correlation).

    Raises:
        ValueError: not a non-empty ``(n, ny, nx)`` tensor, or non-finite values.
    """
    if not isinstance(residuals, torch.Tensor) or residuals.dim() != 3 or residuals.shape[0] < 1:
        shape = tuple(residuals.shape) if isinstance(residuals, torch.Tensor) else residuals
        raise ValueError(f"residuals must be a (n, ny, nx) tensor, got {shape!r}")
    if not torch.isfinite(residuals).all():
        bad = int((~torch.isfinite(residuals)).flatten(1).any(1).nonzero()[0])
        raise ValueError(f"residual {bad} has non-finite values")
    n, ny, nx = residuals.shape
    r = residuals.double()
    r = r - r.mean(dim=(-2, -1), keepdim=True)
    power = torch.zeros(2 * ny, 2 * nx, dtype=torch.float64)
    for chunk in r.split(256):
        power += torch.fft.fft2(chunk, s=(2 * ny, 2 * nx)).abs().square().sum(0)
    field = ResidualField(ny, nx)
    # eigenvalues of the (2ny x 2nx)-circulant of c(h): P = |F r_pad|^2 / (ny nx); the
    # normalised sampler crop(ifft2(sqrt(P) fft2(e))) has covariance ifft2(P) = c(h)
    field.sqrt_spectrum.copy_((power / (n * ny * nx)).sqrt())
    return field
