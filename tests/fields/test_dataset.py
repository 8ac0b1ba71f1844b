"""Datasets on disk: round trip, metadata, determinism, and the errors of both functions."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import vaeinv
from vaeinv import Grid
from vaeinv.fields import (
    DATASET_FORMAT,
    ChannelizedField,
    GaussianRandomField,
    ThresholdedGaussianField,
    generate_dataset,
    generator_from_config,
    load_dataset,
)

GRID = Grid(12, 8, lx=1.5)


@pytest.mark.parametrize(
    "field",
    [
        GaussianRandomField(GRID, length_scale=(0.1, 0.3), kernel="matern"),
        ChannelizedField(GRID, num_channels=(1, 3)),
        ThresholdedGaussianField(GRID, porosity=0.35),
    ],
    ids=["gaussian", "channelized", "thresholded"],
)
def test_round_trip_and_metadata(field, tmp_path):
    written = generate_dataset(field, 6, 123, tmp_path / "sub" / "data.safetensors")
    loaded = load_dataset(tmp_path / "sub" / "data.safetensors")
    assert loaded.fields.shape == (6, 8, 12) and loaded.fields.dtype == torch.float32
    assert torch.equal(loaded.fields, written.fields)
    has_facies = isinstance(field, ChannelizedField)
    assert (loaded.facies is not None) == has_facies
    if has_facies:
        assert torch.equal(loaded.facies, written.facies)
    meta = loaded.metadata
    assert meta["seed"] == 123 and meta["num"] == 6 and meta["format"] == DATASET_FORMAT
    assert meta["generator"] == type(field).__name__ and meta["kind"] == field.kind
    assert meta["version"] == vaeinv.__version__
    assert loaded.grid == GRID
    assert json.loads(json.dumps(meta)) == meta
    assert loaded.generator().config() == field.config()


def test_same_config_and_seed_give_identical_arrays(tmp_path):
    field = ChannelizedField(GRID)
    a = generate_dataset(field, 5, 7, tmp_path / "a.safetensors")
    rebuilt = generator_from_config(json.loads(json.dumps(field.config())))
    b = generate_dataset(rebuilt, 5, 7, tmp_path / "b.safetensors")
    c = generate_dataset(field, 5, 8, tmp_path / "c.safetensors")
    assert torch.equal(load_dataset(tmp_path / "a.safetensors").fields, b.fields)
    assert torch.equal(a.facies, b.facies)
    assert not torch.equal(a.fields, c.fields)


def test_generate_errors(tmp_path):
    field = GaussianRandomField(GRID)
    with pytest.raises(ValueError, match="num must be an integer >= 1, got 0"):
        generate_dataset(field, 0, 1, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        generate_dataset(field, 2, -1, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match=r"generator_obj must be one of .*got str"):
        generate_dataset("gaussian", 2, 1, tmp_path / "x.safetensors")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        load_dataset(tmp_path / "missing.safetensors")
    save_file({"fields": torch.zeros(1, 8, 12)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a vaeinv field dataset"):
        load_dataset(tmp_path / "plain.safetensors")
    meta = {"format": "other/9"}
    save_file({"f": torch.zeros(1)}, str(tmp_path / "o.safetensors"), {"vaeinv": json.dumps(meta)})
    with pytest.raises(ValueError, match="format 'other/9', expected"):
        load_dataset(tmp_path / "o.safetensors")
    good = generate_dataset(GaussianRandomField(GRID), 2, 1, tmp_path / "g.safetensors")
    meta = dict(good.metadata, num=3)
    path = tmp_path / "bad.safetensors"
    save_file({"fields": good.fields}, str(path), {"vaeinv": json.dumps(meta)})
    with pytest.raises(
        ValueError, match=r"fields have shape \(2, 8, 12\), metadata says \(3, 8, 12\)"
    ):
        load_dataset(path)
