"""One NUTS chain through Pyro's kernel, driven iteration by iteration in its own forked RNG
stream, with every iteration's statistics recorded (see ``vaeinv.inference.nuts``)."""

from __future__ import annotations

import numpy as np
import pyro
import torch
from pyro.infer.mcmc import NUTS

_SITE = "z"
_BLOCK = (_SITE,)


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


def _rng_state(device: torch.device) -> torch.Tensor:
    state = torch.random.get_rng_state()
    if device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(device)])
    return state


def _set_rng_state(state: torch.Tensor, device: torch.device) -> None:
    size = torch.random.get_rng_state().numel()
    torch.random.set_rng_state(state[:size].clone())
    if device.type == "cuda":
        torch.cuda.set_rng_state(state[size:].clone(), device)


def _run_chain(
    chain: int,
    *,
    posterior,
    potential_fn,
    z0: torch.Tensor,
    num_draws: int,
    num_warmup: int,
    seed: int,
    target_accept: float,
    max_tree_depth: int,
    full_mass: bool,
    step_size: float,
    inverse_mass_matrix: torch.Tensor | None,
    adapt: bool,
    adapt_mass_matrix: bool,
    rng_state: torch.Tensor | None,
    progress,
    evaluations: list[int],
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """One chain in its own forked RNG stream; returns its per-chain tensors (CPU)."""
    start = evaluations[0]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        if rng_state is None:
            torch.manual_seed(chain_seed(seed, chain))
        else:
            _set_rng_state(rng_state, device)
        kernel = _RecordingNUTS(
            potential_fn=potential_fn,
            step_size=step_size,
            adapt_step_size=adapt,
            adapt_mass_matrix=adapt_mass_matrix,
            full_mass=full_mass,
            target_accept_prob=float(target_accept),
            max_tree_depth=max_tree_depth,
            inverse_mass_matrix=inverse_mass_matrix,
        )
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
                lp = -kernel._potential_energy_last  # cached at the current draw
                rows.append(
                    (
                        params[_SITE].detach().clone(),
                        lp,
                        kernel.last_acceptance,
                        step,
                        kernel.last_diverging,
                        kernel.last_tree_depth,
                        kernel.last_n_steps,
                    )
                )
            if progress is not None:
                progress(
                    chain,
                    i,
                    {
                        "warmup": warmup,
                        "diverging": kernel.last_diverging,
                        "acceptance_rate": kernel.last_acceptance,
                        "step_size": step,
                        "tree_depth": kernel.last_tree_depth,
                        "n_steps": kernel.last_n_steps,
                    },
                )
        adapted_step = kernel.step_size
        inverse_mass = kernel.inverse_mass_matrix[_BLOCK].detach().cpu().clone()
        end_state = _rng_state(device)
        kernel.cleanup()
    z, lp, acc, steps, div, depth, n = zip(*rows, strict=True)
    f64 = {"dtype": torch.float64}
    return {
        "z": torch.stack(z).cpu(),
        "lp": torch.stack([torch.as_tensor(v, **f64).cpu() for v in lp]),
        "acceptance_rate": torch.tensor(acc, **f64),
        "step_size": torch.tensor(steps, **f64),
        "diverging": torch.tensor(div, dtype=torch.bool),
        "tree_depth": torch.tensor(depth, dtype=torch.int64),
        "n_steps": torch.tensor(n, dtype=torch.int64),
        "adapted_step_size": torch.tensor(adapted_step, **f64),
        "inverse_mass_matrix": inverse_mass.to(torch.float64),
        "rng_state": end_state,
        "num_evaluations": torch.tensor(evaluations[0] - start, dtype=torch.int64),
        "num_warmup_divergences": torch.tensor(warmup_divergences, dtype=torch.int64),
    }
