"""Multilevel inversion of the MDGM benchmark problems with the shipped multiscale priors:
staged coarse-to-fine runs (MDGM's scheme), vaeinv's MLDA with two and three levels, tinyDA's
MLDA on the same two-level posterior, and pCN on the fine level alone, in one run each with
the same truths, sensors, noise, chains and seed. Prints one markdown table per problem.

Columns: fine solves; coarse solves (per level, coarsest first); cost in fine-solve
equivalents (fine solves plus each level's solves weighted by its measured time per solve
relative to the fine level's, timed in this run on a batch of ``--chains`` latents; a solve
with a gradient, as HMC's at the coarsest level in the ``-hmc`` configurations, weighted by
the time of a solve with its gradient); the
smallest bulk ESS over the latents per 1000 fine-solve equivalents; max R-hat over the latents
and over the field quantities (lp, mean log k, log k at five cells); relative L2 error of the
posterior-mean log k; the fraction of cells whose truth lies within mean +- 2 sd; wall time.

    python benchmarks/multilevel.py [--problems mdgm-gaussian mdgm-channel]
        [--configs pcn staged mlda-2 mlda-3 mlda-2-hmc mlda-3-hmc mlda-2-shared
                   mlda-2-shared-hmc tinyda-2] [--chains 4] [--warmup 500] [--draws 2000]
        [--subchain 5] [--hmc-subchain 2] [--threads 1] [--out FILE.json]

Configurations: ``mlda-2`` / ``mlda-3`` use the multiscale prior's levels (each coarse level
its own latents, the finer latents moved by pCN at the fine level), the coarsest steps pCN;
``-hmc`` runs the coarsest subchains (``--hmc-subchain`` steps) with batched HMC;
``mlda-2-shared`` has one 16 x 16 level over the whole fine latent (the fine field coarsened,
``[multilevel] latent = "shared"``).

tinyDA (``tinyda==0.9.21``) pins ``arviz<0.19`` and ``numpy<2``, which vaeinv's own
requirements exclude; install it beside vaeinv without its dependencies
(``pip install --no-deps tinyda==0.9.21``, or ``make bench-multilevel``); its ``ray`` import
is satisfied by ``ray`` if installed, else by an empty stand-in module (tinyDA runs its chains
one after another here).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time

#: the levels (grid sizes) each configuration uses; the last is the fine grid
LEVELS = {
    "pcn": None,
    "staged": "all",
    "mlda-2": (16, 64),
    "mlda-3": (16, 32, 64),
    "mlda-2-hmc": (16, 64),
    "mlda-3-hmc": (16, 32, 64),
    "mlda-2-shared": "shared",
    "mlda-2-shared-hmc": "shared",
    "tinyda-2": (16, 64),
}
#: the issue's targets per problem: (min-latent ESS per 1000 fine-solve equivalents, max R-hat,
#: coverage, relative L2)
TARGETS = {"mdgm-gaussian": (200, 1.01, 0.85, 0.32), "mdgm-channel": (10, 1.01, 0.85, 0.33)}
#: the single-scale figures of docs/results/inversion.md (today's best samplers, not re-run)
SINGLE_SCALE = {
    "mdgm-gaussian": "NUTS, `gaussian64` (the default, 4 x (150 + 1000)): 79.7 ESS / 1000 solves, "
    "R-hat 1.008, rel. L2 0.324, coverage 88.4 %, 1871 s",
    "mdgm-channel": "batched HMC, `channel64` (the default, 4 x (300 + 900)): 1.26 ESS / 1000 "
    "solves, R-hat 1.009 / 1.007, rel. L2 0.340, coverage 97.9 %, 4139 s",
}


def _shared_levels(problem, fine, size: int = 16):
    """The fine posterior and a coarse one over its whole latent: its fields coarsened to
    ``size x size`` and solved there (``[multilevel] latent = "shared"`` builds the same)."""
    from vaeinv import Grid, Posterior
    from vaeinv.fields.coarsen import coarsen
    from vaeinv.physics import PointSensors
    from vaeinv.priors import CoarsenedPrior

    grid = Grid(size, size, lx=problem.grid.lx, ly=problem.grid.ly)
    noise = problem.noise_fraction if problem.noise_kind == "relative" else problem.noise_std
    coarse = Posterior(
        CoarsenedPrior(fine.prior, grid),
        problem.physics.build(grid),
        PointSensors(grid, problem.sensors_xy),
        problem.data,
        noise,
        noise_kind=problem.noise_kind,
        truth=coarsen(problem.truth, problem.grid.ny // size),
    )
    return [coarse, fine]


def _levels(problem, sizes):
    levels = problem.level_posteriors()
    if sizes in (None, "all"):
        return levels
    if sizes == "shared":
        return _shared_levels(problem, levels[-1])
    have = [p.grid.ny for p in levels]
    if not set(sizes) <= set(have):
        return None
    return [levels[have.index(n)] for n in sizes]


def _seconds_per_solve(posterior, num_chains: int, repeats: int = 5) -> tuple[float, float]:
    """Seconds per latent of a decode and solve, and of a decode, solve and gradient."""
    import torch

    z = torch.randn(num_chains, posterior.latent_dim, generator=torch.Generator().manual_seed(0))
    z = z.to(torch.float64)
    out = []
    for grad in (False, True):
        posterior.evaluate(z, grad=grad)
        start = time.perf_counter()
        for _ in range(repeats):
            posterior.evaluate(z, grad=grad)
        out.append((time.perf_counter() - start) / (repeats * num_chains))
    return out[0], out[1]


def _vaeinv_run(levels, config: str, args) -> tuple[object, dict]:
    import vaeinv

    fine = levels[-1]
    run = {
        "num_chains": args.chains,
        "num_warmup": args.warmup,
        "num_draws": args.draws,
        "thin": args.thin,
        "seed": args.seed,
        "progress": False,
    }
    if config == "pcn":
        return vaeinv.sample(fine, "pcn", **run), {}
    if config == "staged":
        idata = vaeinv.sample(
            fine, "staged", coarse=levels[:-1], stage_iterations=args.stage_iterations, **run
        )
        return idata, {}
    options = {"subchain_length": args.subchain, "fine_step_size": args.fine_step}
    if config.endswith("-hmc"):
        options.update(coarse_kernel="hmc", subchain_length=args.hmc_subchain)
    return vaeinv.sample(fine, "mlda", coarse=levels[:-1], **options, **run), {}


def _tinyda_run(levels, args):
    import torch
    from tinyda_mlda import run_tinyda

    from vaeinv import results

    out = run_tinyda(
        levels,
        num_chains=args.chains,
        num_warmup=args.warmup,
        num_draws=args.draws,
        subchain_length=args.subchain,
        step_size=0.1,
        seed=args.seed,
    )
    fine = levels[-1]
    z = torch.as_tensor(out["z"], dtype=torch.float64)[:, :: args.thin]
    with torch.no_grad():
        fields = torch.stack([fine.decode(chain) for chain in z])
    idata = results.to_inference_data(fine, {"z": z, "log_k": fields})
    idata.attrs["forward_solves"] = out["fine_solves"]
    for k, solves in enumerate(out["coarse_solves"]):
        idata.attrs[f"forward_solves_level_{k}"] = solves
    return idata, {"wall_s": out["wall_s"]}


def _row(problem_name, config, idata, wall, seconds, levels) -> dict:
    import arviz as az

    from vaeinv import results

    d = results.diagnostics(idata)
    ess = az.ess(idata, var_names=["z"], method="bulk")["z"].values
    bounds = [0] + [p.latent_dim for p in levels]
    by_level = [float(ess[a:b].min()) for a, b in itertools.pairwise(bounds) if b > a]
    attrs = idata.attrs
    fine = int(attrs["forward_solves"])
    coarse = [int(attrs.get(f"forward_solves_level_{k}", 0)) for k in range(len(levels) - 1)]
    grads = [int(attrs.get(f"gradient_evaluations_level_{k}", 0)) for k in range(len(coarse))]
    t_fine = seconds[levels[-1].grid.ny][0]
    cost = fine + sum(
        ((n - g) * seconds[p.grid.ny][0] + g * seconds[p.grid.ny][1]) / t_fine
        for n, g, p in zip(coarse, grads, levels, strict=False)
    )
    return {
        "problem": problem_name,
        "config": config,
        "levels": [p.grid.ny for p in levels],
        "fine_solves": fine,
        "coarse_solves": coarse,
        "cost_fse": cost,
        "ess_per_1000_fse": 1000 * d["min_ess_bulk_latent"] / cost,
        "min_ess_bulk_latent": d["min_ess_bulk_latent"],
        "min_ess_by_level": by_level,
        "max_rhat_latent": d["max_rhat_latent"],
        "max_rhat_field": d["max_rhat_field"],
        "rel_l2_error": d["rel_l2_error"],
        "coverage_2sd": d["coverage_2sd"],
        "acceptance_rate": d["acceptance_rate"],
        "wall_s": wall,
    }


def _print_table(rows: list[dict], problem_name: str) -> None:
    ess_t, rhat_t, cov_t, l2_t = TARGETS[problem_name]
    print(f"\n### {problem_name}\n")
    print(
        "| configuration | levels | fine solves | coarse solves | cost (fine-solve eq.) | "
        "min-latent ESS / 1000 eq. | max R-hat (latent / field) | rel. L2 | 2-sd coverage | "
        "acceptance | min ESS by level's own latents | wall s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['config']} | {'-'.join(map(str, r['levels']))} | {r['fine_solves']} | "
            f"{' + '.join(map(str, r['coarse_solves'])) or '-'} | {r['cost_fse']:.0f} | "
            f"{r['ess_per_1000_fse']:.3g} | {r['max_rhat_latent']:.3f} / "
            f"{r['max_rhat_field']:.3f} | {r['rel_l2_error']:.3f} | "
            f"{r['coverage_2sd']:.1%} | {r['acceptance_rate']:.3f} | "
            f"{' / '.join(f'{e:.0f}' for e in r['min_ess_by_level'])} | {r['wall_s']:.0f} |"
        )
    print(
        f"\ntargets: ESS / 1000 eq. >= {ess_t}, R-hat <= {rhat_t}, coverage >= {cov_t:.0%}, "
        f"rel. L2 <= {l2_t}; single scale (docs/results/inversion.md, not re-run): "
        f"{SINGLE_SCALE[problem_name]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["mdgm-gaussian", "mdgm-channel"])
    parser.add_argument("--configs", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--thin", type=int, default=1)
    parser.add_argument("--subchain", type=int, default=5)
    parser.add_argument("--fine-step", type=float, default=0.5)
    parser.add_argument("--hmc-subchain", type=int, default=2)
    parser.add_argument("--stage-iterations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", help="also write the rows as JSON")
    args = parser.parse_args()

    import torch

    from vaeinv.problems import load_problem

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"settings: {json.dumps(vars(args))}")
    all_rows = []
    for name in args.problems:
        problem = load_problem(name)
        every = problem.level_posteriors()
        seconds = {p.grid.ny: _seconds_per_solve(p, args.chains) for p in every}
        print(
            f"{name}: seconds per decode-and-solve / with gradient (batch of {args.chains}): "
            + ", ".join(
                f"{n} x {n}: {s * 1e3:.2f} / {g * 1e3:.2f} ms" for n, (s, g) in seconds.items()
            )
        )
        rows = []
        for config in args.configs:
            levels = _levels(problem, LEVELS[config])
            if levels is None:
                continue
            if config == "pcn":
                levels = [every[-1]]
            start = time.perf_counter()
            if config.startswith("tinyda"):
                idata, extra = _tinyda_run(levels, args)
            else:
                idata, extra = _vaeinv_run(levels, config, args)
            wall = extra.get("wall_s", time.perf_counter() - start)
            row = _row(name, config, idata, wall, seconds, levels)
            print(json.dumps(row, default=float), flush=True)
            rows.append(row)
        _print_table(rows, name)
        all_rows += rows
    if args.out:
        with open(args.out, "w") as f:
            json.dump(all_rows, f, indent=1, default=lambda v: None if math.isnan(v) else v)


if __name__ == "__main__":
    main()
