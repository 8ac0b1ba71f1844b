"""A registered kernel as MLDA's coarsest-level sampler (the option ``coarse_kernel``).

MLDA's subchains must be reversible with respect to their level's posterior, which any
Metropolis-Hastings kernel with its adaptation frozen is (pCN, gpCN, HMC). Such a kernel runs
inside MLDA on the coarsest posterior, with the error model's correction once it has one, and
keeps its own state (step sizes, mass matrix, Laplace reference) from one MLDA iteration to the
next. Three things tie it to the outer chain:

- where it starts: its own ``init`` chooses the coarsest latents of the chains' starts (HMC and
  gpCN start at draws of their Laplace approximation), and the finer latents are the run's;
- rejections above: when a delayed decision of level 1 (or of any level above) rejects, the
  chain returns to where it was, so the inner state's ``position_fields`` return to their
  values at the start of that level's subchain;
- a changed likelihood: while the error model learns (the second half of warm-up) the
  corrected coarsest likelihood changes between iterations, and the inner state's cached
  log-likelihood (and gradient) is evaluated afresh (``Kernel.relocate``, one coarsest
  evaluation per iteration) before the next subchain.

Its state travels inside MLDA's, as entries named ``coarse_<entry>``, so that a checkpoint
saves and restores it with the rest and a resumed run repeats its draws.
"""

from __future__ import annotations

import collections

import torch

__all__ = ["CoarseKernel", "embeddable_kernels"]

PREFIX = "coarse_"


def embeddable_kernels() -> list[str]:
    """The registered kernels that can run as MLDA's coarsest sampler: no inputs of their own,
    and ``position_fields`` with ``relocate``."""
    from . import registry

    return [
        name
        for name in registry.available()
        if registry.get(name).position_fields and not registry.get(name).inputs
    ]


class _InnerRun:
    """What the inner kernel's ``init`` reads of a run: the outer run's generator, seeds and
    display, the coarsest posterior as target, its own options and warm-up length. Work it
    does outside ``evaluate`` (a Laplace fit) counts as coarsest-level solves."""

    def __init__(self, run, target, options, z0, num_warmup: int) -> None:
        self._run = run
        self.target = target
        self.options = options
        self.z0 = z0
        self.num_warmup = num_warmup
        self.generator = run.generator
        self.fixed_mass = None
        self.chain_ids = run.chain_ids
        self.init_scale = run.init_scale
        self.bar = run.bar
        self.laplace_starts: list[float] = []

    def stream_seed(self, stream: int) -> int:
        return self._run.stream_seed(stream)

    def add_work(self, forward_solves: int, gradient_evaluations: int) -> None:
        self._run.count("forward_solves_level_0", int(forward_solves))
        self._run.count("coarse_forward_solves", int(forward_solves))
        if gradient_evaluations:
            self._run.count("gradient_evaluations_level_0", int(gradient_evaluations))

    def show(self, **values) -> None:
        self._run.show(**values)


class CoarseKernel:
    """The registered kernel ``name`` (its default options) as the coarsest sampler of an MLDA
    run with ``num_levels`` coarse levels and ``subchain_length`` steps per subchain."""

    def __init__(self, name: str, base_state: type, *, steps_per_iteration: int) -> None:
        from . import registry

        if name not in embeddable_kernels():
            raise ValueError(
                f"coarse_kernel {name!r} cannot run inside MLDA; expected one of "
                f"{embeddable_kernels()}"
            )
        self.kernel = registry.get(name)()
        self.options = self.kernel.Options()
        self.steps_per_iteration = steps_per_iteration
        inner = self.kernel.state_type._fields
        self.inner_fields = inner
        names = (*base_state._fields, *(PREFIX + f for f in inner), "coarse_evaluated_at")
        extra = len(names) - len(base_state._fields)
        self.state_type = collections.namedtuple(
            "MLDACoarseKernelState", names, defaults=(None,) * extra
        )

    def check(self, num_warmup: int) -> None:
        """The inner kernel's own checks, with the warm-up in its steps."""
        self.kernel.check(
            self.options, num_warmup=num_warmup * self.steps_per_iteration, fixed_mass=False
        )

    # ------------------------------------------------------------------ the inner state
    def init(self, run, target, z0: torch.Tensor, num_warmup: int):
        """The inner kernel's start on ``target`` from ``z0 (C, d_0)`` (it may move them)."""
        inner_run = _InnerRun(run, target, self.options, z0, num_warmup * self.steps_per_iteration)
        return self.kernel.init(inner_run)

    def unpack(self, state):
        """The inner kernel's state inside MLDA's ``state``."""
        values = {f: getattr(state, PREFIX + f) for f in self.inner_fields}
        return self.kernel.state_type(**values)

    def pack(self, state, inner, **more):
        """MLDA's ``state`` holding ``inner`` (and ``more`` entries replaced)."""
        values = {PREFIX + f: getattr(inner, f) for f in self.inner_fields}
        return state._replace(**values, **more)

    def packed(self, base, inner, evaluated_at: torch.Tensor):
        """A full MLDA state from the base entries of ``base`` and ``inner``."""
        empty = self.state_type(**base._asdict())
        return self.pack(empty, inner, coarse_evaluated_at=evaluated_at)

    def keep_where(self, take: torch.Tensor, inner, snapshot):
        """``inner`` where ``take`` (per chain), else the chain's position in ``snapshot``."""
        updates = {}
        for f in self.kernel.position_fields:
            new, old = getattr(inner, f), getattr(snapshot, f)
            if new is None or old is None:
                continue
            mask = take.reshape(-1, *([1] * (new.dim() - 1)))
            updates[f] = torch.where(mask, new, old.to(new.dtype))
        return inner._replace(**updates)

    # ------------------------------------------------------------------ moves
    def subchain(self, target, inner, generator, *, adapt: bool, length: int):
        """``length`` steps of the inner kernel: ``(inner, summed acceptance (C,), step size
        (C,))``."""
        rate = 0.0
        step_size = None
        for _ in range(length):
            inner, info = self.kernel.step(
                target, inner, generator, adapt=adapt, options=self.options
            )
            rate = rate + info.acceptance_rate
            step_size = info.step_size
        return inner, rate, step_size

    def relocate(self, target, inner):
        return self.kernel.relocate(target, inner, inner.z)

    def end_warmup(self, inner):
        return self.kernel.end_warmup(inner)
