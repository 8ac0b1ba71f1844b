"""How Gaussian is the latent posterior? Its local curvature against the Laplace mass.

A gradient sampler (NUTS, HMC) with a fixed mass matrix ``M^-1 = L L^T`` can take a leapfrog step
``eps`` only while ``eps < 2 / sqrt(lambda_max)``, where ``lambda_max`` is the largest eigenvalue
of the whitened Hessian ``W(z) = -L^T (d^2 log p / dz^2)(z) L``, in the region the chain visits.
On a Gaussian posterior with ``L L^T`` its covariance, ``W = I`` everywhere and the step can be
of order one. Where ``W`` varies from point to point, or has negative eigenvalues (the log
density is not concave there), no single mass fits and the step size, hence the number of
gradients per draw, is set by the worst region.

For every problem (default ``mdgm-gaussian`` and ``mdgm-channel``) this script fits the Laplace
approximation as the samplers' warm-up does (``laplace_approximation`` from ``--starts``
over-dispersed prior draws ``1.5 N(0, I)``), then computes the full spectrum of ``W`` with
``L`` its Cholesky factor, at the MAP and at ``--points`` draws of ``N(MAP, s^2 L L^T)`` for each
``s`` in ``--scales``. Each Hessian is a central difference of the posterior's gradients along
the ``d`` columns of ``L`` (``2 d`` gradients in batches of ``--batch``), symmetrised. It prints
one row per point: the log density against the MAP's, the extreme eigenvalues of ``W``, how many
are negative, and the step size bound ``2 / sqrt(lambda_max)``.

Run: ``python benchmarks/curvature.py [--problems mdgm-channel] [--points 3] [--h 1e-3]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

DEFAULT_PROBLEMS = ("mdgm-gaussian", "mdgm-channel")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="The whitened Hessian spectrum of a problem's latent posterior at its MAP "
        "and at draws of its Laplace approximation."
    )
    p.add_argument("--problems", nargs="+", default=list(DEFAULT_PROBLEMS))
    p.add_argument("--points", type=int, default=3, help="draws per scale (default 3)")
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        default=[0.5, 1.0],
        help="s: the draws are N(MAP, s^2 C), C the Laplace covariance (default 0.5 1.0)",
    )
    p.add_argument("--starts", type=int, default=4, help="Laplace ascents (default 4)")
    p.add_argument("--h", type=float, default=1e-3, help="difference step, whitened units")
    p.add_argument("--batch", type=int, default=64, help="gradients per batched evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    return p


def gradients(posterior, z: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_density (n,), gradient (n, d))`` at ``z (n, d)``, float64, in batches."""
    values, grads = [], []
    for part in z.split(batch):
        part = part.detach().clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lp = posterior.log_density(part)
            (g,) = torch.autograd.grad(lp.sum(), part)
        values.append(lp.detach().to(torch.float64))
        grads.append(g.to(torch.float64))
    return torch.cat(values), torch.cat(grads)


def whitened_hessian(posterior, z: torch.Tensor, tril: torch.Tensor, h: float, batch: int):
    """``W = -L^T H L`` at ``z (d,)`` by central differences along the columns of ``L``."""
    cols = tril.T  # row j: L e_j
    points = torch.cat([z + h * cols, z - h * cols])
    _, g = gradients(posterior, points, batch)
    d = z.shape[0]
    hl = (g[:d] - g[d:]).T / (2 * h)  # (d, d): column j is H L e_j
    w = -(tril.T @ hl)
    return 0.5 * (w + w.T)


def probe(name: str, opts) -> list[dict]:
    from vaeinv.approx.laplace import laplace_approximation
    from vaeinv.problems.load import load_problem

    posterior = load_problem(name).posterior()
    d = posterior.latent_dim
    gen = torch.Generator().manual_seed(opts.seed)
    t0 = time.perf_counter()
    starts = 1.5 * torch.randn(opts.starts, d, generator=gen, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lap = laplace_approximation(posterior, starts)
    fit_s = time.perf_counter() - t0
    top = float(lap.log_density_at_mean)
    print(f"{name}: Laplace fit {fit_s:.0f} s, log density at the MAP {top:.1f}", flush=True)
    points = [("MAP", lap.mean)]
    for s in opts.scales:
        for i in range(opts.points):
            eps = torch.randn(d, generator=gen, dtype=torch.float64)
            points.append((f"s = {s:g}, draw {i + 1}", lap.mean + s * (lap.scale_tril @ eps)))
    rows = []
    for label, z in points:
        t0 = time.perf_counter()
        lp, _ = gradients(posterior, z[None], 1)
        eig = torch.linalg.eigvalsh(
            whitened_hessian(posterior, z, lap.scale_tril, opts.h, opts.batch)
        )
        lam_max, lam_min = float(eig[-1]), float(eig[0])
        rows.append(
            {
                "problem": name,
                "point": label,
                "log_density_minus_map": float(lp[0]) - top,
                "eig_max": lam_max,
                "eig_min": lam_min,
                "num_negative": int((eig < 0).sum()),
                "eig_median": float(eig.median()),
                "step_bound": 2.0 / math.sqrt(lam_max) if lam_max > 0 else math.inf,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(f"  {label}: done in {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| problem | point | log density - MAP's | eig. max | eig. median | eig. min | "
        "negative | step bound 2 / sqrt(max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['problem']} | {r['point']} | {r['log_density_minus_map']:.1f} | "
            f"{r['eig_max']:.2f} | {r['eig_median']:.2f} | {r['eig_min']:.2f} | "
            f"{r['num_negative']} | {r['step_bound']:.3f} |"
        )
    return "\n".join(lines)


def main(args=None) -> list[dict]:
    opts = build_parser().parse_args(args)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    print(
        f"# curvature: seed {opts.seed}, h {opts.h:g}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    rows = []
    for name in opts.problems:
        rows += probe(name, opts)
    print()
    print(table(rows))
    if opts.out:
        opts.out.write_text(json.dumps(rows, indent=2))
        print(f"[wrote {opts.out}]")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
