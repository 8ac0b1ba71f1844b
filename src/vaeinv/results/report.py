"""The report of a run: a summary table and figures, from a result's ``InferenceData``.

[`write_report`][vaeinv.results.report.write_report] writes into a folder:

- ``summary.md`` (the table, also returned) and ``summary.json`` (the diagnostics and the run's
  attributes): max R-hat and min bulk / tail ESS over the latents and over field quantities,
  acceptance, divergences, failed solves, the normalised data misfit and, when the truth is
  known, the relative L2 error of the posterior-mean ``log_k`` and its 2-sd coverage;
- ``fields.png``: truth / posterior mean / posterior sd / error (mean - truth) of ``log_k``,
  with the subdomains (dashed) and their cores (solid) of a decomposed run drawn over them;
  a decomposed run's summary also has a table per subdomain;
- ``traces.png`` and ``ranks.png``: the trace of ``lp`` and trace and rank plots of the latents
  with the largest split R-hat (the ones to look at);
- ``predictive.png``: posterior-mean predicted against observed sensor values, with 2-sd bars.

The figures are drawn from numpy arrays taken from the ``InferenceData`` (no ArviZ plotting):
this module reads the object it is handed and never imports ArviZ; the diagnostics come from
[`results.diagnostics`][vaeinv.results.inference_data.diagnostics].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .fit import experiment_fits, experiment_table, plot_predictive
from .verdict import convergence_verdict

__all__ = ["Report", "split_rhat", "summary_table", "write_report"]

#: Rows of the summary table: (diagnostics key, label, format).
_ROWS = (
    ("max_rhat_latent", "max R-hat, latents", "{:.4f}"),
    ("max_rhat_field", "max R-hat, field quantities and lp", "{:.4f}"),
    ("min_ess_bulk_latent", "min bulk ESS, latents", "{:.0f}"),
    ("min_ess_bulk_field", "min bulk ESS, field quantities and lp", "{:.0f}"),
    ("min_ess_tail_latent", "min tail ESS, latents", "{:.0f}"),
    ("min_ess_tail_field", "min tail ESS, field quantities and lp", "{:.0f}"),
    ("ess_bulk_log_likelihood", "bulk ESS of the log-likelihood (MDGM's measure)", "{:.0f}"),
    ("acceptance_rate", "mean acceptance rate", "{:.3f}"),
    ("divergences", "divergences", "{:d}"),
    ("failed", "failed solves (counted rejections)", "{:d}"),
    ("normalised_misfit", "normalised data misfit (1 = at the noise level)", "{:.3f}"),
    ("rel_l2_error", "rel. L2 error of the posterior-mean log k", "{:.4f}"),
    ("coverage_2sd", "cells with truth in mean +- 2 sd", "{:.1%}"),
    (
        "expected_rel_l2_error",
        "rel. L2 error the posterior expects, sqrt(sum var) / norm(truth)",
        "{:.4f}",
    ),
)


@dataclass(frozen=True)
class Report:
    """What [`write_report`][vaeinv.results.report.write_report] wrote.

    Attributes:
        table: the summary table (markdown), its first line the convergence verdict.
        diagnostics: the diagnostics it shows.
        files: the files written, by name (``summary``, ``json``, ``fields``, ``traces``,
            ``ranks``, ``predictive``; ``fields`` only when the result holds ``log_k``).
    """

    table: str
    diagnostics: dict[str, Any]
    files: dict[str, Path]


def _attr(attrs: dict, key: str, default: Any = "?") -> Any:
    value = attrs.get(key, default)
    return default if value in ("", None) else value


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "n/a (no truth)"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if fmt == "{:d}":
        return str(int(value))
    return fmt.format(value)


def summary_table(diagnostics: dict[str, Any], attrs: dict[str, Any] | None = None) -> str:
    """The diagnostics as a markdown table, headed by the run's problem, method and size.

    Args:
        diagnostics: as returned by ``results.diagnostics``.
        attrs: the run's attributes (``problem``, ``method``, ``seed``, ``prior``, ``thin``,
            ``num_draws``), optional.
    """
    attrs = dict(attrs or {})
    prior = _attr(attrs, "prior", _attr(attrs, "prior_name"))
    head = (
        f"problem {_attr(attrs, 'problem')}, prior {prior}"
        f", method {_attr(attrs, 'method')}, seed {_attr(attrs, 'seed')}: "
        f"{diagnostics.get('num_chains', '?')} chains x {diagnostics.get('num_draws', '?')} draws"
    )
    thin = _attr(attrs, "thin", 1)
    if thin != 1:
        head += f" (thin {thin}, of {_attr(attrs, 'num_draws')} iterations)"
    if attrs.get("extensions"):  # vaeinv extend: the run's chains continued
        added = json.loads(str(attrs["extensions"]))
        head += f"; the last {sum(e['num_draws'] for e in added)} iterations added by "
        head += f"{len(added)} extension{'s' if len(added) > 1 else ''}"
    if attrs.get("laplace_start_log_density"):  # gpCN, tpCN, NUTS with a Laplace start
        ends = json.loads(str(attrs["laplace_start_log_density"]))
        finite = [v for v in ends if math.isfinite(v)]
        if finite:
            head += (
                f"; all chains started around one Laplace fit, the best of {len(ends)} ascents "
                f"from the over-dispersed starts (log density at their ends {max(finite):.1f} "
                f"to {min(finite):.1f}"
                + (f"; {len(ends) - len(finite)} failed" if len(finite) < len(ends) else "")
                + "), so R-hat cannot reveal a mode none of them found"
            )
    lines = [head, "", "| quantity | value |", "|---|---|"]
    for key, label, fmt in _ROWS:
        if key in diagnostics:
            lines.append(f"| {label} | {_fmt(diagnostics[key], fmt)} |")
    return "\n".join(lines) + "\n"


def split_rhat(draws: np.ndarray) -> np.ndarray:
    """Classic split R-hat (Gelman et al.) of ``draws (chain, draw, ...)``, per trailing entry.

    Used only to choose which latents to plot; the reported R-hat is ArviZ's rank-normalised one.
    """
    n = draws.shape[1]
    half = n // 2
    if half < 2:
        return np.full(draws.shape[2:], np.nan)
    x = np.concatenate([draws[:, :half], draws[:, n - half :]], axis=0)
    w = x.var(axis=1, ddof=1).mean(axis=0)
    b = half * x.mean(axis=1).var(axis=0, ddof=1)
    var = (half - 1) / half * w + b / half
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var / w)


def _latents(idata) -> np.ndarray:
    """``z`` as ``(chain, draw, latent)``; a decomposed run's ``(subdomain, latent)``
    flattened, subdomain by subdomain."""
    z = np.asarray(idata.posterior["z"].values)
    return z.reshape(*z.shape[:2], -1)


def _latent_label(idata, i: int) -> str:
    z = idata.posterior["z"]
    if "subdomain" not in z.dims:
        return f"z[{i}]"
    k, j = divmod(i, z.sizes["latent"])
    return f"z[{j}] of subdomain {k}"


def _draw_partition(ax, constant, x: np.ndarray, y: np.ndarray) -> None:
    """The subdomains (dashed) and their cores (solid) of a decomposed run."""
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    x0, y0 = float(x[0]) - dx / 2, float(y[0]) - dy / 2
    for k in range(int(constant.sizes["subdomain"])):
        for kind, style in (("", "--"), ("core_", "-")):
            c0, c1 = (int(constant[f"{kind}cols_{e}"][k]) for e in ("start", "stop"))
            r0, r1 = (int(constant[f"{kind}rows_{e}"][k]) for e in ("start", "stop"))
            xs = [x0 + c0 * dx, x0 + c1 * dx, x0 + c1 * dx, x0 + c0 * dx, x0 + c0 * dx]
            ys = [y0 + r0 * dy, y0 + r0 * dy, y0 + r1 * dy, y0 + r1 * dy, y0 + r0 * dy]
            ax.plot(xs, ys, style, color="k" if kind else "w", lw=0.8)


def _pick_latents(z: np.ndarray, num: int) -> list[int]:
    rhat = np.nan_to_num(split_rhat(z), nan=0.0)
    order = np.argsort(-rhat, kind="stable")
    return sorted(int(i) for i in order[: min(num, z.shape[-1])])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _extent(coords_x: np.ndarray, coords_y: np.ndarray) -> tuple[float, float, float, float]:
    def edges(c: np.ndarray) -> tuple[float, float]:
        h = float(c[1] - c[0]) if c.size > 1 else 2.0 * float(c[0]) if c[0] > 0 else 1.0
        return float(c[0]) - h / 2, float(c[-1]) + h / 2

    return (*edges(coords_x), *edges(coords_y))


def plot_fields(idata, path: str | Path) -> Path:
    """Truth (when known) / posterior mean / posterior sd / error of ``log_k``; returns the path."""
    plt = _pyplot()
    log_k = idata.posterior["log_k"]
    draws = np.asarray(log_k.values, dtype=np.float64)
    draws = draws.reshape(-1, *draws.shape[2:])
    mean, sd = draws.mean(axis=0), draws.std(axis=0)
    extent = _extent(np.asarray(log_k["x"].values), np.asarray(log_k["y"].values))
    constant = getattr(idata, "constant_data", None)
    truth = None
    if constant is not None and "log_k" in constant:
        truth = np.asarray(constant["log_k"].values, dtype=np.float64)
    panels: list[tuple[str, np.ndarray, str]] = []
    if truth is not None:
        panels.append(("truth log k", truth, "viridis"))
    panels += [
        (f"posterior mean ({draws.shape[0]} draws)", mean, "viridis"),
        ("posterior sd", sd, "magma"),
    ]
    if truth is not None:
        panels.append(("error: mean - truth", mean - truth, "RdBu_r"))
    lo = min(float(p[1].min()) for p in panels[: 2 if truth is not None else 1])
    hi = max(float(p[1].max()) for p in panels[: 2 if truth is not None else 1])
    xy = None
    if constant is not None and "sensor_x" in constant:
        xy = np.stack([constant["sensor_x"].values, constant["sensor_y"].values], axis=1)
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.0 * n, 3.6), squeeze=False, constrained_layout=True)
    for i, (ax, (label, field, cmap)) in enumerate(zip(axes[0], panels, strict=True)):
        limits = {}
        if i < (2 if truth is not None else 1):  # truth and mean on one colour scale
            limits = {"vmin": lo, "vmax": hi}
        elif cmap == "RdBu_r":  # the error, symmetric about 0
            top = float(np.abs(field).max()) or 1.0
            limits = {"vmin": -top, "vmax": top}
        im = ax.imshow(field, origin="lower", extent=extent, cmap=cmap, aspect="equal", **limits)
        fig.colorbar(im, ax=ax, shrink=0.85)
        if xy is not None:
            ax.plot(xy[:, 0], xy[:, 1], "w.", ms=2)
        if constant is not None and "core_rows_start" in constant:
            _draw_partition(ax, constant, np.asarray(log_k["x"]), np.asarray(log_k["y"]))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_traces(idata, path: str | Path, latents: list[int]) -> Path:
    """Traces of ``lp`` (when recorded) and of ``z[i]`` for ``i`` in ``latents``, per chain."""
    plt = _pyplot()
    z = _latents(idata)
    draw = np.asarray(idata.posterior["draw"].values)
    series: list[tuple[str, np.ndarray]] = []
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and "lp" in stats:
        series.append(("lp", np.asarray(stats["lp"].values)))
    series += [(_latent_label(idata, i), z[:, :, i]) for i in latents]
    fig, axes = plt.subplots(
        len(series),
        1,
        figsize=(8, 1.7 * len(series)),
        squeeze=False,
        sharex=True,
        constrained_layout=True,
    )
    for ax, (label, values) in zip(axes[:, 0], series, strict=True):
        for c in range(values.shape[0]):
            ax.plot(draw, values[c], lw=0.5, alpha=0.8, label=f"chain {c}")
        ax.set_ylabel(label)
    axes[0, 0].set_title("traces (latents with the largest split R-hat)", fontsize=10)
    axes[-1, 0].set_xlabel("draw")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ranks(idata, path: str | Path, latents: list[int], bins: int = 20) -> Path:
    """Rank plots of ``z[i]``: ranks over all chains pooled, one histogram per chain (uniform
    when the chains agree)."""
    plt = _pyplot()
    z = _latents(idata)
    num_chains, num_draws = z.shape[:2]
    fig, axes = plt.subplots(
        1, len(latents), figsize=(3.2 * len(latents), 2.8), squeeze=False, constrained_layout=True
    )
    edges = np.linspace(0, num_chains * num_draws, bins + 1)
    for ax, i in zip(axes[0], latents, strict=True):
        ranks = np.argsort(np.argsort(z[:, :, i].ravel(), kind="stable"), kind="stable")
        ranks = ranks.reshape(num_chains, num_draws)
        for c in range(num_chains):
            counts, _ = np.histogram(ranks[c], bins=edges)
            ax.stairs(counts, edges, lw=1, label=f"chain {c}")
        ax.axhline(num_draws / bins, color="k", ls="--", lw=0.8)
        ax.set_title(f"{_latent_label(idata, i)} ranks", fontsize=10)
        ax.set_xlabel("rank (all chains)")
    axes[0, 0].set_ylabel("count per chain")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


def write_report(
    idata,
    out: str | Path,
    *,
    diagnostics: dict[str, Any] | None = None,
    num_latents: int = 4,
    result_path: str | Path = "RESULT",
) -> Report:
    """Write the summary table and the figures of a run into the folder ``out``.

    Args:
        idata: the run's ``InferenceData`` (as made by ``vaeinv.sample`` or read by
            ``results.load``).
        out: the folder (created).
        diagnostics: precomputed ``results.diagnostics(idata)``; computed when ``None``.
        num_latents: how many latents to show in the trace and rank plots.
        result_path: the result's file, named in the verdict's advice (``vaeinv extend``).

    Returns:
        the [`Report`][vaeinv.results.report.Report].

    Raises:
        ValueError: ``idata`` without a posterior ``z``.
    """
    posterior = getattr(idata, "posterior", None)
    if posterior is None or "z" not in posterior:
        raise ValueError("the result has no posterior z (chain, draw, latent) to report on")
    if diagnostics is None:
        from .inference_data import diagnostics as compute

        diagnostics = compute(idata)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    attrs = dict(getattr(idata, "attrs", None) or posterior.attrs)
    verdict = convergence_verdict(diagnostics, attrs, str(result_path))
    table = verdict + "\n\n" + summary_table(diagnostics, attrs)
    if "subdomain" in posterior["z"].dims:
        from .decomposed import subdomain_table

        table += "\nper subdomain (local latents and statistics):\n\n" + subdomain_table(idata)
    fits = experiment_fits(idata)
    if fits:
        table += "\nper experiment (the fit of each test's data):\n\n" + experiment_table(fits)
    files = {"summary": out / "summary.md", "json": out / "summary.json"}
    files["summary"].write_text(table)
    record = {"diagnostics": {k: _jsonable(v) for k, v in diagnostics.items()}}
    record["attrs"] = {k: _jsonable(v) for k, v in attrs.items()}
    if fits:
        record["experiments"] = fits
    files["json"].write_text(json.dumps(record, indent=2, default=str) + "\n")
    if "log_k" in posterior:
        files["fields"] = plot_fields(idata, out / "fields.png")
    latents = _pick_latents(_latents(idata), num_latents)
    files["traces"] = plot_traces(idata, out / "traces.png", latents)
    files["ranks"] = plot_ranks(idata, out / "ranks.png", latents)
    if getattr(idata, "posterior_predictive", None) is not None:
        files["predictive"] = plot_predictive(idata, out / "predictive.png")
    return Report(table=table, diagnostics=dict(diagnostics), files=files)
