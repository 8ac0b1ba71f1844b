"""Example 1: solve Darcy flow on a batch of fields, read sensors, and take an adjoint gradient.

Run: ``python examples/01_forward_and_gradient.py [--n 64] [--batch 8] [--seed 0]``.
It checks the torch solver against FiPy on the first field and prints the gradient's size.
"""

from __future__ import annotations

import argparse

import torch

import vaeinv
from vaeinv.fields import GaussianRandomField
from vaeinv.physics import DarcyFlow, DarcyFlowFiPy, PointSensors


def main(args: argparse.Namespace) -> dict:
    grid = vaeinv.Grid(args.n, args.n)
    generator = torch.Generator().manual_seed(args.seed)
    prior = GaussianRandomField(grid, mean=1.0, std=0.75, length_scale=0.2, kernel="matern")
    log_k = prior.sample(args.batch, generator, dtype=torch.float64).requires_grad_()

    problem = dict(dirichlet={"left": 0.0, "right": 0.0}, source=3.0)  # the MDGM set-up
    flow = DarcyFlow(grid, **problem)
    sensors = PointSensors.lattice(grid, 8)
    pressure = flow.solve(log_k)
    readings = sensors(pressure)  # (batch, 64)

    reference = DarcyFlowFiPy(grid, **problem).solve(log_k[0].detach())
    difference = float((pressure[0].detach() - reference).norm() / reference.norm())

    readings.sum().backward()  # one adjoint solve for the whole batch
    print(f"{args.batch} fields of {args.n} x {args.n}; sensor pressures {tuple(readings.shape)}")
    print(f"relative difference to FiPy on field 0: {difference:.1e}")
    print(f"|d(sum of sensors)/d log k| = {float(log_k.grad.norm()):.4g}")
    return {"fipy_difference": difference, "readings": readings.detach()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
