"""The Gaussian fit of the aggregate posterior, and the prior that samples from it."""

import pytest
import torch

from vaeinv import Grid, Prior
from vaeinv.vae import VAE, init_vae, load_checkpoint, save_checkpoint
from vaeinv.vae.calibration import LatentGaussian, fit_latent_gaussian

from vae_helpers import tiny_config, tiny_fields


def test_identity_by_default_and_inverse(generator):
    latent = LatentGaussian(5)
    assert latent.is_identity
    w = torch.randn(3, 2, 5, generator=generator)
    torch.testing.assert_close(latent(w), w)
    latent.loc.copy_(torch.randn(5, generator=generator))
    latent.scale_tril.copy_(torch.eye(5) + torch.tril(torch.randn(5, 5, generator=generator), -1))
    assert not latent.is_identity
    torch.testing.assert_close(latent.inverse(latent(w)), w, rtol=1e-5, atol=1e-5)


def test_fit_matches_the_moments_of_the_aggregate_posterior(generator):
    """The fitted N(loc, S S^T) has the mean and covariance of q(z) = E_x N(mu(x), sigma^2(x)):
    checked against draws from that mixture, within Monte Carlo error."""
    model = init_vae(tiny_config(), seed=1)
    fields = tiny_fields(generator, n=64)
    latent = fit_latent_gaussian(model, fields)
    with torch.no_grad():
        mu, logvar = model.encode(fields)
    reps = 400
    draws = mu.double() + logvar.double().mul(0.5).exp() * torch.randn(
        reps, *mu.shape, generator=generator, dtype=torch.float64
    )
    draws = draws.reshape(-1, mu.shape[-1])
    cov = latent.scale_tril.double() @ latent.scale_tril.double().T
    emp_cov = torch.cov(draws.T)
    # MCSE of a covariance entry ~ sqrt((s_ii s_jj + s_ij^2) / N); 64 distinct means limit N
    scale = torch.sqrt(torch.outer(cov.diagonal(), cov.diagonal()))
    assert float(((emp_cov - cov).abs() / scale).max()) < 0.05
    mcse = (cov.diagonal() / draws.shape[0]).sqrt()
    assert float(((draws.mean(0) - latent.loc.double()).abs() / mcse).max()) < 5


def test_calibrated_prior_round_trips_and_samples_the_fit(tmp_path, generator):
    model = init_vae(tiny_config(), seed=2)
    fields = tiny_fields(generator, n=40)
    fit_latent_gaussian(model, fields)
    save_checkpoint(tmp_path / "m.safetensors", model, grid=Grid(8, 8))
    loaded = load_checkpoint(tmp_path / "m.safetensors").model
    torch.testing.assert_close(loaded.latent_prior.loc, model.latent_prior.loc)
    prior = Prior.load(tmp_path / "m.safetensors")
    assert prior.latent_transform is not None
    with torch.no_grad():
        # encode -> decode through the white latent equals the VAE's own mean reconstruction
        mu, _ = model.encode(fields)
        expected = model.decoder(mu)
        torch.testing.assert_close(
            prior.decode(prior.encode(fields)), expected, rtol=1e-4, atol=1e-5
        )
        # a white draw w decodes as the VAE latent loc + S w
        w = torch.randn(6, prior.latent_dim, generator=generator)
        z = model.latent_prior.loc + w @ model.latent_prior.scale_tril.T
        torch.testing.assert_close(prior.decode(w), model.decoder(z), rtol=1e-4, atol=1e-5)


def test_uncalibrated_prior_has_no_transform(tmp_path):
    model = VAE(tiny_config())
    save_checkpoint(tmp_path / "m.safetensors", model)
    assert Prior.load(tmp_path / "m.safetensors").latent_transform is None


def test_too_few_fields(generator):
    model = init_vae(tiny_config(), seed=3)
    with pytest.raises(ValueError, match="needs more than 16 fields, got 10"):
        fit_latent_gaussian(model, tiny_fields(generator, n=10))
