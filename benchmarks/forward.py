"""Forward-solver benchmark: the candidate Darcy solvers side by side, against FiPy and SciPy.

For every grid size ``N`` (an ``N x N`` grid on the unit square, ``p = 1`` on the left, ``p = 0``
on the right, no-flow top and bottom, unit source) and every batch size it prints, per
candidate, the wall time per field of

* ``solve``: the batched solve of a ``(B, N, N)`` batch of log-permeability fields;
* ``solve+grad``: the same solve followed by ``p.square().sum().backward()``, i.e. the forward
  solve plus the adjoint solve and the chain rule back to ``log_k`` (for ``banded``: the solve
  plus one adjoint solve with the same factor, no chain rule);
* ``FiPy``: ``DarcyFlowFiPy.solve`` field by field (it re-solves on one mesh built once);
* ``splu``: ``scipy.sparse.linalg.splu(A.tocsc()).solve(b)`` on the matrix of
  ``DarcyFlow.linear_system`` (factorisation + solve; the assembly is *not* timed).

The candidates (``--candidates``):

* ``direct``: ``DarcyFlow(solver="direct")``, the batched block-tridiagonal Cholesky;
* ``multigrid``: ``DarcyFlow(solver="multigrid")`` as shipped (float32 V-cycle) at the
  tolerances a problem with ``--noise`` relative noise gets (``noise_tied_rtol``, and
  ``GRADIENT_RTOL`` for the gradient's adjoint solve);
* ``multigrid-1e-10``: the same at ``rtol = 1e-10`` for the solve and the adjoint, DarcyFlow's
  default for a standalone flow;
* ``multigrid-double``: the float64 V-cycle at the noise-tied tolerance;
* ``banded``: LAPACK's banded Cholesky (``dpbtrf``/``dpbtrs`` through SciPy) field by field, the
  band (half-width ``N``) of the natural ordering, in a thread per core: the sparse direct
  solve with its ordering and symbolic structure fixed across the batch;
* ``auto``: ``DarcyFlow(solver="auto")``, whatever ``resolved_solver`` picks.

FiPy and SciPy cost the same per field whatever the batch, so they are timed once per ``N`` on a
few fields and the same figure is repeated on each batch row. Every timing is the median of
``--repeats`` runs after one warm-up run (fewer runs when one run exceeds ``--budget`` seconds).

Run ``python benchmarks/forward.py --help`` for the options; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

DEFAULT_SIZES = (32, 64, 128, 256)
DEFAULT_BATCHES = (1, 16, 64)
CANDIDATES = ("direct", "multigrid", "multigrid-1e-10", "multigrid-double", "banded", "auto")
DEFAULT_CANDIDATES = tuple(c for c in CANDIDATES if c != "auto")
BOUNDARY = {"left": 1.0, "right": 0.0}
SOURCE = 1.0


# ---------------------------------------------------------------------------- inputs
def smooth_log_k(n_fields: int, n: int, seed: int, sd: float, corr: float, dtype):
    """``n_fields`` smooth random log-k fields on an ``n x n`` grid, each with mean 0 and
    standard deviation ``sd``: white noise filtered by a Gaussian of correlation length ``corr``
    (a fraction of the domain) in Fourier space, with an explicitly seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_fields, n, n, generator=gen, dtype=torch.float64)
    freq = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64)  # cycles per unit length
    k2 = freq[:, None] ** 2 + freq[None, :] ** 2
    filt = torch.exp(-2.0 * (math.pi * corr) ** 2 * k2)
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * filt).real
    smooth = smooth - smooth.mean(dim=(-2, -1), keepdim=True)
    smooth = smooth / smooth.std(dim=(-2, -1), keepdim=True)
    return (sd * smooth).to(dtype)


# ---------------------------------------------------------------------------- candidates
class BandedCholesky:
    """LAPACK's banded Cholesky (SciPy's ``dpbtrf``/``dpbtrs``) field by field, the fields
    shared out over ``threads`` threads (LAPACK releases the GIL). The matrix of an ``ny x nx``
    grid in the natural ordering has half-bandwidth ``nx``: ``O(ny nx^3)`` flops as the block
    sweep, but in LAPACK's blocked banded kernels."""

    def __init__(self, flow, threads: int) -> None:
        self.flow = flow
        self.threads = max(1, threads)
        self.factors = None

    def _bands(self, log_k):
        import numpy as np

        tx, ty = self.flow.transmissibilities(log_k)
        b = self.flow.rhs(tx, ty).reshape(log_k.shape[0], -1).numpy()
        tx, ty = tx.numpy(), ty.numpy()
        batch, ny, nx = log_k.shape
        ab = np.zeros((batch, nx + 1, ny * nx))
        ab[:, 0] = (tx[..., :-1] + tx[..., 1:] + ty[..., :-1, :] + ty[..., 1:, :]).reshape(
            batch, -1
        )
        east = np.zeros((batch, ny, nx))
        east[..., :-1] = -tx[..., 1:-1]
        ab[:, 1] = east.reshape(batch, -1)
        ab[:, nx, : (ny - 1) * nx] = -ty[..., 1:-1, :].reshape(batch, -1)
        return ab, b

    def _map(self, fn, count):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(fn, range(count)))

    def solve(self, log_k):
        """Factorise every field and solve; keeps the factors for `adjoint`."""
        import numpy as np
        from scipy.linalg import lapack

        ab, b = self._bands(log_k)

        def one(i):
            c, info = lapack.dpbtrf(ab[i], lower=1)
            if info != 0:
                raise RuntimeError(f"dpbtrf failed on field {i} (info {info})")
            return c, lapack.dpbtrs(c, b[i], lower=1)[0]

        out = self._map(one, len(b))
        self.factors = [c for c, _ in out]
        return np.stack([x for _, x in out]).reshape(log_k.shape)

    def adjoint(self, rhs):
        """Solves with the stored factors (the adjoint solve of a gradient)."""
        import numpy as np
        from scipy.linalg import lapack

        flat = rhs.reshape(rhs.shape[0], -1)
        xs = self._map(lambda i: lapack.dpbtrs(self.factors[i], flat[i], lower=1)[0], len(flat))
        return np.stack(xs).reshape(rhs.shape)


def candidate_runs(name: str, grid, lk, rtol: float):
    """``(run_solve, run_grad, iterations, resolved)`` of candidate ``name`` on ``lk``:
    two callables, a callable giving the last solve's CG iterations (or None), and the name of
    the solver that runs."""
    import torch

    from vaeinv import DarcyFlow
    from vaeinv.physics import darcy, tolerance

    if name == "banded":
        solver = BandedCholesky(
            DarcyFlow(grid, dirichlet=BOUNDARY, source=SOURCE), torch.get_num_threads()
        )
        cpu = lk.cpu()

        def solve_banded():
            return solver.solve(cpu)

        def grad_banded():
            return solver.adjoint(2.0 * solver.solve(cpu))

        return solve_banded, grad_banded, lambda: None, "banded"
    kind = "auto" if name == "auto" else name.split("-")[0]
    tol = 1e-10 if name == "multigrid-1e-10" else rtol
    precision = "double" if name == "multigrid-double" else darcy.MULTIGRID_PRECISION
    # a problem's flow: the noise-tied tolerance, gradients to GRADIENT_RTOL (see DarcyFlow)
    adjoint = tol if name == "multigrid-1e-10" else max(tol, tolerance.GRADIENT_RTOL)
    flow = DarcyFlow(
        grid, dirichlet=BOUNDARY, source=SOURCE, solver=kind, rtol=tol, adjoint_rtol=adjoint
    )

    def with_precision(fn):
        def run():
            shipped = darcy.MULTIGRID_PRECISION
            darcy.MULTIGRID_PRECISION = precision
            try:
                return fn()
            finally:
                darcy.MULTIGRID_PRECISION = shipped

        return run

    @with_precision
    def run_solve():
        with torch.no_grad():
            return flow.solve(lk)

    @with_precision
    def run_grad():
        x = lk.detach().clone().requires_grad_()
        flow.solve(x).square().sum().backward()
        return x.grad

    def iterations():
        return flow.last_info.iterations if flow.last_info is not None else None

    return run_solve, run_grad, iterations, flow.resolved_solver(lk.shape[0], lk.device)


# ---------------------------------------------------------------------------- timing
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, repeats: int, budget: float, device) -> tuple[float, int]:
    """Median wall time of ``fn()`` over up to ``repeats`` runs after one warm-up run; fewer runs
    when the warm-up shows that ``repeats`` runs would take more than ``budget`` seconds."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    warm = time.perf_counter() - t0
    runs = max(1, min(repeats, int(budget // max(warm, 1e-9))))
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), runs


def time_reference(fields, n: int, repeats: int, budget: float):
    """Per-field times of FiPy (re-solving on one mesh) and SciPy's splu on the assembled matrix,
    plus the pressures of the first field from each (for the correctness line)."""
    import numpy as np
    import scipy.sparse.linalg as spla

    from vaeinv import DarcyFlow, DarcyFlowFiPy, Grid

    grid = Grid(n, n)
    fipy_flow = DarcyFlowFiPy(grid, dirichlet=BOUNDARY, source=SOURCE)
    torch_flow = DarcyFlow(grid, dirichlet=BOUNDARY, source=SOURCE)
    systems = [torch_flow.linear_system(f) for f in fields]  # assembly: not timed
    mats = [(a.tocsc(), b) for a, b in systems]

    p_fipy = fipy_flow.solve(fields[:1])[0]  # also the warm-up

    def run_fipy():
        fipy_flow.solve(fields)

    def run_splu():
        for a, b in mats:
            spla.splu(a).solve(b)

    spla.splu(mats[0][0]).solve(mats[0][1])  # warm-up
    t_fipy, r_fipy = _median_runs(run_fipy, repeats, budget)
    t_splu, r_splu = _median_runs(run_splu, repeats, budget)
    p_splu = np.asarray(spla.splu(mats[0][0]).solve(mats[0][1])).reshape(n, n)
    count = len(fields)
    return {
        "fipy": t_fipy / count,
        "splu": t_splu / count,
        "runs": (r_fipy, r_splu),
        "count": count,
        "p_fipy": p_fipy.numpy(),
        "p_splu": p_splu,
    }


def _median_runs(fn, repeats: int, budget: float) -> tuple[float, int]:
    times = []
    spent = 0.0
    while len(times) < repeats and (not times or spent + times[-1] <= budget):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return statistics.median(times), len(times)


# ---------------------------------------------------------------------------- formatting
def _ms(seconds) -> str:
    if seconds is None:
        return "-"
    ms = 1e3 * seconds
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _ratio(num, den) -> str:
    if num is None or den is None or den <= 0:
        return "-"
    return f"{num / den:.2f}"


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Time vaeinv's batched Darcy solve (and solve+gradient) against FiPy and "
        "scipy.sparse.linalg.splu; prints a markdown table.",
    )
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=list(DEFAULT_SIZES),
        help="grid sides N (N x N grids); default: %(default)s",
    )
    p.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=list(DEFAULT_BATCHES),
        help="batch sizes; default: %(default)s",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs per measurement, after one warm-up (median reported)",
    )
    p.add_argument(
        "--candidates",
        nargs="+",
        choices=CANDIDATES,
        default=list(DEFAULT_CANDIDATES),
        help="solvers to time (see the module docstring); default: %(default)s",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.01,
        help="noise sd as a fraction of the largest pressure, which sets the multigrid "
        "candidates' tolerance by noise_tied_rtol; default: %(default)s",
    )
    p.add_argument("--device", default="cpu", help="torch device for vaeinv (default: cpu)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice)",
    )
    p.add_argument("--seed", type=int, default=1234, help="seed of the random fields")
    p.add_argument("--sd", type=float, default=1.5, help="standard deviation of log k")
    p.add_argument(
        "--corr",
        type=float,
        default=0.1,
        help="correlation length of log k, as a fraction of the domain",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="seconds one measurement may take; slow ones get fewer repeats",
    )
    p.add_argument(
        "--direct-mem-gb",
        type=float,
        default=3.0,
        help="skip direct-solver runs whose factor (B N^3 8 bytes) exceeds this",
    )
    p.add_argument(
        "--max-cells",
        type=int,
        default=2**20,
        help="skip runs with more than this many cells (B N^2) in one batch, "
        "to bound the run time; default: %(default)s (batch 16 at N = 256)",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny smoke run: N = 16, 32; batches 1, 4; one repeat"
    )
    return p


def main(args=None) -> dict:
    opts = build_parser().parse_args(args)
    if opts.quick:
        opts.sizes, opts.batches, opts.repeats = [16, 32], [1, 4], 1
    if opts.repeats < 1 or min(opts.sizes) < 2 or min(opts.batches) < 1:
        raise SystemExit("--repeats, --batches must be >= 1 and --sizes >= 2")

    import numpy as np
    import scipy
    import torch

    import vaeinv
    from vaeinv import Grid

    try:
        import fipy

        fipy_version = fipy.__version__
    except ImportError:  # pragma: no cover - fipy is a dependency
        fipy_version = "missing"

    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    dtype = torch.float64
    start = time.perf_counter()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None

    print("# vaeinv forward benchmark")
    print()
    print(
        f"- vaeinv {vaeinv.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, fipy {fipy_version}, python {platform.python_version()}"
    )
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = os.cpu_count()
    print(
        f"- CPU: {platform.processor() or platform.machine()}, os.cpu_count() = "
        f"{os.cpu_count()}, usable cores = {affinity}, torch threads = "
        f"{torch.get_num_threads()}, device = {device}"
    )
    if load0 is not None:
        print(
            f"- load average at start (1/5/15 min): {load0[0]:.2f} / {load0[1]:.2f} / "
            f"{load0[2]:.2f}"
        )
    if load0 is not None and load0[0] > 0.5 * affinity:
        print(
            f"- NOTE: the machine was already busy (load {load0[0]:.2f} on {affinity} cores): "
            "other processes compete for the cores and the timings may be noisy"
        )
    print(
        f"- fields: float64 log k, Gaussian-filtered white noise (FFT), sd {opts.sd}, "
        f"correlation length {opts.corr} x domain; torch.Generator seed {opts.seed} + N"
    )
    print(
        f"- problem: N x N unit square, p = 1 left, p = 0 right, no-flow top/bottom, "
        f"source {SOURCE}"
    )
    print(
        f"- timing: median of up to {opts.repeats} runs after one warm-up, at most "
        f"~{opts.budget:g} s per measurement; ms per field = batch time / batch size"
    )
    print(
        "- FiPy: DarcyFlowFiPy.solve field by field on one mesh; splu: "
        "scipy.sparse.linalg.splu(A.tocsc()).solve(b) per field, matrix assembly not timed; "
        "both timed once per N on a few fields (per-field cost does not depend on the batch)"
    )
    print()
    sys.stdout.flush()

    from vaeinv.physics import noise_tied_rtol

    rtol = noise_tied_rtol(opts.noise, 1.0)
    print(f"- multigrid tolerance tied to {opts.noise:g} relative noise: rtol = {rtol:.2g}")
    print()
    max_batch = max(opts.batches)
    rows: dict[str, list] = {name: [] for name in opts.candidates}
    checks = []
    for n in opts.sizes:
        grid = Grid(n, n)
        fields = smooth_log_k(max_batch, n, opts.seed + n, opts.sd, opts.corr, dtype)
        n_ref = max(1, min(max_batch, 16, max(2, 2**18 // (n * n))))
        ref = time_reference(fields[:n_ref], n, opts.repeats, opts.budget)
        first = {}
        for name in opts.candidates:
            for batch in opts.batches:
                row = _measure(name, grid, fields[:batch].to(device), rtol, ref, opts, device)
                rows[name].append(row)
                _print_progress(row)
            if name in first or name == "auto":
                continue
            one = candidate_runs(name, grid, fields[:1].to(device), rtol)[0]
            try:
                first[name] = _as_numpy(one())[0]
            except RuntimeError:  # pragma: no cover - out of memory
                pass
        scale = float(np.abs(ref["p_fipy"]).max())
        parts = [f"splu {np.abs(ref['p_splu'] - ref['p_fipy']).max() / scale:.1e}"]
        for name, p in first.items():
            parts.append(f"{name} {np.abs(p - ref['p_fipy']).max() / scale:.1e}")
        checks.append(f"- N = {n}: max |p - p_FiPy| / max |p_FiPy| on field 0: " + ", ".join(parts))
        print(
            f"[N = {n} done, {time.perf_counter() - start:.0f} s elapsed; reference timed "
            f"on {ref['count']} field(s)]",
            file=sys.stderr,
            flush=True,
        )

    print("## time per field")
    print()
    print(
        "| N | batch | candidate | runs as | CG iters | solve ms/field | solve+grad ms/field | "
        "grad/solve | FiPy ms/field | splu ms/field | FiPy/solve | splu/solve |"
    )
    print("|---:|---:|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in opts.sizes:
        for batch in opts.batches:
            for name in opts.candidates:
                for r in rows[name]:
                    if r["n"] == n and r["batch"] == batch:
                        print(_table_row(r))
    print()

    print("## correctness")
    print()
    print("\n".join(checks))
    print()
    print("## targets (2-core CPU)")
    print()
    for line in _targets(rows):
        print(line)
    print()
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    tail = (
        f"; load average at end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}" if load1 else ""
    )
    print(f"Total wall time: {time.perf_counter() - start:.0f} s{tail}")
    return {"rows": rows, "checks": checks}


def _as_numpy(p):
    return p.detach().cpu().numpy() if hasattr(p, "detach") else p


def _measure(name, grid, lk, rtol, ref, opts, device) -> dict:
    """One row: candidate ``name`` on the batch ``lk``, or the reason it was skipped."""
    n, batch = grid.nx, lk.shape[0]
    run_solve, run_grad, iterations, resolved = candidate_runs(name, grid, lk, rtol)
    row = {"n": n, "batch": batch, "kind": name, "resolved": resolved}
    row.update(fipy=ref["fipy"], splu=ref["splu"])
    factor_gb = batch * n**3 * 8 / 1e9
    if resolved in ("direct", "banded") and factor_gb > opts.direct_mem_gb:
        row["skip"] = f"skipped (memory: direct factor {factor_gb:.1f} GB)"
    elif batch * n * n > opts.max_cells:
        row["skip"] = f"skipped (time: {batch} x {n}^2 > --max-cells)"
    if "skip" in row:
        return row
    row["solve"], row["runs"] = time_call(run_solve, opts.repeats, opts.budget, device)
    row["iters"] = iterations() if resolved == "multigrid" else None
    row["grad"], _ = time_call(run_grad, opts.repeats, opts.budget, device)
    row["solve"] /= batch
    row["grad"] /= batch
    return row


def _table_row(r) -> str:
    head = f"| {r['n']} | {r['batch']} | {r['kind']} | {r['resolved']} |"
    if "skip" in r:
        return f"{head} {r['skip']} | | | | {_ms(r['fipy'])} | {_ms(r['splu'])} | | |"
    iters = r["iters"] if r["iters"] is not None else "-"
    return (
        f"{head} {iters} | {_ms(r['solve'])} | {_ms(r['grad'])} | "
        f"{_ratio(r['grad'], r['solve'])} | {_ms(r['fipy'])} | {_ms(r['splu'])} | "
        f"{_ratio(r['fipy'], r['solve'])} | {_ratio(r['splu'], r['solve'])} |"
    )


def _print_progress(row) -> None:
    if "skip" in row:
        msg = row["skip"]
    else:
        msg = (
            f"solve {_ms(row['solve'])} ms/field, solve+grad {_ms(row['grad'])} ms/field "
            f"({row['runs']} run(s))"
        )
    print(
        f"[N = {row['n']}, batch {row['batch']}, {row['kind']}: {msg}]", file=sys.stderr, flush=True
    )


def _targets(rows) -> list[str]:
    """The targets, checked on whatever rows were measured."""
    out = []
    for kind, kind_rows in rows.items():
        done = [r for r in kind_rows if "skip" not in r]
        for r in [r for r in done if r["n"] == 64 and r["batch"] == 64]:
            speedup = r["fipy"] / r["solve"]
            ok = "met" if r["solve"] <= 2e-3 and speedup >= 6 else "NOT met"
            out.append(
                f"- {kind}: 64 x 64, batch 64: solve {_ms(r['solve'])} ms/field, "
                f"{speedup:.1f} x FiPy (target <= 2 ms and >= 6 x): {ok}"
            )
            ratio = r["grad"] / r["solve"]
            ok = "met" if ratio <= 1.5 else "NOT met"
            out.append(
                f"- {kind}: 64 x 64, batch 64: solve+grad / solve = {ratio:.2f} "
                f"(target <= 1.5): {ok}"
            )
        at256 = [r for r in done if r["n"] == 256]
        if at256:
            best = min(at256, key=lambda r: r["solve"])
            speedup = best["fipy"] / best["solve"]
            ratio = best["grad"] / best["solve"]
            ok = "met" if speedup >= 6 and ratio <= 1.5 else "NOT met"
            out.append(
                f"- {kind}: 256 x 256, best batch ({best['batch']}): FiPy / solve = "
                f"{speedup:.2f}, solve+grad / solve = {ratio:.2f} (targets >= 6, <= 1.5): {ok}"
            )
    if not out:
        out.append("- (no run at 64 x 64 batch 64 or at 256 x 256: targets not checked)")
    return out


if __name__ == "__main__":
    main()
