"""One NUTS chain through Pyro's kernel, driven iteration by iteration in its own forked RNG
stream, with every iteration's statistics recorded (see ``vaeinv.kernels.nuts``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import torch
from pyro.infer.mcmc import NUTS

_SITE = "z"
_BLOCK = (_SITE,)


@dataclass(frozen=True)
class ChainSettings:
    """What every chain of a NUTS run shares.

    Attributes:
        target_accept: the step-size adaptation's target, in ``(0, 1)``.
        max_tree_depth: at most ``2^max_tree_depth - 1`` leapfrog steps per iteration.
        full_mass: a dense inverse mass matrix instead of a diagonal one.
        adapt: adapt the step size (and the mass, with ``adapt_mass_matrix``) in warm-up
            (Stan's windows); ``False`` keeps the given ones (to continue a run).
        adapt_mass_matrix: with ``adapt``, adapt the mass matrix too; ``False`` keeps
            ``inverse_mass_matrix`` (e.g. a Laplace covariance) throughout.

    Raises:
        ValueError: ``target_accept`` outside ``(0, 1)`` or a ``max_tree_depth`` below 1.
    """

    target_accept: float = 0.8
    max_tree_depth: int = 10
    full_mass: bool = False
    adapt: bool = True
    adapt_mass_matrix: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < float(self.target_accept) < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept!r}")
        depth = self.max_tree_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"max_tree_depth must be an integer >= 1, got {depth!r}")


def chain_seed(seed: int, chain: int) -> int:
    """The seed of chain ``chain``'s RNG stream: a hash of ``(seed, chain)`` (numpy
    ``SeedSequence``), so chains get unrelated streams and adding chains changes none."""
    state = np.random.SeedSequence([int(seed), int(chain)]).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


class _RecordingNUTS(NUTS):
    """Pyro's NUTS, recording each iteration's statistics and accepting a start mass matrix."""

    def __init__(self, *args, inverse_mass_matrix: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._start_inverse_mass = inverse_mass_matrix
        self._begin_iteration()

    def _begin_iteration(self) -> None:
        self._nesting = 0
        self._leapfrogs = 0
        self._sum_accept = 0.0
        self._diverged = False
        self._doublings = 0
        self._last_doubling_invalid = False

    def _initialize_adapter(self) -> None:
        super()._initialize_adapter()
        if self._start_inverse_mass is not None:
            self.mass_matrix_adapter.inverse_mass_matrix = {_BLOCK: self._start_inverse_mass}
            if self._adapter.adapt_step_size:
                self._adapter.reset_step_size_adaptation(self._initial_params)

    def _build_basetree(self, *args, **kwargs):
        tree = super()._build_basetree(*args, **kwargs)
        self._leapfrogs += 1
        self._sum_accept = self._sum_accept + tree.sum_accept_probs
        self._diverged = self._diverged or bool(tree.diverging)
        return tree

    def _build_tree(self, *args, **kwargs):
        top = self._nesting == 0
        self._nesting += 1
        try:
            tree = super()._build_tree(*args, **kwargs)
        finally:
            self._nesting -= 1
        if top:  # one doubling of the trajectory
            self._doublings += 1
            self._last_doubling_invalid = bool(tree.turning or tree.diverging)
        return tree

    def sample(self, params):
        self._begin_iteration()
        out = super().sample(params)
        # Stan's depth: a doubling whose new subtree turned or diverged is not counted
        self.last_tree_depth = self._doublings - int(self._last_doubling_invalid)
        self.last_n_steps = self._leapfrogs
        self.last_diverging = self._diverged
        self.last_acceptance = float(self._sum_accept) / max(self._leapfrogs, 1)
        return out


def rng_state_of(device: torch.device) -> torch.Tensor:
    """The global RNG state a chain's stream lives in (CPU, then CUDA on a CUDA device)."""
    state = torch.random.get_rng_state()
    if device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(device)])
    return state


def _set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    size = torch.random.get_rng_state().numel()
    torch.random.set_rng_state(state[:size].clone())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[size:].clone(), device)


def _kernel(potential_fn, settings: ChainSettings, step_size: float, inverse_mass_matrix):
    return _RecordingNUTS(
        potential_fn=potential_fn,
        step_size=step_size,
        adapt_step_size=settings.adapt,
        adapt_mass_matrix=settings.adapt and settings.adapt_mass_matrix,
        full_mass=settings.full_mass,
        target_accept_prob=float(settings.target_accept),
        max_tree_depth=settings.max_tree_depth,
        inverse_mass_matrix=inverse_mass_matrix,
    )


def run_chain(
    chain: int,
    settings: ChainSettings,
    *,
    num_draws: int,
    num_warmup: int,
    seed: int,
    potential_fn,
    z0: torch.Tensor,
    step_size: float,
    inverse_mass_matrix: torch.Tensor | None,
    rng_state: torch.Tensor | None,
    progress,
) -> dict[str, torch.Tensor]:
    """One chain in its own forked RNG stream; returns its per-chain tensors (CPU)."""
    device = z0.device
    devices = [device] if device.type == "cuda" else []
    evaluations = [0]

    def counted(params):
        evaluations[0] += 1
        return potential_fn(params)

    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        if rng_state is None:
            torch.manual_seed(chain_seed(seed, chain))
        else:
            _set_rng_state(rng_state, device)
        kernel = _kernel(counted, settings, step_size, inverse_mass_matrix)
        kernel.initial_params = {_SITE: z0.clone()}
        kernel.setup(num_warmup)
        params = kernel.initial_params
        rows: list[tuple] = []
        warmup_divergences = 0
        for i in range(num_warmup + num_draws):
            step = kernel.step_size  # the step size this iteration integrates with
            params = kernel.sample(params)
            warmup = i < num_warmup
            if warmup:
                warmup_divergences += kernel.last_diverging
            else:
                rows.append(_row(kernel, params, step))
            if progress is not None:
                progress(chain, i, _stats(kernel, warmup, step))
        adapted_step = kernel.step_size
        inverse_mass = kernel.inverse_mass_matrix[_BLOCK].detach().cpu().clone()
        end_state = rng_state_of(device)
        kernel.cleanup()
    f64 = {"dtype": torch.float64}
    return {
        **_columns(rows, z0.shape[0]),
        "last": params[_SITE].detach().to("cpu", torch.float64).clone(),
        "adapted_step_size": torch.tensor(adapted_step, **f64),
        "inverse_mass_matrix": inverse_mass.to(torch.float64),
        "rng_state": end_state,
        "num_evaluations": torch.tensor(evaluations[0], dtype=torch.int64),
        "num_warmup_divergences": torch.tensor(warmup_divergences, dtype=torch.int64),
    }


def _row(kernel, params, step) -> tuple:
    lp = -kernel._potential_energy_last  # cached at the current draw
    return (
        params[_SITE].detach().clone(),
        lp,
        kernel.last_acceptance,
        step,
        kernel.last_diverging,
        kernel.last_tree_depth,
        kernel.last_n_steps,
    )


def _stats(kernel, warmup: bool, step) -> dict:
    return {
        "warmup": warmup,
        "diverging": kernel.last_diverging,
        "acceptance_rate": kernel.last_acceptance,
        "step_size": step,
        "tree_depth": kernel.last_tree_depth,
        "n_steps": kernel.last_n_steps,
    }


def _columns(rows: list[tuple], d: int) -> dict[str, torch.Tensor]:
    """The kept draws' rows as ``(N, ...)`` columns (empty ones for a warm-up only call)."""
    f64 = {"dtype": torch.float64}
    if not rows:
        empty = torch.zeros(0, **f64)
        return {
            "z": torch.zeros(0, d, **f64),
            "lp": empty,
            "acceptance_rate": empty.clone(),
            "step_size": empty.clone(),
            "diverging": torch.zeros(0, dtype=torch.bool),
            "tree_depth": torch.zeros(0, dtype=torch.int64),
            "n_steps": torch.zeros(0, dtype=torch.int64),
        }
    z, lp, acc, steps, div, depth, n = zip(*rows, strict=True)
    return {
        "z": torch.stack(z).cpu(),
        "lp": torch.stack([torch.as_tensor(v, **f64).cpu() for v in lp]),
        "acceptance_rate": torch.tensor(acc, **f64),
        "step_size": torch.tensor(steps, **f64),
        "diverging": torch.tensor(div, dtype=torch.bool),
        "tree_depth": torch.tensor(depth, dtype=torch.int64),
        "n_steps": torch.tensor(n, dtype=torch.int64),
    }
