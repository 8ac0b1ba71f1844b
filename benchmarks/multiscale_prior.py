"""Quality of the shipped multiscale priors, level by level: reconstruction of held-out
generator fields, prior samples against generator samples, and how much the finer levels
change the coarse structure. Prints one markdown table per prior.

Per level ``k`` (its grid ``n x n``):

- recon: relative L2 error of level ``k``'s decode of the joint encoding of a held-out field,
  against the field coarsened to ``n x n`` (block log-mean-exp); mean and 90th percentile;
- mean, sd: of decoded prior draws at level ``k`` against coarsened generator fields (relative
  differences);
- variogram: the largest relative difference of the semivariogram along x and y over lags of
  1 to ``n / 4`` cells;
- coarse change: the rms difference between the finest field coarsened to level ``k``'s grid
  and level ``k``'s own decode of the same latent, relative to the spread (rms deviation from
  the mean) of level ``k``'s fields: 0 means the finer levels keep level ``k``'s structure
  exactly.

    python benchmarks/multiscale_prior.py [--priors gaussian16-64 channel16-32-64]
        [--held-out 500] [--samples 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _variogram(fields, max_lag: int):
    out = []
    for lag in range(1, max_lag + 1):
        gx = 0.5 * (fields[..., :, lag:] - fields[..., :, :-lag]).pow(2).mean()
        gy = 0.5 * (fields[..., lag:, :] - fields[..., :-lag, :]).pow(2).mean()
        out += [gx, gy]
    return out


def _level_rows(prior, generator, held: int, draws: int, seed: int) -> list[str]:
    import torch

    from vaeinv.fields.coarsen import coarsen

    gen = torch.Generator().manual_seed(seed)
    fields = generator.sample(held + draws, gen).to(torch.float32)
    test, reference = fields[:held], fields[held:]
    with torch.no_grad():
        recon = prior.decode_levels(prior.encode(test))
        samples = prior.decode_levels(prior.sample_latents(draws, seed + 1).to(prior.dtype))
    rows = []
    fine = samples[-1]
    for k, grid in enumerate(prior.grids):
        factor = test.shape[-1] // grid.nx
        truth = coarsen(test, factor)
        err = (recon[k] - truth).flatten(1).norm(dim=1) / truth.flatten(1).norm(dim=1)
        ref = coarsen(reference, factor)
        draw = samples[k]
        mean_d = float(draw.mean() / ref.mean() - 1)
        sd_d = float(draw.std() / ref.std() - 1)
        lags = max(1, grid.nx // 4)
        vd = max(
            abs(float(a / b - 1))
            for a, b in zip(_variogram(draw, lags), _variogram(ref, lags), strict=True)
        )
        blocks = coarsen(fine, fine.shape[-1] // grid.nx)
        spread = (draw - draw.mean(0)).pow(2).mean().sqrt()
        change = float((blocks - draw).pow(2).mean().sqrt() / spread)
        rows.append(
            f"| {prior.name} | {k} | {grid.ny} x {grid.nx} | {prior.latent_dims[k]} | "
            f"{float(err.mean()):.4f} | {float(err.quantile(0.9)):.4f} | {mean_d:+.1%} | "
            f"{sd_d:+.1%} | {vd:.1%} | {change:.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--priors", nargs="+", default=["gaussian16-64", "channel16-32-64"])
    parser.add_argument("--held-out", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=9100)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    import vaeinv
    from vaeinv.fields import generator_from_config
    from vaeinv.vae.checkpoint import read_metadata

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"held-out fields {args.held_out}, samples {args.samples}, seed {args.seed}")
    print(
        "| prior | level | grid | latents | recon mean | recon p90 | mean | sd | "
        "variogram max abs | coarse change |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.priors:
        prior = vaeinv.Prior.load(name)
        folder = vaeinv.priors.vae.priors_folder() / name
        path = folder if (folder / "multiscale.json").exists() else Path(name)
        meta = read_metadata(path / "level0.json")
        generator = generator_from_config(meta["generator_config"])
        for row in _level_rows(prior, generator, args.held_out, args.samples, args.seed):
            print(row, flush=True)


if __name__ == "__main__":
    main()
