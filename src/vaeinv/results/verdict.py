"""The one-line verdict of a run: converged by ArviZ's thresholds or not, and what to do."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ESS_THRESHOLD", "RHAT_THRESHOLD", "convergence_verdict"]

#: ArviZ's thresholds (Vehtari et al. 2021, the basis of ``arviz.rhat`` and ``arviz.ess``):
#: rank-normalised split R-hat below 1.01, bulk and tail ESS of at least 400 (100 per chain for
#: 4 chains), and for HMC and NUTS no divergent transition after warm-up.
RHAT_THRESHOLD = 1.01
ESS_THRESHOLD = 400


def convergence_verdict(
    diagnostics: dict[str, Any], attrs: dict[str, Any] | None = None, path: str = "RESULT"
) -> str:
    """One line: did the run converge by ArviZ's thresholds, and what to do if not.

    The worst R-hat and the smallest bulk and tail ESS over latents and field quantities are
    held against ``RHAT_THRESHOLD`` and ``ESS_THRESHOLD``, and the divergences against zero. A
    figure ArviZ could not compute (NaN: too few draws, or a chain that never moved) fails the
    run. When R-hat or the ESS fall short, the line says how many iterations per chain to add:
    enough for the smallest ESS to reach the threshold if it grows in proportion to the draws
    (times 1.2), and at least half as many as the run has; with ``vaeinv extend`` for the
    methods it continues, else with a longer ``vaeinv invert``.
    """
    attrs = dict(attrs or {})
    problems, facts = [], []
    worst = {}
    for prefix, label, pick in (
        ("max_rhat", "max R-hat", max),
        ("min_ess_bulk", "min bulk ESS", min),
        ("min_ess_tail", "min tail ESS", min),
    ):
        values = [diagnostics.get(f"{prefix}_{part}") for part in ("latent", "field")]
        values = [float(v) for v in values if v is not None]
        if any(math.isnan(v) for v in values):
            problems.append(f"{label} not computable (too few draws, or a chain that never moved)")
        elif values:
            worst[prefix] = pick(values)
    if "max_rhat" in worst:
        rhat = worst["max_rhat"]
        bad = rhat > RHAT_THRESHOLD
        (problems if bad else facts).append(
            f"max R-hat {rhat:.4f} {'>' if bad else '<='} {RHAT_THRESHOLD}"
        )
    for prefix, label in (("min_ess_bulk", "bulk"), ("min_ess_tail", "tail")):
        if prefix in worst:
            low = worst[prefix] < ESS_THRESHOLD
            (problems if low else facts).append(
                f"min {label} ESS {worst[prefix]:.0f} {'<' if low else '>='} {ESS_THRESHOLD}"
            )
    divergences = int(diagnostics.get("divergences", 0) or 0)
    mixing = bool(problems)  # R-hat or ESS: more draws help
    if divergences:
        problems.append(f"{divergences} divergences")
    else:
        facts.append("no divergences")
    if not problems:
        return "converged: " + ", ".join(facts)
    advice = []
    iterations = attrs.get("num_draws")
    if mixing and iterations not in (None, "", "?"):
        essays = [worst[k] for k in ("min_ess_bulk", "min_ess_tail") if k in worst]
        factor = ESS_THRESHOLD / min(essays) if essays and min(essays) > 0 else 2.0
        n = int(iterations)
        more = max(math.ceil(n / 2), math.ceil(1.2 * n * (factor - 1)))
        advice.append(_longer_run(attrs, path, n, more))
    if divergences:
        advice.append("divergences: a smaller step (--option target_accept=0.9) or another method")
    return "NOT converged: " + ", ".join(problems) + ("; " + "; ".join(advice) if advice else "")


def _longer_run(attrs: dict[str, Any], path: str, iterations: int, more: int) -> str:
    """``vaeinv extend`` for a method whose runs it continues, else a longer run."""
    from ..kernels import registry

    method = attrs.get("method")
    known = method in registry.available()
    if known and registry.get(method).extension_warmup is not None:
        return f"run longer: vaeinv extend {path} --draws {more}"
    problem = attrs.get("problem") or "PROBLEM"
    return (
        f"run longer: vaeinv invert {problem} --method {method} --draws {iterations + more}"
        if known
        else f"run longer: {iterations + more} iterations per chain"
    )
