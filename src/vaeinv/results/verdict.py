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
    held against ``RHAT_THRESHOLD`` and ``ESS_THRESHOLD``, and the divergences against zero.
    When the ESS is short, the line says how many iterations per chain ``vaeinv extend`` should
    add: enough for the smallest ESS to reach the threshold if it grows in proportion to the
    draws (times 1.2), at least as many as the run has.
    """
    attrs = dict(attrs or {})

    def worst(prefix: str, pick):
        values = [diagnostics.get(f"{prefix}_{part}") for part in ("latent", "field")]
        values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        return pick(values) if values else None

    rhat = worst("max_rhat", max)
    bulk = worst("min_ess_bulk", min)
    tail = worst("min_ess_tail", min)
    divergences = int(diagnostics.get("divergences", 0) or 0)
    problems, facts = [], []
    if rhat is not None:
        (problems if rhat > RHAT_THRESHOLD else facts).append(
            f"max R-hat {rhat:.4f} {'>' if rhat > RHAT_THRESHOLD else '<='} {RHAT_THRESHOLD}"
        )
    for label, ess in (("bulk", bulk), ("tail", tail)):
        if ess is not None:
            low = ess < ESS_THRESHOLD
            (problems if low else facts).append(
                f"min {label} ESS {ess:.0f} {'<' if low else '>='} {ESS_THRESHOLD}"
            )
    if divergences:
        problems.append(f"{divergences} divergences")
    else:
        facts.append("no divergences")
    if not problems:
        return "converged: " + ", ".join(facts)
    advice = []
    short = min(v for v in (bulk, tail) if v is not None) if (bulk or tail) else None
    iterations = attrs.get("num_draws")
    if iterations not in (None, "", "?"):
        factor = ESS_THRESHOLD / short if short else 2.0
        more = max(math.ceil(int(iterations) / 2), math.ceil(1.2 * int(iterations) * (factor - 1)))
        advice.append(f"run longer: vaeinv extend {path} --draws {more}")
    if divergences:
        advice.append("divergences: a smaller step (--option target_accept=0.9) or another method")
    return "NOT converged: " + ", ".join(problems) + ("; " + "; ".join(advice) if advice else "")
