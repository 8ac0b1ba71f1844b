"""A tiny manufactured decomposed problem: 16 x 16 cells, 2 x 2 subdomains overlapping by 2
cells (10 x 10 each), a Gaussian-field local prior, 64 noiseless sensors of a known field."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaeinv import Grid, Partition
from vaeinv.fields.gaussian import GaussianRandomField
from vaeinv.physics.darcy import DarcyFlow
from vaeinv.physics.sensors import PointSensors
from vaeinv.priors.gaussian_field import GaussianFieldPrior

FIELD = {"mean": 0.0, "std": 0.5, "length_scale": 0.3, "kernel": "matern", "nu": 1.5}


@dataclass
class Manufactured:
    grid: Grid
    partition: Partition
    truth: torch.Tensor
    flow: DarcyFlow
    pressure: torch.Tensor
    sensors: PointSensors
    data: torch.Tensor
    prior: GaussianFieldPrior


def manufactured(seed: int = 0, overlap: int = 2) -> Manufactured:
    grid = Grid(16, 16)
    part = Partition(grid, 2, 2, overlap=overlap)
    gen = torch.Generator().manual_seed(seed)
    truth = GaussianRandomField(grid, **FIELD).sample(1, gen, dtype=torch.float64)[0]
    flow = DarcyFlow(grid, {"left": 1.0, "right": 0.0}, source=0.5)
    pressure = flow.solve(truth[None])[0]
    sensors = PointSensors.lattice(grid, 8)
    data = sensors(pressure[None])[0]
    side = 8 + overlap
    local = Grid(side, side, lx=side / 16, ly=side / 16)
    prior = GaussianFieldPrior(local, num_modes=20, **FIELD)
    return Manufactured(grid, part, truth, flow, pressure, sensors, data, prior)
