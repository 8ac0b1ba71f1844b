"""Patches of a source generator's fields: exact blocks of its fields at positions drawn after
them, their own grid with the source's cells, the stationary field's variance, configs and
bad input."""

from __future__ import annotations

import pytest
import torch

from vaeinv import Grid
from vaeinv.fields import GaussianRandomField, PatchField, generate_dataset, generator_from_config


def _source():
    return GaussianRandomField(Grid(32, 32), mean=1.0, std=0.5, length_scale=0.1)


def test_patches_are_blocks_of_the_source_fields_cut_at_drawn_positions():
    source = _source()
    patches = PatchField(source, 16, 8, per_field=3)
    got = patches.sample(5, torch.Generator().manual_seed(4), torch.float64)
    assert got.shape == (5, 8, 16)
    gen = torch.Generator().manual_seed(4)
    fields = source.sample(2, gen, torch.float64)
    ix = torch.randint(0, 32 - 16 + 1, (2, 3), generator=gen)
    iy = torch.randint(0, 32 - 8 + 1, (2, 3), generator=gen)
    for k in range(5):
        i, j = divmod(k, 3)
        x, y = int(ix[i, j]), int(iy[i, j])
        torch.testing.assert_close(got[k], fields[i, y : y + 8, x : x + 16], rtol=0, atol=0)
    assert patches.grid == Grid(16, 8, lx=0.5, ly=0.25)


def test_patches_of_a_stationary_field_keep_its_mean_and_variance():
    patches = PatchField(_source(), 8, 8, per_field=2)
    x = patches.sample(400, torch.Generator().manual_seed(0), torch.float64)
    # 400 patches of 64 cells; the cell means and variances over patches, averaged
    print(f"mean {float(x.mean()):.3f}, variance {float(x.var(0).mean()):.3f}")
    assert abs(float(x.mean()) - 1.0) < 0.08
    assert abs(float(x.var(0).mean()) - 0.25) < 0.05


def test_a_patch_generator_round_trips_its_config_and_writes_a_dataset(tmp_path):
    patches = PatchField(_source(), 8, 8)
    again = generator_from_config(patches.config())
    assert isinstance(again, PatchField) and again.config() == patches.config()
    data = generate_dataset(patches, 6, 1, tmp_path / "patches.safetensors")
    assert tuple(data.fields.shape) == (6, 8, 8)


def test_patches_at_one_position_are_that_block_of_each_source_field():
    source = _source()
    patches = PatchField(source, 12, 8, per_field=1, at=(20, 3))
    got = patches.sample(3, torch.Generator().manual_seed(6), torch.float64)
    fields = source.sample(3, torch.Generator().manual_seed(6), torch.float64)
    torch.testing.assert_close(got, fields[:, 3:11, 20:32], rtol=0, atol=0)
    again = generator_from_config(patches.config())
    assert again.at == (20, 3) and again.config() == patches.config()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nx": 40, "ny": 8}, r"a patch of 8 x 40 cells does not fit .* 32 x 32"),
        ({"nx": 8, "ny": 8, "per_field": 1, "at": (25, 0)}, r"0 <= ix <= 24"),
        ({"nx": 8, "ny": 8, "at": (0, 0)}, "takes per_field = 1"),
        ({"nx": 0, "ny": 8}, "patch nx must be a positive integer, got 0"),
        ({"nx": 8, "ny": 8, "per_field": 1.5}, "patch per_field must be a positive integer"),
    ],
)
def test_bad_patches_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatchField(_source(), **kwargs)
    with pytest.raises(ValueError, match="unknown key"):
        generator_from_config({"kind": "patches", "source": _source().config(), "size": 8})
