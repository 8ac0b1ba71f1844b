"""``vaeinv invert`` on a problem with a ``[decomposition]`` table: the local problems
prepared, every subdomain and chain group sampled (here or on Dask), the draws blended."""

from __future__ import annotations

import shutil
import time
from pathlib import Path


def invert_decomposed(args, problem, settings: dict, options: dict) -> int:
    """Run the domain-decomposed inversion of ``problem`` (``vaeinv.decomposition``)."""
    from ..decomposition import build_local
    from ..decomposition.run import sample_decomposed
    from ..results import save
    from ..runs.thinning import resolve_thin
    from .commands import interrupted, where_tasks_run

    if "chains" in settings:
        raise ValueError(
            "--only-chains is not available for a decomposed problem: its subdomains and chain "
            "groups are the tasks (use --workers or --scheduler, or --global)"
        )
    if args.prior is not None:
        raise ValueError(
            "--prior replaces the global prior: give it with --global; the local prior is "
            "[decomposition] prior"
        )
    out = Path(args.out or f"out/{problem.name}.nc")
    checkpoint = out.with_name(out.name + ".partial")
    if not args.resume and checkpoint.exists() and any(checkpoint.rglob("state.safetensors")):
        raise ValueError(
            f"{checkpoint} holds an interrupted run: pass --resume to continue it, or delete "
            "the folder to start again"
        )
    spec = problem.decomposition
    start = time.perf_counter()
    decomposition = spec.prepare(problem)
    info = decomposition.info
    local, _ = build_local(decomposition.specs[0])
    thin_requested = settings["thin"]
    thin = resolve_thin(
        local, thin_requested, num_chains=settings["num_chains"], num_draws=settings["num_draws"]
    )
    sensors = ", ".join(str(s.num_sensors) for s in decomposition.specs)
    print(
        f"{problem.name}: {decomposition.partition!r}; local prior {info['local_prior']!r} "
        f"({local.latent_dim} latents); sensors per subdomain {sensors}; interface GP length "
        f"scale {info['gp_length_scale']:.3g}, {info.get('interface_points_added', 0)} "
        f"interface points added, largest interface sd "
        f"{info.get('interface_max_sd_after', float('nan')):.3g} "
        f"({info['global_solves']} global solve(s), {info['local_solves']} local solves, "
        f"{time.perf_counter() - start:.1f} s)"
    )
    where = where_tasks_run(args)
    print(
        f"{settings['method']} in each subdomain, {settings['num_chains']} chains x "
        f"({settings['num_warmup']} warm-up + {settings['num_draws']}) iterations, thin {thin}, "
        f"seed {settings['seed']}, on {where}; checkpoints in {checkpoint}"
    )

    def done(task: int, idata) -> None:
        print(f"  task {task} done", flush=True)

    run = {k: v for k, v in settings.items() if k not in ("method", "thin")}
    try:
        idata = sample_decomposed(
            decomposition, settings["method"], groups=args.chain_groups, workers=args.workers,
            scheduler=args.scheduler, timeout=args.scheduler_timeout, checkpoint=checkpoint,
            on_done=done, thin=thin, resume=args.resume, device=args.device,
            chunk_size=args.chunk_size or problem.sampler_defaults.chunk_size,
            attrs=problem.attrs(), **run, **options,
        )  # fmt: skip
    except KeyboardInterrupt:
        return interrupted(args, out)
    save(idata, out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    acceptance = idata.sample_stats["acceptance_rate"].mean(("chain", "draw")).values
    print(
        f"wrote {out} in {time.perf_counter() - start:.1f} s (mean acceptance per subdomain "
        f"{', '.join(f'{a:.3f}' for a in acceptance)}; seam ratio "
        f"{idata.attrs['seam_ratio_gathered']:.2f} gathered, "
        f"{idata.attrs['seam_ratio_blended']:.2f} blended); next: vaeinv report {out}"
    )
    return 0
