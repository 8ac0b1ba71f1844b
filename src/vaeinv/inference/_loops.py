"""The sampling loops of a run: batched pCN, gpCN, tpCN and HMC, and Pyro's NUTS chain by chain,
each advancing a run (``vaeinv.inference._run``) block by block (see
``vaeinv.inference.runner``).

Seeds: the run's ``seed`` derives every generator, stream 0 for the initial latents, stream 1
for pCN, gpCN, tpCN and HMC, stream 2 for NUTS, stream 3 for tpCN's flow (its halves, initial
weights and fitting draws), streams 10 and 11 for the stages of NUTS's pooled warm-up
(``numpy.random.SeedSequence([seed, stream])``).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import results
from ._draws import _finish_chunk
from .gpcn import GPCNState, gpcn_init, gpcn_step
from .hmc import HMCState, freeze_hmc, hmc_init, hmc_step
from .laplace import laplace_approximation
from .pcn import freeze_adaptation, pcn_init, pcn_step
from .transport import CouplingFlow, TPCNState, TransportMap, fit_transport, tpcn_init, tpcn_step

if TYPE_CHECKING:
    from .progress import Bar
    from .run_checkpoint import RunCheckpoint

#: initial latents are ``INIT_SCALE * N(0, I)`` draws (over-dispersed relative to the prior).
INIT_SCALE = 1.5
_STREAM_INIT, _STREAM_PCN, _STREAM_NUTS, _STREAM_TRANSPORT = 0, 1, 2, 3
#: NUTS's pooled warm-up (``mass="pooled"``): stage ``k`` draws from stream ``10 + k``.
_STREAM_POOLED = 10


def _derived_seed(seed: int, stream: int) -> int:
    state = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def run_pcn(run, store: RunCheckpoint | None, bar: Bar) -> None:
    s = run.settings
    posterior, target = run.posterior, run.options["target_accept"]
    block = s["chunk_size"] * s["thin"]
    step = {"gpcn": gpcn_step, "hmc": hmc_step}.get(run.method, pcn_step)
    freeze = freeze_hmc if run.method == "hmc" else freeze_adaptation
    if run.state is None:
        run.generator.manual_seed(_derived_seed(s["seed"], _STREAM_PCN))
        start = time.perf_counter()
        if run.method == "gpcn":
            run.state = _gpcn_start(run)
        elif run.method == "tpcn":
            run.state = _tpcn_start(run, bar)
        elif run.method == "hmc":
            run.state = _hmc_start(run)
        else:
            run.state = pcn_init(posterior, run.z0, step_size=run.options["step_size"])
        run.timed(start)
    if run.method == "tpcn":
        step = functools.partial(tpcn_step, transport=run.transport)
    while run.iteration < s["num_warmup"]:
        start = time.perf_counter()
        steps = min(block, s["num_warmup"] - run.iteration)
        acceptance = torch.zeros((), dtype=torch.float64, device=posterior.device)
        for _ in range(steps):
            run.state, info = step(
                posterior, run.state, run.generator, adapt=True, target_accept=target
            )
            acceptance += info.acceptance_rate.mean()
            _count_hmc(run, info, warmup=True)
            bar.step()
        acceptance = float(acceptance) / steps
        bar.postfix(acc=acceptance)
        run.iteration += steps
        if run.iteration == s["num_warmup"]:
            run.state = freeze(run.state)
            run.frozen = True
        run.timed(start)
        run.checkpoint(store, bar, acceptance)
    while not run.complete:
        start = time.perf_counter()
        length = min(s["chunk_size"], run.kept - run.draws_written)
        kept: dict[str, list[torch.Tensor]] = {}
        acceptance = torch.zeros((), dtype=torch.float64, device=posterior.device)
        for i in range(length * s["thin"]):
            run.state, info = step(
                posterior, run.state, run.generator, adapt=False, target_accept=target
            )
            acceptance += info.acceptance_rate.mean()
            _count_hmc(run, info, warmup=False)
            bar.step()
            if (i + 1) % s["thin"] == 0:
                for name, value in (
                    ("z", run.state.z),
                    ("prediction", run.state.prediction),
                    ("log_k", getattr(run.state, "field", None)),
                    ("accepted", info.accepted),
                    ("acceptance_rate", info.acceptance_rate),
                    ("failed", info.failed),
                    ("step_size", info.step_size),
                    ("diverging", getattr(info, "diverging", None)),
                    ("n_steps", getattr(info, "n_steps", None)),
                ):
                    if value is not None:
                        kept.setdefault(name, []).append(value)
        acceptance = float(acceptance) / (length * s["thin"])
        bar.postfix(acc=acceptance)
        stacked = {k: torch.stack(v, dim=1) for k, v in kept.items()}
        chunk = _finish_chunk(posterior, stacked, run.draws_written)
        run.iteration += length * s["thin"]
        run.add_chunk(store, chunk)
        run.timed(start)
        run.checkpoint(store, bar, acceptance)


def _count_hmc(run, info, warmup: bool) -> None:
    """HMC's bookkeeping: one batched gradient per leapfrog, divergences by phase."""
    if run.method != "hmc":
        return
    run.gradient_evaluations += int(info.n_steps.sum())
    diverging = int(info.diverging.sum())
    if warmup:
        run.warmup_divergences += diverging
    else:
        run.divergences += diverging


def _hmc_start(run) -> HMCState:
    """HMC's start, as NUTS's pooled mass: the Laplace approximation from the over-dispersed
    starts ``z0``, chains at over-dispersed draws of it, ``N(m, INIT_SCALE^2 C)``, from the
    HMC stream, its covariance as the first inverse mass; the warm-up re-estimates the mass
    twice from the pooled chains (`vaeinv.inference.hmc`). With a fixed mass
    (``sample(inverse_mass_matrix=...)``) the chains start at ``z0`` under that mass."""
    opts = run.options
    if run.fixed_mass is None:
        laplace = _laplace(run)
        z_init = laplace.sample(run.z0.shape[0], run.generator, inflation=INIT_SCALE**2)
        scale_tril = laplace.scale_tril
    else:  # a fixed mass (extend_run): the chains start at z0, only the step size adapts
        z_init = run.z0
        scale_tril = torch.linalg.cholesky(run.fixed_mass.to(torch.float64))
    state = hmc_init(
        run.posterior,
        z_init,
        scale_tril,
        step_size=float(opts["step_size"]),
        trajectory_length=float(opts["trajectory_length"]),
        max_steps=int(opts["max_steps"]),
        num_warmup=run.settings["num_warmup"],
        adapt_mass=run.fixed_mass is None,
    )
    run.gradient_evaluations += z_init.shape[0]
    return state


def _gpcn_start(run) -> GPCNState:
    """gpCN's start: the Laplace approximation from the over-dispersed starts ``z0`` (one
    Adam ascent per chain, the best MAP kept), then chains at over-dispersed draws of it,
    ``N(m, INIT_SCALE^2 C)``, from the pCN stream."""
    opts = run.options
    laplace = _laplace(run)
    z_init = laplace.sample(run.z0.shape[0], run.generator, inflation=INIT_SCALE**2)
    return gpcn_init(
        run.posterior,
        z_init,
        laplace,
        step_size=opts["step_size"],
        inflation=float(opts["inflation"]),
    )


def _tpcn_start(run, bar: Bar) -> TPCNState:
    """Transport-map pCN's start: the Laplace approximation (as gpCN's), the coupling flow
    fitted from it by variational inference (its solves and reverse passes counted), then
    chains at over-dispersed reference points ``INIT_SCALE * N(0, I)`` from the pCN stream."""
    opts = run.options
    laplace = _laplace(run)
    seed = _derived_seed(run.settings["seed"], _STREAM_TRANSPORT)
    flow = CouplingFlow(
        run.posterior.latent_dim, int(opts["flow_layers"]), int(opts["flow_hidden"]), seed
    )
    transport = TransportMap(laplace.mean, laplace.scale_tril, flow).to(run.posterior.device)
    steps = int(opts["flow_steps"])

    def shown(step: int) -> None:
        if (step + 1) % 25 == 0 or step + 1 == steps:
            bar.postfix(flow_fit=f"{step + 1}/{steps}")

    fit = fit_transport(
        run.posterior,
        transport,
        steps=steps,
        particles=int(opts["flow_particles"]),
        lr=float(opts["flow_lr"]),
        generator=torch.Generator().manual_seed(seed),
        progress=shown,
    )
    run.extra_forward_solves += fit.num_forward_solves
    run.gradient_evaluations += fit.num_gradient_evaluations
    run.transport = transport
    d = run.posterior.latent_dim
    u0 = INIT_SCALE * torch.randn(run.z0.shape[0], d, generator=run.generator, dtype=torch.float64)
    return tpcn_init(run.posterior, u0, transport, step_size=opts["step_size"])


def _laplace(run):
    opts = run.options
    laplace = laplace_approximation(
        run.posterior, run.z0, steps=int(opts["laplace_steps"]), lr=float(opts["laplace_lr"])
    )
    # contiguous, as a restored state's tensors are: the same matmul kernels, the same bits
    laplace = laplace._replace(
        mean=laplace.mean.contiguous(), scale_tril=laplace.scale_tril.contiguous()
    )
    run.extra_forward_solves += laplace.num_forward_solves
    run.gradient_evaluations += laplace.num_gradient_evaluations
    # where each start's ascent ended: far apart values mean the chains, which all start
    # around the best one, may hide another mode from R-hat
    run.laplace_starts = [float(v) for v in laplace.start_log_density.cpu()]
    return laplace


def _laplace_start(run):
    """NUTS with ``mass="laplace"``: over-dispersed starts ``N(m, INIT_SCALE^2 C)`` and the
    Laplace covariance ``C`` as the (fixed, dense) inverse mass matrix."""
    laplace = _laplace(run)
    generator = torch.Generator().manual_seed(_derived_seed(run.settings["seed"], _STREAM_NUTS))
    z0 = laplace.sample(run.z0.shape[0], generator, inflation=INIT_SCALE**2)
    return z0[run.chain_ids], laplace.covariance


def _pooled_start(run, z0, covariance, kwargs: dict[str, Any], bar: Bar):
    """``mass="pooled"``: the estimation stages of the pooled warm-up (one NUTS stream per
    stage, derived from the run's seed); updates ``kwargs`` with the estimated mass and the
    step sizes reached, and returns the chains' states and the final warm-up's length."""
    from .pooled import POOLED_STAGES, pooled_schedule, pooled_warmup

    seed = run.settings["seed"]
    final_warmup = pooled_schedule(run.settings["num_warmup"])[1]
    warm = pooled_warmup(
        run.posterior,
        z0,
        covariance,
        num_warmup=run.settings["num_warmup"],
        seeds=[_derived_seed(seed, _STREAM_POOLED + k) for k in range(len(POOLED_STAGES))],
        target_accept=kwargs["target_accept"],
        max_tree_depth=kwargs["max_tree_depth"],
        chain_ids=run.chain_ids,
        step_size=kwargs["step_size"],
        progress=lambda chain, iteration, stats: bar.step(),
    )
    run.gradient_evaluations += warm.num_evaluations
    run.warmup_divergences += warm.divergences
    run.iteration += run.settings["num_warmup"] - final_warmup
    run.mass_corrections = list(warm.corrected)
    kwargs.update(inverse_mass_matrix=warm.inverse_mass_matrix, step_size=warm.step_size)
    return warm.z, final_warmup


def run_nuts(run, store: RunCheckpoint | None, bar: Bar) -> None:
    from .nuts import nuts_run

    s = run.settings
    options = run.options

    live = [run.divergences]

    def on_iteration(chain: int, iteration: int, stats: dict) -> None:
        bar.step()
        if stats["diverging"] and not stats["warmup"]:
            live[0] += 1
            bar.postfix(divergences=live[0])

    while not run.complete:
        start = time.perf_counter()
        live[0] = run.divergences
        length = min(s["chunk_size"], run.kept - run.draws_written)
        kwargs: dict[str, Any] = {
            "num_draws": length * s["thin"],
            "num_warmup": s["num_warmup"] if run.nuts is None else 0,
            "seed": _derived_seed(s["seed"], _STREAM_NUTS),
            "target_accept": options["target_accept"],
            "max_tree_depth": options["max_tree_depth"],
            "full_mass": options["full_mass"],
            "progress": on_iteration,
            "chain_ids": run.chain_ids,
        }
        if run.nuts is None:
            z0 = run.z0[run.chain_ids]
            kwargs.update(step_size=options["step_size"], adapt=True)
            if options["mass"] == "fixed":  # given by the caller (e.g. extend_run)
                kwargs.update(
                    full_mass=True, inverse_mass_matrix=run.fixed_mass, adapt_mass_matrix=False
                )
            if options["mass"] in ("laplace", "pooled"):
                z0, covariance = _laplace_start(run)
                kwargs.update(
                    full_mass=True, inverse_mass_matrix=covariance, adapt_mass_matrix=False
                )
            if options["mass"] == "pooled":
                z0, final_warmup = _pooled_start(run, z0, covariance, kwargs, bar)
                kwargs["num_warmup"] = final_warmup
        else:
            z0 = run.nuts["z"]
            kwargs.update(
                step_size=run.nuts["step_size"],
                full_mass=run.nuts["inverse_mass_matrix"].dim() == 3,
                inverse_mass_matrix=run.nuts["inverse_mass_matrix"],
                rng_state=run.nuts["rng_state"],
                adapt=False,
            )
        out = nuts_run(run.posterior, z0, **kwargs)
        take = slice(s["thin"] - 1, None, s["thin"])
        kept = {name: getattr(out, name)[:, take] for name in results.NUTS_STATS}
        kept["z"] = out.z[:, take].to(run.posterior.device)
        run.nuts = {
            "z": out.z[:, -1].to(torch.float64),
            "step_size": out.adapted_step_size.to(torch.float64),
            "inverse_mass_matrix": out.inverse_mass_matrix.to(torch.float64),
            "rng_state": out.rng_state,
        }
        run.divergences += int(kept["diverging"].sum())
        run.warmup_divergences += int(out.num_warmup_divergences.sum())
        run.gradient_evaluations += int(out.num_evaluations.sum())
        chunk = _finish_chunk(run.posterior, kept, run.draws_written)
        run.iteration += kwargs["num_warmup"] + length * s["thin"]
        run.add_chunk(store, chunk)
        run.timed(start)
        bar.postfix(divergences=run.divergences)
        run.checkpoint(store, bar, float(kept["acceptance_rate"].mean()))
