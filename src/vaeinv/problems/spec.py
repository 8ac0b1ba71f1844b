"""A validated problem and its parts: physics, prior, sampler defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..grid import Grid

__all__ = ["PhysicsSpec", "PriorSpec", "Problem", "SamplerDefaults"]


@dataclass(frozen=True)
class PhysicsSpec:
    """The flow problem: ``-div(k grad p) = source``, fixed pressures on ``dirichlet`` sides.

    Args:
        dirichlet: ``{side: pressure}``; sides not named are no-flow.
        source: the source term per unit area.
        solver: the [`DarcyFlow`][vaeinv.physics.DarcyFlow] solver.
        rtol: the multigrid tolerance; ``None`` ties it to the data's noise when a posterior
            is built ([`noise_tied_rtol`][vaeinv.physics.tolerance.noise_tied_rtol]).
        wells: point rates ``(x, y, rate)``: negative pumps, positive injects.
    """

    dirichlet: dict[str, float]
    source: float = 0.0
    solver: str = "auto"
    rtol: float | None = None
    wells: tuple[tuple[float, float, float], ...] = ()

    def build(self, grid: Grid, rtol: float | None = None):
        """The [`DarcyFlow`][vaeinv.physics.DarcyFlow] on ``grid``, with the spec's ``rtol``,
        else ``rtol``, else DarcyFlow's default; with either, the gradient's adjoint solves
        stop at ``GRADIENT_RTOL`` (or ``rtol`` if looser)."""
        from ..physics import DarcyFlow
        from ..physics.tolerance import GRADIENT_RTOL

        tol = self.rtol if self.rtol is not None else rtol
        extra = {} if tol is None else {"rtol": tol, "adjoint_rtol": max(tol, GRADIENT_RTOL)}
        return DarcyFlow(
            grid, dirichlet=dict(self.dirichlet), source=self.source, wells=self.wells,
            solver=self.solver, **extra,
        )  # fmt: skip

    def config(self) -> dict[str, Any]:
        out = {"dirichlet": dict(self.dirichlet), "source": self.source, "solver": self.solver}
        if self.rtol is not None:
            out["rtol"] = self.rtol
        if self.wells:
            out["wells"] = [{"x": x, "y": y, "rate": r} for x, y, r in self.wells]
        return out


@dataclass(frozen=True)
class PriorSpec:
    """Which prior a problem uses.

    Args:
        kind: ``"vae"`` (a checkpoint) or ``"gaussian-field"`` (the Gaussian-field baseline).
        name: for ``"vae"``: a shipped prior's name or a checkpoint path.
        options: for ``"gaussian-field"``: the keyword arguments of
            ``vaeinv.GaussianFieldPrior`` (besides the grid).
    """

    kind: str
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, grid: Grid):
        """Load or build the prior; a Gaussian-field prior is built on ``grid``."""
        if self.kind == "vae":
            from ..priors.vae import Prior

            return Prior.load(self.name)
        from ..priors.gaussian_field import GaussianFieldPrior

        return GaussianFieldPrior(grid, **self.options)

    @property
    def label(self) -> str:
        return str(self.name) if self.kind == "vae" else "gaussian-field"

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.name is not None:
            out["name"] = self.name
        return out | dict(self.options)


#: ``(num_chains, num_draws, num_warmup)`` of a method when a ``[sampler]`` table names the
#: method but not these: batched HMC takes few, expensive iterations in a batch of 16 chains;
#: the others keep the budget their measurements were made with.
METHOD_BUDGETS = {"hmc": (16, 150, 100)}
OTHER_BUDGET = (4, 1000, 1000)


def method_budget(method: str) -> tuple[int, int, int]:
    """The default ``(num_chains, num_draws, num_warmup)`` of ``method``."""
    return METHOD_BUDGETS.get(method, OTHER_BUDGET)


@dataclass(frozen=True)
class SamplerDefaults:
    """A problem's default sampler settings (overridden by ``vaeinv invert`` flags).

    Without a ``[sampler]`` table a problem gets batched HMC, 16 chains x (100 warm-up + 150)
    iterations: about the demo's budget (60 + 190 there), with a longer warm-up for a posterior
    nobody has measured (the demo's measurements are in ``docs/results/demo.md``). A table that
    names another method but no budget gets that method's (`method_budget`: 4 chains x
    (1000 + 1000) for all but HMC).

    Args:
        method: ``"pcn"``, ``"gpcn"``, ``"tpcn"``, ``"hmc"`` or ``"nuts"``.
        num_chains, num_draws, num_warmup, seed, chunk_size: as in ``vaeinv.sample``
            (``num_draws`` counts the iterations per chain after warm-up).
        thin: keep every ``thin``-th iteration (an integer in ``[1, num_draws]``), or
            ``"auto"`` (the runner picks the smallest that keeps the result under about 100 MB).
        options: per method, the options passed to ``vaeinv.sample`` (see
            `vaeinv.runs.sampler_options`).
    """

    method: str = "hmc"
    num_chains: int = METHOD_BUDGETS["hmc"][0]
    num_draws: int = METHOD_BUDGETS["hmc"][1]
    num_warmup: int = METHOD_BUDGETS["hmc"][2]
    thin: int | str = "auto"
    seed: int = 0
    chunk_size: int = 100
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def options_for(self, method: str) -> dict[str, Any]:
        """The options of ``method`` (empty when the problem sets none)."""
        return dict(self.options.get(method, {}))


@dataclass(frozen=True)
class MultilevelSpec:
    """The levels of multilevel methods (``mlda``, ``staged``): the ``[multilevel]`` table.

    Args:
        prior: a multiscale prior (a shipped name such as ``"channel16-32-64"`` or a folder);
            with ``latent = "shared"`` any prior, ``None`` for the problem's ``[prior]``.
        levels: the grid sizes (``ny``) of the levels to use, coarsest first, the last the
            problem's grid; ``None`` uses every level of the prior (required when shared).
        latent: ``"levels"``: level ``k`` has its multiscale prior's first levels' latents;
            ``"shared"``: every level has the whole latent, its field coarsened.
    """

    prior: str | None
    levels: tuple[int, ...] | None = None
    latent: str = "levels"

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.prior is None else {"prior": self.prior}
        if self.levels is not None:
            out["levels"] = list(self.levels)
        if self.latent != "levels":
            out["latent"] = self.latent
        return out


@dataclass(frozen=True, eq=False)
class Problem:
    """A validated inverse problem (see the module docstring for the file layout).

    Attributes:
        name: the problem's name.
        description: one line on what it is.
        folder: the folder holding ``problem.toml`` (relative paths are taken from it).
        grid: the grid.
        physics: the flow problem.
        sensors_xy: ``(m, 2)`` float64 sensor coordinates.
        prior: the prior.
        truth: the true ``log_k`` ``(ny, nx)`` float64, or ``None``.
        data: the observed values ``(m,)`` float64 (``None`` only when loaded with
            ``require_data=False`` and the file is missing).
        noise_std: the noise sd per sensor ``(m,)`` float64 (the file's column; for
            ``noise_kind="relative"``, ``noise_fraction * |data|``).
        noise_kind: ``"absolute"`` or ``"relative"``.
        noise_fraction: the relative noise level the data was generated with.
        data_seed: the seed of the data's noise.
        data_file: the data file's path.
        truth_spec: the ``[truth]`` table (``file``, ``format``, optional ``seed``, ``generator``).
        sampler_defaults: the ``[sampler]`` table.
        multilevel: the ``[multilevel]`` table, or ``None``.
        decomposition: the ``[decomposition]`` table, or ``None``
            (`vaeinv.problems.decomposition`).
        experiments: the [`ExperimentSpec`][vaeinv.problems.experiments.ExperimentSpec]s of a
            problem with ``[[experiment]]`` or ``[observations]`` tables (its ``data`` and
            ``noise_std`` their values in order); empty for one experiment of heads at the
            sensors (`vaeinv.problems.experiments`).
    """

    name: str
    description: str
    folder: Path
    grid: Grid
    physics: PhysicsSpec
    sensors_xy: torch.Tensor
    prior: PriorSpec
    truth: torch.Tensor | None
    data: torch.Tensor | None
    noise_std: torch.Tensor | None
    noise_kind: str
    noise_fraction: float
    data_seed: int
    data_file: Path
    truth_spec: dict[str, Any] | None
    sampler_defaults: SamplerDefaults
    multilevel: MultilevelSpec | None = None
    decomposition: Any = None
    experiments: tuple = ()

    def __repr__(self) -> str:
        return (
            f"Problem({self.name!r}, {self.grid}, {self.num_sensors} sensors, "
            f"prior={self.prior.label!r})"
        )

    @property
    def num_sensors(self) -> int:
        return int(self.sensors_xy.shape[0])

    def build_physics(self, grid: Grid | None = None):
        """A fresh [`DarcyFlow`][vaeinv.physics.DarcyFlow] for this problem (on ``grid``, by
        default the problem's), its multigrid tolerance tied to the data's noise unless
        ``[physics] rtol`` sets it."""
        from ..physics import noise_tied_rtol

        # noise_std is the sd of every datum, relative noise included
        rtol = None if self.data is None else noise_tied_rtol(self.noise_std, self.data)
        return self.physics.build(self.grid if grid is None else grid, rtol)

    def build_sensors(self):
        """The [`PointSensors`][vaeinv.physics.PointSensors] of this problem."""
        from ..physics import PointSensors

        return PointSensors(self.grid, self.sensors_xy)

    def build_prior(self, prior=None):
        """The problem's prior, or ``prior`` (a name, a checkpoint path or a prior object)."""
        if prior is None:
            return self.prior.build(self.grid)
        if isinstance(prior, str | Path):
            if str(prior) == "gaussian-field":
                return PriorSpec("gaussian-field").build(self.grid)
            from ..priors.vae import Prior

            return Prior.load(prior)
        return prior

    def posterior(self, prior=None, device=None):
        """The latent posterior of this problem.

        Args:
            prior: ``None`` for the problem's prior; otherwise a prior to use instead (a shipped
                name, a checkpoint path, ``"gaussian-field"`` for the default Gaussian-field
                prior, or a prior object).
            device: move the posterior there (default: the prior's device).

        Returns:
            a ``vaeinv.Posterior``.

        Raises:
            ValueError: no data, or a prior whose grid is not the problem's (both named), or any
                check of the posterior's composition.
        """
        from ..posterior import Posterior

        if self.data is None:
            raise ValueError(f"problem {self.name!r} has no data file {str(self.data_file)!r}")
        the_prior = self.build_prior(prior)
        prior_grid = getattr(the_prior, "grid", None)
        if prior_grid != self.grid:
            label = getattr(the_prior, "name", None) or type(the_prior).__name__
            raise ValueError(
                f"the prior {label!r} is on {prior_grid} but problem {self.name!r} has its "
                f"physics on {self.grid}; choose a prior on the problem's grid"
            )
        if self.experiments:
            forward, sensors, noise = self.build_forward(), None, self.noise_std
        else:
            forward, sensors = self.build_physics(), self.build_sensors()
            noise = self.noise_fraction if self.noise_kind == "relative" else self.noise_std
        post = Posterior(
            the_prior, forward, sensors, self.data, noise, noise_kind=self.noise_kind,
            truth=self.truth,
        )  # fmt: skip
        return post if device is None else post.to(device)

    def build_forward(self, accurate: bool = False):
        """The [`ExperimentReadings`][vaeinv.physics.experiments.ExperimentReadings] of a
        problem with experiments: every experiment in one batch, the tolerance tied to the
        noise of the heads (else, or ``accurate``, DarcyFlow's default)."""
        from ..physics import noise_tied_rtol
        from ..physics.experiments import ExperimentReadings

        rtol = None
        if not accurate and all(e.data is not None for e in self.experiments):
            tied = [
                noise_tied_rtol(e.noise_std[mask], e.data[mask])
                for e in self.experiments
                if (mask := torch.tensor([k == "head" for k in e.kinds], dtype=torch.bool)).any()
            ]
            rtol = min(tied) if tied else None
        flows = [e.physics.build(self.grid, rtol) for e in self.experiments]
        seen = [e.observations.build(self.grid) for e in self.experiments]
        return ExperimentReadings(flows, seen, [e.name for e in self.experiments])

    def level_posteriors(self, prior=None, device=None) -> list:
        """The posteriors of the ``[multilevel]`` levels, coarsest first, the problem's own
        grid last, each solving this problem's flow on its grid, read at the same sensor
        positions, with the same data and noise (and the truth coarsened to its grid).

        With ``latent = "levels"`` (the default) level ``k`` decodes with ``prior.level(k)``
        of a multiscale prior; with ``latent = "shared"`` every level decodes the whole latent
        of the problem's prior (or ``prior``) and coarsens the field to its grid
        ([`CoarsenedPrior`][vaeinv.priors.coarsened.CoarsenedPrior]).

        Args:
            prior: a prior (a name, a folder or the object) instead of the table's (or, shared,
                the problem's).
            device: move the posteriors there.

        Raises:
            ValueError: no ``[multilevel]`` table and no ``prior``, a prior that is not
                multiscale for ``latent = "levels"``, or levels that the prior or the grid does
                not have (the valid ones named).
        """
        from .levels import level_posteriors

        return level_posteriors(self, prior, device)

    def sampling_inputs(self, method: str, prior=None, device=None):
        """``(posterior, inputs)`` for ``vaeinv.sample(posterior, method, **inputs)``: the
        problem's posterior and no inputs, or, for a kernel that takes coarse posteriors
        (``mlda``, ``staged``), the finest of `level_posteriors` and ``coarse=`` the others.
        """
        from ..kernels import registry

        if "coarse" not in registry.get(method).inputs:
            return self.posterior(prior=prior, device=device), {}
        levels = self.level_posteriors(prior=prior, device=device)
        if len(levels) < 2:
            raise ValueError(f"method {method!r} needs at least two levels, got {len(levels)}")
        return levels[-1], {"coarse": levels[:-1]}

    def attrs(self) -> dict[str, Any]:
        """What a run records about its problem (``vaeinv.sample``'s ``attrs``, part of the
        run's fingerprint; the data and noise themselves are hashed by the runner)."""
        return {
            "problem": self.name,
            "data_seed": self.data_seed,
            "noise_kind": self.noise_kind,
            "noise_fraction": self.noise_fraction,
        }
