"""Preparing a domain-decomposed inversion: the partition's local problems, with the interface
model fitted and refined (the steps are in `Decomposition.prepare`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ..partition import Partition
from ..physics.darcy import DarcyFlow
from ..physics.sensors import PointSensors
from .interface import InterfaceGP, face_pressures, refine_interfaces
from .local import LocalSpec, build_local, interface_sensitivity

__all__ = ["Decomposition", "InterfaceSettings", "PriorOnlyWarning"]


class PriorOnlyWarning(UserWarning):
    """A subdomain holds no sensor: its local posterior is its prior."""


@dataclass(frozen=True)
class InterfaceSettings:
    """How the interface pressure is modelled.

    Attributes:
        fit_steps: Adam steps of the GP's marginal-likelihood fit.
        pilot_rounds: global solves of a pilot field (the blended local MAPs) that refine the
            GP, each round's MAPs under the previous round's model (``0``: the sensors only).
        target_fraction: active learning stops when the largest predictive variance on the
            interfaces is under this fraction of the mean noise variance.
        max_points: the most interface points added per round.
        map_steps: Adam steps of each local MAP (then 3 Gauss-Newton steps); later rounds
            start from the previous MAP with half as many.
    """

    fit_steps: int = 150
    pilot_rounds: int = 2
    target_fraction: float = 0.5
    max_points: int = 64
    map_steps: int = 150

    def __post_init__(self) -> None:
        for name in ("fit_steps", "pilot_rounds", "max_points", "map_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"interface {name} must be an integer >= 0, got {value!r}")
        f = self.target_fraction
        if isinstance(f, bool) or not isinstance(f, float | int) or not f > 0:
            raise ValueError(f"interface target_fraction must be a number > 0, got {f!r}")


def _side_points(subdomain) -> np.ndarray:
    return np.concatenate([subdomain.interface_points(s).numpy() for s in subdomain.interfaces])


@dataclass
class Decomposition:
    """A partition's local problems, ready to sample (`sample_decomposed`).

    Attributes:
        partition: the partition.
        specs: one [`LocalSpec`][vaeinv.decomposition.local.LocalSpec] per subdomain.
        sensor_index: per subdomain, the global sensors it reads.
        info: what the preparation did and spent (the interface model's kernel, the points
            added, the global and local solves, the pilot's misfit).
        truth: the global true field, if known.
    """

    partition: Partition
    specs: list[LocalSpec]
    sensor_index: list[np.ndarray]
    info: dict = field(default_factory=dict)
    truth: torch.Tensor | None = None

    @classmethod
    def prepare(
        cls,
        partition: Partition,
        prior,
        flow: DarcyFlow,
        sensors: PointSensors,
        data,
        noise_std,
        *,
        truth=None,
        interface: InterfaceSettings | None = None,
        solver: str = "auto",
    ) -> Decomposition:
        """Build the local problems.

        1. The sensors inside each subdomain (overlap included); a subdomain with none warns
           (`PriorOnlyWarning`) and samples its prior.
        2. The interface GP fitted to the sensors' data
           ([`InterfaceGP`][vaeinv.decomposition.interface.InterfaceGP]); local problems with
           its mean on the interfaces and ``H`` at the prior's mean field.
        3. ``interface.pilot_rounds`` times: each local MAP (a Laplace fit), Poisson-blended
           into a pilot global field, solved once globally; the sensor-only GP gets the
           interface points of largest predictive variance with the pilot's face pressures
           as observations whose errors are one smooth field of variance
           ``max(sensor noise variance, the pilot's mean squared misfit at the sensors)``,
           until the variance target or ``max_points``; ``H`` is then taken at each local
           MAP, and the next round's MAPs use this model.

        Args:
            partition: the partition of the global grid.
            prior: the local prior, or its name or folder (loaded in each task), or a list of
                them, one per subdomain; a prior's grid must have its subdomain's cells.
            flow: the global Darcy problem (its boundary conditions, source and wells).
            sensors: the global sensors.
            data: ``(m,)`` the observations.
            noise_std: ``(m,)`` or a scalar, their noise standard deviation.
            truth: the global true field, if known.
            interface: the interface model's settings.
            solver: the local Darcy solver.

        The preparation runs with one torch thread (restored after), so that the local
        problems' numbers do not depend on the calling process's threads or load.

        Raises:
            ValueError: a prior whose grid differs from a subdomain's, subdomains of different
                sizes, a flow or sensors on another grid, bad data or noise.
        """
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same bits in every process, whatever its load
        try:
            return cls._prepare(
                partition, prior, flow, sensors, data, noise_std, truth, interface, solver
            )
        finally:
            torch.set_num_threads(threads)

    @classmethod
    def _prepare(cls, partition, prior, flow, sensors, data, noise_std, truth, interface, solver):
        from ..priors import Prior

        settings = interface or InterfaceSettings()
        given = list(prior) if isinstance(prior, list | tuple) else [prior] * len(partition)
        if len(given) != len(partition):
            raise ValueError(
                f"expected one local prior or {len(partition)} (one per subdomain), got "
                f"{len(given)}"
            )
        loaded = {id(p): Prior.load(p) if isinstance(p, str) else p for p in given}
        local_priors = [loaded[id(p)] for p in given]
        for s, p in zip(partition.subdomains, local_priors, strict=True):
            s.check_prior(p)
        names = list(dict.fromkeys(str(getattr(p, "name", "custom")) for p in local_priors))
        for what, grid in (("flow", flow.grid), ("sensors", sensors.grid)):
            if grid != partition.grid:
                raise ValueError(f"the {what} grid {grid} differs from the partition's grid")
        y, sd, xy, index = _observations(partition, sensors, data, noise_std)
        gp = InterfaceGP(xy, y, sd**2, fit_steps=settings.fit_steps)
        sources = [g if isinstance(g, str) else p for g, p in zip(given, local_priors, strict=True)]
        prep = _Preparation(partition, sources, local_priors, flow, xy, y, sd, index, solver)
        truth_t = None if truth is None else torch.as_tensor(truth, dtype=torch.float64)
        prep.truth = truth_t
        references = [
            p.decode(torch.zeros(p.latent_dim, dtype=torch.float64)).detach().to(torch.float64)
            for p in local_priors
        ]
        info = {
            "local_prior": names[0] if len(names) == 1 else names,
            "gp_length_scale": gp.length_scale,
            "gp_variance": gp.kernel_variance,
            "gp_sensors": gp.num_points,
            "global_solves": 0,
            "local_solves": 0,
        }
        specs = prep.specs(gp, references)
        specs = prep.pilot_rounds(specs, gp, settings, sensors, info)
        info["local_solves"] += len(partition)  # the factorisations behind H
        return cls(partition, specs, index, info, truth_t)


class _Preparation:
    """The pieces `Decomposition.prepare` builds the local problems from."""

    def __init__(self, partition, sources, priors, flow, xy, y, sd, index, solver):
        self.partition, self.sources, self.priors, self.flow = partition, sources, priors, flow
        self.xy, self.y, self.sd, self.index, self.solver = xy, y, sd, index, solver
        self.truth = None
        g = partition.grid
        self.rates = flow.cell_rates().numpy() / (g.dx * g.dy)

    def specs(self, gp: InterfaceGP, references) -> list[LocalSpec]:
        out = []
        for s, idx, ref in zip(self.partition.subdomains, self.index, references, strict=True):
            points = _side_points(s) if s.interfaces else np.zeros((0, 2))
            mean, cov = gp.predict(points) if len(points) else (torch.zeros(0), torch.zeros(0, 0))
            dirichlet, start = {}, 0
            for side, values in self.flow.setup.dirichlet.items():
                if side not in s.interfaces:  # a side that faces no subdomain is global
                    along = s.rows if side in ("left", "right") else s.cols
                    dirichlet[side] = values[along]
            for side in s.interfaces:
                n = s.grid.side_length(side)
                dirichlet[side] = mean[start : start + n].numpy()
                start += n
            origin = np.asarray(s.grid.origin)
            spec = LocalSpec(
                index=s.index,
                prior=self.sources[s.index],
                grid=(s.grid.nx, s.grid.ny, s.grid.lx, s.grid.ly),
                dirichlet=dirichlet,
                interfaces=s.interfaces,
                source=self.rates[s.rows, s.cols].copy(),
                sensor_xy=self.xy[idx] - origin,
                data=self.y[idx],
                noise_std=self.sd[idx],
                interface_cov=cov.numpy(),
                sensitivity=np.zeros((idx.size, cov.shape[0])),
                solver=self.solver,
                truth=None if self.truth is None else self.truth[s.rows, s.cols].numpy(),
            )
            if idx.size and s.interfaces:
                flow = spec.flow()
                sensors = PointSensors(flow.grid, spec.sensor_xy)
                h = interface_sensitivity(flow, sensors, ref, s.interfaces)
                spec = _replace(spec, sensitivity=h)
            out.append(spec)
        return out

    def pilot_rounds(self, specs, gp: InterfaceGP, settings, sensors, info: dict):
        """The local problems after ``settings.pilot_rounds`` pilot rounds (`prepare`'s step
        3), from those of the sensor-only model ``gp``."""
        flow, y, sd = self.flow, self.y, self.sd

        maps = None
        for _ in range(settings.pilot_rounds):
            references, pilot, maps = self.local_maps(specs, settings.map_steps, info, maps)
            p = flow.solve(pilot[None].to(torch.float64))[0].detach()
            info["global_solves"] += 1
            misfit = float(np.mean((sensors(p[None])[0].numpy() - y) ** 2))
            candidates, values = self.pilot_interfaces(pilot, p)
            pilot_var = max(float(np.mean(sd**2)), misfit)
            refined, added, history = refine_interfaces(
                gp, candidates, values, pilot_var,
                target_variance=settings.target_fraction * float(np.mean(sd**2)),
                max_points=settings.max_points, correlated=True,
            )  # fmt: skip
            info.setdefault("pilot_misfit_rms", []).append(misfit**0.5)
            info.update(
                interface_points_added=len(added),
                interface_max_sd_before=history[0] ** 0.5,
                interface_max_sd_after=history[-1] ** 0.5,
            )
            specs = self.specs(refined, references)
        return specs

    def local_maps(self, specs, steps: int, info: dict, previous=None):
        """Each subdomain's MAP field, their Poisson blend (the pilot field) and the MAP
        latents; from ``previous`` latents (with half the steps) when given."""
        from ..approx.laplace import laplace_approximation
        from ..blending import PoissonBlend

        fields, latents = [], []
        for spec in specs:
            posterior, _ = build_local(spec, self.priors[spec.index])
            if previous is None:
                gen = torch.Generator().manual_seed(spec.index)
                starts = torch.randn(4, posterior.latent_dim, generator=gen, dtype=torch.float64)
                starts[0] = 0.0
                fit = laplace_approximation(posterior, starts, steps=steps, newton_steps=3)
            else:
                start = previous[spec.index][None]
                fit = laplace_approximation(posterior, start, steps=steps // 2, newton_steps=3)
            info["local_solves"] += fit.num_evaluations
            latents.append(fit.mean)
            fields.append(posterior.decode(fit.mean[None])[0].detach().to(torch.float64))
        return fields, PoissonBlend(self.partition)(fields), latents

    def pilot_interfaces(self, pilot: torch.Tensor, pressure: torch.Tensor):
        """The interface points of every subdomain (each once) and the pilot's pressure there."""
        points, values = [], []
        for s in self.partition.subdomains:
            faces = face_pressures(pilot, pressure, s)
            for side in s.interfaces:
                points.append(s.interface_points(side).numpy())
                values.append(faces[side].numpy())
        xy, v = np.concatenate(points), np.concatenate(values)
        _, first = np.unique(np.round(xy, 12), axis=0, return_index=True)
        first = np.sort(first)
        return xy[first], v[first]


def _observations(partition: Partition, sensors: PointSensors, data, noise_std):
    """The checked data and noise, the sensors' points, and each subdomain's sensors (a
    subdomain with none warns)."""
    y = np.asarray(data, dtype=np.float64).reshape(-1)
    sd = np.broadcast_to(np.asarray(noise_std, dtype=np.float64), y.shape).copy()
    if y.shape[0] != sensors.num_sensors or not np.all(np.isfinite(y)):
        raise ValueError(
            f"data must be {sensors.num_sensors} finite values (one per sensor), "
            f"got shape {y.shape}"
        )
    if not np.all(sd > 0):
        raise ValueError(f"noise_std must be > 0, got min {sd.min()}")
    xy = sensors.xy.numpy()
    index = partition.sensors_in(xy)
    for s, idx in zip(partition.subdomains, index, strict=True):
        if idx.size == 0:
            warnings.warn(
                f"subdomain {s.index} ({s.grid.domain}) holds no sensor: its local "
                "posterior is its prior",
                PriorOnlyWarning,
                stacklevel=2,
            )
    return y, sd, xy, index


def _replace(spec: LocalSpec, **changes) -> LocalSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)
