"""What a field test records: heads at points, head differences, Darcy fluxes through sides.

[`Observations`][vaeinv.physics.observations.Observations] maps a solved flow to the values an
experiment measured, in a fixed order: first the heads (pressures) at points, then the head
differences between pairs of points, then the total fluxes through sides. Every value is a
differentiable function of ``log_k`` and the pressure, so gradients come from the solver's
adjoint through autograd.

- A **head** at ``(x, y)`` is the bilinear interpolant of the cell-centre pressures
  ([`PointSensors`][vaeinv.physics.sensors.PointSensors]); an observation well reads one.
- A **head difference** ``p(x1, y1) - p(x2, y2)`` is what a differential gauge reads: the
  gradient between two wells, free of a common datum.
- A **side flux** is the total volumetric flow out of the domain through a Dirichlet side (the
  sum of the boundary face fluxes, outward positive), e.g. the discharge to a river.
"""

from __future__ import annotations

import torch

from ..grid import SIDES, Grid
from .sensors import PointSensors

__all__ = ["KINDS", "Observations", "side_fluxes"]

#: the observation kinds, in the order their values come
KINDS = ("head", "head-difference", "flux")


class Observations:
    """Heads at points, head differences between pairs of points and fluxes through sides.

    Args:
        grid: the grid of the flow.
        heads: ``(m1, 2)`` points ``x, y`` (or ``None``).
        differences: ``(m2, 4)`` pairs ``x1, y1, x2, y2``, each read as ``p1 - p2`` (or
            ``None``).
        fluxes: side names (``left``, ``right``, ``bottom``, ``top``), each read as the total
            outward flux through that side; the side must have fixed pressures to carry flow.

    Raises:
        ValueError: a point outside the domain, a pair of identical points, an unknown or
            repeated side, or nothing to observe.
    """

    def __init__(self, grid: Grid, heads=None, differences=None, fluxes=()) -> None:
        self.grid = grid
        self.heads = None if heads is None or len(heads) == 0 else PointSensors(grid, heads)
        self.differences = None
        if differences is not None and len(differences) > 0:
            pairs = torch.as_tensor(differences, dtype=torch.float64)
            if pairs.dim() != 2 or pairs.shape[1] != 4:
                raise ValueError(
                    f"head differences must be rows (x1, y1, x2, y2), got shape "
                    f"{tuple(pairs.shape)}"
                )
            same = (pairs[:, :2] == pairs[:, 2:]).all(1).nonzero().flatten()
            if same.numel():
                i = int(same[0])
                raise ValueError(
                    f"head difference {i} reads one point twice, {pairs[i, :2].tolist()}; "
                    "expected two different points"
                )
            both = torch.cat([pairs[:, :2], pairs[:, 2:]])
            self.differences = PointSensors(grid, both)
        sides = list(fluxes)
        for side in sides:
            if side not in SIDES:
                raise ValueError(f"unknown side {side!r} for a flux; expected one of {SIDES}")
        if len(set(sides)) != len(sides):
            raise ValueError(f"fluxes name a side twice: {sides}")
        self.fluxes = tuple(sides)
        if self.num_outputs == 0:
            raise ValueError("nothing to observe: give heads, differences or fluxes")

    @property
    def num_heads(self) -> int:
        return 0 if self.heads is None else self.heads.num_sensors

    @property
    def num_differences(self) -> int:
        return 0 if self.differences is None else self.differences.num_sensors // 2

    @property
    def num_outputs(self) -> int:
        return self.num_heads + self.num_differences + len(self.fluxes)

    @property
    def kinds(self) -> list[str]:
        """The kind of each value, in order (one of `KINDS`)."""
        return (
            ["head"] * self.num_heads
            + ["head-difference"] * self.num_differences
            + ["flux"] * len(self.fluxes)
        )

    def check_flow(self, flow) -> None:
        """Raise unless every flux side of these observations has fixed pressures in ``flow``
        (a no-flow side carries no flux: observing it would observe nothing)."""
        closed = [s for s in self.fluxes if s not in flow.setup.dirichlet]
        if closed:
            raise ValueError(
                f"flux observed through no-flow side(s) {closed}; fluxes can be observed "
                f"through the sides with fixed pressures: {sorted(flow.setup.dirichlet)}"
            )

    def __call__(self, flow, log_k: torch.Tensor, pressure: torch.Tensor) -> torch.Tensor:
        """The observed values ``(B, num_outputs)`` of pressures ``(B, ny, nx)`` that ``flow``
        gave for ``log_k``."""
        parts = []
        if self.heads is not None:
            parts.append(self.heads(pressure))
        if self.differences is not None:
            both = self.differences(pressure)
            half = both.shape[-1] // 2
            parts.append(both[..., :half] - both[..., half:])
        if self.fluxes:
            parts.append(side_fluxes(flow, log_k, pressure, self.fluxes))
        return torch.cat(parts, dim=-1)

    def __repr__(self) -> str:
        return (
            f"Observations({self.num_heads} heads, {self.num_differences} head differences, "
            f"fluxes through {list(self.fluxes)})"
        )


def side_fluxes(flow, log_k: torch.Tensor, pressure: torch.Tensor, sides) -> torch.Tensor:
    """The total outward flux through each side, ``(B, len(sides))``, from the face fluxes of
    [`DarcyFlow.fluxes`][vaeinv.physics.DarcyFlow.fluxes] (differentiable)."""
    qx, qy = flow.fluxes(log_k, pressure)
    out = {
        "left": -qx[..., :, 0].sum(-1),
        "right": qx[..., :, -1].sum(-1),
        "bottom": -qy[..., 0, :].sum(-1),
        "top": qy[..., -1, :].sum(-1),
    }
    return torch.stack([out[s] for s in sides], dim=-1)
