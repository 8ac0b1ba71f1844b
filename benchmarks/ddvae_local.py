"""Where the error of a domain-decomposed inversion of ``ddvae-gaussian128`` comes from: each
subdomain's MAP field under four local problems, against the global MAP on the same cells.
Prints one markdown table.

For each subdomain (its 72 x 72 cells, overlap included), the relative L2 error against the
truth of:

- the local MAP with the local VAE prior (``gaussian-patch72``) and the modelled interfaces
  (the problem's [decomposition], prepared as ``vaeinv invert`` does);
- the same with the truth's own interface pressures (``face_pressures`` of the truth's global
  solve) and no interface variance;
- both again with a local Gaussian-field prior instead: the generator's own covariance on the
  subdomain's cells (Karhunen-Loeve, ``--kl-modes`` modes), so that the prior is exact and only
  the local data and interfaces remain;
- the best fits of the truth in each prior's latent space (the priors' resolution);
- the global MAP (the problem's [prior], 512 KL modes, all 256 sensors) on the same cells;

and the modelled interface pressures' RMS error against the truth's, with its squared
Mahalanobis distance per value under the interface model's covariance (near or under 1 when
the model is not over-confident).

Each MAP is `laplace_approximation` (4 starts, ``--steps`` Adam steps, 5 Gauss-Newton steps).

    python benchmarks/ddvae_local.py [--problem ddvae-gaussian128] [--steps 300]
        [--kl-modes 400] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

PROBLEM = "ddvae-gaussian128"


def relative(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def local_map(spec, prior, steps: int) -> np.ndarray:
    from vaeinv.approx.laplace import laplace_approximation
    from vaeinv.decomposition import build_local

    posterior, _ = build_local(spec, prior)
    gen = torch.Generator().manual_seed(spec.index)
    starts = torch.randn(4, posterior.latent_dim, generator=gen, dtype=torch.float64)
    starts[0] = 0.0
    fit = laplace_approximation(posterior, starts, steps=steps, newton_steps=5)
    return posterior.decode(fit.mean[None])[0].detach().double().numpy()


def best_fit(prior, target: np.ndarray, steps: int = 500, sd: float = 0.05) -> np.ndarray:
    """The decoded ``z`` minimising ``|decode(z) - target|^2 / sd^2 + |z|^2`` (Adam)."""
    z = torch.zeros(prior.latent_dim, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([z], lr=0.05)
    goal = torch.as_tensor(target)
    for _ in range(steps):
        optimizer.zero_grad()
        field = prior.decode(z[None])[0].to(torch.float64)
        loss = (field - goal).square().sum() / sd**2 + z.square().sum()
        loss.backward()
        optimizer.step()
    return prior.decode(z[None])[0].detach().double().numpy()


def interface_error(spec, faces: dict) -> dict:
    """The modelled interface pressures against the truth's: RMS error, and the squared
    Mahalanobis distance per value under the model's covariance (about 1 when calibrated)."""
    error = np.concatenate([spec.dirichlet[side] - faces[side] for side in spec.interfaces])
    cov = spec.interface_cov + 1e-12 * np.eye(len(error)) * np.trace(spec.interface_cov)
    distance = float(error @ np.linalg.solve(cov, error)) / len(error)
    return {"interface_rms": float(np.sqrt(np.mean(error**2))), "interface_mahalanobis": distance}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problem", default=PROBLEM, help="a problem with [decomposition]")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--kl-modes", type=int, default=400)
    parser.add_argument("--out", help="write the rows as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from vaeinv.approx.laplace import laplace_approximation
    from vaeinv.decomposition import face_pressures
    from vaeinv.priors import Prior
    from vaeinv.priors.gaussian_field import GaussianFieldPrior
    from vaeinv.problems import load_problem

    start = time.perf_counter()
    problem = load_problem(args.problem)
    decomposition = problem.decomposition.prepare(problem)
    truth = problem.truth.double()
    pressure = problem.build_physics().solve(truth[None])[0]
    local = decomposition.specs[0].prior  # the problem's local VAE (one for all)
    vae = Prior.load(local) if isinstance(local, str) else local
    grid = decomposition.specs[0].local_grid()
    g = problem.build_prior()  # the generator's Gaussian field on the whole grid
    kl = GaussianFieldPrior(
        grid, mean=g.mean, std=g.std, length_scale=g.length_scale, kernel=g.kernel, nu=g.nu,
        num_modes=args.kl_modes,
    )  # fmt: skip
    share = kl.explained_variance
    print(f"# Local MAP errors on {args.problem}\n\n- local KL prior: {args.kl_modes} modes, "
          f"{share:.2%} of the variance; {args.steps} Adam steps per MAP\n")  # fmt: skip
    gpost = problem.posterior()
    fit = laplace_approximation(
        gpost, torch.zeros(1, gpost.latent_dim, dtype=torch.float64), steps=args.steps,
        newton_steps=3,
    )  # fmt: skip
    global_map = gpost.decode(fit.mean[None])[0].detach().double().numpy()
    rows = []
    for s, spec in zip(decomposition.partition.subdomains, decomposition.specs, strict=True):
        faces = {k: v.numpy() for k, v in face_pressures(truth, pressure, s).items()}
        exact = dataclasses.replace(
            spec, dirichlet={**spec.dirichlet, **faces},
            interface_cov=np.zeros_like(spec.interface_cov),
        )  # fmt: skip
        local_truth = truth[s.rows, s.cols].numpy()
        row = {"subdomain": s.index, **interface_error(spec, faces)}
        for name, prior in (("vae", vae), ("kl", kl)):
            row[f"{name}_modelled"] = relative(local_map(spec, prior, args.steps), local_truth)
            row[f"{name}_exact"] = relative(local_map(exact, prior, args.steps), local_truth)
            row[f"{name}_best_fit"] = relative(best_fit(prior, local_truth), local_truth)
        row["global_map"] = relative(global_map[s.rows, s.cols], local_truth)
        rows.append(row)
        print(f"  subdomain {s.index} done ({time.perf_counter() - start:.0f} s)", flush=True)
    print(
        "\n| subdomain | VAE, modelled | VAE, exact | KL, modelled | KL, exact | VAE best fit "
        "| KL best fit | global MAP | interface RMS error | its Mahalanobis / value |"
        "\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    keys = ("vae_modelled", "vae_exact", "kl_modelled", "kl_exact", "vae_best_fit",
            "kl_best_fit", "global_map")  # fmt: skip
    for r in rows:
        print(f"| {r['subdomain']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " | "
              f"{r['interface_rms']:.2e} | {r['interface_mahalanobis']:.3f} |")  # fmt: skip
    print(f"\nwhole grid: global MAP {relative(global_map, truth.numpy()):.3f}; "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
