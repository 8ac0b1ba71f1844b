"""Example 2: use a shipped VAE prior in your own code: a FiPy solver of yours, a Pyro model.

Run: ``python examples/02_prior_in_your_own_code.py [--prior gaussian64] [--seed 0]``.

Part 1 draws fields from the prior and solves a few lines of plain FiPy on each: the prior is
just a function from a latent vector to a log-permeability field. Part 2 writes a small Pyro
model whose latent is the prior's, observes pressures at a few sensors through vaeinv's
differentiable solver, and fits it by stochastic variational inference.
"""

from __future__ import annotations

import argparse

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from vaeinv import DarcyFlow, PointSensors, Prior


def my_fipy_solver(log_k: np.ndarray, lx: float, ly: float) -> np.ndarray:
    """A user's own FiPy model: -div(k grad p) = 1, p = 0 on the left and right sides."""
    import fipy

    ny, nx = log_k.shape
    mesh = fipy.Grid2D(nx=nx, ny=ny, dx=lx / nx, dy=ly / ny)
    k = fipy.CellVariable(mesh=mesh, value=np.exp(log_k).ravel())  # cells ordered x fastest
    p = fipy.CellVariable(mesh=mesh, value=0.0)
    p.constrain(0.0, where=mesh.facesLeft | mesh.facesRight)
    (fipy.DiffusionTerm(coeff=k.harmonicFaceValue) + 1.0 == 0).solve(var=p)
    return np.asarray(p.value).reshape(ny, nx)


def pyro_model(prior: Prior, flow: DarcyFlow, sensors: PointSensors, data=None, noise=0.01):
    z = pyro.sample("z", prior.latent_distribution())
    pressure = flow.solve(prior.decode(z).double())
    pyro.sample("obs", dist.Normal(sensors(pressure), noise).to_event(1), obs=data)


def main(args: argparse.Namespace) -> dict:
    prior = Prior.load(args.prior)
    grid = prior.grid
    generator = torch.Generator().manual_seed(args.seed)
    print(f"prior {prior.name}: latent_dim {prior.latent_dim}, grid {grid.ny} x {grid.nx}")

    # Part 1: prior samples into a solver of your own
    with torch.no_grad():
        fields = prior.sample(3, generator=generator)
    pressures = [my_fipy_solver(f.double().numpy(), grid.lx, grid.ly) for f in fields]
    print("max pressure of three prior draws:", [f"{p.max():.4f}" for p in pressures])

    # Part 2: the prior inside a Pyro model, fitted to synthetic data
    flow = DarcyFlow(grid, dirichlet={"left": 0.0, "right": 0.0}, source=1.0)
    sensors = PointSensors.lattice(grid, min(4, grid.nx, grid.ny))
    with torch.no_grad():
        truth = prior.sample(1, generator=generator)[0]
        data = sensors(flow.solve(truth.double()))
        data = data + 0.01 * data.abs().mean() * torch.randn(data.shape, generator=generator)
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    conditioned = pyro.condition(lambda: pyro_model(prior, flow, sensors), data={"obs": data})
    guide = AutoNormal(conditioned)
    svi = SVI(conditioned, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step() for _ in range(args.steps)]
    print(f"SVI loss: {losses[0]:.1f} at the start, {losses[-1]:.1f} after {args.steps} steps")
    return {"pressures": pressures, "losses": losses}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prior", default="gaussian64", help="shipped name or checkpoint path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100, help="SVI steps")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
