"""The forward-model protocol: ``log_k -> predictions``, what a posterior asks of the physics.

A forward model is any callable ``forward(log_k)`` that maps a batch of fields
``(B, *field_shape)`` to predictions ``(B, m)``, differentiable in ``log_k`` for the
gradient-based samplers and following its input's device. Optional attributes:

- ``grid``: the grid the fields live on (checked against the prior's);
- ``num_outputs``: ``m`` (checked against the data);
- ``cost``: forward solves per field, for work accounting (default 1);
- ``to(device)``: a copy on another device.

[`SensorReadings`][vaeinv.physics.base.SensorReadings] is the Darcy implementation (a solver
and the sensors that read its pressure); a user's function is wrapped in
[`CallableForward`][vaeinv.physics.base.CallableForward]. A solver may raise
[`SolverError`][vaeinv.physics.darcy.SolverError] or return NaN for a field it cannot solve:
the posterior turns both into a rejected proposal, never an error.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..grid import Grid

__all__ = ["CallableForward", "SensorReadings"]


class SensorReadings:
    """Darcy pressures read at sensors: ``sensors(physics.solve(log_k))``, one solve a field.

    Args:
        physics: a solver with ``grid`` and ``solve(log_k (B, ny, nx)) -> p (B, ny, nx)``
            ([`DarcyFlow`][vaeinv.physics.darcy.DarcyFlow] or
            [`DarcyFlowFiPy`][vaeinv.physics.fipy_backend.DarcyFlowFiPy]).
        sensors: an observation operator on the same grid with ``num_sensors``
            ([`PointSensors`][vaeinv.physics.sensors.PointSensors]).

    Raises:
        ValueError: the sensors' grid differs from the solver's.
    """

    cost = 1

    def __init__(self, physics, sensors) -> None:
        grid = getattr(physics, "grid", None)
        other = getattr(sensors, "grid", None)
        if other != grid:
            raise ValueError(
                f"the sensors grid {other} differs from the physics grid {grid}; "
                "physics and sensors must share one grid"
            )
        self.physics = physics
        self.sensors = sensors
        self.grid: Grid | None = grid
        self.num_outputs = int(sensors.num_sensors)

    def __call__(self, log_k: torch.Tensor) -> torch.Tensor:
        # the solver works in float64 anyway: feeding it float64 keeps the pressures exact
        return self.sensors(self.physics.solve(log_k.to(torch.float64)))

    def __repr__(self) -> str:
        return f"SensorReadings({self.physics!r}, {self.num_outputs} sensors)"


class CallableForward:
    """A user's function ``field (B, *field_shape) -> prediction (B, m)`` as a forward model.

    Args:
        forward: the function; it must follow its input's device.
        grid: the grid of its fields, if any.
        num_outputs: ``m``, if known (else learnt from the posterior's probe).
        cost: forward solves per field (default 1).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        grid: Grid | None = None,
        num_outputs: int | None = None,
        cost: float = 1,
    ) -> None:
        self.forward = forward
        self.grid = grid
        self.num_outputs = num_outputs
        self.cost = cost

    def __call__(self, field: torch.Tensor) -> torch.Tensor:
        return self.forward(field)
