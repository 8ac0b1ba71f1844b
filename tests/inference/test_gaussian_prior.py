"""GaussianFieldPrior: exact covariances of both square roots, Monte Carlo covariance within its
standard error, encode/decode identities, the prior interface, configuration and errors."""

from __future__ import annotations

import math

import pytest
import torch

from vaeinv import Grid
from vaeinv.fields.gaussian import GaussianRandomField
from vaeinv.priors.gaussian_field import GaussianFieldPrior

GRID = Grid(nx=6, ny=5)
KERNEL_CASES = [
    {"kernel": "exponential", "length_scale": 0.2},
    {"kernel": "gaussian", "length_scale": 0.15},
    {"kernel": "matern", "nu": 2.5, "length_scale": 0.3},
    {"kernel": "matern", "nu": 0.8, "length_scale": 0.2},
    {"kernel": "exponential", "length_scale": 0.3, "anisotropy": 2.5, "angle": 0.6},
]


def linear_map(prior: GaussianFieldPrior) -> torch.Tensor:
    """The matrix ``L`` (N, latent_dim) of the affine decode, from decoding the identity basis."""
    eye = torch.eye(prior.latent_dim, dtype=torch.float64)
    return (prior.decode(eye) - prior.mean).reshape(prior.latent_dim, -1).T


def test_covariance_matrix_is_the_kernel_between_cell_centres():
    grid = Grid(nx=3, ny=2, lx=1.5, ly=1.0)
    prior = GaussianFieldPrior(grid, std=1.7, length_scale=0.4)
    x, y = grid.cell_centers()
    pts = list(zip(x.flatten().tolist(), y.flatten().tolist(), strict=True))
    expected = torch.tensor(
        [[1.7**2 * math.exp(-math.dist(p, q) / 0.4) for q in pts] for p in pts],
        dtype=torch.float64,
    )
    torch.testing.assert_close(prior.covariance_matrix(), expected, rtol=1e-14, atol=0)
    # Matern 3/2 is the default smoothness, in closed form
    matern = GaussianFieldPrior(grid, length_scale=0.4, kernel="matern")
    assert matern.nu == 1.5
    h = torch.tensor([[math.dist(p, q) / 0.4 for q in pts] for p in pts], dtype=torch.float64)
    closed = (1 + math.sqrt(3) * h) * torch.exp(-math.sqrt(3) * h)
    torch.testing.assert_close(matern.covariance_matrix(), closed, rtol=1e-14, atol=0)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c['kernel']}-{len(c)}")
def test_kl_with_all_modes_reproduces_the_covariance(case):
    prior = GaussianFieldPrior(GRID, mean=-1.0, std=1.3, **case)
    cov = prior.covariance_matrix()
    grf = GaussianRandomField(GRID, -1.0, 1.3, **{"nu": 1.5, **case})
    x, y = GRID.cell_centers()
    x, y = x.flatten(), y.flatten()
    torch.testing.assert_close(cov, grf.kernel_value(x[:, None] - x, y[:, None] - y))
    lam = prior.eigenvalues
    assert prior.latent_dim == GRID.num_cells and prior.explained_variance == pytest.approx(1.0)
    assert bool((lam[:-1] >= lam[1:]).all())
    assert float(lam.sum()) == pytest.approx(GRID.num_cells * 1.3**2, rel=1e-12)
    basis = linear_map(prior)  # V diag(sqrt(lam))
    torch.testing.assert_close(basis @ basis.T, cov, rtol=0, atol=1e-13)


@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"{c['kernel']}-{len(c)}")
def test_circulant_decode_has_exactly_the_kernel_covariance(case):
    prior = GaussianFieldPrior(GRID, mean=2.0, std=0.8, method="circulant", **case)
    info = prior.embedding_info
    assert info.negative_mass == 0.0, info
    assert prior.latent_shape == info.shape and prior.latent_dim == math.prod(info.shape)
    assert prior.latent_dim > GRID.num_cells
    lmap = linear_map(prior)  # the crop of the symmetric square root
    torch.testing.assert_close(lmap @ lmap.T, prior.covariance_matrix(), rtol=0, atol=1e-13)


def test_circulant_square_root_is_real_symmetric():
    from vaeinv.priors.field_roots import CirculantRoot

    prior = GaussianFieldPrior(GRID, method="circulant", length_scale=0.2)
    root = CirculantRoot(prior.field, GRID, prior.covariance_matrix, None, torch.float64)
    eye = torch.eye(prior.latent_dim, dtype=torch.float64).reshape(-1, *root.latent_shape)
    s = root.apply_sqrt(eye).reshape(prior.latent_dim, -1)
    torch.testing.assert_close(s, s.T, rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", ["kl", "circulant"])
def test_empirical_covariance_within_monte_carlo_error(method, generator):
    grid = Grid(nx=4, ny=3)
    prior = GaussianFieldPrior(grid, mean=0.5, std=1.5, length_scale=0.4, method=method)
    n = 20000
    x = (prior.sample(n, generator) - 0.5).reshape(n, -1)
    cov = prior.covariance_matrix()
    var = cov.diagonal()
    # for Gaussian fields, Var(x_i x_j) = C_ii C_jj + C_ij^2
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    z_cov = ((x.T @ x / n - cov) / se_cov).abs().max()
    z_mean = (x.mean(0) / (var / n).sqrt()).abs().max()
    assert z_cov < 5.0 and z_mean < 5.0, (float(z_cov), float(z_mean))


def test_truncated_kl_modes_and_encode_decode(generator):
    full = GaussianFieldPrior(GRID, length_scale=0.25)
    prior = GaussianFieldPrior(GRID, mean=0.3, length_scale=0.25, num_modes=7)
    lam = full.eigenvalues
    assert prior.latent_dim == 7 and prior.latent_shape == (7,)
    assert prior.explained_variance == pytest.approx(float(lam[:7].sum() / lam.sum()), rel=1e-12)
    assert 0 < prior.explained_variance < 1
    basis = linear_map(prior)
    modes = basis / lam[:7].sqrt()
    torch.testing.assert_close(
        modes.T @ modes, torch.eye(7, dtype=torch.float64), atol=1e-13, rtol=0
    )
    torch.testing.assert_close(modes.T @ full.covariance_matrix() @ modes, torch.diag(lam[:7]))
    z = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(prior.encode(prior.decode(z)), z, rtol=0, atol=1e-12)
    # decode(encode(f)) is the orthogonal projection of f - mean on the kept modes
    f = full.sample(3, generator) + 0.3
    proj = (f - 0.3).reshape(3, -1) @ modes @ modes.T + 0.3
    torch.testing.assert_close(prior.decode(prior.encode(f)).reshape(3, -1), proj)


def test_kl_encode_inverts_decode_with_all_modes(generator):
    prior = GaussianFieldPrior(GRID, mean=-0.5, std=2.0, length_scale=0.2)
    z = torch.randn(2, 3, prior.latent_dim, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(prior.encode(prior.decode(z)), z, rtol=0, atol=1e-11)
    f = prior.sample(2, generator)
    torch.testing.assert_close(prior.decode(prior.encode(f)), f, rtol=0, atol=1e-12)


def test_circulant_encode_is_the_minimum_norm_latent(generator):
    prior = GaussianFieldPrior(GRID, mean=1.0, length_scale=0.2, method="circulant")
    f = prior.sample(3, generator)
    z = prior.encode(f)
    torch.testing.assert_close(prior.decode(z), f, rtol=0, atol=1e-12)
    # minimum norm: z lies in the row space of L, so it is its own projection there
    lmap = linear_map(prior)
    row_proj = lmap.T @ torch.linalg.pinv(lmap @ lmap.T) @ lmap
    torch.testing.assert_close(z @ row_proj, z, rtol=0, atol=1e-10)
    w = torch.randn(prior.latent_dim, generator=generator, dtype=torch.float64)
    assert prior.encode(prior.decode(w)).norm() < w.norm()


def test_prior_interface_batching_sampling_and_dtypes(generator):
    for method in ("kl", "circulant"):
        prior = GaussianFieldPrior(GRID, length_scale=0.2, method=method)
        d = prior.latent_dim
        assert prior.weights_sha256 is None and prior.device == torch.device("cpu")
        assert (
            prior.dtype == torch.float64 and method in prior.name and "exponential" in repr(prior)
        )
        z = torch.randn(2, 3, d, generator=generator, dtype=torch.float64, requires_grad=True)
        out = prior.decode(z)
        assert out.shape == (2, 3, *GRID.shape)
        torch.testing.assert_close(out[1, 2], prior.decode(z[1, 2]), rtol=0, atol=1e-14)
        assert torch.autograd.gradcheck(prior.decode, (z[0, :1],))
        state = torch.random.get_rng_state()
        a, b = prior.sample(4, 7), prior.sample(4, torch.Generator().manual_seed(7))
        assert torch.equal(a, b) and a.shape == (4, *GRID.shape)
        assert torch.equal(state, torch.random.get_rng_state())
        latent = prior.latent_distribution()
        assert latent.event_shape == (d,) and latent.batch_shape == ()
        single = prior.to(dtype=torch.float32)
        assert single.dtype == torch.float32 and prior.dtype == torch.float64
        assert single.decode(z).dtype == torch.float32
        torch.testing.assert_close(single.decode(z).double(), out, rtol=0, atol=1e-5)
        assert single.latent_distribution().mean.dtype == torch.float32
        assert single.encode(out.float()).shape == (2, 3, d)
        back = single.to("cpu", torch.float64)
        torch.testing.assert_close(back.decode(z), out, rtol=0, atol=1e-6)


def test_config_round_trip():
    for kwargs in (
        {"method": "kl", "num_modes": 5, "kernel": "matern", "nu": 2.5},
        {"method": "circulant", "anisotropy": 2.0, "angle": 0.3, "dtype": torch.float32},
    ):
        prior = GaussianFieldPrior(GRID, mean=0.2, std=0.7, length_scale=0.2, **kwargs)
        config = prior.config()
        assert config["kind"] == "gaussian-field" and config["grid"]["nx"] == 6
        again = GaussianFieldPrior.from_config(config)
        assert again.config() == config and again.name == prior.name
        z = torch.linspace(-1, 1, prior.latent_dim, dtype=torch.float64)
        assert torch.equal(again.decode(z), prior.decode(z))


def test_construction_errors():
    with pytest.raises(ValueError, match=r"grid must be a vaeinv.Grid, got tuple"):
        GaussianFieldPrior((6, 5))
    with pytest.raises(ValueError, match="std must be > 0, got 0"):
        GaussianFieldPrior(GRID, std=0)
    with pytest.raises(ValueError, match=r"length_scale must be one positive number .*\(0.1, 0.2"):
        GaussianFieldPrior(GRID, length_scale=(0.1, 0.2))
    with pytest.raises(ValueError, match="length_scale must be > 0, got -1"):
        GaussianFieldPrior(GRID, length_scale=-1)
    with pytest.raises(ValueError, match="unknown kernel 'cubic'; expected one of exponential"):
        GaussianFieldPrior(GRID, kernel="cubic")
    with pytest.raises(ValueError, match="unknown method 'svd'; expected one of kl, circulant"):
        GaussianFieldPrior(GRID, method="svd")
    with pytest.raises(ValueError, match=r"nu is used by the matern kernel only, got nu=2.5"):
        GaussianFieldPrior(GRID, nu=2.5)
    with pytest.raises(ValueError, match="nu must be > 0, got -1"):
        GaussianFieldPrior(GRID, kernel="matern", nu=-1)
    with pytest.raises(ValueError, match="anisotropy must be > 0, got 0"):
        GaussianFieldPrior(GRID, anisotropy=0)
    with pytest.raises(ValueError, match="mean must be a finite number, got nan"):
        GaussianFieldPrior(GRID, mean=math.nan)
    for bad in (0, 31, 2.0, True):
        with pytest.raises(
            ValueError, match=rf"num_modes must be an integer in \[1, 30\], got {bad}"
        ):
            GaussianFieldPrior(GRID, num_modes=bad)
    with pytest.raises(ValueError, match="num_modes is for method 'kl' only, got num_modes=4"):
        GaussianFieldPrior(GRID, method="circulant", num_modes=4)
    with pytest.raises(ValueError, match=r"dtype must be torch.float32 or torch.float64"):
        GaussianFieldPrior(GRID, dtype=torch.float16)


def test_use_errors():
    prior = GaussianFieldPrior(GRID, num_modes=4)
    with pytest.raises(ValueError, match=r"latent z has shape \(2, 5\), expected \(\.\.\., 4\)"):
        prior.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="takes no cond"):
        prior.decode(torch.zeros(4), cond=torch.zeros(4))
    with pytest.raises(ValueError, match="takes no cond"):
        prior.encode(torch.zeros(GRID.shape), cond=torch.zeros(4))
    with pytest.raises(ValueError, match=r"log_k has shape \(6, 5\), expected \(\.\.\., 5, 6\)"):
        prior.encode(torch.zeros(6, 5))
    with pytest.raises(ValueError, match="n must be a non-negative integer, got -1"):
        prior.sample(-1, 0)
    with pytest.raises(ValueError, match=r"dtype must be torch.float32 or torch.float64"):
        prior.to(dtype=torch.int64)


def test_config_errors():
    config = GaussianFieldPrior(GRID, num_modes=3).config()
    with pytest.raises(ValueError, match="config must be a mapping, got list"):
        GaussianFieldPrior.from_config([])
    with pytest.raises(ValueError, match="unknown GaussianFieldPrior config key 'range'; valid"):
        GaussianFieldPrior.from_config({**config, "range": 1})
    with pytest.raises(ValueError, match="config kind 'gaussian' does not match 'gaussian-field'"):
        GaussianFieldPrior.from_config({**config, "kind": "gaussian"})
    with pytest.raises(ValueError, match="needs a 'grid' entry"):
        GaussianFieldPrior.from_config({k: v for k, v in config.items() if k != "grid"})
    with pytest.raises(ValueError, match="unknown dtype 'half'; expected one of float32, float64"):
        GaussianFieldPrior.from_config({**config, "dtype": "half"})


@pytest.mark.parametrize("method", ["pcn", "nuts"])
def test_samplers_recover_the_closed_form_posterior_on_the_gaussian_field_prior(method):
    """The baseline prior runs the samplers unchanged: with a 4-mode KL prior on a 3 x 3 grid
    and three noisy cell readings (a linear forward map) the posterior of ``z`` is Gaussian in
    closed form, and ``vaeinv.sample`` recovers its moments within 4 Monte Carlo standard
    errors (seed 0)."""
    from vaeinv.posterior.target import Posterior
    from vaeinv.runs.sampling import sample

    from linear_gaussian import assert_moments

    grid = Grid(nx=3, ny=3)
    prior = GaussianFieldPrior(grid, mean=0.5, std=1.2, length_scale=0.6, num_modes=4)
    cells = torch.tensor([0, 4, 8])
    data = torch.tensor([1.4, -0.3, 0.9], dtype=torch.float64)
    noise = 0.4
    posterior = Posterior.from_callables(
        prior.decode,
        lambda field: field.reshape(field.shape[0], -1)[:, cells].to(torch.float64),
        data,
        noise,
        latent_dim=prior.latent_dim,
        grid=grid,
    )
    a = linear_map(prior)[cells]  # readings = 0.5 + a z
    cov = torch.linalg.inv(torch.eye(4, dtype=torch.float64) + a.T @ a / noise**2)
    mean = cov @ a.T @ (data - 0.5) / noise**2
    runs = {
        "pcn": {"num_chains": 4, "num_warmup": 500, "num_draws": 3000},
        "nuts": {"num_chains": 2, "num_warmup": 200, "num_draws": 600},
    }
    idata = sample(posterior, method, seed=0, thin=1, progress=False, **runs[method])
    assert_moments(torch.as_tensor(idata.posterior["z"].values), mean, cov)
    fields = torch.as_tensor(idata.posterior["log_k"].values)
    torch.testing.assert_close(
        fields, prior.decode(torch.as_tensor(idata.posterior["z"].values)).to(fields.dtype)
    )


def test_lanczos_modes_are_the_dense_eigendecomposition_s(monkeypatch):
    """Fewer modes than cells on a large grid come from Lanczos on FFT products: the same
    leading eigenvalues, the same truncated covariance, and the explained variance against
    the trace."""
    import vaeinv.priors.field_roots as roots

    settings = {"mean": 0.5, "std": 0.8, "length_scale": 0.25, "kernel": "matern", "nu": 1.5}
    grid = Grid(12, 10)
    dense = GaussianFieldPrior(grid, num_modes=15, **settings)
    monkeypatch.setattr(roots, "LANCZOS_MIN_CELLS", 50)
    lanczos = GaussianFieldPrior(grid, num_modes=15, **settings)
    assert lanczos.eigenvalues.shape == (15,)
    torch.testing.assert_close(lanczos.eigenvalues, dense.eigenvalues[:15], rtol=1e-10, atol=0)
    a, b = (p._root.basis.double() for p in (lanczos, dense))
    torch.testing.assert_close(a @ a.T, b @ b.T, rtol=0, atol=1e-10)
    assert lanczos.explained_variance == pytest.approx(dense.explained_variance, rel=1e-10)
