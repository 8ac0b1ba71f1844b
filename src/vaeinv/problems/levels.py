"""The posteriors of a problem's levels (its ``[multilevel]`` table), coarsest first: each
level's prior, the problem's flow on the level's grid, the same sensors, data and noise."""

from __future__ import annotations

from ..fields.coarsen import coarsen
from ..grid import Grid

__all__ = ["level_posteriors"]


def level_posteriors(problem, prior=None, device=None) -> list:
    """See [`Problem.level_posteriors`][vaeinv.problems.spec.Problem.level_posteriors]."""
    spec = problem.multilevel
    if spec is None and prior is None:
        raise ValueError(
            f"problem {problem.name!r} has no [multilevel] table: name a multiscale prior "
            'there (e.g. prior = "gaussian16-64") or pass one'
        )
    if problem.data is None:
        raise ValueError(f"problem {problem.name!r} has no data file {str(problem.data_file)!r}")
    if spec is not None and spec.latent == "shared":
        posts = _shared(problem, prior if prior is not None else spec.prior, spec.levels)
    else:
        posts = _multiscale(problem, prior if prior is not None else spec.prior)
    return [p if device is None else p.to(device) for p in posts]


def _posterior(problem, level_prior, grid: Grid):
    from ..physics import PointSensors
    from ..posterior import Posterior

    noise = problem.noise_fraction if problem.noise_kind == "relative" else problem.noise_std
    truth = None
    if problem.truth is not None:
        factor = (problem.grid.ny // grid.ny, problem.grid.nx // grid.nx)
        truth = problem.truth if factor == (1, 1) else coarsen(problem.truth, factor)
    return Posterior(
        level_prior,
        problem.build_physics(grid),
        PointSensors(grid, problem.sensors_xy),
        problem.data,
        noise,
        noise_kind=problem.noise_kind,
        truth=truth,
    )


def _multiscale(problem, prior) -> list:
    from ..priors.multiscale import MultiscalePrior

    the_prior = problem.build_prior(prior)
    if not isinstance(the_prior, MultiscalePrior):
        label = getattr(the_prior, "name", None) or type(the_prior).__name__
        raise ValueError(f"the prior {label!r} is not a multiscale prior (it has one level)")
    if the_prior.grid != problem.grid:
        raise ValueError(
            f"the finest level of {the_prior.name!r} is on {the_prior.grid} but problem "
            f"{problem.name!r} has its physics on {problem.grid}"
        )
    sizes = [g.ny for g in the_prior.grids]
    wanted = list(sizes)
    if problem.multilevel is not None and problem.multilevel.levels is not None:
        wanted = list(problem.multilevel.levels)
    missing = [n for n in wanted if n not in sizes]
    if missing or wanted[-1] != sizes[-1]:
        raise ValueError(
            f"[multilevel] levels {wanted} must be grid sizes of {the_prior.name!r} "
            f"({sizes}) ending with the finest, {sizes[-1]}"
        )
    ks = [sizes.index(n) for n in wanted]
    return [_posterior(problem, the_prior.level(k), the_prior.grids[k]) for k in ks]


def _shared(problem, prior, sizes) -> list:
    from ..priors.coarsened import CoarsenedPrior

    fine_prior = problem.build_prior(prior)
    grid = problem.grid
    grids = []
    for n in sizes:
        if grid.ny % n or grid.nx % (grid.ny // n):
            raise ValueError(
                f"[multilevel] level {n} does not divide the grid {grid.ny} x {grid.nx} "
                "(each level's rows and columns must divide the fine grid's)"
            )
        f = grid.ny // n
        grids.append(Grid(nx=grid.nx // f, ny=n, lx=grid.lx, ly=grid.ly))
    posts = [_posterior(problem, CoarsenedPrior(fine_prior, g), g) for g in grids[:-1]]
    return [*posts, problem.posterior(prior=fine_prior)]
