"""The trade-off of latent size against reconstruction error and prior-sample statistics.

Trains one VAE per latent size on the same data (by default the `gaussian64` recipe's generator,
with fewer fields and epochs than the shipped prior so that the whole sweep takes minutes),
fits each latent Gaussian, and prints a table: held-out reconstruction error, and the mean, sd
and variogram of prior samples against generator samples.

Run: ``python benchmarks/latent_size.py [--recipe PATH] [--num 3000] [--epochs 8]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_RECIPE = HERE.parent / "src" / "vaeinv" / "priors" / "gaussian64" / "recipe.toml"
# (label, VAEConfig overrides)
LATENTS = {
    "vector 64": {"latent": "vector", "latent_dim": 64},
    "spatial 1 x 16 x 16 = 256": {"latent_channels": 1},
    "spatial 2 x 16 x 16 = 512": {"latent_channels": 2},
    "spatial 4 x 16 x 16 = 1024": {"latent_channels": 4},
}


def evaluate(prior, generator_obj, heldout, num_samples: int, seed: int) -> dict:
    """Reconstruction error and sample statistics of one prior (metrics of benchmarks/prior.py)."""
    sys.path.insert(0, str(HERE))
    import prior as bench  # benchmarks/prior.py

    recon = bench.rel_l2(bench.reconstruct(prior, heldout), heldout)
    gen_fields, _ = bench.sample_generator(
        generator_obj, num_samples, torch.Generator().manual_seed(seed)
    )
    z = torch.randn(
        num_samples, prior.latent_dim, generator=torch.Generator().manual_seed(seed + 1)
    )
    samples = bench.decode_chunked(prior, z)
    lags = list(range(1, 17))
    (gx, gy), (px, py) = bench.variogram(gen_fields, lags), bench.variogram(samples, lags)
    vario = max(abs(bench.rel_diff(p, g)) for p, g in zip(px + py, gx + gy, strict=True))
    return {
        "recon": float(recon.mean()),
        "mean": bench.rel_diff(float(samples.mean()), float(gen_fields.mean())),
        "sd": bench.rel_diff(float(samples.std()), float(gen_fields.std())),
        "variogram": vario,
    }


def main(args=None) -> list[dict]:
    from vaeinv import Prior
    from vaeinv.fields import generate_dataset
    from vaeinv.priors.recipes import load_recipe
    from vaeinv.vae import VAEConfig, train
    from vaeinv.vae.calibration import fit_latent_gaussian

    opts = build_parser().parse_args(args)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    recipe = load_recipe(opts.recipe)
    out = Path(opts.out)
    generator_obj = recipe.field_generator()
    data = generate_dataset(generator_obj, opts.num, opts.seed, out / "data.safetensors")
    heldout = generator_obj.sample(opts.num_heldout, torch.Generator().manual_seed(opts.seed + 7))
    training = dataclasses.replace(recipe.training, epochs=opts.epochs, patience=None)
    print(f"# latent size sweep on `{recipe.name}` data: {opts.num} fields (seed {opts.seed}), ")
    print(f"{opts.epochs} epochs each, beta {training.beta}; {opts.num_heldout} held-out fields, ")
    print(
        f"{opts.num_samples} prior and generator samples; torch threads {torch.get_num_threads()}"
    )
    rows = []
    for label, overrides in LATENTS.items():
        settings = {**dataclasses.asdict(recipe.vae), **overrides}
        if overrides.get("latent") != "vector":
            settings["latent_dim"] = None
        config = VAEConfig(**settings)
        start = time.perf_counter()
        run_dir = out / label.split(" =")[0].replace(" ", "_")
        result = train(config, training, data.fields, run_dir, progress=False)
        fit_latent_gaussian(result.model, data.fields)
        prior = Prior(
            result.model.decoder,
            config.latent_shape,
            data.grid,
            encoder=result.model.encode,
            latent_transform=result.model.latent_prior,
        )
        row = {"latent": label, "seconds": time.perf_counter() - start}
        row.update(evaluate(prior, generator_obj, heldout, opts.num_samples, opts.seed + 11))
        rows.append(row)
        print(f"[{label}: done in {row['seconds']:.0f} s]", flush=True)
    print("\n| latent | held-out rel. L2 | mean | sd | variogram, max over lags 1-16 | train s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['latent']} | {r['recon']:.3f} | {100 * r['mean']:+.1f} % | "
            f"{100 * r['sd']:+.1f} % | {100 * r['variogram']:.0f} % | {r['seconds']:.0f} |"
        )
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="recipe whose data and VAE to use")
    p.add_argument("--num", type=int, default=3000, help="training fields")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--num-heldout", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="out/latent_size", help="folder for data and runs")
    return p


if __name__ == "__main__":
    main()
