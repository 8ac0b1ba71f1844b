"""Validation and randomness helpers shared by the field generators (private)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..grid import Grid

__all__ = [
    "ConfigMixin",
    "as_generator",
    "check_choice",
    "check_grid",
    "check_number",
    "check_range",
    "grid_config",
    "grid_from_config",
    "kwargs_from_config",
]


def check_grid(grid: Any) -> Grid:
    """Return ``grid`` unchanged, or raise ``ValueError`` unless it is a :class:`Grid`."""
    if not isinstance(grid, Grid):
        raise ValueError(f"grid must be a vaeinv.Grid, got {type(grid).__name__}")
    return grid


def check_number(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    nonnegative: bool = False,
    low=None,
    high=None,
) -> float:
    """Return ``value`` as a finite float, checking it.

    Args:
        name: the parameter's name, used in the error message.
        value: the value to check.
        positive: require ``value > 0``.
        nonnegative: require ``value >= 0``.
        low: if given, require ``value > low`` (exclusive).
        high: if given, require ``value < high`` (exclusive).

    Returns:
        The value as a float.

    Raises:
        ValueError: not a finite real number, or outside the allowed range.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not as_float > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if nonnegative and not as_float >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    if low is not None and high is not None and not low < as_float < high:
        raise ValueError(f"{name} must lie in the open interval ({low}, {high}), got {value!r}")
    if low is not None and high is None and not as_float > low:
        raise ValueError(f"{name} must be > {low}, got {value!r}")
    if high is not None and low is None and not as_float < high:
        raise ValueError(f"{name} must be < {high}, got {value!r}")
    return as_float


def check_range(name: str, value: Any, **bounds) -> tuple[float, float]:
    """Return ``value`` as a ``(low, high)`` pair of floats; a single number means ``(v, v)``.

    Args:
        name: the parameter's name, used in the error message.
        value: a number or a pair ``(low, high)`` with ``low <= high``.
        **bounds: constraints on both ends, as for :func:`check_number`.

    Returns:
        The pair ``(low, high)``.

    Raises:
        ValueError: not a number or a pair, ``low > high``, or an end out of bounds.
    """
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
        low = check_number(f"{name} low", value[0], **bounds)
        high = check_number(f"{name} high", value[1], **bounds)
        if low > high:
            raise ValueError(f"{name} must have low <= high, got {value!r}")
        return (low, high)
    single = check_number(name, value, **bounds)
    return (single, single)


def check_choice(name: str, value: Any, options: Sequence[str]) -> str:
    """Return ``value`` unless it is not one of ``options`` (``ValueError`` naming them)."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")
    return value


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A ``torch.Generator`` from a generator, an integer seed, or ``None`` (a fresh random seed).

    The global RNG is never touched: ``None`` seeds a new generator from the operating system.

    Args:
        generator: a generator (returned as is), a seed, or ``None``.

    Returns:
        The generator to draw from.

    Raises:
        ValueError: ``generator`` is none of the accepted types.
    """
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None:
        fresh = torch.Generator()
        fresh.seed()
        return fresh
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")


def grid_config(grid: Grid) -> dict[str, Any]:
    """The grid as a JSON-able dict ``{"nx", "ny", "lx", "ly"}``."""
    return {"nx": grid.nx, "ny": grid.ny, "lx": grid.lx, "ly": grid.ly}


def grid_from_config(config: Any) -> Grid:
    """A :class:`Grid` from a dict made by :func:`grid_config` (or a Grid, returned as is)."""
    if isinstance(config, Grid):
        return config
    if not isinstance(config, Mapping):
        raise ValueError(f"grid must be a mapping with keys nx, ny, lx, ly, got {config!r}")
    unknown = sorted(set(config) - {"nx", "ny", "lx", "ly"})
    if unknown:
        raise ValueError(f"unknown grid key {unknown[0]!r}; valid keys are nx, ny, lx, ly")
    return Grid(**config)


def kwargs_from_config(cls: type, kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of the dataclass ``cls`` from a config dict, checking its keys.

    Args:
        cls: a generator dataclass.
        kind: the registry name of ``cls``; a ``"kind"`` entry in ``config`` must equal it.
        config: the dict, as made by the generator's ``config()``.

    Returns:
        Keyword arguments for ``cls``, with the grid rebuilt and lists turned into tuples.

    Raises:
        ValueError: not a mapping, a wrong ``kind``, an unknown key or no ``grid``.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping, got {type(config).__name__}")
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = dict(config)
    given_kind = kwargs.pop("kind", kind)
    if given_kind != kind:
        raise ValueError(f"config kind {given_kind!r} does not match {cls.__name__} ({kind!r})")
    for key in kwargs:
        if key not in valid:
            raise ValueError(
                f"unknown {cls.__name__} config key {key!r}; valid keys are "
                f"{', '.join(['kind', *valid])}"
            )
    if "grid" not in kwargs:
        raise ValueError(f"{cls.__name__} config needs a 'grid' entry")
    kwargs["grid"] = grid_from_config(kwargs["grid"])
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


class ConfigMixin:
    """``config()`` / ``from_config()`` for the generator dataclasses (their ``kind`` and every
    constructor field, tuples written as lists), shared by all generators."""

    kind: str

    def config(self) -> dict[str, Any]:
        """The generator as a JSON-able dict (with ``"kind"``), inverse of ``from_config``."""
        out: dict[str, Any] = {"kind": self.kind, "grid": grid_config(self.grid)}
        for f in dataclasses.fields(self):
            if f.init and f.name != "grid":
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):
        """Rebuild from ``config()``'s dict; unknown keys raise ``ValueError``."""
        return cls(**kwargs_from_config(cls, cls.kind, config))
