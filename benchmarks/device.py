"""The device path: solve, solve + gradient and sampler chunks over batch sizes, on CUDA when
there is one (else the CPU), with throughput, memory and host-device synchronisations.

Three tables, each over ``--batches`` (the number of fields, or of chains):

* ``solve``: ``DarcyFlow.solve`` on a batch of ``N x N`` fields (``solver="auto"``, which is
  multigrid on a GPU), and ``solve+grad``: the same with ``p.square().sum().backward()``;
* ``pcn``: a chunk of ``--steps`` pCN steps of the demo problem's posterior (its VAE decode, its
  solve, its likelihood), every chain one row of the batch;
* ``hmc``: a chunk of ``--steps`` batched-HMC iterations of the same posterior (identity mass,
  step size 0.2, trajectory length 1: 3-7 leapfrogs, each a decode, solve and gradient).

Each row gives fields (or chain steps) per second; for the samplers also the time spent inside
``posterior.evaluate`` (decode + solve, + gradient for HMC; timed by a wrapper) and the
bookkeeping share, ``iteration / evaluate - 1`` (proposals, acceptance, the HMC tree's
sampling, adaptation, counters; the target is at most 10 %); the peak memory (``torch.cuda``'s peak
allocation on a GPU; the growth of the process's peak resident size on the CPU, coarse) and the
host-device synchronisations per call or per sampler step. Synchronisations are counted by a
``TorchDispatchMode`` that sees every operator: a read of a tensor's value by the host
(``.item()``, ``bool(t)``, ``float(t)``: ``aten._local_scalar_dense``), a copy to the CPU and
an operator whose output size depends on the data (``nonzero``). On a GPU each of these waits
for the device to finish; on the CPU the same points are counted, where they cost nothing.

Run ``python benchmarks/device.py --help`` for the options; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time

DEFAULT_BATCHES = (1, 4, 16, 64, 256, 1024)
CPU_BATCHES = (1, 4, 16, 64, 256)


class SyncCounter:
    """Counts the operators that make the host wait for the device (see module docstring)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter.observe(func, args, kwargs or {})
                return func(*args, **(kwargs or {}))

        self.mode = _Mode()
        self.count = 0
        self.by_op: dict[str, int] = {}

    def observe(self, func, args, kwargs) -> None:
        import torch

        name = str(func.overloadpacket.__name__)
        syncing = name in ("_local_scalar_dense", "nonzero", "masked_select", "item")
        if name in ("_to_copy", "copy_") and args and isinstance(args[0], torch.Tensor):
            target = kwargs.get("device")
            if name == "copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor):
                syncing = args[0].device.type == "cpu" and args[1].device.type != "cpu"
            elif target is not None:
                syncing = torch.device(target).type == "cpu" and args[0].device.type != "cpu"
        if syncing:
            self.count += 1
            self.by_op[name] = self.by_op.get(name, 0) + 1

    def __enter__(self):
        self.count, self.by_op = 0, {}
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_start(device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # MiB (Linux: KiB)


def _peak_mib(device, start: float) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - start)


def timed(fn, device, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_solve(flow, fields, device, repeats: int) -> dict:
    """Solve and solve+grad of the batch ``fields``: time, memory, synchronisations."""
    import torch

    def solve():
        with torch.no_grad():
            return flow.solve(fields)

    def solve_grad():
        x = fields.detach().clone().requires_grad_()
        flow.solve(x).square().sum().backward()
        return x.grad

    out = {}
    for name, fn in (("solve", solve), ("solve+grad", solve_grad)):
        start = _peak_start(device)
        seconds = timed(fn, device, repeats)
        peak = _peak_mib(device, start)
        with SyncCounter() as sync:
            fn()
        out[name] = {"seconds": seconds, "peak_mib": peak, "syncs": sync.count}
    out["solver"] = flow.resolved_solver(fields.shape[0], fields.device)
    return out


class TimedPosterior:
    """The posterior, its ``evaluate`` (every decode, solve and gradient a kernel asks for)
    timed: the rest of a sampler iteration is the kernel's bookkeeping."""

    def __init__(self, posterior, device) -> None:
        self._posterior = posterior
        self._device = device
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._posterior, name)

    def evaluate(self, z, *, grad: bool = False):
        _sync(self._device)
        t0 = time.perf_counter()
        out = self._posterior.evaluate(z, grad=grad)
        _sync(self._device)
        self.seconds += time.perf_counter() - t0
        return out


def measure_chunk(kind: str, posterior, chains: int, steps: int, device, seed: int) -> dict:
    """A chunk of ``steps`` pCN or HMC iterations of ``chains`` chains (after one untimed
    iteration): time per iteration, evaluations, peak memory, synchronisations per iteration."""
    import torch

    from vaeinv.kernels.hmc import hmc_init, hmc_step
    from vaeinv.kernels.pcn import pcn_init, pcn_step

    posterior = TimedPosterior(posterior, device)
    timer = posterior
    gen = torch.Generator(device=device).manual_seed(seed)
    z0 = 0.5 * torch.randn(
        chains, posterior.latent_dim, generator=gen, dtype=torch.float64, device=device
    )
    if kind == "pcn":
        state = pcn_init(posterior, z0, step_size=0.1)

        def step(state):
            return pcn_step(posterior, state, gen, adapt=False)[0]
    else:
        state = hmc_init(posterior, z0, step_size=0.2, trajectory_length=1.0)

        def step(state):
            return hmc_step(posterior, state, gen, adapt=False)[0]

    state = step(state)  # warm-up: allocations, kernels
    work0 = posterior.work.forward_solves
    timer.seconds = 0.0
    start = _peak_start(device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        state = step(state)
    _sync(device)
    seconds = (time.perf_counter() - t0) / steps
    peak = _peak_mib(device, start)
    solves = (posterior.work.forward_solves - work0) / steps
    evaluate_seconds = timer.seconds
    with SyncCounter() as sync:
        step(state)
    return {
        "eval_seconds": evaluate_seconds / steps,
        "seconds": seconds,
        "solves": solves,
        "peak_mib": peak,
        "syncs": sync.count,
        "by_op": dict(sync.by_op),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes / chains")
    p.add_argument("--grid", type=int, default=64, help="N of the N x N solve benchmark")
    p.add_argument("--steps", type=int, default=5, help="sampler iterations per chunk")
    p.add_argument("--repeats", type=int, default=3, help="timed solves (best reported)")
    p.add_argument("--problem", default="demo", help="the problem of the sampler chunks")
    p.add_argument("--skip-samplers", action="store_true", help="the solve table only")
    p.add_argument("--max-hmc-chains", type=int, default=None, help="largest HMC batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: batches 1 4, 2 steps")
    return p


def main(argv=None) -> None:
    opts = build_parser().parse_args(argv)
    import torch

    import vaeinv
    from vaeinv import DarcyFlow, Grid
    from vaeinv.problems import load_problem

    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batches = opts.batches or list(DEFAULT_BATCHES if device.type == "cuda" else CPU_BATCHES)
    if opts.quick:
        batches, opts.steps, opts.repeats = [1, 4], 2, 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print("# vaeinv device benchmark\n")
    print(f"- device {device} ({name or platform.machine()}), torch {torch.__version__}, ", end="")
    print(f"vaeinv {vaeinv.__version__}, {torch.get_num_threads()} CPU threads")
    print("- syncs: host reads of device values counted by a dispatch mode (see docstring)\n")
    grid = Grid(opts.grid, opts.grid)
    flow = DarcyFlow(grid, dirichlet={"left": 1.0, "right": 0.0}, source=1.0, rtol=1e-6)
    gen = torch.Generator().manual_seed(opts.seed)
    print(f"## solve, {opts.grid} x {opts.grid}, rtol 1e-6\n")
    print(
        "| batch | solver | solve fields/s | solve+grad fields/s | grad/solve | peak MiB |", end=""
    )
    print(" syncs per solve | syncs per solve+grad |")
    print("|---:|:---|---:|---:|---:|---:|---:|---:|")
    for batch in batches:
        fields = 1.5 * torch.randn(batch, opts.grid, opts.grid, generator=gen, dtype=torch.float64)
        fields = torch.nn.functional.avg_pool2d(fields[:, None], 5, 1, 2)[:, 0].to(device)
        r = measure_solve(flow, fields, device, opts.repeats)
        s, g = r["solve"], r["solve+grad"]
        print(
            f"| {batch} | {r['solver']} | {batch / s['seconds']:.0f} | "
            f"{batch / g['seconds']:.0f} | {g['seconds'] / s['seconds']:.2f} | "
            f"{max(s['peak_mib'], g['peak_mib']):.0f} | {s['syncs']} | {g['syncs']} |",
            flush=True,
        )
    if opts.skip_samplers:
        return
    posterior = load_problem(opts.problem).posterior(device=device)
    print(f"\n## sampler chunks, problem {opts.problem} ({posterior.latent_dim} latents)\n")
    print(
        "| kernel | chains | ms per iteration | chain-iterations/s | solves per iteration |", end=""
    )
    print(" of which evaluate, ms | bookkeeping | peak MiB | syncs per iteration |")
    print("|:---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("pcn", "hmc"):
        for chains in batches:
            if kind == "hmc" and opts.max_hmc_chains and chains > opts.max_hmc_chains:
                continue
            r = measure_chunk(kind, posterior, chains, opts.steps, device, opts.seed)
            ops = ", ".join(f"{k} {v}" for k, v in sorted(r["by_op"].items())) or "-"
            print(
                f"| {kind} | {chains} | {1e3 * r['seconds']:.1f} | "
                f"{chains / r['seconds']:.0f} | {r['solves'] / chains:.1f} | "
                f"{1e3 * r['eval_seconds']:.1f} | "
                f"{r['seconds'] / r['eval_seconds'] - 1:+.1%} | "
                f"{r['peak_mib']:.0f} | {r['syncs']} ({ops}) |",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
