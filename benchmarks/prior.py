"""Prior-quality benchmark: how well a trained VAE prior reproduces its training generator.

For every prior (a shipped name such as ``gaussian64`` or a checkpoint path) it prints

* the reconstruction error ``||decode(encode(x)) - x|| / ||x||`` (mean and 90th percentile) on
  held-out fields drawn from the prior's own generator config (read from the checkpoint
  metadata) with a seed that differs from the training seeds;
* one-point and two-point statistics of prior samples against generator samples: the mean and
  sd of log k (pooled over pixels and fields) and the semivariogram
  ``gamma(h) = 0.5 * mean((f[x + h] - f[x])**2)`` at lags 1..16 cells along x and along y;
* for priors with a residual field and an encoder, the same sd and variogram with the latent
  drawn from the aggregate posterior ``q(z)`` of the held-out fields instead of the latent
  Gaussian: how much of a gap the latent distribution makes, rather than the decoder;
* for channelized priors, the channel-facies fraction: the generator's facies mask, and both
  sample sets classified by the threshold halfway between the two facies means;
* the reconstruction of the MDGM truth of the same kind (64 x 64 only): ``decode(encode(truth))``
  and a MAP-like projection (Adam on ``z`` minimising ``||decode(z) - truth||^2 + ||z||^2``);
* the decode throughput (fields/s) at batch 1 and 256, and the training time per epoch;
* a "targets" line: mean and sd within 5 %, variogram within 10 % at every lag, channel
  fraction within 3 points, held-out reconstruction <= 0.10 (Gaussian) or 0.15 (channelized).

Run ``python benchmarks/prior.py --help`` for the options; ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

DEFAULT_PRIORS = ("gaussian64", "channel64")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MDGM_DIR = REPO_ROOT.parent / "shared" / "benchmarks" / "mdgm"
MDGM_FILES = {
    "gaussian": "gaussian_true_permeability.dat",
    "channelized": "channel_true_permeability.dat",
}
CHUNK = 250  # fields per encode/decode call (bounds the activation memory)

TARGET_MOMENT = 0.05  # relative difference of mean and sd
TARGET_VARIOGRAM = 0.10  # relative difference at every lag
TARGET_FACIES = 0.03  # absolute difference of the channel fraction
TARGET_RECON = {"gaussian": 0.10, "channelized": 0.15}


# ---------------------------------------------------------------------------- statistics
def rel_l2(approx, exact):
    """Per-field relative L2 error ``||approx - exact|| / ||exact||`` over the last two dims."""
    num = (approx - exact).flatten(-2).norm(dim=-1)
    return num / exact.flatten(-2).norm(dim=-1)


def variogram(fields, lags):
    """Semivariograms ``(gamma_x, gamma_y)`` of ``(n, ny, nx)`` fields at integer ``lags``.

    ``gamma(h) = 0.5 * mean((f[i + h] - f[i])**2)``, pooled over all pairs h cells apart along
    x (columns) or along y (rows) in every field; float64.
    """
    f = fields.double()
    gx = [0.5 * (f[..., :, h:] - f[..., :, :-h]).square().mean().item() for h in lags]
    gy = [0.5 * (f[..., h:, :] - f[..., :-h, :]).square().mean().item() for h in lags]
    return gx, gy


def rel_diff(value, reference):
    return (value - reference) / abs(reference) if reference != 0 else math.inf


# ---------------------------------------------------------------------------- helpers
def checkpoint_path(name_or_path: str) -> Path:
    """The weights file of a shipped prior name or a checkpoint path (as ``Prior.load``)."""
    import vaeinv

    path = Path(name_or_path)
    if not path.exists():
        path = Path(vaeinv.__file__).parent / "priors" / "shipped" / str(name_or_path)
    return path


def training_seeds(ckpt) -> dict[str, int]:
    """Seeds used to make the prior: the data seed (from a ``recipe.toml`` next to the
    checkpoint, or the ``data.safetensors`` one folder up as ``vaeinv train`` writes it) and
    the training seed with the two derived from it."""
    seeds: dict[str, int] = {}
    folder = ckpt.path.parent
    recipe = folder / "recipe.toml"
    data = folder.parent / "data.safetensors"
    if recipe.is_file():
        import tomllib

        try:
            seeds["data"] = int(tomllib.loads(recipe.read_text())["data"]["seed"])
        except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError):
            pass
    if "data" not in seeds and data.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(data), framework="pt") as handle:
                meta = json.loads((handle.metadata() or {}).get("vaeinv", "{}"))
            seeds["data"] = int(meta["seed"])
        except (KeyError, TypeError, ValueError, OSError):
            pass
    train_seed = (ckpt.metadata.get("train_config") or {}).get("seed")
    if isinstance(train_seed, int):
        seeds.update(train=train_seed, shuffle=train_seed + 1, val=train_seed + 2)
    return seeds


def read_history(ckpt) -> dict | None:
    """Epochs run and seconds per epoch from ``history.json`` next to the checkpoint."""
    path = ckpt.path.parent / "history.json"
    if not path.is_file():
        return None
    try:
        hist = json.loads(path.read_text())
        seconds = [float(r["seconds"]) for r in hist["epochs"]]
    except (KeyError, TypeError, ValueError):
        return None
    if not seconds:
        return None
    return {
        "epochs": len(seconds),
        "mean_s": statistics.fmean(seconds),
        "median_s": statistics.median(seconds),
        "total_s": sum(seconds),
        "best_epoch": hist.get("best_epoch"),
        "stopped_early": hist.get("stopped_early"),
        "num_fields": hist.get("num_fields"),
        "path": path,
    }


def decode_chunked(prior, z):
    import torch

    with torch.no_grad():
        return torch.cat([prior.decode(c) for c in z.split(CHUNK)]).float().cpu()


def reconstruct(prior, fields):
    import torch

    with torch.no_grad():
        out = [prior.decode(prior.encode(c)) for c in fields.split(CHUNK)]
    return torch.cat(out).float().cpu()


def sample_generator(gen_obj, n: int, generator):
    """``(fields, facies or None)`` from a field generator."""
    import torch

    if hasattr(gen_obj, "sample_with_facies"):
        return gen_obj.sample_with_facies(n, generator, torch.float32, "cpu")
    return gen_obj.sample(n, generator, torch.float32, "cpu"), None


def aggregate_draws(prior, fields, generator):
    """Decoded draws of the aggregate posterior ``q(z) = mean_x q(z | x)`` over ``fields``.

    One ``z = mu(x) + sigma(x) * eps`` per field, decoded by the VAE's own decoder (no latent
    transform: ``z`` is the VAE's raw latent). Against decoded draws of the prior's latent
    Gaussian this separates what the latent prior misses from what the decoder misses.
    """
    import torch

    out = []
    with torch.no_grad():
        for chunk in fields.split(CHUNK):
            mu, logvar = prior.encoder(chunk.to(prior.device, prior.dtype))
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
            out.append(prior.decoder(mu + (0.5 * logvar).exp() * eps).float().cpu())
    return torch.cat(out)


def map_projection(prior, truth, steps: int, lr: float):
    """Adam on ``z`` from ``encode(truth)``: minimise ``||decode(z) - truth||^2 + ||z||^2``."""
    import torch

    with torch.no_grad():
        z0 = prior.encode(truth)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best = (math.inf, z0)
    for _ in range(steps):
        opt.zero_grad()
        loss = (prior.decode(z) - truth).square().sum() + z.square().sum()
        loss.backward()
        if loss.item() < best[0]:
            best = (loss.item(), z.detach().clone())
        opt.step()
    with torch.no_grad():
        loss = (prior.decode(z) - truth).square().sum() + z.square().sum()
        if loss.item() < best[0]:
            best = (loss.item(), z.detach().clone())
        fit = prior.decode(best[1])
    return fit, best[1], best[0]


def decode_throughput(prior, batch: int, repeats: int, generator) -> float:
    """Fields per second of ``prior.decode`` on ``(batch, latent_dim)`` under no_grad:
    one warm-up call, then the median of ``repeats`` timed calls."""
    import torch

    z = torch.randn(batch, prior.latent_dim, generator=generator, dtype=prior.dtype)
    times = []
    with torch.no_grad():
        prior.decode(z)
        for _ in range(repeats):
            start = time.perf_counter()
            prior.decode(z)
            times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.1f} %"


def _abs_pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _ok(flag) -> str:
    return "met" if flag else "NOT met"


# ---------------------------------------------------------------------------- one prior
def bench_prior(name: str, opts, seeds: dict[str, int]) -> dict:
    import numpy as np
    import torch

    from vaeinv import Prior
    from vaeinv.fields import generator_from_config
    from vaeinv.vae.checkpoint import load_checkpoint

    print(f"## prior `{name}`")
    print()
    try:
        prior = Prior.load(name)
        ckpt = load_checkpoint(checkpoint_path(name))
    except ValueError as err:
        print(f"- n/a: cannot load it: {err}")
        print()
        return {"name": name, "skipped": str(err)}
    gen_cfg = ckpt.metadata.get("generator_config")
    print(
        f"- checkpoint {ckpt.path} (sha256 {ckpt.weights_sha256[:12]}...), grid "
        f"{prior.grid.ny} x {prior.grid.nx}, latent {prior.latent_shape} "
        f"(dim {prior.latent_dim})"
    )
    if gen_cfg is None:
        print("- n/a: the checkpoint records no generator config; nothing to compare with")
        print()
        return {"name": name, "skipped": "no generator config"}
    gen_obj = generator_from_config(gen_cfg)
    kind = gen_obj.kind
    print(f"- generator `{kind}`: {json.dumps(gen_cfg, separators=(',', ':'))}")
    used = training_seeds(ckpt)
    heldout_seed = seeds["heldout"]
    while heldout_seed in used.values():
        heldout_seed += 1000
    known = ", ".join(f"{k} {v}" for k, v in used.items()) or "none found"
    if "data" not in used:
        known += " (training data seed not found next to the checkpoint)"
    print(
        f"- seeds: held-out fields {heldout_seed}, generator samples {seeds['generator']}, "
        f"prior samples {seeds['prior']}, throughput {seeds['timing']}; training: {known}"
    )
    print()
    result: dict = {"name": name, "kind": kind, "heldout_seed": heldout_seed}
    grid = prior.grid

    # held-out reconstruction
    t0 = time.perf_counter()
    heldout, _ = sample_generator(
        gen_obj, opts.num_heldout, torch.Generator().manual_seed(heldout_seed)
    )
    err = rel_l2(reconstruct(prior, heldout), heldout)
    rec_mean, rec_p90 = err.mean().item(), torch.quantile(err, 0.9).item()
    result.update(recon_mean=rec_mean, recon_p90=rec_p90)
    t_recon = time.perf_counter() - t0

    # prior samples vs generator samples
    t0 = time.perf_counter()
    gen_fields, facies = sample_generator(
        gen_obj, opts.num_generator, torch.Generator().manual_seed(seeds["generator"])
    )
    z = torch.randn(
        opts.num_samples, prior.latent_dim, generator=torch.Generator().manual_seed(seeds["prior"]),
        dtype=prior.dtype,
    )  # fmt: skip
    prior_fields = decode_chunked(prior, z)
    decoded_only = None
    if prior.residual is not None:  # the full generative model: decoder mean + residual field
        decoded_only = prior_fields
        rgen = torch.Generator().manual_seed(seeds["prior"] + 1)
        noise = [prior.residual.sample(len(c), rgen) for c in prior_fields.split(CHUNK)]
        prior_fields = prior_fields + torch.cat(noise)
    g64, p64 = gen_fields.double(), prior_fields.double()
    g_mean, g_sd, p_mean, p_sd = (
        g64.mean().item(),
        g64.std().item(),
        p64.mean().item(),
        p64.std().item(),
    )
    d_mean, d_sd = rel_diff(p_mean, g_mean), rel_diff(p_sd, g_sd)
    max_lag = min(opts.max_lag, grid.nx - 1, grid.ny - 1)
    lags = list(range(1, max_lag + 1))
    ggx, ggy = variogram(gen_fields, lags)
    pgx, pgy = variogram(prior_fields, lags)
    rdx = [rel_diff(p, g) for p, g in zip(pgx, ggx, strict=True)]
    rdy = [rel_diff(p, g) for p, g in zip(pgy, ggy, strict=True)]
    vmax = max(abs(v) for v in rdx + rdy)
    result.update(
        gen_mean=g_mean, gen_sd=g_sd, prior_mean=p_mean, prior_sd=p_sd, rel_mean=d_mean,
        rel_sd=d_sd, lags=lags, gen_gx=ggx, gen_gy=ggy, prior_gx=pgx, prior_gy=pgy,
        variogram_max_rel=vmax,
    )  # fmt: skip
    rows = [
        ("held-out rel. L2 of decode(encode(x)), mean", f"{rec_mean:.4f}", "", ""),
        ("held-out rel. L2 of decode(encode(x)), 90th pct", f"{rec_p90:.4f}", "", ""),
        ("mean of log k", f"{p_mean:.4f}", f"{g_mean:.4f}", _pct(d_mean)),
        ("sd of log k", f"{p_sd:.4f}", f"{g_sd:.4f}", _pct(d_sd)),
        (f"variogram, max abs. rel. diff, lags 1..{max_lag}, x and y", "", "", _abs_pct(vmax)),
    ]
    if decoded_only is not None:
        o64 = decoded_only.double()
        ogx, ogy = variogram(decoded_only, lags)
        o_rel = [rel_diff(p, g) for p, g in zip(ogx + ogy, ggx + ggy, strict=True)]
        o_sd, o_vmax = rel_diff(o64.std().item(), g_sd), max(abs(v) for v in o_rel)
        result.update(decoded_rel_sd=o_sd, decoded_variogram_max_rel=o_vmax)
        rows[2:5] = [(f"{r[0]} (decoder + residual)", *r[1:]) for r in rows[2:5]]
        rows += [
            (
                "sd of log k, decoder mean only",
                f"{o64.std().item():.4f}",
                f"{g_sd:.4f}",
                _pct(o_sd),
            ),
            ("variogram max abs. rel. diff, decoder mean only", "", "", _abs_pct(o_vmax)),
            ("residual field variance", f"{prior.residual.variance:.4g}", "", ""),
        ]
        if prior.encoder is not None:  # the same statistics with z from q(z) instead
            agen = torch.Generator().manual_seed(seeds["prior"] + 2)
            agg = aggregate_draws(prior, heldout, agen)
            agg = agg + torch.cat([prior.residual.sample(len(c), agen) for c in agg.split(CHUNK)])
            agx, agy = variogram(agg, lags)
            a_rel = [rel_diff(p, g) for p, g in zip(agx + agy, ggx + ggy, strict=True)]
            a_sd, a_vmax = rel_diff(agg.double().std().item(), g_sd), max(abs(v) for v in a_rel)
            result.update(aggregate_rel_sd=a_sd, aggregate_variogram_max_rel=a_vmax)
            label = "z from the aggregate posterior of the held-out fields (decoder + residual)"
            rows += [
                (f"sd of log k, {label}", f"{agg.double().std().item():.4f}", f"{g_sd:.4f}",
                 _pct(a_sd)),
                (f"variogram max abs. rel. diff, {label}", "", "", _abs_pct(a_vmax)),
            ]  # fmt: skip

    # facies
    facies_ok = None
    if kind == "channelized":
        c_mean, b_mean = float(gen_obj.channel["mean"]), float(gen_obj.background["mean"])
        thr = 0.5 * (c_mean + b_mean)
        sign = 1.0 if c_mean >= b_mean else -1.0
        f_true = facies.double().mean().item()
        f_gen = (sign * (gen_fields - thr) > 0).double().mean().item()
        f_prior = (sign * (prior_fields - thr) > 0).double().mean().item()
        facies_ok = abs(f_prior - f_gen) <= TARGET_FACIES
        result.update(
            facies_mask=f_true, facies_gen_thr=f_gen, facies_prior_thr=f_prior, threshold=thr
        )
        rows += [
            ("channel fraction, generator facies mask", "", f"{100 * f_true:.1f} %", ""),
            (
                f"channel fraction, log k {'>' if sign > 0 else '<'} {thr:.3g} (halfway)",
                f"{100 * f_prior:.1f} %",
                f"{100 * f_gen:.1f} %",
                f"{100 * (f_prior - f_gen):+.1f} points",
            ),
        ]
    t_stats = time.perf_counter() - t0

    # MDGM truth
    t0 = time.perf_counter()
    mdgm_file = MDGM_FILES.get(kind)
    truth_path = Path(opts.mdgm_dir) / mdgm_file if mdgm_file else None
    if mdgm_file is None:
        rows.append(("MDGM truth", f"n/a: no MDGM truth for kind {kind}", "", ""))
    elif grid.shape != (64, 64):
        rows.append(("MDGM truth", "n/a: grid mismatch", "", ""))
    elif not truth_path.is_file():
        rows.append(("MDGM truth", f"n/a: {truth_path} missing", "", ""))
    else:
        truth = torch.from_numpy(np.log(np.loadtxt(truth_path))).to(prior.dtype)
        with torch.no_grad():
            enc = rel_l2(prior.decode(prior.encode(truth)), truth).item()
        fit, z_map, _ = map_projection(prior, truth, opts.map_steps, opts.map_lr)
        with torch.no_grad():
            mapped = rel_l2(fit, truth).item()
        z_rms = z_map.square().mean().sqrt().item()
        result.update(mdgm_encode=enc, mdgm_map=mapped, mdgm_z_rms=z_rms)
        rows += [
            (f"MDGM {mdgm_file}: rel. L2 of decode(encode(truth))", f"{enc:.4f}", "", ""),
            (
                f"MDGM: rel. L2 of MAP projection ({opts.map_steps} Adam steps, lr {opts.map_lr})",
                f"{mapped:.4f}",
                "",
                f"rms(z) {z_rms:.2f}",
            ),
        ]
    t_mdgm = time.perf_counter() - t0

    # throughput
    tgen = torch.Generator().manual_seed(seeds["timing"])
    for batch in opts.batches:
        rate = decode_throughput(prior, batch, opts.repeats, tgen)
        result[f"decode_fields_per_s_b{batch}"] = rate
        rows.append(
            (
                f"decode throughput, batch {batch}",
                f"{rate:,.0f} fields/s",
                "",
                f"{1e3 / rate:.3f} ms/field",
            )
        )

    # training history
    hist = read_history(ckpt)
    result["history"] = None if hist is None else {k: v for k, v in hist.items() if k != "path"}
    if hist is None:
        rows.append(
            (
                "training time per epoch; epochs run",
                "n/a (no history.json next to the checkpoint)",
                "",
                "",
            )
        )
    else:
        early = ", stopped early" if hist["stopped_early"] else ""
        rows.append(
            (
                "training time per epoch; epochs run",
                f"{hist['mean_s']:.2f} s (median {hist['median_s']:.2f} s); "
                f"{hist['epochs']} epochs",
                "",
                f"total {hist['total_s']:.0f} s, best epoch {hist['best_epoch']}{early}",
            )
        )

    print("| metric | prior | generator | rel. diff / note |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"Samples: {opts.num_samples} prior, {opts.num_generator} generator, "
        f"{opts.num_heldout} held-out fields. Time: reconstruction {t_recon:.1f} s, statistics "
        f"{t_stats:.1f} s, MDGM {t_mdgm:.1f} s."
    )
    print()
    print("Semivariogram gamma(h), lag h in cells (x: along columns, y: along rows):")
    print()
    print("| h | x gen | x prior | x rel | y gen | y prior | y rel |")
    print("|---|---|---|---|---|---|---|")
    for i, h in enumerate(lags):
        print(
            f"| {h} | {ggx[i]:.4f} | {pgx[i]:.4f} | {_pct(rdx[i])} | {ggy[i]:.4f} | {pgy[i]:.4f} "
            f"| {_pct(rdy[i])} |"
        )
    print()

    recon_target = TARGET_RECON.get(kind, TARGET_RECON["channelized"])
    checks = {
        "mean within 5 %": abs(d_mean) <= TARGET_MOMENT,
        "sd within 5 %": abs(d_sd) <= TARGET_MOMENT,
        "variogram within 10 % at every lag": vmax <= TARGET_VARIOGRAM,
    }
    if facies_ok is not None:
        checks["channel fraction within 3 points"] = facies_ok
    checks[f"held-out reconstruction (mean) <= {recon_target:.2f}"] = rec_mean <= recon_target
    result["targets"] = checks
    print(f"**targets `{name}`:** " + "; ".join(f"{k}: {_ok(v)}" for k, v in checks.items()))
    print()
    result["figure_fields"] = (gen_fields[:4].clone(), prior_fields[:4].clone())
    return result


# ---------------------------------------------------------------------------- figure
def _label(name: str) -> str:
    """A short label: a shipped name as is, a checkpoint path by its folders (``x/run``)."""
    path = Path(name)
    if len(path.parts) < 2:
        return name
    parts = path.parts[-3:-1] if path.suffix in (".safetensors", ".json") else path.parts[-2:]
    label = "/".join(parts)
    return label if len(label) <= 24 else "..." + label[-21:]


def save_figure(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if "figure_fields" in r]
    if not shown:
        print(f"(no figure: no prior was compared with its generator; {path} not written)")
        return
    fig, axes = plt.subplots(
        2 * len(shown), 4, figsize=(8.8, 4.4 * len(shown)), squeeze=False, constrained_layout=True
    )
    for k, res in enumerate(shown):
        gen, pri = res["figure_fields"]
        vmin = min(gen.min().item(), pri.min().item())
        vmax = max(gen.max().item(), pri.max().item())
        for row, (label, data) in enumerate((("generator", gen), ("prior", pri))):
            for col in range(4):
                ax = axes[2 * k + row, col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= len(data):
                    ax.set_visible(False)
                    continue
                im = ax.imshow(
                    data[col].numpy(), origin="lower", cmap="viridis", vmin=vmin, vmax=vmax
                )
                if col == 0:
                    short = _label(res["name"])
                    ax.set_ylabel(f"{short}\n{label}")
        fig.colorbar(im, ax=axes[2 * k : 2 * k + 2, :].ravel().tolist(), shrink=0.8, label="log k")
    fig.suptitle("generator samples (top) vs prior samples (bottom), shared colour scale per prior")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"Figure: {path}")


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--priors", nargs="+", default=list(DEFAULT_PRIORS),
        help="shipped prior names or checkpoint paths (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--num-heldout", type=int, default=1000, help="held-out fields (default: %(default)s)"
    )
    parser.add_argument(
        "--num-samples", type=int, default=2000, help="prior samples (default: %(default)s)"
    )
    parser.add_argument(
        "--num-generator",
        type=int,
        default=2000,
        help="generator samples to compare with (default: %(default)s)",
    )
    parser.add_argument(
        "--max-lag",
        type=int,
        default=16,
        help="largest variogram lag in cells (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=20_250_611,
        help="base seed: held-out fields use it (moved on by 1000 while it hits a training "
        "seed), generator samples seed+1, prior samples seed+2, throughput latents seed+3",
    )  # fmt: skip
    parser.add_argument(
        "--mdgm-dir", default=str(DEFAULT_MDGM_DIR),
        help="folder with the MDGM truths (default: ../shared/benchmarks/mdgm from the repo root)",
    )  # fmt: skip
    parser.add_argument(
        "--map-steps", type=int, default=300, help="Adam steps of the MAP projection"
    )
    parser.add_argument(
        "--map-lr", type=float, default=0.05, help="Adam learning rate of the MAP projection"
    )
    parser.add_argument(
        "--batches",
        type=int,
        nargs="+",
        default=[1, 256],
        help="decode batch sizes timed (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per batch (median)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    parser.add_argument(
        "--figure", default=None, help="save a PNG of generator vs prior samples here"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: 64 held-out, 128 samples each, 30 MAP steps, batches 1 and 16, 2 repeats",
    )  # fmt: skip
    return parser


def main(args=None) -> dict:
    opts = build_parser().parse_args(args)
    if opts.quick:
        opts.num_heldout, opts.num_samples, opts.num_generator = 64, 128, 128
        opts.map_steps, opts.batches, opts.repeats = 30, [1, 16], 2
    if min(opts.num_heldout, opts.num_samples, opts.num_generator, opts.repeats, *opts.batches) < 1:
        raise SystemExit("--num-*, --batches and --repeats must be >= 1")
    if opts.max_lag < 1 or opts.map_steps < 0:
        raise SystemExit("--max-lag must be >= 1 and --map-steps >= 0")

    import numpy as np
    import torch

    import vaeinv

    if opts.threads is not None:
        torch.set_num_threads(opts.threads)
    seeds = {
        "heldout": opts.seed,
        "generator": opts.seed + 1,
        "prior": opts.seed + 2,
        "timing": opts.seed + 3,
    }
    start = time.perf_counter()
    load0 = os.getloadavg() if hasattr(os, "getloadavg") else None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = os.cpu_count()

    print("# vaeinv prior benchmark")
    print()
    print(
        f"- vaeinv {vaeinv.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}"
    )
    print(
        f"- CPU: {platform.processor() or platform.machine()}, os.cpu_count() = {os.cpu_count()}, "
        f"usable cores = {affinity}, torch threads = {torch.get_num_threads()}"
    )
    if load0 is not None:
        print(
            "- load average at start (1/5/15 min): "
            f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f}"
        )
        if load0[0] > 0.5 * affinity:
            print(
                f"- NOTE: the machine was already busy (load {load0[0]:.2f} on {affinity} cores): "
                "the throughput figures may be noisy"
            )
    print(
        f"- seeds (explicit torch.Generator each): base {opts.seed}; held-out {seeds['heldout']} "
        f"(unless it hits a training seed), generator samples {seeds['generator']}, prior samples "
        f"{seeds['prior']}, throughput latents {seeds['timing']}"
    )
    print(
        f"- counts: {opts.num_heldout} held-out, {opts.num_samples} prior and {opts.num_generator} "
        f"generator samples, lags 1..{opts.max_lag}, MAP {opts.map_steps} steps, decode batches "
        f"{opts.batches} x {opts.repeats} repeats{' (--quick)' if opts.quick else ''}"
    )
    print()

    results = [bench_prior(name, opts, seeds) for name in opts.priors]

    done = [r for r in results if "targets" in r]
    if len(done) > 1:
        print("## summary")
        print()
        print(
            "| prior | recon mean | recon p90 | mean | sd | variogram max abs | channel fraction "
            "| targets met |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in done:
            fac = (
                f"{100 * (r['facies_prior_thr'] - r['facies_gen_thr']):+.1f} pts"
                if "facies_prior_thr" in r
                else "-"
            )
            met = sum(r["targets"].values())
            print(
                f"| {r['name']} | {r['recon_mean']:.4f} | {r['recon_p90']:.4f} "
                f"| {_pct(r['rel_mean'])} | {_pct(r['rel_sd'])} "
                f"| {_abs_pct(r['variogram_max_rel'])} | {fac} | {met}/{len(r['targets'])} |"
            )
        print()
    if opts.figure:
        save_figure(results, opts.figure)
    for r in results:
        r.pop("figure_fields", None)
    load1 = os.getloadavg() if hasattr(os, "getloadavg") else None
    tail = (
        f"; load average at end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}" if load1 else ""
    )
    print(f"Total wall time: {time.perf_counter() - start:.0f} s{tail}")
    return {"seeds": seeds, "priors": results}


if __name__ == "__main__":
    main()
