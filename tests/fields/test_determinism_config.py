"""Reproducibility, config round trips, the registry, and every validation error."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaeinv import Grid
from vaeinv.fields import (
    GENERATORS,
    ChannelizedField,
    GaussianRandomField,
    ThresholdedGaussianField,
    generator_from_config,
)

GRID = Grid(10, 6)
FIELDS = [
    GaussianRandomField(GRID, mean=1.0, std=0.5, kernel="gaussian"),
    GaussianRandomField(GRID, length_scale=(0.05, 0.2), anisotropy=0.5, angle=0.3),
    ChannelizedField(GRID, num_channels=(1, 3)),
    ThresholdedGaussianField(GRID),
]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: type(f).__name__)
def test_same_seed_same_fields_different_seed_different(field):
    state = torch.get_rng_state()
    a = field.sample(5, torch.Generator().manual_seed(3))
    b = field.sample(5, 3)
    c = field.sample(5, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (5, 6, 10) and a.dtype == torch.float32
    assert field.sample(0, 1).shape == (0, 6, 10)
    assert field.sample(3, 1, dtype=torch.float64).dtype == torch.float64
    assert torch.equal(torch.get_rng_state(), state), "the global RNG was touched"
    assert not torch.equal(field.sample(2), field.sample(2))  # None: fresh OS seed


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: type(f).__name__)
def test_config_round_trip(field):
    config = json.loads(json.dumps(field.config()))
    rebuilt = generator_from_config(config)
    assert type(rebuilt) is type(field) and rebuilt.config() == field.config()
    assert type(field).from_config(config).config() == field.config()
    assert torch.equal(rebuilt.sample(3, 11), field.sample(3, 11))
    assert GENERATORS[config["kind"]] is type(field)


def test_registry_and_config_errors():
    config = FIELDS[0].config()
    with pytest.raises(ValueError, match="unknown generator kind 'fractal'; expected one of"):
        generator_from_config({**config, "kind": "fractal"})
    with pytest.raises(ValueError, match="unknown generator kind None"):
        generator_from_config({"grid": config["grid"]})
    with pytest.raises(ValueError, match="config must be a mapping"):
        generator_from_config([("kind", "gaussian")])
    with pytest.raises(ValueError, match="unknown GaussianRandomField config key 'sigma'; valid"):
        generator_from_config({**config, "sigma": 1.0})
    with pytest.raises(ValueError, match=r"config kind 'channelized' does not match"):
        GaussianRandomField.from_config({**config, "kind": "channelized"})
    with pytest.raises(ValueError, match="needs a 'grid' entry"):
        GaussianRandomField.from_config({"kind": "gaussian"})
    with pytest.raises(ValueError, match="unknown grid key 'nz'; valid keys are nx, ny, lx, ly"):
        generator_from_config({**config, "grid": {"nx": 2, "ny": 2, "nz": 2}})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std": -1.0}, "std must be >= 0, got -1.0"),
        ({"mean": math.nan}, "mean must be a finite number, got nan"),
        ({"length_scale": 0.0}, "length_scale must be > 0, got 0.0"),
        ({"length_scale": -0.1}, "length_scale must be > 0"),
        ({"length_scale": (0.3, 0.1)}, r"length_scale must have low <= high, got \(0.3, 0.1\)"),
        ({"length_scale": (0.0, 0.1)}, "length_scale low must be > 0"),
        ({"length_scale": (0.1, 0.2, 0.3)}, r"number or a \(low, high\) pair"),
        ({"kernel": "cubic"}, "unknown kernel 'cubic'; expected one of exponential, gaussian"),
        ({"nu": 0.0}, "nu must be > 0"),
        ({"anisotropy": -2.0}, "anisotropy must be > 0"),
        ({"angle": "north"}, "angle must be a finite number, got 'north'"),
    ],
)
def test_gaussian_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianRandomField(GRID, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_channels": 0}, "num_channels must be an integer >= 1 .*got 0"),
        ({"num_channels": (3, 2)}, r"num_channels .* lo <= hi, got \(3, 2\)"),
        ({"num_channels": 1.5}, "num_channels must be an integer"),
        ({"width": (0.3, 0.1)}, "width must have low <= high"),
        ({"width": 0.0}, "width must be > 0"),
        ({"orientation": (-2.0, 0.0)}, r"orientation low must lie in the open interval"),
        ({"amplitude": -0.1}, "amplitude must be >= 0, got -0.1"),
        ({"wavelength": (0.0, 1.0)}, "wavelength low must be > 0"),
        ({"channel": {"mean": 4.0, "sd": 1.0}}, "unknown channel key 'sd'; valid keys are mean"),
        ({"background": 0.5}, "background must be a mapping"),
        ({"background": {"std": -1.0}}, "std must be >= 0"),
    ],
)
def test_channel_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChannelizedField(GRID, **kwargs)


@pytest.mark.parametrize("porosity", [0.0, 1.0, 1.5, -0.2])
def test_porosity_errors(porosity):
    with pytest.raises(ValueError, match=r"porosity must lie in the open interval \(0.0, 1.0\)"):
        ThresholdedGaussianField(GRID, porosity=porosity)


def test_other_errors():
    for cls in (GaussianRandomField, ChannelizedField, ThresholdedGaussianField):
        with pytest.raises(ValueError, match=r"grid must be a vaeinv\.Grid, got tuple"):
            cls((8, 8))
        with pytest.raises(ValueError, match="n must be a non-negative integer, got -1"):
            cls(GRID).sample(-1, 0)
        with pytest.raises(ValueError, match=r"generator must be a torch\.Generator, an int seed"):
            cls(GRID).sample(2, "seed")
    with pytest.raises(ValueError, match="unknown kernel 'rbf'"):
        ThresholdedGaussianField(GRID, kernel="rbf")
