"""Two-level delayed acceptance on the ``demo`` problem, against pCN, at equal fine solves.

The coarse level decodes with the problem's own prior, coarsens the field to 32 x 32 by block
log-mean-exp and solves the same flow problem on the coarse grid, read at the same sensors. The
script prints the time per decode-and-solve of each level, then for MLDA (with and without the
error model) and pCN: wall time, mean acceptance of the fine decisions, fine and coarse solves.

    python benchmarks/mlda_demo.py [--chains 4] [--warmup 100] [--draws 200] [--subchain 5]
"""

from __future__ import annotations

import argparse
import time


def _coarse_posterior(problem, fine, factor: int):
    import torch

    import vaeinv
    from vaeinv.fields.coarsen import coarsen

    g = fine.grid
    grid = vaeinv.Grid(g.nx // factor, g.ny // factor, lx=g.lx, ly=g.ly)
    flow = vaeinv.DarcyFlow(
        grid, dirichlet=dict(problem.physics.dirichlet), source=problem.physics.source
    )
    sensors = vaeinv.PointSensors(grid, fine.sensors.xy)
    prior = fine.prior
    return vaeinv.Posterior.from_callables(
        lambda z: coarsen(prior.decode(z), factor),
        lambda field: sensors(flow.solve(field.to(torch.float64))),
        fine.data,
        fine.noise_std,
        fine.latent_dim,
        grid=grid,
        name=f"{problem.name}-coarse",
    )


def _per_field(posterior, latent_dim: int) -> float:
    import torch

    z = torch.zeros(16, latent_dim, dtype=torch.float64)
    start = time.perf_counter()
    with torch.no_grad():
        posterior.predict(z)
    return (time.perf_counter() - start) / 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--subchain", type=int, default=5)
    args = parser.parse_args()

    import torch

    import vaeinv
    from vaeinv.problems import load_problem

    torch.set_num_threads(1)
    problem = load_problem("demo")
    fine = problem.posterior()
    coarse = _coarse_posterior(problem, fine, 2)
    tf, tc = _per_field(fine, fine.latent_dim), _per_field(coarse, fine.latent_dim)
    print(f"decode + solve per field: fine {tf * 1e3:.1f} ms, coarse {tc * 1e3:.1f} ms")
    print("| method | wall (s) | fine acceptance | fine solves | coarse solves |")
    print("|---|---:|---:|---:|---:|")
    runs = [
        ("mlda", {"coarse": [coarse], "subchain_length": args.subchain}),
        ("mlda, no error model", {"coarse": [coarse], "subchain_length": args.subchain,
                                  "error_model": False}),
        ("pcn", {}),
    ]  # fmt: skip
    for label, options in runs:
        start = time.perf_counter()
        idata = vaeinv.sample(
            fine,
            label.split(",")[0],
            num_chains=args.chains,
            num_warmup=args.warmup,
            num_draws=args.draws,
            thin=1,
            seed=0,
            progress=False,
            **options,
        )
        wall = time.perf_counter() - start
        acceptance = float(idata.sample_stats["acceptance_rate"].mean())
        coarse_solves = idata.attrs.get("coarse_forward_solves", 0)
        print(
            f"| {label} | {wall:.0f} | {acceptance:.3f} | {idata.attrs['forward_solves']} | "
            f"{coarse_solves} |"
        )


if __name__ == "__main__":
    main()
