"""Domain-decomposed VAE inversion (DD-VAE) of ``ddvae-gaussian128`` against a global
inversion of the same data, in one run each with the same truth, sensors, noise and seed.
Prints one markdown table.

DD-VAE: the problem's [decomposition] (2 x 2 subdomains of 72 x 72 cells, the local prior
``gaussian-patch72``, the interface GP refined by one global solve), prepared once, then the
subdomains sampled with ``--method`` (``--chains`` chains, ``--warmup`` + ``--draws``
iterations each) once per entry of ``--workers`` (0: every task in this process, one after
another; N: a Dask ``LocalCluster`` of N single-threaded worker processes, its start-up
included in the wall time). The reference: the problem's global prior (the generator's own
Gaussian field, 512 KL modes) sampled with ``--reference`` (NUTS with the Laplace mass by
default) on the whole 128 x 128 grid.

Columns: relative L2 error of the posterior-mean log k; the fraction of cells whose truth lies
within mean +- 2 sd; the smallest bulk ESS over the latents (per subdomain for DD-VAE: the
smallest over the subdomains); the largest rank-normalised R-hat over the latents (the largest
over the subdomains); cost in global-solve equivalents (every solve and every gradient's
adjoint solve; a local solve counted as its share of the cells, 72^2 / 128^2, plus the
preparation's local and global solves); wall time (the preparation's included); the wall time
to an ESS of 100 in every subdomain, extrapolated as wall x 100 / min ESS; and the seams: the
RMS jump across the cores' faces over the RMS jump across all faces, gathered -> blended, and
the posterior mean's seam error against the truth, gathered -> blended.

    python benchmarks/ddvae.py [--workers 0 1 2 4] [--method gpcn] [--chains 4]
        [--warmup 300] [--draws 1000] [--reference nuts] [--ref-warmup 200]
        [--ref-draws 500] [--threads 1] [--local-kl MODES] [--out FILE.json]

``--local-kl MODES`` replaces the local VAE by the problem's own Gaussian field on each
subdomain's cells (``MODES`` Karhunen-Loeve modes; DD-KL): the exact local prior, so that what
remains of the error is the decomposition's (local data, interfaces, blending).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

PROBLEM = "ddvae-gaussian128"


def _metrics(idata) -> dict:
    from vaeinv.results import diagnostics

    d = diagnostics(idata)
    return {
        k: d[k] for k in ("rel_l2_error", "coverage_2sd", "max_rhat_latent", "min_ess_bulk_latent")
    }


def run_decomposed(decomposition, prep_seconds: float, workers: int, args) -> tuple[dict, object]:
    from vaeinv.decomposition.run import sample_decomposed
    from vaeinv.results.decomposed import subdomain_diagnostics

    start = time.perf_counter()
    idata = sample_decomposed(
        decomposition, args.method, num_chains=args.chains, num_warmup=args.warmup,
        num_draws=args.draws, seed=args.seed, workers=workers or None, threads=args.threads,
    )  # fmt: skip
    wall = time.perf_counter() - start
    per = subdomain_diagnostics(idata)
    attrs = idata.attrs
    share = attrs["local_cells"]
    share = json.loads(share) if isinstance(share, str) else share
    ratio = float(share[0]) / float(attrs["global_cells"])
    local = attrs["forward_solves"] + attrs["gradient_evaluations"] + attrs["local_solves"]
    row = {
        "name": f"{_label(args)}, {args.method}, {workers or 'in-process'} worker(s)",
        "workers": workers,
        **_metrics(idata),
        "min_ess_bulk_latent": min(p["min_ess_bulk_latent"] for p in per),
        "max_rhat_latent": max(p["max_rhat_latent"] for p in per),
        "subdomain_rhat": [p["max_rhat_latent"] for p in per],
        "subdomain_ess": [p["min_ess_bulk_latent"] for p in per],
        "solves": local * ratio + attrs["global_solves"],
        "sampling_s": wall,
        "wall_s": wall + prep_seconds,
        "seam_ratio": (attrs["seam_ratio_gathered"], attrs["seam_ratio_blended"]),
        "seam_error": (attrs.get("seam_error_gathered"), attrs.get("seam_error_blended")),
        "rel_l2": (attrs.get("rel_l2_gathered"), attrs.get("rel_l2_blended")),
    }
    return row, idata


def _label(args) -> str:
    return "DD-VAE" if not args.local_kl else f"DD-KL ({args.local_kl} local modes)"


def run_reference(problem, args) -> dict:
    from vaeinv.runs.sampling import sample

    start = time.perf_counter()
    posterior = problem.posterior()
    options = problem.sampler_defaults.options_for(args.reference)
    if args.reference == "nuts":
        options = {"mass": "laplace", "max_tree_depth": 8, **options}
    idata = sample(
        posterior, args.reference, num_chains=args.chains, num_warmup=args.ref_warmup,
        num_draws=args.ref_draws, seed=args.seed, progress=False, **options,
    )  # fmt: skip
    wall = time.perf_counter() - start
    attrs = idata.attrs
    return {
        "name": f"global, Gaussian field (512 KL modes), {args.reference}",
        "workers": None,
        **_metrics(idata),
        "solves": attrs["forward_solves"] + attrs["gradient_evaluations"],
        "sampling_s": wall,
        "wall_s": wall,
        "seam_ratio": None,
        "seam_error": None,
    }


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def table(rows: list[dict]) -> str:
    head = (
        "| run | rel. L2 | coverage | min ESS | max R-hat | global-solve eq. | wall s | "
        "s to ESS 100 | seam ratio | seam error |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
    )
    lines = [head]
    for r in rows:
        to_100 = r["wall_s"] * 100 / r["min_ess_bulk_latent"] if r["min_ess_bulk_latent"] else None
        seam = "-" if r["seam_ratio"] is None else "{:.2f} -> {:.2f}".format(*r["seam_ratio"])
        err = "-"
        if r["seam_error"] and r["seam_error"][0] is not None:
            err = "{:.3f} -> {:.3f}".format(*r["seam_error"])
        lines.append(
            f"| {r['name']} | {_fmt(r['rel_l2_error'], '.3f')} | {_fmt(r['coverage_2sd'], '.1%')} "
            f"| {_fmt(r['min_ess_bulk_latent'], '.0f')} | {_fmt(r['max_rhat_latent'], '.3f')} "
            f"| {_fmt(r['solves'], '.0f')} | {_fmt(r['wall_s'], '.0f')} | {_fmt(to_100, '.0f')} "
            f"| {seam} | {err} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--method", default="gpcn")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument(
        "--reference", default="nuts", help="the global run's kernel ('none': skip)"
    )
    parser.add_argument("--ref-warmup", type=int, default=200)
    parser.add_argument("--ref-draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--local-kl", type=int, default=0, metavar="MODES",
        help="local priors: the problem's [prior] Gaussian field on each subdomain, MODES modes",
    )  # fmt: skip
    parser.add_argument("--out", help="write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from vaeinv.problems import load_problem

    problem = load_problem(PROBLEM)
    print(f"# DD-VAE benchmark on {PROBLEM}\n")
    print(f"- {os.cpu_count()} CPUs, torch threads {args.threads}, seed {args.seed}; load at start "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    start = time.perf_counter()
    spec = problem.decomposition
    if args.local_kl:
        import dataclasses

        from vaeinv.problems.spec import PriorSpec

        options = {**problem.prior.options, "num_modes": args.local_kl}
        spec = dataclasses.replace(spec, prior=PriorSpec("gaussian-field", None, options))
    decomposition = spec.prepare(problem)
    prep = time.perf_counter() - start
    info = decomposition.info
    sd = info.get("interface_max_sd_after", math.nan)
    print(f"- preparation {prep:.1f} s: {info['local_solves']} local solves, "
          f"{info['global_solves']} global solve(s), {info.get('interface_points_added')} "
          f"interface points added, largest interface sd {sd:.4g}\n")  # fmt: skip
    rows, first = [], None
    for workers in args.workers:
        row, idata = run_decomposed(decomposition, prep, workers, args)
        z = idata.posterior["z"].values
        row["same_draws_as_first"] = bool(first is None or np.array_equal(z, first))
        first = z if first is None else first
        rows.append(row)
        print(f"  {row['name']}: {row['sampling_s']:.0f} s sampling, same draws: "
              f"{row['same_draws_as_first']}", flush=True)  # fmt: skip
    if args.reference != "none":
        rows.append(run_reference(problem, args))
    print()
    print(table(rows))
    by = {r["workers"]: r["sampling_s"] for r in rows if r["workers"] is not None}
    if 1 in by and 2 in by:
        print(f"\nspeed-up of the sampling from 1 to 2 workers: {by[1] / by[2]:.2f}x")
    for r in rows:
        if r["workers"] is not None:
            rhat = np.round(r["subdomain_rhat"], 3).tolist()
            ess = np.round(r["subdomain_ess"], 0).tolist()
            print(f"{r['name']}: per-subdomain max R-hat {rhat}, min ESS {ess}")
            if r["rel_l2"][0] is not None:
                print(
                    "  posterior mean rel. L2, gathered -> blended: {:.3f} -> {:.3f}".format(
                        *r["rel_l2"]
                    )
                )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2, default=float)
    return rows


if __name__ == "__main__":
    main()
