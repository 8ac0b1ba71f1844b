"""``vaeinv invert``, ``merge``, ``extend`` and ``report``: the inversion commands (their
arguments are parsed in ``vaeinv.cli.parser``)."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["extend", "invert", "merge", "report"]


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


def _check_finished(path, problem, settings: dict, *, posterior, options: dict) -> None:
    """``--resume`` on a finished result file: refuse one from another problem, run settings,
    sampler options, data or prior weights (each difference named)."""
    import json

    from ..kernels import registry
    from ..provenance import tensor_sha256 as sha256
    from ..results import load

    result = load(path)
    attrs = {k: getattr(v, "item", lambda v=v: v)() for k, v in result.attrs.items()}
    wanted = {"problem": problem.name, **settings}
    differ = [
        f"{k}: {attrs.get(k)!r} in the file, {v!r} now"
        for k, v in wanted.items()
        if str(attrs.get(k)) != str(v)
    ]
    recorded = attrs.get("sampler_options", "{}")
    recorded = json.loads(recorded) if isinstance(recorded, str) else dict(recorded)
    kernel = registry.get(settings["method"])
    for key, value in sorted(kernel.Options.from_mapping(options, kernel.name).as_dict().items()):
        if recorded.get(key) != value:
            differ.append(f"sampler option {key}: {recorded.get(key)!r} in the file, {value!r} now")
    prior = getattr(posterior, "prior", None)
    for key, value in (
        ("data_sha256", sha256(posterior.data)),
        ("prior_weights_sha256", getattr(prior, "weights_sha256", None)),
    ):
        if key in attrs and str(attrs[key] or "") != str(value or ""):
            differ.append(f"{key}: {attrs[key]!r} in the file, {value!r} now")
    noise = result.constant_data["noise_std"].values if "constant_data" in result.groups() else None
    if noise is not None and not np.array_equal(noise, posterior.noise_std.cpu().numpy()):
        differ.append("noise_std: the file's noise standard deviations differ from the problem's")
    if differ:
        raise ValueError(
            f"cannot resume: {path} is a finished run of another problem or settings; "
            + "; ".join(differ)
        )


def _parse_chains(text: str) -> list[int]:
    """``"0,2"`` -> ``[0, 2]`` (the range is checked by ``vaeinv.sample``)."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--only-chains must be comma-separated chain indices such as 0,1, got {text!r}"
        ) from None


def _check_device(device: str | None) -> None:
    """``--device``: a torch device this machine has (``None``: the default)."""
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")


def _run_settings(args, problem) -> tuple[dict, dict]:
    """``(settings, options)`` of ``vaeinv invert``: the problem's defaults, then the flags."""
    from ..problems import check_sampler_options

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
    if args.only_chains is not None:
        settings["chains"] = _parse_chains(args.only_chains)
    if settings["thin"] != "auto":
        try:
            settings["thin"] = int(settings["thin"])
        except ValueError:
            raise ValueError(
                f"--thin must be 'auto' or an integer, got {settings['thin']!r}"
            ) from None
    return settings, options


def invert(args) -> int:
    from ..problems import load_problem

    distributed = _distributed(args)
    problem = load_problem(args.problem)
    defaults = problem.sampler_defaults
    settings, options = _run_settings(args, problem)
    if problem.decomposition is not None and not args.global_run:
        from .decomposed import invert_decomposed

        return invert_decomposed(args, problem, settings, options)
    method = settings["method"]
    chunk_size = defaults.chunk_size if args.chunk_size is None else args.chunk_size
    _check_device(args.device)
    out = Path(args.out or f"out/{problem.name}.nc")
    checkpoint = out.with_name(out.name + ".partial")
    posterior, inputs = problem.sampling_inputs(method, prior=args.prior)
    from ..results import save
    from ..runs import sampling as runs_sample
    from ..runs.thinning import resolve_thin

    thin_requested = settings["thin"]  # "auto" is resolved now, to print and compare
    settings["thin"] = resolve_thin(
        posterior,
        thin_requested,
        num_chains=settings["num_chains"],
        num_draws=settings["num_draws"],
    )
    if args.resume and out.is_file() and not checkpoint.exists():
        _check_finished(
            out,
            problem,
            {**settings, "prior_name": posterior.name},
            posterior=posterior,
            options=options,
        )
        print(f"{out} is already a finished run of {problem.name!r} with these settings")
        return 0
    if not args.resume and (checkpoint / "state.safetensors").is_file():
        raise ValueError(
            f"{checkpoint} holds an interrupted run: pass --resume to continue it, or delete "
            "the folder to start again"
        )
    thin = settings["thin"]
    auto = " (auto)" if thin_requested == "auto" else ""
    levels = [f"{c.grid.ny} x {c.grid.nx}" for c in inputs.get("coarse", [])]
    print(
        f"{problem.name}: {posterior.num_data} data, prior {posterior.name!r} "
        f"({posterior.latent_dim} latents"
        + (f"; coarse levels {', '.join(levels)}" if levels else "")
        + f"); {method}, {settings['num_chains']} chains x "
        f"({settings['num_warmup']} warm-up + {settings['num_draws']}) iterations, "
        f"thin {thin}{auto}: {settings['num_draws'] // thin} draws kept per chain, "
        f"seed {settings['seed']}; checkpoints in {checkpoint}"
    )
    if "chains" in settings:
        print(
            f"running only chain(s) {settings['chains']} of the {settings['num_chains']}; "
            "join the parts with: vaeinv merge PART... --out FILE"
        )
    start = time.perf_counter()
    run = {
        **{k: v for k, v in settings.items() if k not in ("method", "thin")},
        "thin": thin_requested,
        "device": args.device,
        "checkpoint": checkpoint,
        "resume": args.resume,
        "chunk_size": chunk_size,
        "attrs": problem.attrs(),
        **options,
    }
    try:
        if distributed:
            idata = _sample_on_workers(args, method, run)
        else:
            idata = runs_sample.sample(
                posterior, method, progress=not args.no_progress, **run, **inputs
            )
    except KeyboardInterrupt:
        return interrupted(args, out)
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


def interrupted(args, out) -> int:
    """What ``invert`` says and returns when interrupted."""
    print(
        f"\ninterrupted; continue with: vaeinv invert {args.problem} --out {out} --resume "
        "(and the same options)",
        file=sys.stderr,
    )
    return 130


def where_tasks_run(args) -> str:
    """Where ``--workers`` / ``--scheduler`` put a run's tasks, in words."""
    if args.scheduler:
        return f"the Dask scheduler at {args.scheduler}"
    return f"{args.workers} local Dask worker(s)" if args.workers else "this process"


def _distributed(args) -> bool:
    """Whether ``invert`` runs its chains in groups (``--workers``, ``--scheduler`` or
    ``--chain-groups``); refuses ``--only-chains`` with them."""
    wanted = any(v is not None for v in (args.workers, args.scheduler, args.chain_groups))
    if wanted and args.only_chains is not None:
        raise ValueError(
            "--only-chains runs some chains by hand; --workers, --scheduler and --chain-groups "
            "run all of them in groups: give one or the other"
        )
    return wanted


def _sample_on_workers(args, method: str, run: dict):
    """The run in chain groups, on Dask workers or in this process
    ([`sample_distributed`][vaeinv.runs.distributed.sample_distributed])."""
    from ..runs.distributed import problem_builder, sample_distributed

    print(f"chains in groups on {where_tasks_run(args)}")

    def done(group: int, idata) -> None:
        chains = [int(c) for c in idata.posterior["chain"].values]
        print(f"  group {group} (chains {chains}) done", flush=True)

    build = problem_builder(args.problem, method, args.prior, args.device)
    return sample_distributed(
        build,
        method,
        groups=args.chain_groups,
        workers=args.workers,
        scheduler=args.scheduler,
        timeout=args.scheduler_timeout,
        on_done=done,
        **run,
    )


def merge(args) -> int:
    from ..results import load, save
    from ..runs.merge import merge_runs

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists; choose another --out or pass --force to replace it")
    parts = [load(path) for path in args.parts]
    merged = merge_runs(parts)
    save(merged, out)
    chains = [int(c) for c in merged.posterior["chain"].values]
    print(
        f"wrote {out}: chains {chains} from {len(parts)} parts, "
        f"{int(merged.attrs.get('forward_solves', 0))} forward solves, "
        f"{float(merged.attrs.get('wall_time_s', 0.0)):.0f} s of sampling in all; "
        f"next: vaeinv report {out}"
    )
    return 0


def _result_and_output(args, suffix: str):
    """``(path, result, out)``: the result file ``args.file`` read, and ``--out`` (default: the
    file's name with ``suffix``)."""
    from ..results import load

    path = Path(args.file)
    out = Path(args.out) if args.out else path.with_name(path.stem + suffix)
    return path, load(path), out


def extend(args) -> int:
    from ..problems import load_problem
    from ..results import save
    from ..runs.extend import extend_run

    path, idata, out = _result_and_output(args, "_extended.nc")
    if out.resolve() == path.resolve():
        raise ValueError(f"--out {out} is the input file; the extension writes a new file")
    checkpoint = out.with_name(out.name + ".partial")
    if out.exists() and not args.force:
        raise ValueError(f"{out} exists; choose another --out or pass --force to replace it")
    if not args.resume and (checkpoint / "state.safetensors").is_file():
        raise ValueError(
            f"{checkpoint} holds an interrupted extension: pass --resume to continue it, or "
            "delete the folder to start again"
        )
    name = args.problem or idata.attrs.get("problem")
    if not name:
        raise ValueError(f"{path} does not name its problem; pass --problem")
    problem = load_problem(str(name))
    _check_device(args.device)
    posterior = problem.posterior(prior=args.prior)
    if args.device is not None:
        posterior = posterior.to(args.device)
    chains = [int(c) for c in idata.posterior["chain"].values]
    print(
        f"{path}: {idata.attrs.get('method')} run of {problem.name!r}, chains {chains}, "
        f"{idata.posterior.sizes['draw']} draws kept per chain; adding {args.draws} "
        f"iterations per chain; checkpoints in {checkpoint}"
    )
    start = time.perf_counter()
    try:
        longer = extend_run(
            idata,
            posterior,
            num_draws=args.draws,
            num_warmup=args.warmup,
            checkpoint=checkpoint,
            resume=args.resume,
            chunk_size=args.chunk_size,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; continue with: vaeinv extend {path} --draws {args.draws} "
            f"--out {out} --resume",
            file=sys.stderr,
        )
        return 130
    save(longer, out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    print(
        f"wrote {out} in {time.perf_counter() - start:.1f} s: "
        f"{longer.posterior.sizes['draw']} draws kept per chain; next: vaeinv report {out}"
    )
    return 0


def report(args) -> int:
    from ..results import diagnostics
    from ..results.report import write_report

    _, idata, out = _result_and_output(args, "_report")
    report = write_report(idata, out, diagnostics=diagnostics(idata), result_path=args.file)
    print(report.table)
    print("wrote " + ", ".join(str(p) for p in report.files.values()))
    return 0
