"""Hydraulic tomography: does each added pumping test sharpen the posterior?

The shipped problem ``problems/tomography`` (a channelized 64 x 64 aquifer, the ``channel64``
prior, 16 observation wells) inverted with its first 1, 2 and 4 pumping tests, everything else
the same (sampler, seed, chains, budget). For each it prints the relative L2 error of the
posterior-mean log k against the truth, the share of cells whose truth lies within the
posterior mean +- 2 sd, the posterior sd averaged over the cells, the normalised misfit, the
convergence figures (max R-hat and min bulk ESS over latents and field) and the solves and
wall time spent.

    python benchmarks/tomography.py                      # 1, 2 and 4 tests, the problem's budget
    python benchmarks/tomography.py --method gpcn --chains 8 --warmup 1000 --draws 2000
    python benchmarks/tomography.py --quick              # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import torch

from vaeinv import results, sample
from vaeinv.problems import load_problem


def subset(problem, count: int):
    """The problem with its first ``count`` experiments (their data and noise with them)."""
    experiments = problem.experiments[:count]
    return dataclasses.replace(
        problem,
        experiments=experiments,
        data=torch.cat([e.data for e in experiments]),
        noise_std=torch.cat([e.noise_std for e in experiments]),
    )


def run(problem, count: int, args) -> dict:
    posterior = subset(problem, count).posterior()
    defaults = problem.sampler_defaults
    method = args.method or defaults.method
    start = time.perf_counter()
    result = sample(
        posterior, method, num_chains=args.chains or defaults.num_chains,
        num_draws=args.draws or defaults.num_draws,
        num_warmup=args.warmup if args.warmup is not None else defaults.num_warmup,
        seed=defaults.seed, progress=args.progress, **defaults.options_for(method),
    )  # fmt: skip
    wall = time.perf_counter() - start
    diagnostics = results.diagnostics(result)
    sd = result.posterior["log_k"].std(("chain", "draw")).mean().item()
    return {
        "tests": count,
        "values": posterior.num_data,
        "rel_l2": diagnostics["rel_l2_error"],
        "coverage": diagnostics["coverage_2sd"],
        "mean_sd": sd,
        "misfit": diagnostics["normalised_misfit"],
        "rhat": (diagnostics["max_rhat_latent"], diagnostics["max_rhat_field"]),
        "ess": (diagnostics["min_ess_bulk_latent"], diagnostics["min_ess_bulk_field"]),
        "solves": posterior.work.forward_solves,
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--method", help="the sampler (default: the problem's)")
    parser.add_argument("--chains", type=int, help="chains (default: the problem's)")
    parser.add_argument("--draws", type=int, help="iterations after warm-up (the problem's)")
    parser.add_argument("--warmup", type=int, help="warm-up iterations (the problem's)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 chains, 40 + 10")
    parser.add_argument("--progress", action="store_true", help="show each run's progress bar")
    args = parser.parse_args(argv)
    if args.quick:
        args.chains, args.draws, args.warmup = 4, 10, 40
    problem = load_problem("tomography")
    print(f"# tomography: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print(
        "\n| tests | values | rel. L2 | 2-sd coverage | mean sd | misfit "
        "| max R-hat latents / field | min bulk ESS latents / field | solves | wall s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|---|---:|---:|", flush=True)
    rows = []
    for count in args.tests:  # each row as soon as its run ends
        r = run(problem, count, args)
        rows.append(r)
        print(
            f"| {r['tests']} | {r['values']} | {r['rel_l2']:.3f} | {100 * r['coverage']:.1f} % "
            f"| {r['mean_sd']:.3f} | {r['misfit']:.2f} | {r['rhat'][0]:.3f} / {r['rhat'][1]:.3f} "
            f"| {r['ess'][0]:.0f} / {r['ess'][1]:.0f} | {r['solves']} | {r['wall']:.0f} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
