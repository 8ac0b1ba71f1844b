"""The ``vaeinv`` command line. Argument parsing lives here and nowhere else."""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

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
    from . import Grid
    from .physics import DarcyFlow, PointSensors
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
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {path!r} does not exist")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None


def _generate(args) -> int:
    from .fields import generate_dataset, generator_from_config

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


def _train(args) -> int:
    from pathlib import Path

    from .fields import generate_dataset, load_dataset
    from .recipes import load_recipe
    from .vae import load_checkpoint, save_checkpoint, train
    from .vae.calibration import fit_latent_gaussian

    recipe = load_recipe(args.recipe)
    out = Path(args.out)
    data_file = out / "data.safetensors"
    if data_file.exists():
        data = load_dataset(data_file)
        held = (data.metadata["num"], data.metadata["seed"], data.metadata["config"])
        wanted = (recipe.num, recipe.seed, recipe.field_generator().config())
        if held != wanted:
            raise ValueError(
                f"{data_file} holds {held[0]} fields of seed {held[1]} from {held[2]}, but the "
                f"recipe asks for {wanted[0]} of seed {wanted[1]} from {wanted[2]}; remove the "
                "file or choose another --out"
            )
    else:
        print(f"sampling {recipe.num} training fields (seed {recipe.seed}) ...")
        data = generate_dataset(recipe.field_generator(), recipe.num, recipe.seed, data_file)
    result = train(
        recipe.vae,
        recipe.training,
        data.fields,
        out / "run",
        resume=args.resume,
        progress=not args.no_progress,
        grid=data.grid,
        generator_config=data.metadata["config"],
    )
    checkpoint = out / "run" / "model.safetensors"
    if recipe.calibrate:
        fit_latent_gaussian(result.model, data.fields)
        saved = load_checkpoint(checkpoint)
        save_checkpoint(
            checkpoint,
            result.model,
            grid=data.grid,
            generator_config=data.metadata["config"],
            train_config=saved.metadata.get("train_config"),
            losses=saved.metadata.get("losses"),
        )
        print(f"fitted the latent Gaussian of the aggregate posterior on {recipe.num} fields")
    if recipe.second_stage is not None:
        from .recipes import fit_recipe_second_stage

        fit_recipe_second_stage(recipe, checkpoint.parent)
    print(
        f"best epoch {result.best_epoch} (monitored loss {result.best_loss:.4g}); "
        f"checkpoint: {checkpoint}"
    )
    return 0


def _parse_option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with a TOML value (``0.3``, ``true``, ``"x"``); bare words are strings."""
    import tomllib

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--option must be KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def _check_finished(path, problem, settings: dict) -> None:
    """``--resume`` on a finished result file: refuse one from another problem or run."""
    from .inference.results import load

    attrs = {k: getattr(v, "item", lambda v=v: v)() for k, v in load(path).attrs.items()}
    wanted = {"problem": problem.name, **settings}
    differ = [
        f"{k}: {attrs.get(k)!r} in the file, {v!r} now"
        for k, v in wanted.items()
        if str(attrs.get(k)) != str(v)
    ]
    if differ:
        raise ValueError(
            f"cannot resume: {path} is a finished run of another problem or settings; "
            + "; ".join(differ)
        )


def _invert(args) -> int:
    import shutil
    from pathlib import Path

    from .problems import check_sampler_options, load_problem

    problem = load_problem(args.problem)
    defaults = problem.sampler_defaults
    method = args.method or defaults.method
    options = defaults.options_for(method)
    options.update(_parse_option(text) for text in args.option)
    options = check_sampler_options(method, options, "--option")
    settings = {
        "method": method,
        "seed": defaults.seed if args.seed is None else args.seed,
        "num_chains": defaults.num_chains if args.chains is None else args.chains,
        "num_draws": defaults.num_draws if args.draws is None else args.draws,
        "num_warmup": defaults.num_warmup if args.warmup is None else args.warmup,
        "thin": defaults.thin if args.thin is None else args.thin,
    }
    if settings["thin"] != "auto":
        try:
            settings["thin"] = int(settings["thin"])
        except ValueError:
            raise ValueError(
                f"--thin must be 'auto' or an integer, got {settings['thin']!r}"
            ) from None
    chunk_size = defaults.chunk_size if args.chunk_size is None else args.chunk_size
    if args.device is not None:
        try:
            kind = torch.device(args.device).type
        except RuntimeError:
            raise ValueError(f"--device {args.device!r} is not a torch device") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    out = Path(args.out or f"out/{problem.name}.nc")
    checkpoint = out.with_name(out.name + ".partial")
    posterior = problem.posterior(prior=args.prior)
    from .inference.results import save
    from .inference.runner import resolve_thin, sample

    thin_requested = settings["thin"]  # "auto" is resolved now, to print and compare
    settings["thin"] = resolve_thin(
        posterior,
        thin_requested,
        num_chains=settings["num_chains"],
        num_draws=settings["num_draws"],
    )
    if args.resume and out.is_file() and not checkpoint.exists():
        _check_finished(out, problem, {**settings, "prior_name": posterior.name})
        print(f"{out} is already a finished run of {problem.name!r} with these settings")
        return 0
    if not args.resume and (checkpoint / "state.safetensors").is_file():
        raise ValueError(
            f"{checkpoint} holds an interrupted run: pass --resume to continue it, or delete "
            "the folder to start again"
        )
    thin = settings["thin"]
    auto = " (auto)" if thin_requested == "auto" else ""
    print(
        f"{problem.name}: {posterior.num_data} data, prior {posterior.name!r} "
        f"({posterior.latent_dim} latents); {method}, {settings['num_chains']} chains x "
        f"({settings['num_warmup']} warm-up + {settings['num_draws']}) iterations, "
        f"thin {thin}{auto}: {settings['num_draws'] // thin} draws kept per chain, "
        f"seed {settings['seed']}; checkpoints in {checkpoint}"
    )
    start = time.perf_counter()
    try:
        idata = sample(
            posterior,
            method,
            **{k: v for k, v in settings.items() if k not in ("method", "thin")},
            thin=thin_requested,
            device=args.device,
            checkpoint=checkpoint,
            resume=args.resume,
            chunk_size=chunk_size,
            progress=not args.no_progress,
            attrs=problem.attrs(),
            **options,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; continue with: vaeinv invert {args.problem} --out {out} --resume "
            "(and the same options)",
            file=sys.stderr,
        )
        return 130
    save(idata, out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    stats = idata.sample_stats
    counts = [f"mean acceptance {float(stats['acceptance_rate'].mean()):.3f}"]
    for name, label in (("diverging", "divergences"), ("failed", "failed solves")):
        if name in stats:
            counts.append(f"{int(stats[name].sum())} {label}")
    print(
        f"wrote {out} in {time.perf_counter() - start:.1f} s ({', '.join(counts)}); "
        f"next: vaeinv report {out}"
    )
    return 0


def _report(args) -> int:
    from pathlib import Path

    from .inference.report import write_report
    from .inference.results import diagnostics, load

    path = Path(args.file)
    idata = load(path)
    out = Path(args.out) if args.out else path.with_name(path.stem + "_report")
    report = write_report(idata, out, diagnostics=diagnostics(idata))
    print(report.table)
    print("wrote " + ", ".join(str(p) for p in report.files.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="vaeinv", description=__doc__)
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

    trn = sub.add_parser("train", help="train a VAE prior from a recipe")
    trn.add_argument("recipe", help="TOML recipe: data, [vae] and [training] settings")
    trn.add_argument("--out", required=True, help="folder for data, checkpoints and history")
    trn.add_argument("--resume", action="store_true", help="continue an interrupted run")
    trn.add_argument("--no-progress", action="store_true", help="no progress bar")
    trn.set_defaults(func=_train)

    inv = sub.add_parser(
        "invert",
        help="sample the posterior of a problem (pCN or NUTS), write an InferenceData file",
        description="Sample the posterior of a problem. Flags override the problem's [sampler] "
        "defaults. Draws are checkpointed in OUT.partial/ as the run goes on; --resume "
        "continues an interrupted run.",
    )
    inv.add_argument("problem", help="a problem name (problems/<name>), folder or problem.toml")
    inv.add_argument(
        "--method", choices=("pcn", "gpcn", "nuts"), help="sampler (default: the problem's)"
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
    inv.add_argument("--prior", help="another prior: a shipped name, checkpoint or gaussian-field")
    inv.add_argument("--chunk-size", type=int, help="kept draws per checkpoint")
    inv.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler option, e.g. target_accept=0.3 (repeatable)",
    )
    inv.add_argument("--no-progress", action="store_true", help="no progress bar")
    inv.set_defaults(func=_invert)

    rep = sub.add_parser("report", help="summary table and figures of an invert result")
    rep.add_argument("file", help="result file written by vaeinv invert")
    rep.add_argument("--out", help="folder for the table and figures (default FILE_report/)")
    rep.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"vaeinv {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
