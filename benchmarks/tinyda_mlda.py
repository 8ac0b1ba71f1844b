"""tinyDA's multilevel delayed acceptance on vaeinv posteriors: the reference side of a benchmark
of vaeinv's ``"mlda"`` kernel against tinyDA (Lykkegaard et al.) on the same posteriors.

    from tinyda_mlda import run_tinyda
    result = run_tinyda([coarse, fine], num_chains=4, num_warmup=200, num_draws=1000,
                        subchain_length=3, step_size=0.25, seed=1)

tinyDA is a benchmark-only dependency, not one of vaeinv's. tinyDA 0.9.21 pins ``arviz<0.19``
and ``numpy<2``, which clash with vaeinv's own requirements; its code runs fine with vaeinv's
versions, so install it without its pins
(``pip install --no-deps tinyda==0.9.21``). Its ``tinyDA/proposal.py`` also imports Ray
unconditionally although Ray is optional; when Ray is absent this module lends tinyDA a
stand-in ``ray`` module for the import only, which makes tinyDA fall back to sequential chains
(the chains are forced sequential anyway).

How the levels are mapped onto tinyDA
-------------------------------------
tinyDA has no notion of per-level parameters: every level's ``tinyDA.Posterior`` receives the
same parameter vector, and only the coarsest level has a proposal (finer levels are proposed by
the subchains of the next coarser one; a level's own coordinates are never moved separately).
So every level here takes the full fine latent ``z`` (``d`` = the fine ``latent_dim``) with the
prior ``N(0, I_d)``, and level ``k``'s forward model reads only ``z[:d_k]``. The coarsest
proposal, tinyDA's pCN (``CrankNicolson``), moves all ``d`` coordinates; the coarsest
likelihood ignores ``z[d_0:]``, so on the coarsest level those coordinates follow the prior
(pCN is prior-reversible), and each finer level's delayed-acceptance decision corrects for
the likelihood terms they enter. This is a valid MLDA for the fine posterior, but not the same
kernel as vaeinv's, which moves level ``l``'s own coordinates ``d_{l-1}..d_l`` with a
separate pCN step at level ``l``.

Other differences from vaeinv's kernel worth knowing when reading the numbers:

* tinyDA has no warm-up phase: the pCN step adapts (towards acceptance 0.24, every 100
  coarsest steps, with slowly diminishing gain) and the error model keeps learning over the
  whole run, draws included; warm-up draws are simply discarded here.
* The error model (``adaptive_error_model='state-independent'``) is a Gaussian with the running
  mean and full covariance of the fine-minus-coarse predictions at the fine chain's states,
  added to each coarse level's likelihood (for three or more levels the biases of the finer
  pairs are summed, as tinyDA does).
* For two levels ``tinyDA.sample`` runs its ``DAChain`` (two-level delayed acceptance, the
  same algorithm as a two-level MLDA); for three or more, ``MLDAChain``.
* tinyDA's pCN step ``beta`` is not bounded by adaptation; a ``beta`` above 1 would give NaN
  proposals (``sqrt(1 - beta^2)``), so the proposal used here caps it at 1 (a draw from the
  prior, still a valid pCN move).

Solves are counted by wrapping each level's forward model: one call is one latent decoded and
solved. tinyDA solves each proposal once and never re-solves a rejected or a retained state (a
rejection repeats the previous ``Link``; updating the error model only re-evaluates the
likelihood of stored predictions). Per fine iteration that is ``subchain_length`` solves on the
next coarser level (recursively ``subchain_length ** (L - k)`` on level ``k``), and one fine
solve unless every coarse proposal of the subchain was rejected; plus one solve per level for
the starting point of each chain.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import sys
import time
import types

import numpy as np
import torch

from vaeinv.kernels.starts import INIT_SCALE, STREAM_INIT, STREAM_KERNEL, derived_seed

__all__ = ["run_tinyda"]


def _import_tinyda():
    """Import tinyDA, standing in for Ray when it is not installed.

    tinyDA 0.9.21's ``proposal.py`` runs ``import ray`` at import time, although only its
    parallel samplers use Ray. The stand-in module raises ``ModuleNotFoundError`` for any
    attribute, so tinyDA's own optional import of its Ray helpers fails as if Ray were absent
    and tinyDA runs sequentially. The stand-in is removed from ``sys.modules`` afterwards so
    that nothing else mistakes it for Ray.
    """
    if "tinyDA" in sys.modules:
        return sys.modules["tinyDA"]
    stand_in = None
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        stand_in = types.ModuleType("ray")

        def _absent(name):
            raise ModuleNotFoundError(f"No module named 'ray' (ray.{name} is not available)")

        stand_in.__getattr__ = _absent  # PEP 562: looked up for any missing attribute
        sys.modules["ray"] = stand_in
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # tinyDA prints a note without Ray
            import tinyDA
    except ModuleNotFoundError as error:
        if error.name in ("tinyDA", "tinyda"):
            raise ModuleNotFoundError(
                "this benchmark needs tinyDA: pip install --no-deps tinyda==0.9.21"
            ) from error
        raise
    finally:
        if stand_in is not None and sys.modules.get("ray") is stand_in:
            del sys.modules["ray"]
    return tinyDA


class _CountedForward:
    """A level's forward model for tinyDA: ``z (d,) numpy -> prediction (m,) numpy``.

    Reads the first ``latent_dim`` entries of the full parameter vector, evaluates the vaeinv
    posterior's prediction (a failed solve gives NaN, which tinyDA rejects) and counts calls.
    """

    def __init__(self, posterior) -> None:
        self.posterior = posterior
        self.latent_dim = posterior.latent_dim
        self.calls = 0

    def __call__(self, parameters: np.ndarray) -> np.ndarray:
        self.calls += 1
        z = torch.as_tensor(
            np.asarray(parameters[: self.latent_dim], dtype=np.float64),
            device=self.posterior.device,
        )[None]
        with torch.no_grad():
            prediction = self.posterior.evaluate(z).prediction
        return prediction[0].cpu().numpy()


def _bounded_pcn(tda):
    """tinyDA's pCN proposal, its adapted step ``beta`` capped at 1 (see the module notes)."""

    class BoundedCrankNicolson(tda.CrankNicolson):
        def adapt(self, **kwargs):
            super().adapt(**kwargs)
            self.scaling = min(self.scaling, 1.0)

    return BoundedCrankNicolson


def _check(levels, num_chains, num_warmup, num_draws, subchain_length, step_size) -> None:
    if len(levels) < 2:
        raise ValueError(f"need at least two levels (coarse ... fine), got {len(levels)}")
    dims = [level.latent_dim for level in levels]
    if any(a > b for a, b in itertools.pairwise(dims)):
        raise ValueError(f"latent dims must not decrease from coarse to fine, got {dims}")
    sizes = {level.num_data for level in levels}
    if len(sizes) != 1:
        raise ValueError(f"every level must have the same number of data, got {sorted(sizes)}")
    if num_chains < 1 or num_draws < 1 or num_warmup < 0:
        raise ValueError(
            f"need num_chains >= 1, num_draws >= 1, num_warmup >= 0; got {num_chains}, "
            f"{num_draws}, {num_warmup}"
        )
    lengths = [subchain_length] if isinstance(subchain_length, int) else list(subchain_length)
    if any(int(n) < 1 for n in lengths):
        raise ValueError(f"subchain lengths must be >= 1, got {subchain_length}")
    if not isinstance(subchain_length, int) and len(lengths) != len(levels) - 1:
        raise ValueError(
            f"give one subchain length per coarse level ({len(levels) - 1}), got {len(lengths)}"
        )
    if not 0.0 < step_size <= 1.0:
        raise ValueError(f"step_size (pCN beta) must be in (0, 1], got {step_size}")


def _starts(num_chains: int, d: int, seed: int) -> np.ndarray:
    """The starting latents ``(num_chains, d)``: ``INIT_SCALE * N(0, I)`` (``INIT_SCALE = 1.5``)
    drawn exactly as ``vaeinv.sample(..., seed=seed)`` draws its default starts (a torch
    generator seeded from ``numpy.random.SeedSequence([seed, STREAM_INIT])``), so that both
    samplers of the benchmark start from the same points."""
    generator = torch.Generator().manual_seed(derived_seed(seed, STREAM_INIT))
    z0 = INIT_SCALE * torch.randn(num_chains, d, generator=generator, dtype=torch.float64)
    return z0.numpy()


def _fine_links(samples: dict, num_levels: int, chain: int) -> list:
    """The fine chain's ``Link`` list of one chain in ``tinyDA.sample``'s result (its first
    entry is the starting point): ``chain_fine_<i>`` for DA, ``chain_l<L>_<i>`` for MLDA."""
    if samples["sampler"] == "DA":
        return samples[f"chain_fine_{chain}"]
    return samples[f"chain_l{num_levels - 1}_{chain}"]


def run_tinyda(
    levels,
    *,
    num_chains,
    num_warmup,
    num_draws,
    subchain_length,
    step_size,
    seed,
    error_model=True,
) -> dict:
    """Sample the fine posterior ``levels[-1]`` with tinyDA's (multilevel) delayed acceptance.

    Args:
        levels: ``vaeinv.Posterior`` objects, coarsest first and the fine posterior last. Level
            ``k``'s latent is the first ``levels[k].latent_dim`` coordinates of the fine latent
            (non-decreasing dims); each has the prior ``N(0, I)`` on its latent and its own data
            and noise (the same data for a meaningful benchmark).
        num_chains: independent chains, run one after the other (no Ray).
        num_warmup: fine iterations discarded from the start of each chain.
        num_draws: fine iterations kept after them.
        subchain_length: the subchain length of every coarse level (an int), or one per
            coarse level, coarsest first.
        step_size: the coarsest pCN's initial ``beta`` in ``(0, 1]``; tinyDA adapts it.
        seed: the starting points are ``N(0, 1.5^2 I)`` draws, the same as the default
            starts of ``vaeinv.sample(..., seed=seed)`` (from ``numpy.random.SeedSequence([seed,
            0])``); tinyDA draws its random numbers from NumPy's global generator, which is
            seeded from ``SeedSequence([seed, 1])`` here and restored afterwards.
        error_model: use tinyDA's state-independent adaptive error model.

    Returns:
        A dict with ``"z"``: ``(num_chains, num_draws, d)`` numpy float64 fine draws after the
        warm-up; ``"fine_solves"``: int; ``"coarse_solves"``: list of ints, one per coarse
        level, coarsest first; ``"wall_s"``: float, the time in ``tinyDA.sample`` (its
        starting-point solves included); ``"acceptance"``: float, the fraction of the kept fine
        iterations that moved (tinyDA does not return its acceptance flags; a rejection
        repeats the same ``Link`` object, an acceptance appends a new one).
    """
    _check(levels, num_chains, num_warmup, num_draws, subchain_length, step_size)
    tda = _import_tinyda()
    from scipy import stats

    d = levels[-1].latent_dim
    prior = stats.multivariate_normal(mean=np.zeros(d), cov=np.eye(d))
    models = [_CountedForward(level) for level in levels]

    # one tinyDA posterior per level, all over the full d-dimensional latent
    posteriors = []
    for k, (level, model) in enumerate(zip(levels, models, strict=True)):
        data = level.data.detach().cpu().numpy().astype(np.float64)
        cov = np.diag(level.noise_std.detach().cpu().numpy().astype(np.float64) ** 2)
        coarse = k < len(levels) - 1
        if error_model and coarse:
            likelihood = tda.AdaptiveGaussianLogLike(data, cov)  # has set_bias
        else:
            likelihood = tda.GaussianLogLike(data, cov)
        posteriors.append(tda.Posterior(prior, likelihood, model))

    proposal = _bounded_pcn(tda)(scaling=step_size, adaptive=True)

    starts = _starts(num_chains, d, seed)
    if isinstance(subchain_length, int):
        lengths = subchain_length
    elif len(levels) == 2:  # DAChain takes an int
        lengths = int(subchain_length[0])
    else:
        lengths = [int(n) for n in subchain_length]

    # tinyDA draws from NumPy's legacy global generator: seed it, and restore it afterwards
    global_state = np.random.get_state()  # noqa: NPY002
    np.random.seed(np.random.SeedSequence([seed, STREAM_KERNEL]).generate_state(4))  # noqa: NPY002
    try:
        start = time.perf_counter()
        # tinyDA prints a line and draws a progress bar per chain; keep them off the console.
        # silence NumPy's warnings on NaN predictions (failed solves, which tinyDA rejects) and
        # on overflowing acceptance ratios (which accept)
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            np.errstate(over="ignore", invalid="ignore"),
        ):
            samples = tda.sample(
                posteriors,
                proposal,
                iterations=num_warmup + num_draws,
                n_chains=num_chains,
                initial_parameters=[row.copy() for row in starts],
                subchain_length=lengths,
                adaptive_error_model="state-independent" if error_model else None,
                store_coarse_chain=True,
                force_sequential=True,
            )
        wall_s = time.perf_counter() - start
    finally:
        np.random.set_state(global_state)  # noqa: NPY002

    draws, moved = [], []
    for c in range(num_chains):
        links = _fine_links(samples, len(levels), c)  # 1 + num_warmup + num_draws links
        kept = links[num_warmup + 1 :]
        draws.append(np.stack([np.asarray(link.parameters, dtype=np.float64) for link in kept]))
        moved += [b is not a for a, b in zip(links[num_warmup:-1], kept, strict=True)]

    return {
        "z": np.stack(draws),
        "fine_solves": int(models[-1].calls),
        "coarse_solves": [int(model.calls) for model in models[:-1]],
        "wall_s": float(wall_s),
        "acceptance": float(np.mean(moved)),
    }
