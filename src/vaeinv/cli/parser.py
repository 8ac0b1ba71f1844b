"""``vaeinv``: train priors, make problem data, invert problems, and report on the results.

Run ``vaeinv --help`` for the commands and ``vaeinv COMMAND --help`` for each one's options."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from ..problems import problem_methods
from . import commands as _commands
from .train_data import add_data_arguments
from .training import finetune_command, train_command

__all__ = ["main"]


def smooth_random_field(grid, length_scale: float, std: float, generator: torch.Generator):
    """A stationary Gaussian log-k field with a Gaussian covariance, by FFT filtering of white
    noise on a periodic extension (a stand-in until the field generators arrive)."""
    ny, nx = 2 * grid.ny, 2 * grid.nx
    noise = torch.randn(ny, nx, generator=generator, dtype=torch.float64)
    ky = torch.fft.fftfreq(ny, d=grid.dy, dtype=torch.float64)[:, None]
    kx = torch.fft.fftfreq(nx, d=grid.dx, dtype=torch.float64)[None, :]
    filt = torch.exp(-((2 * math.pi) ** 2) * (kx**2 + ky**2) * length_scale**2 / 4)
    field = torch.fft.ifft2(torch.fft.fft2(noise) * filt).real[: grid.ny, : grid.nx]
    return std * (field - field.mean()) / field.std()


def _forward(args) -> int:
    from ..grid import Grid
    from ..physics import DarcyFlow, PointSensors
    from .plots import plot_fields

    grid = Grid(args.nx, args.ny)
    gen = torch.Generator().manual_seed(args.seed)
    log_k = smooth_random_field(grid, args.length_scale, args.std, gen)
    flow = DarcyFlow(grid, dirichlet={"left": 0.0, "right": 0.0}, source=args.source)
    start = time.perf_counter()
    pressure = flow.solve(log_k)
    elapsed = time.perf_counter() - start
    sensors = PointSensors.lattice(grid, min(8, args.nx, args.ny))
    path = plot_fields(
        grid,
        {"log k": log_k, "pressure": pressure},
        args.out,
        sensors_xy=sensors.xy,
        title=f"-div(k grad p) = {args.source:g}, p = 0 left and right (seed {args.seed})",
    )
    print(
        f"solved {grid.ny} x {grid.nx} in {1e3 * elapsed:.1f} ms; "
        f"pressure in [{float(pressure.min()):.4g}, {float(pressure.max()):.4g}]; "
        f"figure: {path}"
    )
    return 0


def _read_toml(path: str) -> dict:
    import tomllib

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {path!r} does not exist")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None


def _generate(args) -> int:
    from ..fields import generate_dataset, generator_from_config

    config = _read_toml(args.config)
    # a bare generator config, or a prior recipe whose [data.generator] table is used
    if "kind" not in config and isinstance(config.get("data"), dict):
        config = config["data"].get("generator", {})
    generator = generator_from_config(config)
    start = time.perf_counter()
    data = generate_dataset(generator, args.num, args.seed, args.out)
    print(
        f"wrote {data.fields.shape[0]} {generator.kind} fields of {data.grid.ny} x {data.grid.nx} "
        f"(seed {args.seed}) to {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0


_DESCRIPTION = """\
Bayesian inversion of subsurface properties with deep generative priors.

  vaeinv invert demo --out out/demo.nc       sample the posterior of a shipped problem
  vaeinv report out/demo.nc                  its summary table and figures
  vaeinv train RECIPE --out DIR              train a VAE prior of your own

Each command's options: vaeinv COMMAND --help."""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="vaeinv",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vaeinv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fwd = sub.add_parser("forward", help="solve the flow problem on a random field, draw it")
    fwd.add_argument("--nx", type=int, default=64)
    fwd.add_argument("--ny", type=int, default=64)
    fwd.add_argument("--seed", type=int, default=0)
    fwd.add_argument("--length-scale", type=float, default=0.1)
    fwd.add_argument("--std", type=float, default=1.0)
    fwd.add_argument("--source", type=float, default=3.0)
    fwd.add_argument("--out", default="out/forward.png")
    fwd.set_defaults(func=_forward)

    gen = sub.add_parser("generate", help="sample a dataset of prior fields from a config")
    gen.add_argument("config", help="TOML: a generator config, or a prior recipe")
    gen.add_argument("--num", type=int, required=True, help="number of fields")
    gen.add_argument("--seed", type=int, required=True, help="seed (written into the file)")
    gen.add_argument("--out", required=True, help="output .safetensors file")
    gen.set_defaults(func=_generate)

    trn = sub.add_parser("train", help="train a VAE prior from a recipe or your own fields")
    trn.add_argument("recipe", nargs="?", help="TOML recipe: data, [vae] and [training] tables")
    trn.add_argument("--out", required=True, help="folder for data, checkpoints and history")
    trn.add_argument("--resume", action="store_true", help="continue an interrupted run")
    trn.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_arguments(trn)
    trn.set_defaults(func=train_command)

    ftn = sub.add_parser(
        "finetune",
        help="fine-tune a trained prior's decoder by the recipe's [finetune] table",
    )
    ftn.add_argument("recipe", help="TOML recipe with a [finetune] table (its data and stages)")
    ftn.add_argument("--prior", required=True, help="a checkpoint path or a shipped prior name")
    ftn.add_argument("--out", required=True, help="folder for the data and run/model.*")
    ftn.add_argument("--force", action="store_true", help="replace an existing run/model.*")
    ftn.add_argument("--no-progress", action="store_true", help="no progress bar")
    ftn.set_defaults(func=finetune_command)

    _add_inversion_commands(sub)
    return parser


def _add_inversion_commands(sub) -> None:
    """``invert``, ``merge``, ``extend`` and ``report``."""
    inv = sub.add_parser(
        "invert",
        help=f"sample the posterior of a problem ({', '.join(problem_methods())}), write an "
        "InferenceData file",
        description="Sample the posterior of a problem. Flags override the problem's [sampler] "
        "defaults. Draws are checkpointed in OUT.partial/ as the run goes on; --resume "
        "continues an interrupted run.",
    )
    inv.add_argument("problem", help="a problem name (problems/<name>), folder or problem.toml")
    inv.add_argument(
        "--method",
        choices=problem_methods(),
        help="sampler (default: the problem's)",
    )
    inv.add_argument("--chains", type=int, help="number of chains")
    inv.add_argument(
        "--draws", type=int, help="iterations per chain after warm-up (DRAWS // THIN are kept)"
    )
    inv.add_argument("--warmup", type=int, help="warm-up iterations per chain")
    inv.add_argument(
        "--thin",
        help="keep every THIN-th iteration, or auto: the smallest THIN that keeps the result "
        "under about 100 MB (default: the problem's, else auto)",
    )
    inv.add_argument("--seed", type=int, help="the run's seed")
    inv.add_argument("--out", help="result file (netCDF; default out/<problem>.nc)")
    inv.add_argument("--device", help="torch device, e.g. cpu or cuda")
    inv.add_argument("--resume", action="store_true", help="continue an interrupted run")
    inv.add_argument(
        "--prior",
        help="another prior: a shipped name, checkpoint or gaussian-field (for mlda and staged: "
        "a multiscale prior instead of the problem's [multilevel] one)",
    )
    inv.add_argument("--chunk-size", type=int, help="kept draws per checkpoint")
    inv.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler option, e.g. target_accept=0.3 (repeatable)",
    )
    inv.add_argument("--no-progress", action="store_true", help="no progress bar")
    inv.add_argument(
        "--only-chains",
        metavar="IDS",
        help="NUTS: run only these of the run's chains (comma-separated indices, e.g. 0,1), "
        "say in another process; join the parts with vaeinv merge",
    )
    _add_worker_options(inv)
    inv.set_defaults(func=_commands.invert)

    mrg = sub.add_parser(
        "merge",
        help="join results of some chains each (invert --only-chains) into the run's result",
    )
    mrg.add_argument("parts", nargs="+", help="result files of one run, other chains each")
    mrg.add_argument("--out", required=True, help="the joined result file (netCDF)")
    mrg.add_argument("--force", action="store_true", help="replace an existing --out file")
    mrg.set_defaults(func=_commands.merge)

    ext = sub.add_parser(
        "extend",
        help="more draws for a finished invert result: its chains continued, draws appended",
        description="Continue every chain of a finished result from its last draw and append "
        "the new draws (NUTS and HMC with the covariance of the result's draws as their mass, "
        "pCN with its step size re-adapted; see vaeinv.runs.extend). The input file is not "
        "changed. Draws are checkpointed in OUT.partial/; --resume continues.",
    )
    ext.add_argument("file", help="a result file of vaeinv invert, merge or extend")
    ext.add_argument("--draws", type=int, required=True, help="iterations per chain to add")
    ext.add_argument(
        "--warmup",
        type=int,
        help="step-size warm-up before them (default: 50 NUTS and HMC, 100 pCN)",
    )
    ext.add_argument("--out", help="the longer result (default: FILE_extended.nc beside FILE)")
    ext.add_argument(
        "--problem", help="the problem the run sampled (default: the one the file names)"
    )
    ext.add_argument("--prior", help="the prior the run used, when invert had --prior")
    ext.add_argument("--device", help="torch device, e.g. cpu or cuda")
    ext.add_argument("--chunk-size", type=int, help="kept draws per checkpoint")
    ext.add_argument("--resume", action="store_true", help="continue an interrupted extension")
    ext.add_argument("--force", action="store_true", help="replace an existing --out file")
    ext.add_argument("--no-progress", action="store_true", help="no progress bar")
    ext.set_defaults(func=_commands.extend)

    rep = sub.add_parser("report", help="summary table and figures of an invert result")
    rep.add_argument("file", help="result file written by vaeinv invert")
    rep.add_argument("--out", help="folder for the table and figures (default FILE_report/)")
    rep.set_defaults(func=_commands.report)


def _add_worker_options(inv) -> None:
    """``invert``'s options for running the chains in groups on Dask workers."""
    inv.add_argument("--global", dest="global_run", action="store_true", help="on a problem "
                     "with a [decomposition] table: its [prior] on the whole grid")  # fmt: skip
    inv.add_argument(
        "--workers",
        type=int,
        help="run the chains in groups on a local Dask cluster of this many worker processes",
    )
    inv.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the chain groups on a running Dask cluster, e.g. tcp://host:8786",
    )
    inv.add_argument(
        "--chain-groups",
        type=int,
        help="the number of chain groups (default: one per chain for NUTS, one for the batched "
        "samplers; a batched sampler's draws depend on it, never on the workers)",
    )
    inv.add_argument(
        "--scheduler-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the Dask scheduler (default 30)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"vaeinv {args.command}: error: {err}", file=sys.stderr)
        return 2
