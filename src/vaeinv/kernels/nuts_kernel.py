"""NUTS (Pyro's kernel) as a registered kernel: chains one after another, each in its own
random stream, so a run may sample some of its chains (``sample(chains=...)``) and merge the
parts. Pyro's warm-up adaptation cannot be saved mid-way, so the warm-up runs as one block and
the state (last draw, adapted step size and mass, each chain's RNG state) is checkpointed at
its end and after every chunk of draws.

Masses (option ``mass``): ``"adapt"`` (Stan's windowed adaptation from the identity),
``"laplace"`` (the Laplace covariance as a fixed dense inverse mass matrix, starts drawn around
the MAP, only the step size adapted), ``"pooled"`` (the Laplace start, then the mass
re-estimated twice from the pooled chains, `vaeinv.kernels.nuts_pooled`), or ``"fixed"`` (given
by ``sample(inverse_mass_matrix=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..approx.pooled import POOLED_STAGES, pooled_schedule
from .base import Kernel, check_fraction, check_positive
from .nuts import nuts_run
from .nuts_chain import ChainSettings
from .nuts_pooled import pooled_warmup
from .starts import INIT_SCALE, STREAM_NUTS, STREAM_POOLED, LaplaceStartOptions, laplace_start

__all__ = ["NUTS_MASSES", "NUTSKernel", "NUTSOptions", "NUTSState"]

#: NUTS's ``mass`` option (``"fixed"`` too, with ``sample(inverse_mass_matrix=...)``).
NUTS_MASSES = ("adapt", "laplace", "pooled")
#: the statistics NUTS keeps with every draw.
NUTS_STATS = ("lp", "acceptance_rate", "step_size", "diverging", "tree_depth", "n_steps")


class NUTSState(NamedTuple):
    """The chains of a NUTS run between blocks (CPU float64 but ``rng_state``).

    Attributes:
        z: ``(C, d)`` each chain's last state.
        step_size: ``(C,)`` the adapted step sizes.
        inverse_mass_matrix: ``(C, d)`` or ``(C, d, d)`` the adapted inverse mass matrices.
        rng_state: ``(C, L)`` uint8 each chain's RNG state.
    """

    z: torch.Tensor
    step_size: torch.Tensor
    inverse_mass_matrix: torch.Tensor
    rng_state: torch.Tensor


@dataclass(frozen=True)
class NUTSOptions(LaplaceStartOptions):
    """NUTS's options (and the Laplace start's, for ``mass="laplace"`` and ``"pooled"``).

    Attributes:
        target_accept: the step-size adaptation's target, in ``(0, 1)``.
        max_tree_depth: at most ``2^max_tree_depth - 1`` leapfrogs per iteration.
        full_mass: adapt a dense inverse mass matrix (``mass="adapt"``).
        step_size: the initial step size (default: Pyro's search from 1).
        mass: ``"adapt"``, ``"laplace"``, ``"pooled"`` or ``"fixed"`` (module docstring).
    """

    target_accept: float = 0.8
    max_tree_depth: int = 10
    full_mass: bool = False
    step_size: float | None = None
    mass: str = "adapt"

    def validate(self) -> None:
        super().validate()
        check_fraction("target_accept", self.target_accept)
        check_positive("max_tree_depth", self.max_tree_depth, integer=True, minimum=1)
        if not isinstance(self.full_mass, bool):
            raise ValueError(f"full_mass must be true or false, got {self.full_mass!r}")
        if self.step_size is not None:
            check_positive("step_size", self.step_size)
        if self.mass not in (*NUTS_MASSES, "fixed"):
            raise ValueError(f"NUTS mass must be one of {NUTS_MASSES}, got {self.mass!r}")


class NUTSKernel(Kernel):
    """Pyro's NUTS, chain by chain (module docstring)."""

    name = "nuts"
    Options = NUTSOptions
    state_type = NUTSState
    state_key = "nuts"
    state_on_device = False
    independent_chains = True
    resumable_warmup = False
    mass_matrix = True
    extension_warmup = 50

    def check(self, options, *, num_warmup: int, fixed_mass: bool) -> None:
        if options.mass == "fixed" and not fixed_mass:
            raise ValueError(
                f"NUTS mass must be one of {NUTS_MASSES}, got 'fixed'; mass='fixed' needs "
                "inverse_mass_matrix="
            )
        if options.mass == "pooled":
            pooled_schedule(num_warmup)  # raises for a warm-up too short to split

    def init(self, run):
        """The starts and the first mass; ``mass="pooled"`` runs its estimation stages here
        (they are part of the warm-up: ``run.iteration`` advances by their length)."""
        opts = run.options
        z0, mass = run.z0[run.chain_ids], run.fixed_mass
        self.step_size = opts.step_size
        self.full_mass = opts.full_mass or mass is not None
        self.adapt_mass = mass is None
        if opts.mass in ("laplace", "pooled"):
            laplace = laplace_start(run)
            generator = torch.Generator().manual_seed(run.stream_seed(STREAM_NUTS))
            z0 = laplace.sample(run.z0.shape[0], generator, inflation=INIT_SCALE**2)
            z0, mass = z0[run.chain_ids], laplace.covariance
            self.full_mass, self.adapt_mass = True, False
        if opts.mass == "pooled":
            z0, mass = self._pooled(run, z0, mass)
        n = len(run.chain_ids)
        masses = mass if mass is None or mass.dim() == 3 else mass.expand(n, *mass.shape)
        return NUTSState(z0, None, masses, None)

    def _pooled(self, run, z0, mass):
        final_warmup = pooled_schedule(run.num_warmup)[1]
        warm = pooled_warmup(
            run.target,
            z0,
            mass,
            num_warmup=run.num_warmup,
            seeds=[run.stream_seed(STREAM_POOLED + k) for k in range(len(POOLED_STAGES))],
            target_accept=run.options.target_accept,
            max_tree_depth=run.options.max_tree_depth,
            chain_ids=run.chain_ids,
            step_size=self.step_size,
            progress=lambda chain, iteration, stats: run.bar.step(),
        )
        run.warmup_divergences += warm.divergences
        run.iteration += run.num_warmup - final_warmup
        run.mass_corrections = list(warm.corrected)
        self.step_size = warm.step_size
        return warm.z, warm.inverse_mass_matrix

    def step(self, target, state, generator, *, adapt, options):
        raise NotImplementedError("NUTS advances whole blocks: see advance")

    def advance(self, run, state, iterations, *, adapt, thin):
        warm = state.rng_state is None  # the warm-up block, from init's starts
        if not warm and adapt:
            return state, None  # a warm-up that ended before a checkpoint
        opts = run.options
        settings = ChainSettings(
            target_accept=opts.target_accept,
            max_tree_depth=opts.max_tree_depth,
            full_mass=self.full_mass if warm else state.inverse_mass_matrix.dim() == 3,
            adapt=warm,
            adapt_mass_matrix=self.adapt_mass if warm else False,
        )
        live = [run.divergences]

        def on_iteration(chain: int, iteration: int, stats: dict) -> None:
            run.bar.step()
            if stats["diverging"] and not stats["warmup"]:
                live[0] += 1
                run.show(divergences=live[0])

        out = nuts_run(
            run.target,
            state.z,
            num_draws=0 if adapt else iterations,
            num_warmup=iterations if adapt else 0,
            seed=run.stream_seed(STREAM_NUTS),
            settings=settings,
            step_size=self.step_size if warm else state.step_size,
            inverse_mass_matrix=state.inverse_mass_matrix,
            rng_state=state.rng_state,
            progress=on_iteration,
            chain_ids=run.chain_ids,
        )
        state = NUTSState(
            z=out.last,
            step_size=out.adapted_step_size.to(torch.float64),
            inverse_mass_matrix=out.inverse_mass_matrix.to(torch.float64),
            rng_state=out.rng_state,
        )
        run.warmup_divergences += int(out.num_warmup_divergences.sum())
        if adapt:
            return state, None
        take = slice(thin - 1, None, thin)
        kept = {name: getattr(out, name)[:, take] for name in NUTS_STATS}
        kept["z"] = out.z[:, take].to(run.target.device)
        run.divergences += int(kept["diverging"].sum())
        run.show(divergences=run.divergences)
        return state, kept

    def extension(self, record):
        """Every chain from its last draw with the covariance of the kept draws as a fixed
        dense mass, the step size from the median of the chains' last ones, re-adapted."""
        num_chains = record.num_chains
        init = torch.zeros(num_chains, record.last.shape[-1], dtype=torch.float64)
        init[record.held] = record.last
        kwargs = {
            "num_chains": num_chains,
            "init": init,
            "inverse_mass_matrix": record.mass,
            "target_accept": record.options["target_accept"],
            "max_tree_depth": record.options["max_tree_depth"],
            "step_size": record.last_step_size,
        }
        if record.held != list(range(num_chains)):
            kwargs["chains"] = record.held
        return kwargs
