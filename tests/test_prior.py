"""The Prior: shapes and batching, gradients in z, frozen weights, loading, Pyro usage, errors."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import HMC, MCMC, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from vaeinv import Grid
from vaeinv.priors.vae import Prior, shipped_priors
from vaeinv.vae import VAEConfig, init_vae, save_checkpoint


def tiny_vae(**overrides):
    settings = {"ny": 8, "nx": 6, "channels": (4, 8), "norm_groups": 2, **overrides}
    return init_vae(VAEConfig(**settings), seed=1)


def tiny_prior(**overrides):
    vae = tiny_vae(**overrides)
    return Prior(vae.decoder, vae.config.latent_shape, Grid(nx=6, ny=8), encoder=vae.encode)


def test_shapes_and_batching_over_leading_dims(generator):
    prior = tiny_prior()
    assert prior.latent_shape == (1, 4, 3)
    assert prior.latent_dim == 12
    z = torch.randn(2, 3, 12, generator=generator)
    log_k = prior.decode(z)
    assert log_k.shape == (2, 3, 8, 6)
    torch.testing.assert_close(log_k[1, 2], prior.decode(z[1, 2]))
    assert prior.sample(5, generator=generator).shape == (5, 8, 6)
    assert prior.encode(log_k).shape == (2, 3, 12)
    assert prior.encode(log_k[0, 0]).shape == (12,)


def test_sampling_is_reproducible_without_the_global_rng():
    prior = tiny_prior()
    state = torch.random.get_rng_state()
    a, b = prior.sample(3, generator=11), prior.sample(3, torch.Generator().manual_seed(11))
    prior.sample(2)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())


def test_gradients_flow_to_z_and_weights_are_frozen(generator):
    prior = tiny_prior().to(dtype=torch.float64)
    assert not prior.decoder.training
    assert all(not p.requires_grad for p in prior.decoder.parameters())
    assert prior.dtype == torch.float64
    z = torch.randn(2, 12, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(prior.decode, (z,))
    prior.decode(z).sum().backward()
    assert z.grad is not None and all(p.grad is None for p in prior.decoder.parameters())


def test_conditioned_decoder(generator):
    prior = tiny_prior(cond_channels=1)
    z = torch.randn(4, 2, 12, generator=generator)
    cond = torch.randn(4, 2, 8, 6, generator=generator)
    out = prior.decode(z, cond=cond)
    assert out.shape == (4, 2, 8, 6)
    torch.testing.assert_close(out[3, 1], prior.decode(z[3, 1], cond=cond[3, 1]))
    assert prior.sample(3, generator=0, cond=cond[:3, 0]).shape == (3, 8, 6)
    assert prior.encode(out, cond=cond).shape == (4, 2, 12)


def test_any_decoder_can_be_wrapped(generator):
    decoder = torch.nn.Sequential(torch.nn.Linear(3, 20), torch.nn.Unflatten(1, (1, 4, 5)))
    prior = Prior(decoder, (3,), Grid(nx=5, ny=4), name="linear")
    assert prior.decode(torch.randn(7, 3, generator=generator)).shape == (7, 4, 5)
    assert "linear" in repr(prior)
    with pytest.raises(ValueError, match="wraps a decoder only: it has no encoder"):
        prior.encode(torch.zeros(4, 5))


def test_latent_distribution_in_a_pyro_model(generator):
    prior = tiny_prior()
    d = prior.latent_distribution()
    assert d.event_shape == (12,) and d.batch_shape == ()
    truth = prior.sample(1, generator=generator)[0]
    sensors = truth[::3, ::2].flatten()

    def model():
        z = pyro.sample("z", prior.latent_distribution())
        log_k = prior.decode(z)
        pyro.sample("obs", dist.Normal(log_k[::3, ::2].flatten(), 0.1).to_event(1), obs=sensors)

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    svi = SVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    mcmc = MCMC(HMC(model, step_size=0.01, num_steps=3), num_samples=4, warmup_steps=2,
                disable_progbar=True)  # fmt: skip
    mcmc.run()
    assert mcmc.get_samples()["z"].shape == (4, 12)


def test_load_from_a_checkpoint_path(tmp_path, generator):
    vae = tiny_vae()
    save_checkpoint(tmp_path / "run", vae, grid=Grid(nx=6, ny=8, lx=2.0))
    prior = Prior.load(tmp_path / "run")
    assert prior.grid.lx == 2.0
    assert prior.weights_sha256 is not None
    z = torch.randn(3, 12, generator=generator)
    with torch.no_grad():
        assert torch.equal(prior.decode(z), vae.eval().decoder(z))
    assert all(not p.requires_grad for p in prior.encoder.__self__.parameters())
    assert prior.encode(prior.decode(z)).shape == (3, 12)


def test_unknown_name_lists_the_known_ones():
    known = shipped_priors()
    listing = f"known: {', '.join(known)}" if known else "no priors are installed"
    with pytest.raises(ValueError, match=f"unknown prior 'nope' .*; {listing}"):
        Prior.load("nope")


def test_unknown_name_with_installed_priors(tmp_path, monkeypatch):
    from vaeinv.priors import vae as prior_module

    for name in ("gaussian64", "channel64"):
        save_checkpoint(tmp_path / name, tiny_vae())
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(prior_module, "priors_folder", lambda: tmp_path)
    assert shipped_priors() == ["channel64", "gaussian64"]
    with pytest.raises(ValueError, match=r"unknown prior 'x' .*; known: channel64, gaussian64$"):
        Prior.load("x")
    assert Prior.load("gaussian64").name == "gaussian64"


def test_errors(generator):
    prior = tiny_prior()
    with pytest.raises(ValueError, match=r"latent z has shape \(2, 5\), expected \(\.\.\., 12\)"):
        prior.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"latent z has shape list"):
        prior.decode([0.0] * 12)
    with pytest.raises(ValueError, match=r"log_k has shape \(8, 8\), expected \(\.\.\., 8, 6\)"):
        prior.encode(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="latent_shape must be positive integers"):
        Prior(torch.nn.Identity(), (), Grid(2, 2))
    wrong = Prior(torch.nn.Unflatten(1, (3, 4)), (12,), Grid(nx=6, ny=8))
    with pytest.raises(ValueError, match=r"decoder gave shape \(1, 3, 4\), expected"):
        wrong.decode(torch.zeros(12))
