"""The run loop's overhead: ``vaeinv.sample`` against the bare kernel loop, on the demo problem.

For pCN (one batched decode and solve a step) and HMC (one batched decode, solve and gradient a
leapfrog), it times, in the same process and interleaved:

* ``sample``: ``vaeinv.sample(posterior, method, ...)`` with chunks, thinning 1 and the kept
  draws assembled into ``InferenceData`` (no checkpoint folder, no progress bar);
* ``kernel``: the kernel's functions alone, ``pcn_init`` / ``pcn_step`` (``hmc_init`` /
  ``hmc_step``), from the same starts with the same random stream and settings (HMC: the
  identity as a fixed mass, step 0.05, ``trajectory_length`` 1), so both do the same work and
  give the same draws; nothing kept.

and prints the seconds of each (median of ``--repeats``) and their ratio. With ``--baseline-src
PATH`` it also times ``sample`` with the vaeinv source tree at ``PATH`` (a checkout of another
commit, in a subprocess) and prints that ratio: the check that a change of the run layer did not
slow a run down.

    python benchmarks/run_overhead.py [--iterations 200] [--repeats 3] [--baseline-src PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_SAMPLE_ONLY = """
import json, sys, time, torch
torch.set_num_threads(1)
from vaeinv.problems import load_problem
import vaeinv
posterior = load_problem("demo").posterior()
method, iterations, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
settings = json.loads(sys.argv[4])
if method == "hmc":
    settings["inverse_mass_matrix"] = torch.eye(posterior.latent_dim, dtype=torch.float64)
sample = vaeinv.sample  # imported before the clock starts
times = []
for _ in range(repeats):
    start = time.perf_counter()
    sample(posterior, method, **settings)
    times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[len(times) // 2]))
"""


def _kernel_loop(posterior, method: str, iterations: int) -> float:
    """The kernel's functions alone, from the starts and with the random stream ``sample``
    uses, so that both do the same work and give the same draws."""
    import torch

    from vaeinv.kernels.hmc import freeze_hmc, hmc_init, hmc_step
    from vaeinv.kernels.pcn import freeze_adaptation, pcn_init, pcn_step
    from vaeinv.kernels.starts import INIT_SCALE, STREAM_INIT, STREAM_KERNEL, derived_seed

    starts = torch.Generator().manual_seed(derived_seed(0, STREAM_INIT))
    z0 = INIT_SCALE * torch.randn(4, posterior.latent_dim, generator=starts, dtype=torch.float64)
    generator = torch.Generator().manual_seed(derived_seed(0, STREAM_KERNEL))
    warmup = iterations // 2
    start = time.perf_counter()
    if method == "pcn":
        state, step, freeze = pcn_init(posterior, z0), pcn_step, freeze_adaptation
    else:
        state = hmc_init(posterior, z0, step_size=0.05, trajectory_length=1.0)
        step, freeze = hmc_step, freeze_hmc
    for i in range(iterations):
        if i == warmup:
            state = freeze(state)
        state, _ = step(posterior, state, generator, adapt=i < warmup)
    return time.perf_counter() - start


def _sample(posterior, method: str, iterations: int) -> float:
    import torch

    import vaeinv

    sample = vaeinv.sample  # imported before the clock starts
    settings = _settings(method, iterations, posterior.latent_dim, torch)
    start = time.perf_counter()
    sample(posterior, method, **settings)
    return time.perf_counter() - start


def _settings(method: str, iterations: int, d: int, torch) -> dict:
    """The settings both timings share; HMC with the identity as its fixed mass (no Laplace
    start, no mass windows), as the bare loop runs it."""
    out = {
        "num_chains": 4,
        "num_warmup": iterations // 2,
        "num_draws": iterations // 2,
        "thin": 1,
        "progress": False,
        "seed": 0,
    }
    if method == "hmc":
        out.update(
            inverse_mass_matrix=torch.eye(d, dtype=torch.float64),
            step_size=0.05,
            trajectory_length=1.0,
        )
    return out


def _baseline(src: str, method: str, iterations: int, repeats: int) -> float:
    import torch

    env = {**os.environ, "PYTHONPATH": src}
    shared = _settings(method, iterations, 1, torch)
    shared.pop("inverse_mass_matrix", None)  # rebuilt in the subprocess
    settings = json.dumps(shared)
    out = subprocess.run(
        [sys.executable, "-c", _SAMPLE_ONLY, method, str(iterations), str(repeats), settings],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="iterations per chain")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    parser.add_argument("--methods", nargs="+", default=["pcn", "hmc"], choices=["pcn", "hmc"])
    parser.add_argument("--baseline-src", help="a vaeinv source tree (its src/) to compare with")
    args = parser.parse_args()

    import torch

    from vaeinv.problems import load_problem

    torch.set_num_threads(1)
    posterior = load_problem("demo").posterior()
    print(f"demo problem, 4 chains x {args.iterations} iterations, one thread")
    header = "| method | kernel loop (s) | sample (s) | sample / kernel |"
    rule = "|---|---:|---:|---:|"
    if args.baseline_src:
        header += " baseline sample (s) | sample / baseline |"
        rule += "---:|---:|"
    print(header)
    print(rule)
    for method in args.methods:
        kernel, sample = [], []
        for _ in range(args.repeats):  # interleaved, so that drifts hit both
            kernel.append(_kernel_loop(posterior, method, args.iterations))
            sample.append(_sample(posterior, method, args.iterations))
        k, s = statistics.median(kernel), statistics.median(sample)
        row = f"| {method} | {k:.2f} | {s:.2f} | {s / k:.3f} |"
        if args.baseline_src:
            b = _baseline(args.baseline_src, method, args.iterations, args.repeats)
            row += f" {b:.2f} | {s / b:.3f} |"
        print(row)


if __name__ == "__main__":
    main()
