"""Example 4: a prior from your own fields, a stack of realisations or one training image.

Run: ``python examples/04_prior_from_your_fields.py [--fields 3000] [--epochs 20] [--out DIR]``.

1. Stand-ins for a user's data: a stack of ``--fields`` Gaussian log-k realisations on 64 x 64
   cells written to ``DIR/stack.npy`` (as gstools or SGeMS would give them), and one large
   training image of 384 x 384 cells written to ``DIR/image.h5`` with its physical size in
   the HDF5 attributes. Both come from the field model the demo's truth was drawn from.
2. Train a prior on each: ``vaeinv.vae.train_on`` (the same as ``vaeinv train --data FILE``),
   the image cut into 64 x 64 patches every 8 cells. Each folder gets its quality report
   (``quality.md``) against held-out fields.
3. Invert the demo problem's data with each prior (``vaeinv invert demo --prior DIR``, batched
   HMC), and print the error and coverage of the posterior mean against the demo's truth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from vaeinv.fields import GaussianRandomField
from vaeinv.grid import Grid
from vaeinv.vae import train_on

#: the field model of the demo's truth (problems/demo/problem.toml, [truth.generator])
FIELD_MODEL = dict(mean=1.0, std=0.75, length_scale=(0.1, 0.3), kernel="matern", nu=1.5)


def make_user_data(out: Path, num_fields: int) -> tuple[Path, Path]:
    """A stack of realisations (.npy) and a training image with its size (.h5)."""
    stack = GaussianRandomField(Grid(64, 64), **FIELD_MODEL).sample(num_fields, generator=11)
    np.save(out / "stack.npy", stack.numpy())
    # 384 x 384 cells of the same size: a domain of 6 x 6 (the demo's is 1 x 1 on 64 x 64)
    image = GaussianRandomField(Grid(384, 384, 6.0, 6.0), **FIELD_MODEL).sample(1, generator=12)
    with h5py.File(out / "image.h5", "w") as handle:
        dataset = handle.create_dataset("log_k", data=image[0].numpy())
        dataset.attrs.update(nx=384, ny=384, lx=6.0, ly=6.0)
    return out / "stack.npy", out / "image.h5"


def invert_demo(prior: Path, out: Path, budget: list[str]) -> dict:
    """``vaeinv invert demo --prior PRIOR`` and the report's figures against the truth."""
    result = out / f"demo-{prior.name}.nc"
    command = [sys.executable, "-m", "vaeinv.cli", "invert", "demo", "--prior", str(prior)]
    subprocess.run([*command, "--out", str(result), "--no-progress", *budget], check=True)
    subprocess.run(
        [sys.executable, "-m", "vaeinv.cli", "report", str(result), "--out", str(out / prior.name)],
        check=True,
    )
    return json.loads((out / prior.name / "summary.json").read_text())["diagnostics"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=3000, help="fields in the stack")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs at most")
    parser.add_argument("--out", default="out/own-prior", help="output folder")
    parser.add_argument("--stride", type=int, default=8, help="the image's patch stride")
    for flag in ("--chains", "--warmup", "--draws"):
        parser.add_argument(flag, type=int, help="the inversion's (default: the demo's)")
    args = parser.parse_args(argv)
    budget = [
        f"--{name}={value}"
        for name in ("chains", "warmup", "draws")
        if (value := getattr(args, name)) is not None
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stack, image = make_user_data(out, args.fields)
    priors = {
        "stack": train_on(stack, out / "stack-prior", epochs=args.epochs, seed=1),
        "image": train_on(
            image, out / "image-prior", patches=64, stride=args.stride, epochs=args.epochs, seed=1
        ),
    }
    rows = {}
    print("\n| prior | fields | quality targets met | reconstruction | rel. L2 | 2-sd coverage |")
    print("|---|---:|---|---:|---:|---:|")
    for name, trained in priors.items():
        quality = trained.quality
        met = f"{sum(quality['targets'].values())} of {len(quality['targets'])}"
        summary = invert_demo(trained.folder, out, budget)
        print(
            f"| {name} | {trained.num_fields} | {met} | {quality['reconstruction']['mean']:.3f} "
            f"| {summary['rel_l2_error']:.3f} | {100 * summary['coverage_2sd']:.1f} % |"
        )
        rows[name] = {"trained": trained, "summary": summary}
    return rows


if __name__ == "__main__":
    main()
