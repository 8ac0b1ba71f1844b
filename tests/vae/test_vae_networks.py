"""Encoder/decoder shapes for every latent kind, padding, conditioning; deterministic decoding."""

import pytest
import torch

from vaeinv.vae import init_vae

from vae_helpers import tiny_config


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"latent": "vector", "latent_dim": 6},
        {"ny": 7, "nx": 10},
        {"channels": (4, 4, 8), "latent_channels": 2, "blocks_per_stage": 1},
        {"norm_groups": 0, "activation": "relu", "output": "logits"},
    ],
)
def test_shapes(overrides, generator):
    config = tiny_config(**overrides)
    vae = init_vae(config, seed=0)
    x = torch.randn(3, config.ny, config.nx, generator=generator)
    raw, mu, logvar = vae(x, generator=generator)
    assert raw.shape == x.shape
    assert mu.shape == logvar.shape == (3, config.latent_dim)
    assert vae.decoder(mu).shape == x.shape
    assert vae.decoder(mu.reshape(3, *config.latent_shape)).shape == x.shape


def test_conditioning_input_is_used(generator):
    config = tiny_config(cond_channels=2, ny=8, nx=6)
    vae = init_vae(config, seed=0).eval()
    z = torch.randn(2, config.latent_dim, generator=generator)
    cond = torch.randn(2, 2, 8, 6, generator=generator)
    out = vae.decoder(z, cond)
    assert out.shape == (2, 8, 6)
    assert not torch.equal(out, vae.decoder(z, cond + 1.0))
    mu, _ = vae.encode(torch.zeros(2, 8, 6), cond)
    assert mu.shape == (2, config.latent_dim)


def test_one_channel_cond_may_omit_the_channel_axis(generator):
    vae = init_vae(tiny_config(cond_channels=1), seed=0)
    z = torch.randn(2, 16, generator=generator)
    cond = torch.randn(2, 8, 8, generator=generator)
    assert torch.equal(vae.decoder(z, cond), vae.decoder(z, cond.unsqueeze(1)))


def test_cond_errors(generator):
    z = torch.randn(2, 16, generator=generator)
    with pytest.raises(ValueError, match="cond_channels=0 but a cond input"):
        init_vae(tiny_config(), 0).decoder(z, torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="needs cond"):
        init_vae(tiny_config(cond_channels=1), 0).decoder(z)
    with pytest.raises(ValueError, match=r"cond has shape \(2, 3, 8, 8\), expected \(2, 2, 8, 8\)"):
        init_vae(tiny_config(cond_channels=2), 0).decoder(z, torch.zeros(2, 3, 8, 8))


def test_decoding_is_deterministic_and_batch_independent(generator):
    vae = init_vae(tiny_config(), seed=0).eval()
    z = torch.randn(5, 16, generator=generator)
    with torch.no_grad():
        batch = vae.decoder(z)
        single = torch.stack([vae.decoder(z[i : i + 1])[0] for i in range(5)])
        vae.train()
        again = vae.decoder(z)
    assert torch.equal(batch, again)  # no train/eval difference (GroupNorm, no dropout)
    torch.testing.assert_close(batch, single)


def test_same_seed_same_initial_weights_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a, b = init_vae(tiny_config(), 3), init_vae(tiny_config(), 3)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_logits_output_maps_to_field_units():
    vae = init_vae(tiny_config(output="logits", field_shift=-2.0, field_scale=5.0), 0)
    field = vae.decoder.to_field(torch.tensor([-100.0, 0.0, 100.0]))
    torch.testing.assert_close(field, torch.tensor([-2.0, 0.5, 3.0]))
