"""Inversion benchmark: vaeinv's samplers on the MDGM problems, against MDGM's published figures.

For every problem (default ``mdgm-gaussian`` and ``mdgm-channel``) it runs, through
``vaeinv.sample``, the configurations

* ``pcn``: the problem's VAE prior, pCN, 8 chains;
* ``nuts``: the VAE prior, Pyro NUTS, 4 chains;
* ``gf-pcn``: a Gaussian-field baseline prior (``GaussianFieldPrior``, truncated KL; Matern 1.5,
  mean 1, sd 0.75, length scale 0.2 for the Gaussian truth; the channel truth's own mean and sd
  for the channel case), pCN, 8 chains;
* ``gpcn``: the VAE prior with the runner's ``"gpcn"`` method, 8 chains, when the runner has it
  (``"gpcn" in _methods()``); otherwise the row says it was skipped;
* ``tpcn``: the VAE prior with transport-map pCN (``"tpcn"``: pCN in the reference space of a
  coupling flow fitted to the posterior; the fit's solves and gradients are counted), 8 chains;
* ``hmc``: the VAE prior with the runner's batched HMC (``"hmc"``: jittered trajectory lengths,
  the pooled mass warm-up), 4 chains;

and prints, per run, the wall time, forward solves and gradient evaluations, the bulk ESS per
1000 forward solves and per minute (minimum over the latents and over the field quantities of
``results.diagnostics``), max R-hat, acceptance, divergences, the relative L2 error of the
posterior-mean log k and the 2-sd coverage of the truth, next to MDGM's figures, and checks the
issue's targets. It also measures the pCN bookkeeping: the time of a ``pcn_step`` minus the time
of its batched decode + solve (``posterior.decode`` / ``forward`` / ``predict``), as a fraction
of the latter.

Run ``python benchmarks/inversion.py --help`` for the options; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

DEFAULT_PROBLEMS = ("mdgm-gaussian", "mdgm-channel")
CONFIGS = ("pcn", "nuts", "gf-pcn", "gpcn", "tpcn", "hmc")
#: configuration -> (prior: "vae" or "gaussian-field", runner method)
CONFIG_SETUP = {
    "pcn": ("vae", "pcn"),
    "nuts": ("vae", "nuts"),
    "gf-pcn": ("gaussian-field", "pcn"),
    "gpcn": ("vae", "gpcn"),
    "tpcn": ("vae", "tpcn"),
    "hmc": ("vae", "hmc"),
}
#: per configuration: chains, warm-up iterations, post-warm-up iterations (``draws``), thinning.
#: ``draws`` counts sampler iterations per chain after warm-up; ``draws // thin`` are kept.
DEFAULTS = {
    "pcn": {"chains": 8, "warmup": 2000, "draws": 10000, "thin": 10},
    "nuts": {"chains": 4, "warmup": 200, "draws": 200, "thin": 1},
    "gf-pcn": {"chains": 8, "warmup": 2000, "draws": 10000, "thin": 10},
    "gpcn": {"chains": 8, "warmup": 2000, "draws": 10000, "thin": 10},
    "tpcn": {"chains": 8, "warmup": 1000, "draws": 8000, "thin": 8},
    "hmc": {"chains": 4, "warmup": 300, "draws": 1000, "thin": 1},
}
QUICK = {
    "pcn": {"chains": 8, "warmup": 20, "draws": 40, "thin": 2},
    "nuts": {"chains": 2, "warmup": 10, "draws": 10, "thin": 1},
    "gf-pcn": {"chains": 8, "warmup": 20, "draws": 40, "thin": 2},
    "gpcn": {"chains": 8, "warmup": 20, "draws": 40, "thin": 2},
    "tpcn": {"chains": 8, "warmup": 20, "draws": 40, "thin": 2},
    "hmc": {"chains": 2, "warmup": 20, "draws": 10, "thin": 1},
}
QUICK_MAX_TREE_DEPTH = 4
QUICK_FLOW = {"flow_steps": 10, "flow_layers": 2, "flow_hidden": 16}

#: Gaussian-field baseline per problem; ``mean``/``std`` of ``None`` take the truth's values.
GF_SETTINGS = {
    "mdgm-gaussian": {"kernel": "matern", "nu": 1.5, "mean": 1.0, "std": 0.75},
    "mdgm-channel": {"kernel": "matern", "nu": 1.5, "mean": None, "std": None},
}
GF_FALLBACK = {"kernel": "matern", "nu": 1.5, "mean": None, "std": None}

#: MDGM's single-scale figures (pCN on a 256-dim latent, one chain), from
#: ../shared/benchmarks/mdgm/README.md; ``aim`` is the issue's aimed-at relative L2 error.
MDGM = {
    "mdgm-gaussian": {"acceptance": 0.306, "rel_l2": 0.348, "coverage": 0.45, "aim": 0.30},
    "mdgm-channel": {"acceptance": 0.055, "rel_l2": 0.485, "coverage": 0.28, "aim": 0.41},
}
MDGM_ESS_PER_1000 = 0.5  # their ESS of 5-22 per chain: about 0.5 per 1000 forward solves

TARGET_RHAT = 1.01
TARGET_COVERAGE = 0.85
TARGET_ESS_FACTOR = 10.0  # ESS per 1000 solves >= 10 x MDGM's
TARGET_BOOKKEEPING = 0.10


# ---------------------------------------------------------------------------- output
class Report:
    """Prints markdown lines and keeps them for ``--out``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _methods() -> list[str]:
    from vaeinv.kernels import available

    return available()


def log(msg: str) -> None:
    print(f"[{msg}]", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- options
def per_config(values: list[str] | None, name: str, cast=int) -> dict[str, object]:
    """``["500"]`` (every configuration) or ``["pcn=10000", "nuts=500"]`` -> ``{config: value}``."""
    out: dict[str, object] = {}
    for item in values or []:
        key, sep, value = item.rpartition("=")
        keys = CONFIGS if not sep else (key,)
        if sep and key not in CONFIGS:
            raise SystemExit(f"--{name}: unknown configuration {key!r}; expected one of {CONFIGS}")
        try:
            parsed = cast(value)
        except ValueError:
            raise SystemExit(f"--{name}: cannot read {value!r} in {item!r}") from None
        for k in keys:
            out[k] = parsed
    return out


def build_parser() -> argparse.ArgumentParser:
    per = (
        "one value for every configuration, or CONFIG=VALUE pairs (configurations: "
        + ", ".join(CONFIGS)
        + ")"
    )
    p = argparse.ArgumentParser(
        description="Sample the MDGM problems with pCN, NUTS and a Gaussian-field baseline; "
        "print ESS per solve and per minute, R-hat, error and coverage against MDGM's figures.",
    )
    p.add_argument(
        "--problems",
        nargs="+",
        default=list(DEFAULT_PROBLEMS),
        help="problem names or folders (default: %(default)s)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=CONFIGS,
        default=list(CONFIGS),
        help="configurations to run (default: all): pcn = VAE prior + pCN, nuts = VAE prior + "
        "NUTS, gf-pcn = Gaussian-field prior + pCN, gpcn = VAE prior + the runner's 'gpcn', "
        "tpcn = VAE prior + transport-map pCN, hmc = VAE prior + batched jittered HMC",
    )
    defaults = "; ".join(
        f"{k}: {v['chains']} chains, {v['warmup']} + {v['draws']} (thin {v['thin']})"
        for k, v in DEFAULTS.items()
    )
    p.add_argument(
        "--draws",
        nargs="+",
        metavar="[CONFIG=]N",
        help=f"sampler iterations per chain after warm-up; {per}. Defaults: {defaults}",
    )
    p.add_argument("--warmup", nargs="+", metavar="[CONFIG=]N", help=f"warm-up iterations; {per}")
    p.add_argument(
        "--thin", nargs="+", metavar="[CONFIG=]N", help=f"keep every N-th iteration; {per}"
    )
    p.add_argument("--chains", nargs="+", metavar="[CONFIG=]N", help=f"chains; {per}")
    p.add_argument(
        "--max-tree-depth",
        type=int,
        default=None,
        help="NUTS max tree depth (default: the problem's [sampler.nuts], else the runner's)",
    )
    p.add_argument("--seed", type=int, default=0, help="the runs' seed (default: %(default)s)")
    p.add_argument(
        "--gf-modes",
        type=int,
        default=256,
        help="KL modes of the Gaussian-field prior (default: %(default)s, the VAE latent size)",
    )
    p.add_argument(
        "--gf-length",
        type=float,
        default=0.2,
        help="length scale of the Gaussian-field prior (default: %(default)s)",
    )
    p.add_argument(
        "--bookkeeping-steps",
        type=int,
        default=50,
        help="timed pcn_step calls for the bookkeeping measurement (default: %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="write the report as OUT.md and the raw diagnostics as OUT.json "
        "(OUT without suffix; a .md or .json suffix is replaced)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: pCN 20 + 40 iterations (thin 2), NUTS 2 chains 10 + 10 (tree depth "
        f"{QUICK_MAX_TREE_DEPTH}), 5 bookkeeping steps; only checks that the script works",
    )
    return p


def resolve_settings(opts) -> dict[str, dict[str, int]]:
    base = QUICK if opts.quick else DEFAULTS
    settings = {k: dict(v) for k, v in base.items()}
    for name in ("chains", "warmup", "draws", "thin"):
        for key, value in per_config(getattr(opts, name), name).items():
            settings[key][name] = value
    for key, s in settings.items():
        if s["chains"] < 1 or s["draws"] < 1 or s["thin"] < 1 or s["warmup"] < 0:
            raise SystemExit(f"{key}: --chains, --draws, --thin must be >= 1, --warmup >= 0")
        if s["draws"] < 4 * s["thin"]:
            raise SystemExit(
                f"{key}: --draws {s['draws']} with --thin {s['thin']} keeps fewer than 4 draws "
                "per chain (R-hat and ESS need 4)"
            )
    return settings


# ---------------------------------------------------------------------------- sampling
def sample_kwargs(runner, draws: int, thin: int) -> dict[str, int]:
    """``num_draws`` and ``thin`` for ``runner.sample`` so that every chain runs ``draws``
    iterations after warm-up and keeps every ``thin``-th.

    The runner's ``num_draws`` counts iterations (kept: ``num_draws // thin``); a runner that
    still has ``field_thin`` counts kept draws instead, so it gets ``draws // thin``.
    """
    if "field_thin" in inspect.signature(runner.sample).parameters:
        return {"num_draws": max(1, draws // thin), "thin": thin}
    return {"num_draws": draws, "thin": thin}


def gf_prior(problem, opts):
    """The Gaussian-field baseline prior of ``problem`` (see ``GF_SETTINGS``)."""
    from vaeinv.priors.gaussian_field import GaussianFieldPrior

    cfg = dict(GF_SETTINGS.get(problem.name, GF_FALLBACK))
    truth = problem.truth
    if cfg["mean"] is None:
        cfg["mean"] = float(truth.mean()) if truth is not None else 0.0
    if cfg["std"] is None:
        cfg["std"] = float(truth.std()) if truth is not None else 1.0
    modes = min(opts.gf_modes, problem.grid.num_cells)
    return GaussianFieldPrior(
        problem.grid,
        mean=cfg["mean"],
        std=cfg["std"],
        length_scale=opts.gf_length,
        kernel=cfg["kernel"],
        nu=cfg["nu"],
        method="kl",
        num_modes=modes,
    )


def run_config(problem, posterior, key: str, s: dict, opts) -> dict:
    """One ``runner.sample`` call and its diagnostics."""
    from vaeinv import results
    from vaeinv.runs import sampling as runner

    _, method = CONFIG_SETUP[key]
    options = dict(problem.sampler_defaults.options_for(method))
    if method == "nuts":
        if opts.max_tree_depth is not None:
            options["max_tree_depth"] = opts.max_tree_depth
        elif opts.quick:
            options["max_tree_depth"] = QUICK_MAX_TREE_DEPTH
    if method == "tpcn" and opts.quick:
        options.update(QUICK_FLOW)
    valid = runner.sampler_options(method) if method in _methods() else {}
    options = {k: v for k, v in options.items() if k in valid}
    kwargs = sample_kwargs(runner, s["draws"], s["thin"])
    chunk = max(1, (s["draws"] // s["thin"]) // 10)
    label = f"{problem.name} {key}"
    start = time.perf_counter()
    last = [start]

    def progress(info) -> None:
        now = time.perf_counter()
        if now - last[0] < 30 and getattr(info, "phase", "") != "done":
            return
        last[0] = now
        extra = f", divergences {info.divergences}" if method in ("nuts", "hmc") else ""
        log(
            f"{label}: {info.phase} {info.iteration}/{info.total_iterations} it, acceptance "
            f"{info.acceptance_rate:.2f}{extra}, {now - start:.0f} s"
        )

    log(
        f"{label}: {s['chains']} chains, {s['warmup']} + {s['draws']} iterations, thin "
        f"{s['thin']}, options {options}"
    )
    idata = runner.sample(
        posterior,
        method,
        num_chains=s["chains"],
        num_warmup=s["warmup"],
        seed=opts.seed,
        chunk_size=chunk,
        progress=progress,
        attrs={**problem.attrs(), "benchmark": "benchmarks/inversion.py", "config": key},
        **kwargs,
        **options,
    )
    wall = time.perf_counter() - start
    diag = results.diagnostics(idata)
    attrs = idata.attrs
    kept = int(idata.posterior.sizes["draw"])
    solves = int(attrs.get("forward_solves", 0))
    grads = int(attrs.get("gradient_evaluations", 0))
    minutes = wall / 60.0
    row = {
        "problem": problem.name,
        "config": key,
        "prior": posterior.name,
        "method": method,
        "chains": s["chains"],
        "warmup": s["warmup"],
        "draws": kept * s["thin"],
        "thin": s["thin"],
        "kept": kept,
        "options": options,
        "wall_s": wall,
        "runner_wall_time_s": float(attrs.get("wall_time_s", math.nan)),
        "forward_solves": solves,
        "gradient_evaluations": grads,
        "diagnostics": diag,
    }
    for part, key in (
        ("latent", "min_ess_bulk_latent"),
        ("field", "min_ess_bulk_field"),
        ("loglik", "ess_bulk_log_likelihood"),  # MDGM's measure
    ):
        ess = diag.get(key, math.nan)
        row[f"ess_per_1000_solves_{part}"] = 1000.0 * ess / solves if solves else math.nan
        row[f"ess_per_minute_{part}"] = ess / minutes if minutes > 0 else math.nan
    log(f"{label}: done in {wall:.0f} s, {solves} solves, {grads} gradients")
    return row


# ---------------------------------------------------------------------------- bookkeeping
class TimedPosterior:
    """Delegates to a posterior; times its ``decode``, ``forward`` and ``predict`` calls (the
    batched decode + solve), whichever the sampler uses."""

    def __init__(self, posterior) -> None:
        self._posterior = posterior
        self.model_seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._posterior, name)

    def _timed(self, fn, *args, **kwargs):
        _sync(self._posterior.device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(self._posterior.device)
        self.model_seconds += time.perf_counter() - t0
        return out

    def decode(self, *args, **kwargs):
        return self._timed(self._posterior.decode, *args, **kwargs)

    def forward(self, *args, **kwargs):
        return self._timed(self._posterior.forward, *args, **kwargs)

    def predict(self, *args, **kwargs):
        return self._timed(self._posterior.predict, *args, **kwargs)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_bookkeeping(posterior, num_chains: int, steps: int, seed: int) -> dict:
    """Per ``pcn_step`` of ``num_chains`` chains: the wall time, the time of its batched
    decode + solve (``posterior.decode``, ``forward`` or ``predict``), and their difference as
    a fraction of the decode + solve time (after 5
    untimed steps). Adaptation stays on, as in warm-up (the slightly costlier case)."""
    import torch

    from vaeinv.kernels.pcn import pcn_init, pcn_step

    timed = TimedPosterior(posterior)
    gen = torch.Generator().manual_seed(seed)
    z0 = torch.randn(num_chains, posterior.latent_dim, generator=gen, dtype=torch.float64)
    state = pcn_init(timed, z0)
    for _ in range(5):
        state, _ = pcn_step(timed, state, gen, adapt=True)
    step_times, model_times = [], []
    for _ in range(steps):
        timed.model_seconds = 0.0
        _sync(posterior.device)
        t0 = time.perf_counter()
        state, _ = pcn_step(timed, state, gen, adapt=True)
        _sync(posterior.device)
        step_times.append(time.perf_counter() - t0)
        model_times.append(timed.model_seconds)
    total_step, total_model = sum(step_times), sum(model_times)
    return {
        "chains": num_chains,
        "steps": steps,
        "step_s_median": statistics.median(step_times),
        "decode_solve_s_median": statistics.median(model_times),
        "step_s_mean": total_step / steps,
        "decode_solve_s_mean": total_model / steps,
        "bookkeeping_fraction": (total_step - total_model) / total_model
        if total_model > 0
        else math.nan,
    }


# ---------------------------------------------------------------------------- formatting
def _f(x, fmt: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.0f}" if fmt == ".3g" and abs(x) >= 1000 else format(x, fmt)


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _ok(flag) -> str:
    return "n/a" if flag is None else "met" if flag else "NOT met"


def _config_label(r: dict) -> str:
    method = {"pcn": "pCN", "nuts": "NUTS", "gpcn": "gpCN", "tpcn": "tpCN", "hmc": "HMC"}[
        CONFIG_SETUP[r["config"]][1]
    ]
    if CONFIG_SETUP[r["config"]][0] == "gaussian-field":
        return f"Gaussian field + {method}"
    return f"VAE `{r['prior']}` + {method}" if "prior" in r else f"VAE + {method}"


TABLE_HEAD = (
    "| problem | configuration | chains x (warm-up + iterations), thin | wall s | solves | "
    "gradients | ESS / 1000 solves (latent / field) | ESS / 1000 solves, log-likelihood | "
    "ESS / min (latent / field) | max R-hat | acceptance | divergences | rel. L2 | 2-sd coverage |"
)
TABLE_RULE = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"


def table_row(r: dict) -> str:
    if "skip" in r:
        return f"| {r['problem']} | {_config_label(r)} | {r['skip']} |" + " |" * 11
    d = r["diagnostics"]
    ess_k = f"{_f(r['ess_per_1000_solves_latent'])} / {_f(r['ess_per_1000_solves_field'])}"
    ess_m = f"{_f(r['ess_per_minute_latent'])} / {_f(r['ess_per_minute_field'])}"
    div = str(d.get("divergences", 0)) if r["method"] != "pcn" else "-"
    return (
        f"| {r['problem']} | {_config_label(r)} | {r['chains']} x ({r['warmup']} + "
        f"{r['draws']}), {r['thin']} | {r['wall_s']:.0f} | {r['forward_solves']} | "
        f"{r['gradient_evaluations']} | {ess_k} | {_f(r.get('ess_per_1000_solves_loglik'))} | "
        f"{ess_m} | {_f(d.get('max_rhat'), '.3f')} | "
        f"{_pct(d.get('acceptance_rate'))} | {div} | {_f(d.get('rel_l2_error'), '.3f')} | "
        f"{_pct(d.get('coverage_2sd'))} |"
    )


def mdgm_row(problem: str) -> str | None:
    ref = MDGM.get(problem)
    if ref is None:
        return None
    return (
        f"| {problem} | **MDGM** (VAE 256 + pCN, their code) | 1 chain | - | - | - | "
        f"- | ~{MDGM_ESS_PER_1000} | - | n/a | {_pct(ref['acceptance'])} | - | "
        f"{ref['rel_l2']:.3f} | {_pct(ref['coverage'])} |"
    )


def targets(r: dict) -> dict[str, tuple[bool | None, str]]:
    """The issue's targets for one run: ``{target: (met or None if not measured, detail)}``."""
    d = r["diagnostics"]
    rhat, cov, err = d.get("max_rhat"), d.get("coverage_2sd"), d.get("rel_l2_error")
    both = [r["ess_per_1000_solves_latent"], r["ess_per_1000_solves_field"]]
    ess = math.nan if any(math.isnan(v) for v in both) else min(both)
    ref = MDGM.get(r["problem"])
    need = TARGET_ESS_FACTOR * MDGM_ESS_PER_1000

    def check(value, ok, detail):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None, "n/a"
        return ok(value), detail

    out = {
        f"max R-hat <= {TARGET_RHAT}": check(
            rhat, lambda v: v <= TARGET_RHAT, f"{_f(rhat, '.3f')}"
        ),
        f"2-sd coverage >= {100 * TARGET_COVERAGE:.0f} %": check(
            cov, lambda v: v >= TARGET_COVERAGE, _pct(cov)
        ),
    }
    if ref is not None:
        out["rel. L2 < MDGM's"] = check(
            err, lambda v: v < ref["rel_l2"], f"{_f(err, '.3f')} vs {ref['rel_l2']}"
        )
        out["rel. L2 <= aim"] = check(
            err, lambda v: v <= ref["aim"], f"{_f(err, '.3f')} vs {ref['aim']}"
        )
    out[f"ESS / 1000 solves >= {need:g}"] = check(ess, lambda v: v >= need, _f(ess))
    return out


# ---------------------------------------------------------------------------- main
def main(args=None) -> dict:
    opts = build_parser().parse_args(args)
    settings = resolve_settings(opts)
    if opts.quick:
        opts.bookkeeping_steps = min(opts.bookkeeping_steps, 5)
    if opts.bookkeeping_steps < 1 or opts.gf_modes < 1 or opts.gf_length <= 0:
        raise SystemExit("--bookkeeping-steps and --gf-modes must be >= 1, --gf-length > 0")

    import numpy as np
    import torch

    import vaeinv
    from vaeinv.problems import load_problem

    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    try:
        import pyro

        pyro_version = pyro.__version__
    except ImportError:  # pragma: no cover - pyro is a dependency
        pyro_version = "missing"
    import arviz

    out = Report()
    start = time.perf_counter()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = os.cpu_count()

    out("# vaeinv inversion benchmark")
    out()
    out(
        f"- vaeinv {vaeinv.__version__}, torch {torch.__version__}, pyro {pyro_version}, "
        f"arviz {arviz.__version__}, numpy {np.__version__}, python {platform.python_version()}"
    )
    out(
        f"- CPU: {platform.processor() or platform.machine()}, os.cpu_count() = "
        f"{os.cpu_count()}, usable cores = {affinity}, torch threads = "
        f"{torch.get_num_threads()}, device = {device}"
    )
    if load0 is not None:
        out(
            f"- load average at start (1/5/15 min): {load0[0]:.2f} / {load0[1]:.2f} / "
            f"{load0[2]:.2f}"
        )
        if load0[0] > 0.5 * affinity:
            out(
                f"- NOTE: the machine was already busy (load {load0[0]:.2f} on {affinity} "
                "cores): wall times and ESS per minute may be inflated"
            )
    quick = " (--quick: a smoke run, not a measurement)" if opts.quick else ""
    out(f"- seed {opts.seed} for every run{quick}")
    runs = "; ".join(
        f"{k}: {s['chains']} chains x ({s['warmup']} + {s['draws']}), thin {s['thin']}"
        for k, s in settings.items()
        if k in opts.methods
    )
    out(f"- runs (chains x (warm-up + iterations after warm-up), thinning): {runs}")
    has_gpcn = "gpcn" in _methods()
    if "gpcn" in opts.methods and not has_gpcn:
        out(f"- gpcn: skipped, the runner has no method 'gpcn' (registered: {_methods()})")
    out()

    rows: list[dict] = []
    bookkeeping: list[dict] = []
    gf_info: dict[str, dict] = {}
    for name in opts.problems:
        problem = load_problem(name)
        posteriors: dict[str, object] = {}
        for key in opts.methods:
            prior_kind, method = CONFIG_SETUP[key]
            if method not in _methods():
                rows.append(
                    {
                        "problem": problem.name,
                        "config": key,
                        "skip": f"skipped: the runner has no method {method!r}",
                    }
                )
                continue
            if prior_kind not in posteriors:
                t0 = time.perf_counter()
                if prior_kind == "vae":
                    posteriors[prior_kind] = problem.posterior(device=device)
                else:
                    prior = gf_prior(problem, opts)
                    posteriors[prior_kind] = problem.posterior(prior=prior, device=device)
                    gf_info[problem.name] = {
                        **prior.config(),
                        "explained_variance": prior.explained_variance,
                        "build_s": time.perf_counter() - t0,
                    }
                    log(
                        f"{problem.name}: Gaussian-field prior built in "
                        f"{time.perf_counter() - t0:.0f} s (KL, {prior.num_modes} modes, "
                        f"{100 * prior.explained_variance:.2f} % of the variance)"
                    )
            posterior = posteriors[prior_kind]
            try:
                row = run_config(problem, posterior, key, settings[key], opts)
            except Exception as err:  # report it and go on with the other runs
                traceback.print_exc()
                row = {
                    "problem": problem.name,
                    "config": key,
                    "skip": f"failed: {type(err).__name__}: {err}",
                }
            rows.append(row)
            if method == "pcn" and "skip" not in row:
                bk = measure_bookkeeping(
                    posterior, settings[key]["chains"], opts.bookkeeping_steps, opts.seed
                )
                per_it = row["runner_wall_time_s"] / max(row["warmup"] + row["draws"], 1)
                model = bk["decode_solve_s_mean"]
                bk.update(
                    problem=problem.name,
                    config=key,
                    prior=posterior.name,
                    runner_s_per_iteration=per_it,
                    runner_overhead_fraction=(per_it - model) / model if model > 0 else math.nan,
                )
                bookkeeping.append(bk)

    out("## results")
    out()
    out(TABLE_HEAD)
    out(TABLE_RULE)
    for name in dict.fromkeys(r["problem"] for r in rows):
        for r in rows:
            if r["problem"] == name:
                out(table_row(r))
        ref = mdgm_row(name)
        if ref is not None:
            out(ref)
    out()
    out(
        "ESS: the smallest bulk ESS over the 256 latents (latent) and over lp, the mean of log k "
        "and log k at five cells (field), from `results.diagnostics`; per 1000 forward solves "
        "(for NUTS every gradient evaluation counts one forward solve, its adjoint solve is not "
        "counted) and per minute of wall time. Wall time: the `runner.sample` call."
    )
    if gf_info:
        out()
        for name, cfg in gf_info.items():
            out(
                f"- Gaussian-field prior, {name}: {cfg['kernel']} nu {cfg['nu']}, mean "
                f"{cfg['mean']:.3g}, sd {cfg['std']:.3g}, length scale {cfg['length_scale']:g}, "
                f"KL {cfg['num_modes']} modes ({100 * cfg['explained_variance']:.2f} % of the "
                f"variance), built in {cfg['build_s']:.0f} s"
            )
    out()

    done = [r for r in rows if "skip" not in r]
    if done:
        out("## targets")
        out()
        keys = list(dict.fromkeys(k for r in done for k in targets(r)))
        out("| problem | configuration | " + " | ".join(keys) + " |")
        out("|---|---|" + "---|" * len(keys))
        for r in done:
            t = targets(r)
            cells = []
            for k in keys:
                met, detail = t.get(k, (None, "n/a"))
                cells.append("n/a" if met is None else f"{_ok(met)} ({detail})")
            out(f"| {r['problem']} | {_config_label(r)} | " + " | ".join(cells) + " |")
        out()
    if bookkeeping:
        out("## pCN bookkeeping")
        out()
        out(
            "| problem | configuration | chains | ms / pcn_step | ms / decode + solve | "
            f"bookkeeping (target <= {100 * TARGET_BOOKKEEPING:.0f} %) | runner ms / iteration | "
            "runner overhead |"
        )
        out("|---|---|---:|---:|---:|---:|---:|---:|")
        for b in bookkeeping:
            value = b["bookkeeping_fraction"]
            ok = _ok(None if math.isnan(value) else value <= TARGET_BOOKKEEPING)
            out(
                f"| {b['problem']} | {_config_label(b)} | {b['chains']} | "
                f"{1e3 * b['step_s_mean']:.1f} | {1e3 * b['decode_solve_s_mean']:.1f} | "
                f"{_pct(value)} ({ok}) | {1e3 * b['runner_s_per_iteration']:.1f} | "
                f"{_pct(b['runner_overhead_fraction'])} |"
            )
        out()
        out(
            f"Bookkeeping: mean over {opts.bookkeeping_steps} `pcn_step` calls (after 5 untimed) "
            "of the step's wall time minus the time spent in its one batched decode + solve "
            "(`posterior.decode` + `posterior.forward`, or `posterior.predict`), over the "
            "latter. Runner overhead: the runner's sampling wall time per iteration (which also "
            "stores the kept draws and computes pointwise log-likelihoods) against the same "
            "decode + solve time."
        )
        out()

    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    tail = (
        f"; load average at end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}" if load1 else ""
    )
    out(f"Total wall time: {time.perf_counter() - start:.0f} s{tail}")

    result = {
        "settings": {k: v for k, v in settings.items() if k in opts.methods},
        "seed": opts.seed,
        "quick": opts.quick,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "load_start": list(load0) if load0 else None,
        "load_end": list(load1) if load1 else None,
        "mdgm": MDGM,
        "gaussian_field_priors": gf_info,
        "rows": rows,
        "targets": {
            f"{r['problem']} {r['config']}": {k: v[0] for k, v in targets(r).items()} for r in done
        },
        "bookkeeping": bookkeeping,
    }
    if opts.out:
        base = Path(opts.out)
        if base.suffix in (".md", ".json"):
            base = base.with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        base.with_suffix(".md").write_text(out.text())
        base.with_suffix(".json").write_text(
            json.dumps(result, indent=1, default=_json_default, allow_nan=True) + "\n"
        )
        log(f"wrote {base.with_suffix('.md')} and {base.with_suffix('.json')}")
    return result


def _json_default(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


if __name__ == "__main__":
    main()
