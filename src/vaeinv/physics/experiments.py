"""Several experiments on one field (hydraulic tomography), all solved in one batch.

A pumping test in turn at each of several wells, each recorded at observation wells, is the
standard way to image an aquifer: every test lights the field from another place. Each
experiment is its own flow problem (boundary conditions, source, wells: a
[`DarcyFlow`][vaeinv.physics.DarcyFlow]) with its own
[`Observations`][vaeinv.physics.observations.Observations], on the same ``log_k``.

[`ExperimentReadings`][vaeinv.physics.experiments.ExperimentReadings] is the forward model
``log_k (B, ny, nx) -> (B, m_1 + ... + m_E)``: the values of experiment 1, then 2, ... It
solves the ``B x E`` flow problems as one batch (one multigrid hierarchy or one batched
factorisation, the experiments of a field next to each other), and its gradient is one batched
adjoint solve, summed over the experiments by autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..grid import Grid
from .darcy import DarcyFlow, _AdjointSolve
from .observations import Observations

__all__ = ["ExperimentReadings"]

#: settings every experiment's flow must share (one solver runs them all)
_SHARED = ("grid", "solver", "rtol", "adjoint_rtol", "max_iter", "on_failure")


class ExperimentReadings:
    """The observations of ``E`` experiments on one field (see the module docstring).

    Args:
        flows: one [`DarcyFlow`][vaeinv.physics.DarcyFlow] per experiment, on one grid and
            with the same solver settings (``solver``, ``rtol``, ``adjoint_rtol``,
            ``max_iter``, ``on_failure``).
        observations: one [`Observations`][vaeinv.physics.observations.Observations] per
            experiment.
        names: the experiments' names (default ``"1"``, ``"2"``, ...).

    Raises:
        ValueError: no experiment, lengths that differ, flows on other grids or with other
            solver settings, a flux observed through a no-flow side, repeated names.
    """

    def __init__(
        self,
        flows: Sequence[DarcyFlow],
        observations: Sequence[Observations],
        names: Sequence[str] | None = None,
    ) -> None:
        flows, observations = list(flows), list(observations)
        names = [str(i + 1) for i in range(len(flows))] if names is None else list(names)
        if not flows or not len(flows) == len(observations) == len(names):
            raise ValueError(
                f"expected one flow, observations and name per experiment (at least one), got "
                f"{len(flows)} flows, {len(observations)} observations, {len(names)} names"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must differ, got {names}")
        for name, flow, seen in zip(names, flows, observations, strict=True):
            if not isinstance(flow, DarcyFlow) or not isinstance(seen, Observations):
                raise ValueError(f"experiment {name!r}: expected a DarcyFlow and Observations")
            for key in _SHARED:
                if getattr(flow, key) != getattr(flows[0], key):
                    raise ValueError(
                        f"experiment {name!r} has {key} {getattr(flow, key)!r}, experiment "
                        f"{names[0]!r} {getattr(flows[0], key)!r}; one solver runs them all"
                    )
            if seen.grid != flow.grid:
                raise ValueError(f"experiment {name!r}: observations on another grid")
            seen.check_flow(flow)
        self.flows, self.observations, self.names = flows, observations, names
        self.grid: Grid = flows[0].grid
        self.sizes = [o.num_outputs for o in observations]
        self.num_outputs = sum(self.sizes)
        self.cost = len(flows)  # forward solves per field
        self.physics = None  # no single solver: see `flows`
        self._stacked = _StackedFlows(flows)

    @property
    def num_experiments(self) -> int:
        return len(self.flows)

    def solve(self, log_k: torch.Tensor) -> torch.Tensor:
        """The pressures of every experiment, ``(..., E, ny, nx)`` in ``log_k``'s dtype, from
        one batched solve; differentiable."""
        first = self.flows[0]
        first._check(log_k)
        lead, e = log_k.shape[:-2], self.num_experiments
        flat = log_k.reshape(-1, *self.grid.shape).to(torch.float64)
        stacked = flat[:, None].expand(-1, e, *self.grid.shape).reshape(-1, *self.grid.shape)
        p = _AdjointSolve.apply(stacked, self._stacked)
        return p.reshape(*lead, e, *self.grid.shape).to(log_k.dtype)

    def __call__(self, log_k: torch.Tensor) -> torch.Tensor:
        """``(B, ny, nx) -> (B, m_1 + ... + m_E)`` float64, the experiments in order."""
        log_k = log_k.to(torch.float64)
        pressure = self.solve(log_k)
        parts = [
            seen(flow, log_k, pressure[:, i])
            for i, (flow, seen) in enumerate(zip(self.flows, self.observations, strict=True))
        ]
        return torch.cat(parts, dim=-1)

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """``(..., m_1 + ... + m_E)`` values as one tensor per experiment."""
        return list(values.split(self.sizes, dim=-1))

    @property
    def last_info(self):
        """The `SolveInfo` of the latest solve (all experiments of all fields)."""
        return self._stacked.last_info

    def __repr__(self) -> str:
        return f"ExperimentReadings({self.names}, {self.num_outputs} values on {self.grid})"


class _StackedFlows:
    """The flows of ``E`` experiments as one solver over fields stacked ``(B * E)``, field
    ``b`` experiment ``e`` at row ``b * E + e``: what `_AdjointSolve` asks of a flow."""

    def __init__(self, flows: list[DarcyFlow]) -> None:
        self.flows = flows
        self.adjoint_rtol = flows[0].adjoint_rtol
        # the same no-flow sides: one set of transmissibilities serves every experiment
        self.same_sides = all(f._side_mask == flows[0]._side_mask for f in flows)
        self.last_info = None

    def _per_experiment(self, tensors, method: str):
        e = len(self.flows)
        split = [t.unflatten(0, (-1, e)) for t in tensors]
        outs = [
            getattr(flow, method)(*(t[:, i] for t in split)) for i, flow in enumerate(self.flows)
        ]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts, 1).flatten(0, 1) for parts in zip(*outs, strict=True))
        return torch.stack(outs, 1).flatten(0, 1)

    def transmissibilities(self, log_k: torch.Tensor):
        if self.same_sides:
            return self.flows[0].transmissibilities(log_k)
        return self._per_experiment([log_k], "transmissibilities")

    def rhs(self, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
        return self._per_experiment([tx, ty], "rhs")

    def _factorise(self, tx: torch.Tensor, ty: torch.Tensor):
        return self.flows[0]._factorise(tx, ty)

    def _report(self, info, rtol: float | None = None) -> None:
        self.last_info = info
        self.flows[0]._report(info, rtol)
