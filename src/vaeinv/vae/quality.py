"""How well a trained VAE prior reproduces a user's held-out fields: a quality report.

The checks of the prior benchmark (``benchmarks/prior.py``), with the held-out fields (the
validation split) as the reference instead of a generator: the reconstruction error
``||decode(mu(x)) - x|| / ||x||`` (``mu`` the encoder's mean); the mean, sd and semivariograms
(along x and y) of prior samples against the held-out fields; for binary or two-facies fields,
the facies proportion (both sets classified by the held-out fields' threshold), the
connectivity function, the largest-cluster fraction and the percolation fractions (see
`vaeinv.fields.statistics`). Targets: the mean within 5 % of the held-out sd (log k may be
centred near 0), the sd within 5 %, the variogram within 10 % at every lag, facies proportion
within 3 points, mean reconstruction at most 0.10 (0.15 for binary or two-facies fields).

Prior samples are drawn as [`Prior.sample`][vaeinv.priors.vae.Prior.sample] draws them, without
a residual field: ``w ~ N(0, I)`` from a ``torch.Generator`` seeded with ``seed``, mapped by the
model's latent prior (the fitted latent Gaussian after calibration, else the identity), decoded.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..fields import statistics as field_stats
from ._quality_figure import plot_quality

__all__ = ["default_lags", "prior_samples", "quality_report", "reconstruction_errors"]
__all__ += ["write_quality_report"]

TARGET_MOMENT = 0.05  # relative difference of mean and sd
TARGET_VARIOGRAM = 0.10  # relative difference at every lag
TARGET_FACIES = 0.03  # absolute difference of the facies proportion
TARGET_RECON = {"continuous": 0.10, "facies": 0.15}  # mean reconstruction error
NUM_EXAMPLES = 4  # fields of each set kept for the figure
FILES = ("quality.json", "quality.md", "quality.png")
AXES = ("x", "y")


def default_lags(ny: int, nx: int) -> list[int]:
    """Lags ``1 .. min(16, min(ny, nx) // 4)`` cells (at least lag 1)."""
    return list(range(1, max(1, min(16, min(ny, nx) // 4)) + 1))


def _check_model(model, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if model.config.cond_channels:
        raise ValueError(
            f"a quality report needs an unconditional VAE; this one has "
            f"cond_channels={model.config.cond_channels}"
        )


@torch.no_grad()
def reconstruction_errors(model, fields: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Per-field ``||decode(mu(x)) - x|| / ||x||`` (float64, on the CPU), ``mu`` the encoder's
    mean; batches of ``batch_size`` fields; ``nan`` for a field with ``||x|| = 0``.

    Args:
        model: a [`VAE`][vaeinv.vae.VAE] (left in eval mode).
        fields: ``(n, ny, nx)`` in field units.
        batch_size: fields encoded and decoded at a time.

    Raises:
        ValueError: a conditional model or a bad ``batch_size``.
    """
    _check_model(model, batch_size)
    param = next(model.parameters())
    model.eval()
    out = []
    for chunk in fields.split(batch_size):
        x = chunk.to(param.device, param.dtype)
        fit = model.decoder(model.encode(x)[0])
        norm = x.double().flatten(1).norm(dim=1)
        err = (fit.double() - x.double()).flatten(1).norm(dim=1)
        out.append(torch.where(norm > 0, err / norm, math.nan).cpu())
    return torch.cat(out)


@torch.no_grad()
def prior_samples(model, num_samples: int, seed: int, batch_size: int = 250) -> torch.Tensor:
    """``num_samples`` decoded prior draws ``(num_samples, ny, nx)`` on the CPU, as
    ``Prior.sample(num_samples, seed)`` of this model draws them (no residual field).

    Args:
        model: a [`VAE`][vaeinv.vae.VAE] (left in eval mode).
        num_samples: number of draws (at least 1).
        seed: seeds the ``torch.Generator`` of the white latents ``w ~ N(0, I)``.
        batch_size: latents decoded at a time.

    Raises:
        ValueError: a conditional model, or a bad ``num_samples``, ``seed`` or ``batch_size``.
    """
    _check_model(model, batch_size)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    param = next(model.parameters())
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(num_samples, model.config.latent_dim, generator=generator, dtype=param.dtype)
    latent = None if model.latent_prior.is_identity else model.latent_prior
    decode = model.decoder if latent is None else (lambda w: model.decoder(latent(w)))
    return torch.cat([decode(chunk.to(param.device)).cpu() for chunk in w.split(batch_size)])


def _relative(value: float, reference: float) -> float | None:
    """``(value - reference) / |reference|``; ``None`` where undefined (a zero reference)."""
    if reference == 0 or not math.isfinite(reference) or not math.isfinite(value):
        return 0.0 if value == reference else None
    return (value - reference) / abs(reference)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _largest(values: Sequence[float | None]) -> float | None:
    """The largest ``|v|``; ``None`` if any value is undefined."""
    return None if None in values else max(abs(v) for v in values)


def _check_held_out(model, held_out: torch.Tensor) -> None:
    ny, nx = model.config.ny, model.config.nx
    got = tuple(held_out.shape) if isinstance(held_out, torch.Tensor) else type(held_out)
    if not isinstance(got, tuple) or len(got) != 3 or got[0] < 1 or got[1:] != (ny, nx):
        raise ValueError(f"held_out must be shaped (n >= 1, {ny}, {nx}), got {got}")
    if not bool(torch.isfinite(held_out).all()):
        raise ValueError("held_out has non-finite values (nan or inf)")


def _two_point(both: dict[str, torch.Tensor], lags: list[int]) -> dict[str, dict]:
    """The ``moments`` and ``variogram`` sections of the report."""
    stats = {k: field_stats.moments(f) for k, f in both.items()}
    held, drawn = stats["held_out"], stats["samples"]
    # the mean against the held-out sd (a log k centred near 0 has no relative mean)
    shift = _relative(drawn["mean"] - held["mean"] + held["std"], held["std"])
    stats["rel_diff"] = {"mean": shift, "std": _relative(drawn["std"], held["std"])}
    gamma = {
        k: dict(zip(AXES, field_stats.semivariogram(f, lags), strict=True)) for k, f in both.items()
    }
    rel = {a: list(map(_relative, gamma["samples"][a], gamma["held_out"][a])) for a in AXES}
    gamma.update(rel_diff=rel, max_abs_rel_diff=_largest(rel["x"] + rel["y"]))
    return {"moments": stats, "variogram": gamma}


def _facies_section(both: dict[str, torch.Tensor], lags: list[int]) -> dict[str, Any]:
    """The ``facies`` section: both sets classified by the held-out fields' threshold."""
    threshold = field_stats.facies_threshold(both["held_out"])
    masks = {k: f > threshold for k, f in both.items()}
    share = {k: field_stats.facies_proportion(m) for k, m in masks.items()}
    tau = {
        k: {a: [_finite(v) for v in field_stats.connectivity(m, lags, a)] for a in AXES}
        for k, m in masks.items()
    }
    pairs = [
        (h, s) for a in AXES for h, s in zip(tau["held_out"][a], tau["samples"][a], strict=True)
    ]
    known = [abs(s - h) for h, s in pairs if h is not None and s is not None]
    return {
        "kind": "binary" if field_stats.is_binary(both["held_out"]) else "two-facies",
        "threshold": threshold,
        "proportion": {**share, "abs_diff": abs(share["samples"] - share["held_out"])},
        "connectivity": {**tau, "max_abs_diff": max(known) if known else None},
        "largest_cluster_fraction": {
            k: _finite(field_stats.largest_cluster_fraction(m)) for k, m in masks.items()
        },
        "percolation_fraction": {
            k: {a: field_stats.percolation_fraction(m, a) for a in AXES} for k, m in masks.items()
        },
    }


def _targets(report: dict[str, Any]) -> dict[str, bool]:
    rel, vmax = report["moments"]["rel_diff"], report["variogram"]["max_abs_rel_diff"]
    recon = report["reconstruction"]["mean"]
    targets = {q: rel[q] is not None and abs(rel[q]) <= TARGET_MOMENT for q in ("mean", "std")}
    targets["variogram"] = vmax is not None and vmax <= TARGET_VARIOGRAM
    if report["facies"] is not None:
        targets["facies_proportion"] = report["facies"]["proportion"]["abs_diff"] <= TARGET_FACIES
    limit = report["thresholds"]["reconstruction"]
    targets["reconstruction"] = recon is not None and recon <= limit
    return targets


def quality_report(
    model,
    held_out: torch.Tensor,
    *,
    num_samples: int = 1000,
    seed: int = 0,
    lags: Sequence[int] | None = None,
    batch_size: int = 250,
    facies: bool | None = None,
) -> dict[str, Any]:
    """The quality report of ``model`` against ``held_out`` fields (see the module docstring).

    Args:
        model: a trained, unconditional [`VAE`][vaeinv.vae.VAE]; its train/eval mode is
            restored afterwards.
        held_out: ``(n, ny, nx)`` fields in field units (e.g. log k), not used in training.
        num_samples: prior samples to compare with.
        seed: seed of the prior samples' latents (recorded in the report).
        lags: semivariogram and connectivity lags in cells (default ``default_lags(ny, nx)``).
        batch_size: fields encoded or decoded at a time (bounds the memory).
        facies: add the facies section; ``None`` adds it when the held-out fields are binary
            or two-facies (``vaeinv.fields.statistics.is_two_facies``).

    Returns:
        A dict of JSON types: ``num_held_out``, ``num_samples``, ``seed``, ``grid``
        (``ny``, ``nx``), ``latent_dim``, ``latent_prior`` (``"fitted"`` or ``"standard"``),
        ``lags``, ``reconstruction`` (``mean``, ``p90``, ``num_fields``: fields with
        ``||x|| > 0``), ``moments`` (``held_out``, ``samples``: ``mean``, ``std``;
        ``rel_diff``), ``variogram`` (``held_out``, ``samples``, ``rel_diff``: ``x``, ``y``
        lists; ``max_abs_rel_diff``), ``facies`` (``None``, or ``kind``, ``threshold``,
        ``proportion``, ``connectivity``, ``largest_cluster_fraction``,
        ``percolation_fraction``), ``thresholds``, ``targets`` (name -> met), ``passed``
        (every target met) and ``examples`` (four fields of each set, for the figure). An
        undefined value (a relative difference to 0) is ``None``.

    Raises:
        ValueError: held-out fields of the wrong shape or not finite, a conditional model, a bad
            ``num_samples``, ``seed``, ``batch_size`` or lag, or ``facies=True`` on constant
            fields.
    """
    _check_held_out(model, held_out)
    ny, nx = model.config.ny, model.config.nx
    lags = default_lags(ny, nx) if lags is None else list(lags)
    field_stats.semivariogram(held_out[:1], lags)  # validates the lags before any network work
    was_training = model.training
    try:
        errors = reconstruction_errors(model, held_out, batch_size)
        samples = prior_samples(model, num_samples, seed, batch_size)
    finally:
        model.train(was_training)
    both = {"held_out": held_out.detach().cpu(), "samples": samples}
    facies = field_stats.is_two_facies(both["held_out"]) if facies is None else facies
    errors = errors[~errors.isnan()]
    report: dict[str, Any] = {
        "num_held_out": int(held_out.shape[0]),
        "num_samples": num_samples,
        "seed": seed,
        "grid": {"ny": ny, "nx": nx},
        "latent_dim": model.config.latent_dim,
        "latent_prior": "standard" if model.latent_prior.is_identity else "fitted",
        "lags": lags,
        "reconstruction": {
            "mean": errors.mean().item() if errors.numel() else None,
            "p90": torch.quantile(errors, 0.9).item() if errors.numel() else None,
            "num_fields": int(errors.numel()),
        },
        **_two_point(both, lags),
        "facies": _facies_section(both, lags) if facies else None,
        "thresholds": {
            "moment": TARGET_MOMENT,
            "variogram": TARGET_VARIOGRAM,
            "facies": TARGET_FACIES,
            "reconstruction": TARGET_RECON["facies" if facies else "continuous"],
        },
    }
    report["targets"] = _targets(report)
    report["passed"] = all(report["targets"].values())
    report["examples"] = {
        k: f[:NUM_EXAMPLES].double().round(decimals=5).tolist() for k, f in both.items()
    }
    return report


# ---------------------------------------------------------------------------- writing
def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None, sign: str = "+") -> str:
    return "n/a" if value is None else f"{100 * value:{sign}.1f} %"


def _rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows ``(quantity, held-out, prior samples, target, met)`` of the markdown table."""
    thr, rec, mom = report["thresholds"], report["reconstruction"], report["moments"]
    h, s, rel = mom["held_out"], mom["samples"], mom["rel_diff"]
    moment = f"within {100 * thr['moment']:.0f} %"
    rows = [
        ("reconstruction rel. L2, mean", _num(rec["mean"]), "", f"<= {thr['reconstruction']:.2f}",
         "reconstruction"),
        ("reconstruction rel. L2, 90th percentile", _num(rec["p90"]), "", "", ""),
        ("mean", _num(h["mean"]), f"{_num(s['mean'])} ({_pct(rel['mean'])} of the sd)",
         f"{moment} of the sd", "mean"),
        ("sd", _num(h["std"]), f"{_num(s['std'])} ({_pct(rel['std'])})", moment, "std"),
        ("semivariogram along x and y, largest abs. rel. diff", "",
         _pct(report["variogram"]["max_abs_rel_diff"], ""),
         f"within {100 * thr['variogram']:.0f} % at every lag", "variogram"),
    ]  # fmt: skip
    fac = report["facies"]
    if fac is not None:
        share, lcf = fac["proportion"], fac["largest_cluster_fraction"]
        perc = fac["percolation_fraction"]
        rows += [
            (f"facies proportion ({fac['kind']}, value > {fac['threshold']:.4g})",
             _pct(share["held_out"], ""), _pct(share["samples"], ""),
             f"within {100 * thr['facies']:.0f} points", "facies_proportion"),
            ("connectivity function along x and y, largest abs. diff", "",
             _num(fac["connectivity"]["max_abs_diff"], 3), "", ""),
            ("largest-cluster fraction", _num(lcf["held_out"], 3), _num(lcf["samples"], 3), "", ""),
        ]  # fmt: skip
        rows += [
            (f"percolation fraction along {a}", _num(perc["held_out"][a], 3),
             _num(perc["samples"][a], 3), "", "")
            for a in AXES
        ]  # fmt: skip
    met = {name: "met" if ok else "**missed**" for name, ok in report["targets"].items()}
    return [(*row[:4], met.get(row[4], "")) for row in rows]


def _markdown(report: dict[str, Any]) -> str:
    targets = report["targets"]
    missed = [name for name, ok in targets.items() if not ok]
    first = f"**All {len(targets)} quality targets met.**"
    if missed:
        first = f"**{len(targets) - len(missed)} of {len(targets)} quality targets met; missed: "
        first += ", ".join(missed) + ".**"
    lines = [
        first,
        "",
        f"The VAE prior against {report['num_held_out']} held-out fields: "
        f"{report['num_samples']} prior samples (seed {report['seed']}, {report['latent_prior']} "
        f"latent prior), lags {', '.join(map(str, report['lags']))} cells.",
        "",
        "| quantity | held-out | prior samples | target | met |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in _rows(report)]) + "\n"


def _compact_json(report: dict[str, Any]) -> str:
    """Indented JSON with each innermost list of numbers on one line (a field: a row a line)."""
    atom = r"(?:-?\d[\d.eE+-]*|null|true|false)"
    innermost = re.compile(rf"\[\s*{atom}(?:,\s*{atom})*\s*\]")
    text = json.dumps(report, indent=2, allow_nan=False)
    return innermost.sub(lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text)


def write_quality_report(report: dict[str, Any], folder: str | os.PathLike) -> list[Path]:
    """Write ``quality.json`` (the report), ``quality.md`` (whether every target was met, and a
    table) and ``quality.png`` (variograms, connectivity functions for facies fields, four
    held-out fields above four prior samples) into ``folder`` (created if missing).

    Args:
        report: a ``quality_report``.
        folder: the output folder.

    Returns:
        The paths written, in that order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FILES]
    for path, text in zip(paths, (_compact_json(report) + "\n", _markdown(report)), strict=False):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    plot_quality(report, paths[2])
    return paths
