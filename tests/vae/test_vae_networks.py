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
        {"ny": 7, "nx": 10, "output": "facies"},
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


def test_facies_output_blends_two_maps_by_the_sigmoid_of_a_third(generator):
    """The three output maps ``a, u1, u0`` give ``sigmoid(a) u1 + (1 - sigmoid(a)) u0``.

    With the last convolution set by hand to biases only (``u1 = 2``, ``u0 = -1``) and ``a``
    a steep ramp in x through zero between columns 3 and 4 (``a = -30`` and ``+30`` there), the
    output is a step from -1 to 2 between those columns, to float precision in every cell.
    """
    config = tiny_config(output="facies")
    vae = init_vae(config, 0)
    out = vae.decoder.out
    assert out.out_channels == 3
    z = torch.randn(2, config.latent_dim, generator=generator)
    # a generic decode is the blend of the three maps the last convolution gives
    captured = {}
    handle = out.register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
    raw = vae.decoder.raw(z)
    handle.remove()
    a, u1, u0 = captured["h"].unbind(1)
    w = torch.sigmoid(a)
    torch.testing.assert_close(raw, w * u1 + (1 - w) * u0)
    # hand-set: zero weights, biases u1 = 2, u0 = -1, and a from a ramp added after the conv
    with torch.no_grad():
        out.weight.zero_()
        out.bias.copy_(torch.tensor([0.0, 2.0, -1.0]))
    ramp = 60.0 * (torch.arange(config.nx, dtype=torch.float32) - 3.5)
    handle = out.register_forward_hook(
        lambda m, i, o: o + torch.stack([ramp.expand_as(o[:, 0]), 0 * o[:, 0], 0 * o[:, 0]], 1)
    )
    step = vae.decoder.raw(z)
    handle.remove()
    expected = torch.where(torch.arange(config.nx) < 4, -1.0, 2.0).expand(2, config.ny, -1)
    torch.testing.assert_close(step, expected, atol=1e-6, rtol=0)
