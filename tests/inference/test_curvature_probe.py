"""benchmarks/curvature.py's whitened Hessian: exact on a linear-Gaussian posterior (the log
density is quadratic, so central differences of its gradient are exact up to rounding): ``W``
is the identity when whitened by the posterior's own covariance, and ``L^T P L`` (``P`` the
precision) for any other ``L``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from linear_gaussian import linear_gaussian

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "curvature.py"


def load_script():
    spec = importlib.util.spec_from_file_location("curvature_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_whitened_hessian_of_a_gaussian_posterior():
    bench = load_script()
    problem = linear_gaussian(latent_dim=4, num_data=5, noise_std=0.2, seed=3)
    posterior = problem.posterior
    precision = torch.linalg.inv(problem.cov)
    z = problem.mean + torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64)
    own = torch.linalg.cholesky(problem.cov)
    w = bench.whitened_hessian(posterior, z, own, h=1e-3, batch=3)  # batches of 3 of the 8
    torch.testing.assert_close(w, torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)
    other = torch.linalg.cholesky(torch.diag(torch.tensor([1.0, 0.5, 2.0, 0.1])).double())
    w = bench.whitened_hessian(posterior, z, other, h=1e-2, batch=64)
    torch.testing.assert_close(w, other.T @ precision @ other, atol=1e-6, rtol=1e-6)
    # the log density the rows report: gradients() agrees with the posterior's own
    values, grads = bench.gradients(posterior, z[None], 1)
    torch.testing.assert_close(values, posterior.log_density(z[None]).double())
    torch.testing.assert_close(grads[0], -precision @ (z - problem.mean), atol=1e-8, rtol=1e-8)
