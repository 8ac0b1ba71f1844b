"""Posterior: the likelihood by hand, prior + likelihood, gradients, batching, NaN rows, noise
resolution, dtypes, devices and every build-time error."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinv import Grid
from vaeinv.physics import DarcyFlow, PointSensors
from vaeinv.posterior.target import Posterior
from vaeinv.priors.gaussian_field import GaussianFieldPrior
from vaeinv.priors.vae import Prior

GRID = Grid(nx=6, ny=5)
LATENT = 3


class LinearDecoder(torch.nn.Module):
    """``z -> (W z + b)`` as a field, weights drawn from an explicit generator."""

    def __init__(self, latent_dim: int, grid: Grid, generator: torch.Generator):
        super().__init__()
        n = grid.num_cells
        self.shape = grid.shape
        self.weight = torch.nn.Parameter(
            0.5 * torch.randn(n, latent_dim, generator=generator, dtype=torch.float64)
        )
        self.bias = torch.nn.Parameter(
            0.3 * torch.randn(n, generator=generator, dtype=torch.float64)
        )

    def forward(self, z):
        return (z @ self.weight.mT + self.bias).reshape(-1, *self.shape)


def darcy_parts(grid: Grid = GRID):
    physics = DarcyFlow(grid, dirichlet={"left": 1.0, "right": 0.0}, source=1.0)
    return physics, PointSensors.lattice(grid, 3)


def linear_prior(generator, grid: Grid = GRID, name: str | None = "linear") -> Prior:
    return Prior(LinearDecoder(LATENT, grid, generator), (LATENT,), grid, name=name)


def make_posterior(generator, noise=0.02, **kwargs) -> tuple[Posterior, torch.Tensor]:
    """A Darcy posterior whose data are the prediction at a random z plus fixed perturbations."""
    prior = linear_prior(generator)
    physics, sensors = darcy_parts()
    z_true = torch.randn(LATENT, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        clean = sensors(physics.solve(prior.decode(z_true)))
    data = clean + 0.02 * torch.randn(clean.shape, generator=generator, dtype=torch.float64)
    return Posterior(prior, physics, sensors, data, noise, **kwargs), z_true


def linear_callables(generator, m: int = 4, d: int = 2):
    a = torch.randn(GRID.num_cells, d, generator=generator, dtype=torch.float64)
    g = torch.randn(m, GRID.num_cells, generator=generator, dtype=torch.float64)

    def decode(z):
        return (z @ a.mT).reshape(-1, *GRID.shape)

    def forward(field):
        return field.reshape(field.shape[0], -1) @ g.mT

    return decode, forward, a, g


# ---------------------------------------------------------------------- the mathematics
def test_log_likelihood_equals_a_hand_computation(generator):
    decode, forward, a, g = linear_callables(generator)
    data = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    sd = [0.1, 0.5, 0.2, 1.5]
    post = Posterior.from_callables(decode, forward, data, sd, 2, grid=GRID)
    z = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    pred = (g @ (a @ z.T)).T  # the linear model by hand
    torch.testing.assert_close(post.predict(z), pred, rtol=1e-13, atol=1e-13)
    for row in range(3):
        terms = [
            -0.5 * ((float(pred[row, i]) - float(data[i])) / sd[i]) ** 2
            - math.log(sd[i])
            - 0.5 * math.log(2 * math.pi)
            for i in range(4)
        ]
        pointwise = post.log_likelihood(z[row], pointwise=True)
        torch.testing.assert_close(
            pointwise, torch.tensor(terms, dtype=torch.float64), rtol=1e-13, atol=1e-13
        )
        assert post.log_likelihood(z[row]).item() == pytest.approx(math.fsum(terms), rel=1e-13)
    # the same against torch's own Normal
    expected = torch.distributions.Normal(data, torch.tensor(sd, dtype=torch.float64))
    torch.testing.assert_close(post.log_likelihood(z), expected.log_prob(pred).sum(-1))


def test_log_density_is_log_prior_plus_log_likelihood(generator):
    post, _ = make_posterior(generator)
    z = torch.randn(4, LATENT, generator=generator, dtype=torch.float64)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(post.log_prior(z), log_prior, rtol=1e-14, atol=1e-14)
    manual = -0.5 * (z**2).sum(-1) - 0.5 * LATENT * math.log(2 * math.pi)
    torch.testing.assert_close(post.log_prior(z), manual, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(
        post.log_density(z), post.log_prior(z) + post.log_likelihood(z), rtol=1e-14, atol=0
    )
    assert post.log_density(z).dtype == torch.float64


def test_predict_is_sensors_of_the_solved_decoded_field(generator):
    post, _ = make_posterior(generator)
    z = torch.randn(2, LATENT, generator=generator, dtype=torch.float64)
    field = post.prior.decode(z)
    torch.testing.assert_close(post.decode(z), field, rtol=0, atol=0)
    expected = post.sensors(post.physics.solve(field))
    torch.testing.assert_close(post.forward(field), expected, rtol=0, atol=0)
    torch.testing.assert_close(post.predict(z), expected, rtol=0, atol=0)
    assert (post.latent_dim, post.num_data, post.name) == (LATENT, 9, "linear")
    assert post.field_shape == GRID.shape and post.grid == GRID


def test_gradient_of_log_density_by_gradcheck(generator):
    post, z_true = make_posterior(generator)
    z = z_true + 0.3 * torch.randn(2, LATENT, generator=generator, dtype=torch.float64)
    assert torch.autograd.gradcheck(post.log_density, (z.requires_grad_(),))
    assert torch.autograd.gradcheck(post.log_likelihood, (z,))


def test_gradient_with_a_gaussian_field_prior(generator):
    prior = GaussianFieldPrior(GRID, mean=0.5, length_scale=0.3, num_modes=4)
    physics, sensors = darcy_parts()
    data = torch.linspace(0.2, 0.8, 9, dtype=torch.float64)
    post = Posterior(prior, physics, sensors, data, 0.05)
    assert post.name == prior.name and post.latent_dim == 4
    z = torch.randn(2, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(post.log_density, (z,))


def test_batching_over_leading_dims_equals_one_by_one(generator):
    post, _ = make_posterior(generator)
    z = torch.randn(2, 3, LATENT, generator=generator, dtype=torch.float64)
    batched = post.log_density(z)
    pointwise = post.log_likelihood(z, pointwise=True)
    assert batched.shape == (2, 3) and pointwise.shape == (2, 3, 9)
    for i in range(2):
        for j in range(3):
            one = post.log_density(z[i, j])
            assert one.shape == ()
            torch.testing.assert_close(batched[i, j], one, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(
                pointwise[i, j], post.log_likelihood(z[i, j], pointwise=True)
            )
    torch.testing.assert_close(pointwise.sum(-1), post.log_likelihood(z), rtol=1e-14, atol=0)


def test_nan_prediction_gives_minus_infinity_and_zero_gradient(generator):
    decode, forward, _, _ = linear_callables(generator)
    data = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    sd = 0.5
    post = Posterior.from_callables(decode, forward, data, sd, 2)
    pred = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    pred[1, 2] = math.nan
    pred[2, 0] = math.inf
    pred.requires_grad_()
    ll = post.log_likelihood_of(pred)
    assert ll[0].isfinite() and ll[1] == -math.inf and ll[2] == -math.inf
    pointwise = post.log_likelihood_of(pred, pointwise=True)
    assert pointwise[0].isfinite().all() and (pointwise[1:] == -math.inf).all()
    ll[0].add(ll[1:].clamp(min=-1e300).sum()).backward()
    torch.testing.assert_close(pred.grad[0], -(pred[0].detach() - data) / sd**2)
    assert torch.equal(pred.grad[1:], torch.zeros(2, 4, dtype=torch.float64))


def test_nan_from_the_forward_model_gives_minus_infinity(generator):
    decode, forward, _, _ = linear_callables(generator)

    def flaky(field):
        pred = forward(field)
        return torch.where(field[:, :1, 0] > 0, torch.nan, pred)

    post = Posterior.from_callables(decode, flaky, torch.zeros(4), 1.0, 2)
    z = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    bad = decode(z)[:, 0, 0] > 0
    assert 0 < int(bad.sum()) < 8
    ll = post.log_density(z)
    assert torch.equal(ll == -math.inf, bad) and ll[~bad].isfinite().all()


def test_a_field_that_decodes_to_inf_or_nan_is_a_failed_point_not_an_error(generator):
    """A latent far out can decode to a non-finite field, which a solver refuses: evaluate
    gives that row -inf (and a NaN gradient) and the other rows their values, with and without
    gradients, on the Darcy solver."""
    post, _ = make_posterior(generator)
    base = post.prior.decode

    def decode(z):
        field = base(z)
        return torch.where(z[:, :1, None] > 3.0, math.inf, field)

    post.prior.decode = decode
    z = torch.randn(4, post.latent_dim, generator=generator, dtype=torch.float64)
    z[1, 0], z[3, 0] = 5.0, -0.5
    for grad in (False, True):
        out = post.evaluate(z, grad=grad)
        assert out.log_density[1] == -math.inf and out.log_likelihood[1] == -math.inf
        assert torch.isnan(out.prediction[1]).all()
        keep = torch.tensor([0, 2, 3])
        assert out.log_density[keep].isfinite().all()
        torch.testing.assert_close(out.log_likelihood[keep], post.log_likelihood(z[keep]))
        if grad:
            assert out.grad[keep].isfinite().all()


def test_noise_resolution_absolute_and_relative():
    physics, sensors = darcy_parts()
    prior = linear_prior(torch.Generator().manual_seed(0))
    data = torch.tensor([0.5, -0.25, 1.0, 2.0, -4.0, 0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    rel = Posterior(prior, physics, sensors, data, 0.05, noise_kind="relative")
    torch.testing.assert_close(rel.noise_std, 0.05 * data.abs(), rtol=0, atol=0)
    per = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    absolute = Posterior(prior, physics, sensors, data.tolist(), per)
    torch.testing.assert_close(absolute.noise_std, per, rtol=0, atol=0)
    scalar = Posterior(prior, physics, sensors, data, 0.3)
    assert torch.equal(scalar.noise_std, torch.full((9,), 0.3, dtype=torch.float64))
    relative_per = Posterior(prior, physics, sensors, data, per, noise_kind="relative")
    torch.testing.assert_close(relative_per.noise_std, per * data.abs(), rtol=0, atol=0)
    # the constant of the likelihood uses the resolved sd
    z = torch.zeros(LATENT, dtype=torch.float64)
    pred = rel.predict(z)
    expected = torch.distributions.Normal(data, 0.05 * data.abs()).log_prob(pred).sum()
    torch.testing.assert_close(rel.log_likelihood(z), expected)


def test_dtypes_float32_decoder_and_latents(generator):
    prior = GaussianFieldPrior(GRID, length_scale=0.3, num_modes=5, dtype=torch.float32)
    physics, sensors = darcy_parts()
    post = Posterior(prior, physics, sensors, torch.full((9,), 0.4), 0.05)
    z32 = torch.randn(2, 5, generator=generator)
    assert post.decode(z32).dtype == torch.float32
    for out in (post.predict(z32), post.log_density(z32), post.log_prior(z32)):
        assert out.dtype == torch.float64
    # the physics is fed the float32 field in float64: predictions equal the float64 solve
    field = post.decode(z32)
    torch.testing.assert_close(
        post.forward(field), sensors(physics.solve(field.double())), rtol=0, atol=0
    )


def test_truth_and_to_device(generator):
    post, _ = make_posterior(generator, truth=torch.zeros(GRID.shape))
    assert post.truth.dtype == torch.float64 and post.truth.shape == GRID.shape
    moved = post.to("cpu")
    assert moved is not post and moved.device == torch.device("cpu")
    z = torch.randn(2, LATENT, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(moved.log_density(z), post.log_density(z), rtol=0, atol=0)
    assert "linear" in repr(post)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_matches_cpu(generator):
    prior = GaussianFieldPrior(GRID, length_scale=0.3)
    physics, sensors = darcy_parts()
    post = Posterior(prior, physics, sensors, torch.full((9,), 0.4), 0.05)
    gpu = post.to("cuda")
    assert gpu.device.type == "cuda" and gpu.data.device.type == "cuda"
    assert post.device.type == "cpu"
    z = torch.randn(3, prior.latent_dim, generator=generator, dtype=torch.float64)
    out = gpu.log_density(z)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), post.log_density(z), rtol=1e-9, atol=1e-9)


def test_from_callables_defaults(generator):
    decode, forward, _, _ = linear_callables(generator)
    post = Posterior.from_callables(decode, forward, [1.0, 2.0, 3.0, 4.0], 1.0, 2)
    assert post.name == "custom" and post.prior.standard_normal and post.physics is None
    assert post.field_shape == GRID.shape and post.grid is None
    # callables receive float64 latents whatever the dtype of z
    assert post.predict(torch.zeros(5, 2, dtype=torch.float32)).shape == (5, 4)


# ---------------------------------------------------------------------- build-time errors
def test_data_errors(generator):
    prior = linear_prior(generator)
    physics, sensors = darcy_parts()
    with pytest.raises(ValueError, match=r"data must be 1-D \(num_data,\), got shape \(3, 3\)"):
        Posterior(prior, physics, sensors, torch.zeros(3, 3), 0.1)
    bad = torch.zeros(9)
    bad[4] = math.nan
    bad[6] = math.inf
    with pytest.raises(ValueError, match=r"2 non-finite value.*first at index 4"):
        Posterior(prior, physics, sensors, bad, 0.1)
    with pytest.raises(ValueError, match="data has 8 values but the number of sensors is 9"):
        Posterior(prior, physics, sensors, torch.zeros(8), 0.1)


def test_grid_mismatch_errors(generator):
    physics, sensors = darcy_parts()
    other = Grid(nx=6, ny=5, lx=2.0)
    with pytest.raises(ValueError, match=r"prior grid Grid\(nx=6, ny=5, lx=2.0.*differs from"):
        Posterior(linear_prior(generator, other), physics, sensors, torch.zeros(9), 0.1)
    with pytest.raises(ValueError, match=r"sensors grid .*lx=2.0.* differs from the physics grid"):
        Posterior(
            linear_prior(generator), physics, PointSensors.lattice(other, 3), torch.zeros(9), 0.1
        )


def test_noise_errors(generator):
    prior = linear_prior(generator)
    physics, sensors = darcy_parts()
    data = torch.ones(9)
    with pytest.raises(ValueError, match="unknown noise_kind 'percent'; expected one of absolute"):
        Posterior(prior, physics, sensors, data, 0.1, noise_kind="percent")
    with pytest.raises(ValueError, match=r"sensor 0 is 0.0 .*expected positive and finite \(9"):
        Posterior(prior, physics, sensors, data, 0.0)
    per = torch.full((9,), 0.1)
    per[3] = -0.2
    with pytest.raises(ValueError, match=r"sensor 3 is -0.2"):
        Posterior(prior, physics, sensors, data, per)
    per[3] = math.nan
    with pytest.raises(ValueError, match="sensor 3 is nan"):
        Posterior(prior, physics, sensors, data, per)
    zero = data.clone()
    zero[5] = 0.0
    with pytest.raises(ValueError, match=r"sensor 5 is 0.0 \(noise fraction 0.05 of \|data\| = 0"):
        Posterior(prior, physics, sensors, zero, 0.05, noise_kind="relative")
    with pytest.raises(ValueError, match=r"noise has shape \(4,\), expected a scalar or \(9,\)"):
        Posterior(prior, physics, sensors, data, torch.ones(4))
    with pytest.raises(ValueError, match="noise must be a number or one per sensor"):
        Posterior(prior, physics, sensors, data, "loud")


def test_latent_dim_errors(generator):
    decode, forward, _, _ = linear_callables(generator)
    for bad in (0, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
            Posterior.from_callables(decode, forward, torch.zeros(4), 1.0, bad)


def test_probe_errors(generator):
    decode, forward, _, _ = linear_callables(generator)

    def boom(field):
        raise RuntimeError("solver exploded")

    with pytest.raises(ValueError, match=r"probe .*failed: RuntimeError: solver exploded") as info:
        Posterior.from_callables(decode, boom, torch.zeros(4), 1.0, 2)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ValueError, match=r"gave shape \(1, 4\), expected \(1, 5\)"):
        Posterior.from_callables(decode, forward, torch.zeros(5), 1.0, 2)
    with pytest.raises(ValueError, match=r"decode gave shape \(1, 5, 6\).*expected \(1, \*\(6, 5"):
        Posterior.from_callables(decode, forward, torch.zeros(4), 1.0, 2, grid=Grid(nx=5, ny=6))
    with pytest.raises(ValueError, match=r"probe .*failed: ValueError: latent z has shape \(1, 2"):
        # a prior whose decoder wants another latent size fails in the probe
        Posterior.from_callables(linear_prior(generator).decode, forward, torch.zeros(4), 1.0, 2)


def test_truth_errors(generator):
    with pytest.raises(ValueError, match=r"truth has shape \(6, 5\), expected \(5, 6\) for Grid"):
        make_posterior(generator, truth=torch.zeros(6, 5))
    with pytest.raises(ValueError, match="truth has non-finite values"):
        make_posterior(generator, truth=torch.full(GRID.shape, math.nan))


def test_evaluation_errors(generator):
    post, _ = make_posterior(generator)
    with pytest.raises(ValueError, match=r"latent z has shape \(2, 4\), expected \(\.\.\., 3\)"):
        post.log_density(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="latent z must be floating point"):
        post.log_prior(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"prediction has shape \(2, 8\), expected \(\.\.\., 9\)"):
        post.log_likelihood_of(torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"field has shape \(4, 4\), expected \(\.\.\., \*\(5, 6"):
        post.forward(torch.zeros(4, 4))
