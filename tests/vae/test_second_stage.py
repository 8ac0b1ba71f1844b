"""The second stage of a prior: the latent flow, the residual field, their files and loading."""

import math

import pytest
import torch

from vaeinv import Grid
from vaeinv.fields import GaussianRandomField
from vaeinv.priors.vae import Prior
from vaeinv.vae import init_vae, save_checkpoint
from vaeinv.vae.flow import FlowConfig, LatentFlow, fit_latent_flow
from vaeinv.vae.residual import ResidualField, fit_residual_field
from vaeinv.vae.second_stage import fit_second_stage, save_latent_flow, save_residual

from vae_helpers import tiny_config


def _random_flow(shape=(1, 4, 3), couplings=4, seed=0) -> LatentFlow:
    flow = LatentFlow(FlowConfig(shape, couplings=couplings, hidden=16)).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def test_flow_is_the_identity_before_training(generator):
    flow = LatentFlow(FlowConfig((1, 4, 4)))
    w = torch.randn(5, 16, generator=generator)
    torch.testing.assert_close(flow(w), w)
    normal = torch.distributions.Normal(0.0, 1.0)
    torch.testing.assert_close(flow.log_prob(w), normal.log_prob(w).sum(-1))


@pytest.mark.parametrize("shape", [(1, 4, 3), (7,)])
def test_flow_inverse_and_log_determinant_are_exact(shape, generator):
    flow = _random_flow(shape)
    dim = math.prod(shape)
    w = torch.randn(2, 3, dim, generator=generator, dtype=torch.float64)
    u, logdet = flow.forward_and_logdet(w)
    assert u.shape == w.shape and logdet.shape == (2, 3)
    torch.testing.assert_close(flow.inverse(u), w, atol=1e-12, rtol=0)
    jac = torch.autograd.functional.jacobian(flow, w[1, 2])
    torch.testing.assert_close(logdet[1, 2], torch.logdet(jac), atol=1e-12, rtol=0)
    # change of variables: log p(u) = log N(w) - log|det du/dw|
    base = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum(-1)
    torch.testing.assert_close(flow.log_prob(u), base - logdet, atol=1e-10, rtol=0)


def test_flow_config_errors():
    with pytest.raises(ValueError, match="couplings must be even, got 3"):
        FlowConfig((4,), couplings=3)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        FlowConfig((4,), hidden=0)
    with pytest.raises(ValueError, match="latent_shape"):
        FlowConfig((1,))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 4\)"):
        LatentFlow(FlowConfig((4,)))(torch.zeros(2, 5))


def test_flow_fit_reaches_the_entropy_of_a_scaled_gaussian():
    """Data u = 0.5 w + 0.1 eps: the best NLL per dim is 0.5 log(2 pi e (0.25 + 0.01))."""
    g = torch.Generator().manual_seed(3)
    mean = 0.5 * torch.randn(3000, 4, generator=g)
    std = torch.full_like(mean, 0.1)
    flow = LatentFlow(FlowConfig((4,), couplings=2, hidden=16, depth=1))
    history = fit_latent_flow(flow, mean, std, epochs=25, lr=1e-2, seed=4, log=lambda _: None)
    best = 0.5 * math.log(2 * math.pi * math.e * 0.26)
    assert min(history["val_nll"]) == pytest.approx(best, abs=0.05)


def test_residual_sampler_has_exactly_the_fitted_covariance(generator):
    """The sampler is linear in the white noise: its Gram matrix is c(s - s') exactly."""
    ny, nx = 4, 3
    residuals = torch.randn(40, ny, nx, generator=generator, dtype=torch.float64)
    field = fit_residual_field(residuals)
    centred = residuals - residuals.mean(dim=(-2, -1), keepdim=True)
    cov = field.covariance()
    for dy in range(ny):
        for dx in range(nx):
            pairs = centred[:, : ny - dy, : nx - dx] * centred[:, dy:, dx:]
            expected = pairs.sum() / (40 * ny * nx)
            torch.testing.assert_close(cov[dy, dx], expected, atol=1e-12, rtol=0)
    # columns of the linear map e -> crop(ifft2(sqrt(P) fft2(e))) from the basis of e
    eye = torch.eye(4 * ny * nx, dtype=torch.float64).reshape(-1, 2 * ny, 2 * nx)
    spec = field.sqrt_spectrum
    cols = torch.fft.ifft2(spec * torch.fft.fft2(eye)).real[:, :ny, :nx].reshape(-1, ny * nx)
    gram = cols.T @ cols
    iy, ix = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
    iy, ix = iy.reshape(-1), ix.reshape(-1)
    lag = cov[(iy[:, None] - iy[None, :]) % (2 * ny), (ix[:, None] - ix[None, :]) % (2 * nx)]
    torch.testing.assert_close(gram, lag, atol=1e-12, rtol=0)


def test_residual_of_a_gaussian_field_recovers_its_covariance():
    grid = Grid(nx=16, ny=16)
    grf = GaussianRandomField(grid, std=0.3, length_scale=0.15, kernel="exponential")
    g = torch.Generator().manual_seed(21)
    fields = grf.sample(3000, g, torch.float64)
    field = fit_residual_field(fields)
    draws = field.sample(3000, g, torch.float64)
    # the variance of a centred field: std^2 minus the variance of its spatial mean
    assert draws.var().item() == pytest.approx(field.variance, rel=0.05)
    assert 0.5 * 0.09 < field.variance < 0.09


def test_residual_errors():
    with pytest.raises(ValueError, match=r"\(n, ny, nx\)"):
        fit_residual_field(torch.zeros(4, 4))
    bad = torch.zeros(3, 4, 4)
    bad[2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="residual 2 has non-finite values"):
        fit_residual_field(bad)


def _tiny_prior_folder(tmp_path):
    config = tiny_config()
    vae = init_vae(config, seed=1)
    grid = Grid(nx=8, ny=8)
    save_checkpoint(tmp_path / "model.safetensors", vae, grid=grid)
    return vae, grid


def test_second_stage_files_load_with_the_prior(tmp_path, generator):
    _tiny_prior_folder(tmp_path)
    plain = Prior.load(tmp_path)
    grf = GaussianRandomField(plain.grid, std=0.5, length_scale=0.2)
    flow_config = FlowConfig(plain.latent_shape, couplings=2, hidden=8)
    summary = fit_second_stage(
        tmp_path,
        grf,
        seed=5,
        residual_fields=64,
        flow_config=flow_config,
        flow_fields=200,
        flow_epochs=2,
        log=lambda _: None,
    )
    assert summary["residual_variance"] > 0
    prior = Prior.load(tmp_path)
    assert prior.residual is not None and prior.latent_transform is not None
    assert prior.weights_sha256 != plain.weights_sha256
    z = torch.randn(3, prior.latent_dim, generator=generator)
    # the white latent round-trips through flow and calibration
    inner = prior.latent_transform(z)
    torch.testing.assert_close(prior.latent_transform.inverse(inner), z, atol=1e-4, rtol=0)
    a = prior.sample(4, generator=torch.Generator().manual_seed(8))
    b = prior.sample(4, generator=torch.Generator().manual_seed(8), residual=True)
    assert a.shape == b.shape == (4, 8, 8)
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="has no residual field"):
        plain.sample(2, generator=1, residual=True)


def test_second_stage_file_errors(tmp_path):
    _tiny_prior_folder(tmp_path)
    plain = Prior.load(tmp_path)
    flow = LatentFlow(FlowConfig(plain.latent_shape, couplings=2, hidden=8))
    save_latent_flow(flow, tmp_path, "0" * 64, {})
    with pytest.raises(ValueError, match="was fitted to the VAE with weights sha256 0000"):
        Prior.load(tmp_path)
    (tmp_path / "latent_flow.safetensors").unlink()
    save_residual(ResidualField(8, 8), tmp_path, plain.weights_sha256, {})
    with open(tmp_path / "residual.safetensors", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        Prior.load(tmp_path)
    torch.save({"a": torch.zeros(2)}, tmp_path / "residual.safetensors")
    with pytest.raises(ValueError, match="pickle"):
        Prior.load(tmp_path)


def test_flow_weights_of_the_split_layout_load_into_the_same_map():
    """Weights saved when each coupling network saw only its kept half (no masks in the file)
    load into the masked layout and give the same map, log-determinant and inverse."""
    import torch

    from vaeinv.vae.flow import FlowConfig, LatentFlow

    config = FlowConfig((1, 4, 4), couplings=4, hidden=8, depth=2)
    generator = torch.Generator().manual_seed(11)
    flow = LatentFlow(config).double()
    split = {}
    with torch.no_grad():
        for i, (mask, net) in enumerate(zip(flow.masks, flow.nets, strict=True)):
            keep, move = mask.nonzero()[:, 0], (1 - mask).nonzero()[:, 0]
            rows = torch.cat([move, config.dim + move])
            for name, layer in net.named_children():
                if not isinstance(layer, torch.nn.Linear):
                    continue
                layer.weight.copy_(0.3 * torch.randn(layer.weight.shape, generator=generator))
                layer.bias.copy_(0.3 * torch.randn(layer.bias.shape, generator=generator))
                weight, bias = layer.weight.clone(), layer.bias.clone()
                if name == "0":  # the masked inputs never reach the network
                    weight = weight[:, keep]
                if layer is net[-1]:  # the kept coordinates' (s, t) are never used
                    weight, bias = weight[rows], bias[rows]
                split[f"nets.{i}.{name}.weight"], split[f"nets.{i}.{name}.bias"] = weight, bias
    loaded = LatentFlow(config).double()
    loaded.load_state_dict(split)
    w = torch.randn(6, config.dim, generator=generator, dtype=torch.float64)
    u, log_det = flow.forward_and_logdet(w)
    u2, log_det2 = loaded.forward_and_logdet(w)
    torch.testing.assert_close(u2, u, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_det2, log_det, rtol=0, atol=1e-12)
    torch.testing.assert_close(loaded.inverse(u), w, rtol=0, atol=1e-10)
