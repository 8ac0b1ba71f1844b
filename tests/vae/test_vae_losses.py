"""Loss terms against closed forms and independent implementations."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vaeinv.vae import fisher_information, reconstruction_loss, vae_loss
from vaeinv.vae import kl_divergence as vae_kl


def test_kl_matches_torch_distributions(generator):
    mu = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    logvar = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    q = Normal(mu, torch.exp(0.5 * logvar))
    expected = kl_divergence(q, Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(vae_kl(mu, logvar), expected)


def test_kl_by_hand():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, 2.0]])
    by_hand = 0.5 * (1.0 + 0.0) + 0.5 * (torch.e**2 - 2.0 - 1.0)
    torch.testing.assert_close(vae_kl(mu, logvar), torch.tensor(by_hand))


def test_fisher_information_and_penalty(generator):
    logvar = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    sigma2 = torch.exp(logvar)
    info = (1.0 / sigma2).sum(1)
    torch.testing.assert_close(fisher_information(logvar), info)
    zeros = torch.zeros(3, 4, 4, dtype=torch.float64)
    terms = vae_loss(zeros, zeros, torch.zeros(3, 5), logvar, fisher_lambda=0.3, fisher_target=4.0)
    penalty = (info - 4.0).abs().mean()
    torch.testing.assert_close(terms["fisher_penalty"], penalty)
    torch.testing.assert_close(terms["fisher_information"], info.mean())
    torch.testing.assert_close(terms["total"], terms["kl"] + 0.3 * penalty)


def test_reconstruction_is_summed_per_field_and_averaged_over_the_batch():
    raw = torch.zeros(2, 3, 3)
    target = torch.ones(2, 3, 3)
    target[1] = 2.0
    assert float(reconstruction_loss(raw, target, "linear")) == pytest.approx((9 + 36) / 2)
    bce = reconstruction_loss(torch.zeros(2, 3, 3), torch.ones(2, 3, 3), "logits")
    assert float(bce) == pytest.approx(9 * torch.log(torch.tensor(2.0)).item())
    with pytest.raises(ValueError, match="unknown output 'probit'"):
        reconstruction_loss(raw, target, "probit")


def test_total_is_recon_plus_beta_kl(generator):
    raw, target = torch.randn(2, 2, 4, 4, generator=generator)
    mu, logvar = torch.randn(2, 2, 3, generator=generator)
    terms = vae_loss(raw, target, mu, logvar, beta=0.5)
    assert set(terms) == {"reconstruction", "kl", "fisher_information", "fisher_penalty", "total"}
    torch.testing.assert_close(terms["total"], terms["reconstruction"] + 0.5 * terms["kl"])
