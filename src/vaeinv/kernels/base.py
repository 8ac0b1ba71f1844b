"""The kernel protocol: how a sampler plugs into ``vaeinv.sample`` and the run loop.

A kernel is a Markov transition over an immutable state, with chains as the leading dimension:

```
state = kernel.init(run)                                    # start every chain (run: RunContext)
state, info = kernel.step(target, state, generator, adapt=..., options=...)   # one iteration
state = kernel.end_warmup(state)                            # fix what warm-up adapted
```

- The **state** is a ``NamedTuple`` of tensors (among them ``z (C, d)``, and what the
  kernel caches: log-likelihoods, predictions, the decoded field, step sizes). A checkpoint saves
  tensors and restores it with ``kernel.state_type(**tensors)``, so a resumed chain continues bit
  for bit. An entry named ``field`` (the decoded ``z``) and ``prediction`` are kept with the
  draws; without them the run loop decodes and solves each kept draw once more.
- The **info** of a step is a ``NamedTuple`` of ``(C,)`` tensors named as ArviZ names sampler
  statistics (``accepted``, ``acceptance_rate``, ``failed``, ``step_size``, ``diverging``,
  ``n_steps``; multilevel kernels ``(C, levels)`` ``coarse_acceptance_rate`` and
  ``coarse_solves``); every entry in `KEPT_STATS` it has is kept with the draws.
- **Options** are a frozen dataclass per kernel (`Options`), declared once: ``vaeinv.sample``'s
  keyword options, a problem file's ``[sampler.<name>]`` table and ``vaeinv invert --option``
  are all read through it, and it validates its values on construction.
- **Adaptation** is a phase of the state: ``step(..., adapt=True)`` during warm-up updates
  what the kernel adapts (`vaeinv.kernels.adaptation` holds the rules), ``end_warmup`` freezes
  it. A kernel whose adaptation cannot be saved mid-way (Pyro's NUTS) sets
  ``resumable_warmup = False`` and overrides ``advance``, which runs a block of iterations.
- All randomness comes from the ``torch.Generator`` the run passes (or, for a kernel with
  ``independent_chains``, from per-chain streams the kernel derives from the run's seed).

Register a kernel with [`vaeinv.kernels.register`][vaeinv.kernels.registry.register]; then
``vaeinv.sample(posterior, method=name)`` runs it with chunks, checkpoints, resume, thinning
and progress, and a problem file loaded in the same process may name it. (The ``vaeinv``
command knows the built-in kernels only.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch

if TYPE_CHECKING:
    from ..runs.context import RunContext

__all__ = ["KEPT_STATS", "Kernel", "Options", "check_fraction", "check_positive"]

#: the step statistics the run loop keeps with every draw, when a kernel's info has them.
KEPT_STATS = (
    "accepted",
    "acceptance_rate",
    "failed",
    "step_size",
    "diverging",
    "n_steps",
    "coarse_acceptance_rate",
    "coarse_solves",
)


def check_positive(name: str, value: Any, *, integer: bool = False, minimum: float = 0) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number (an integer with ``integer``)
    above ``minimum`` (or at least ``minimum`` for integers)."""
    if integer:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {int(minimum)}, got {value!r}")
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not value > minimum
    ):
        bound = "positive" if minimum == 0 else f"> {minimum:g}"
        raise ValueError(f"{name} must be a {bound} number (finite), got {value!r}")


def check_fraction(name: str, value: Any, *, closed: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in ``(0, 1)`` (``(0, 1]`` if closed)."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and 0 < value
    if not ok or not (value <= 1 if closed else value < 1):
        interval = "(0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Options:
    """The base of every kernel's options: a frozen dataclass validated on construction.

    A subclass declares its options as fields with defaults (numbers, bools, strings or
    ``None``) and checks their values in ``validate``.
    """

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not isinstance(value, bool | int | float | str):
                raise ValueError(
                    f"sampler option {field.name}={value!r} must be a number, bool or string"
                )
            default = field.default
            real = default is None or isinstance(default, float)
            if real and isinstance(value, int) and not isinstance(value, bool):
                # one canonical form: step_size=1 is step_size=1.0
                object.__setattr__(self, field.name, float(value))
        self.validate()

    def validate(self) -> None:
        """Check the values (a subclass raises ``ValueError`` naming the bad one)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option with its default."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], method: str) -> Options:
        """Options from a mapping of some of them (the rest take their defaults).

        Raises:
            ValueError: an unknown name (the valid ones listed) or a bad value.
        """
        if not isinstance(options, Mapping):
            raise ValueError(f"sampler options must be a table of names to values, got {options!r}")
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise ValueError(
                f"unknown sampler option(s) {unknown} for method {method!r}; "
                f"valid options: {sorted(cls.names())}"
            )
        return cls(**options)

    def as_dict(self) -> dict[str, Any]:
        """``{name: value}`` in declaration order (what a run records)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class Kernel:
    """The base of every kernel (see the module docstring for the protocol).

    Class attributes:
        name: the method name ``vaeinv.sample`` and the CLI select it by.
        Options: the kernel's `Options` dataclass.
        state_type: the state's ``NamedTuple`` class (a checkpoint rebuilds the state from it).
        state_key: the prefix of the state's tensors in a checkpoint (default: ``name``; the
            pCN family and HMC keep the historical ``"pcn"``).
        state_on_device: a restored state's tensors go to the posterior's device (``False``
            keeps them on the CPU, as NUTS's RNG states must be).
        independent_chains: chains run with their own random streams, so that a run may
            sample some of them (``sample(chains=...)``) and merge the parts.
        resumable_warmup: the warm-up can stop at any block and resume; ``False`` runs the
            whole warm-up in one block, without a checkpoint inside it.
        mass_matrix: the kernel takes a fixed inverse mass matrix
            (``sample(inverse_mass_matrix=...)``).
        extension_warmup: warm-up iterations of ``vaeinv extend`` (``None``: runs of this
            kernel cannot be extended, for the reason in ``extension_refusal``).
        inputs: names of ``vaeinv.sample`` keyword arguments that are objects given to the
            kernel's constructor rather than options (e.g. ``"coarse"`` posteriors).
        position_fields: the state entries that describe where each chain is (its latents and
            what the state caches about them), all with the chains as leading dimension; the
            other entries are what warm-up adapts. A kernel that has them and implements
            `relocate` can run inside another kernel (MLDA's coarsest level), which resets
            them when its own decision rejects. ``()``: it cannot.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[Options]] = Options
    state_type: ClassVar[type] = NamedTuple
    state_key: ClassVar[str | None] = None
    state_on_device: ClassVar[bool] = True
    independent_chains: ClassVar[bool] = False
    resumable_warmup: ClassVar[bool] = True
    mass_matrix: ClassVar[bool] = False
    extension_warmup: ClassVar[int | None] = None
    extension_refusal: ClassVar[str] = "this kernel does not continue finished runs"
    inputs: ClassVar[tuple[str, ...]] = ()
    position_fields: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------ the protocol
    def init(self, run: RunContext):
        """The chains' initial state from ``run.z0`` (the starts of ``run.chain_ids``), on
        ``run.target.device``; draw any randomness from ``run.generator``."""
        raise NotImplementedError

    def step(self, target, state, generator: torch.Generator, *, adapt: bool, options: Options):
        """One iteration of every chain: ``(new_state, info)``."""
        raise NotImplementedError

    def end_warmup(self, state):
        """The state that samples from the end of warm-up on (default: unchanged)."""
        return state

    # ------------------------------------------------------------------ optional hooks
    def relocate(self, target, state, z: torch.Tensor):
        """``state`` with every chain at ``z (C, d)``: its `position_fields` evaluated afresh on
        ``target`` (one batched evaluation), what warm-up adapted kept. An outer kernel calls it
        when the target's likelihood changes under a chain (MLDA's error model in warm-up)."""
        raise ValueError(f"method {self.name!r} cannot run inside another kernel")

    def describe_inputs(self) -> dict:
        """A JSON-able record of the kernel's ``inputs`` (part of the run fingerprint)."""
        return {}

    def check(self, options: Options, *, num_warmup: int, fixed_mass: bool) -> None:
        """Checks of the options against the run's settings, before any work."""

    def advance(self, run: RunContext, state, iterations: int, *, adapt: bool, thin: int):
        """Run ``iterations`` steps of every chain; return ``(state, kept)``, where ``kept``
        maps names to ``(C, iterations // thin, ...)`` tensors of every ``thin``-th state and
        step (``None`` during warm-up). The default drives `step`; a kernel that runs whole
        blocks itself (NUTS) overrides it."""
        kept: dict[str, list[torch.Tensor]] = {}
        for i in range(iterations):
            state, info = self.step(
                run.target, state, run.generator, adapt=adapt, options=run.options
            )
            run.record_step(info, warmup=adapt)
            if not adapt and (i + 1) % thin == 0:
                for name, value in _kept(state, info):
                    kept.setdefault(name, []).append(value)
        if adapt:
            return state, None
        return state, {k: torch.stack(v, dim=1) for k, v in kept.items()}

    def extra_tensors(self, run: RunContext) -> dict[str, torch.Tensor]:
        """Tensors besides the state that a checkpoint must keep (e.g. a fitted map)."""
        return {}

    def restore_extra(self, run: RunContext, tensors: dict[str, torch.Tensor]) -> None:
        """Rebuild what `extra_tensors` saved."""

    def extension(self, record) -> dict[str, Any]:
        """``vaeinv.sample`` keyword arguments that continue a finished run (``record``: a
        `vaeinv.runs.extend.FinishedRun`)."""
        raise ValueError(f"cannot extend a run of method {self.name!r}: {self.extension_refusal}")


def _kept(state, info):
    """The entries of a state and a step's info kept with a draw."""
    yield "z", state.z
    for name in ("prediction", "field"):
        value = getattr(state, name, None)
        if value is not None:
            yield ("log_k" if name == "field" else name), value
    for name in KEPT_STATS:
        value = getattr(info, name, None)
        if value is not None:
            yield name, value
