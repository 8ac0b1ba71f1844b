"""The coarsest level's posterior alone (the 16 x 16 level of a problem's multiscale prior,
solved on the 16 x 16 grid), sampled with pCN and with batched HMC: whether the kernel that
MLDA runs on that level can mix it at all. Prints one markdown table.

    python benchmarks/coarse_level.py [--problems mdgm-gaussian mdgm-channel] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

#: (method, warm-up, draws, options) of each run, 4 chains
RUNS = (("pcn", 1000, 4000, {}), ("hmc", 300, 1000, {"trajectory_length": 3.0}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=["mdgm-gaussian", "mdgm-channel"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    import vaeinv
    from vaeinv import results
    from vaeinv.problems import load_problem

    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        "| problem | level | method | chains x (warm-up + draws) | solves | gradients | "
        "min-latent bulk ESS | ESS / 1000 solves | max R-hat | acceptance | wall s |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.problems:
        coarse = load_problem(name).level_posteriors()[0]
        for method, warmup, draws, options in RUNS:
            start = time.perf_counter()
            idata = vaeinv.sample(
                coarse, method, num_chains=4, num_warmup=warmup, num_draws=draws, thin=1,
                seed=args.seed, progress=False, **options,
            )  # fmt: skip
            wall = time.perf_counter() - start
            d = results.diagnostics(idata)
            solves = int(idata.attrs["forward_solves"])
            grads = int(idata.attrs.get("gradient_evaluations", 0))
            ess = d["min_ess_bulk_latent"]
            print(
                f"| {name} | {coarse.grid.ny} x {coarse.grid.nx}, {coarse.latent_dim} latents | "
                f"{method} | 4 x ({warmup} + {draws}) | {solves} | {grads} | {ess:.0f} | "
                f"{1000 * ess / solves:.3g} | {d['max_rhat_latent']:.3f} | "
                f"{d['acceptance_rate']:.3f} | {wall:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
