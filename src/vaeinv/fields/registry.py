"""The registry of field generators, and generators rebuilt from config dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .binary import ThresholdedGaussianField
from .channels import ChannelizedField
from .gaussian import GaussianRandomField
from .patches import PatchField

__all__ = ["GENERATORS", "FieldGenerator", "generator_from_config"]

#: Generator classes by their ``kind``.
GENERATORS: dict[str, type] = {
    GaussianRandomField.kind: GaussianRandomField,
    ChannelizedField.kind: ChannelizedField,
    ThresholdedGaussianField.kind: ThresholdedGaussianField,
    PatchField.kind: PatchField,
}

#: Any of the field generators.
FieldGenerator = GaussianRandomField | ChannelizedField | ThresholdedGaussianField | PatchField


def generator_from_config(config: Mapping[str, Any]) -> FieldGenerator:
    """Build a generator from ``{"kind": ..., "grid": {...}, ...}`` (as made by ``config()``).

    Args:
        config: the generator's kind (a key of :data:`GENERATORS`) and its arguments, with the
            grid as ``{"nx", "ny", "lx", "ly"}``.

    Returns:
        The generator.

    Raises:
        ValueError: no or an unknown ``kind``, an unknown key, or an invalid value.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping, got {type(config).__name__}")
    kind = config.get("kind")
    if kind not in GENERATORS:
        raise ValueError(
            f"unknown generator kind {kind!r}; expected one of {', '.join(GENERATORS)}"
        )
    return GENERATORS[kind].from_config(config)
