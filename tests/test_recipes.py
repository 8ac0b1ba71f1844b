"""Prior recipes and `vaeinv train`, end to end on a tiny problem."""

import pytest

from vaeinv import Prior
from vaeinv.cli import main
from vaeinv.recipes import load_recipe

TINY = """
name = "tiny"
description = "a test prior"

[data]
num = 24
seed = 7

[data.generator]
kind = "gaussian"
grid = { nx = 8, ny = 8 }
mean = 1.0
std = 0.5
length_scale = 0.3

[vae]
ny = 8
nx = 8
channels = [4, 8]
norm_groups = 2

[training]
epochs = 2
batch_size = 8
val_fraction = 0.25
seed = 3
"""


def test_shipped_recipes_are_valid():
    from pathlib import Path

    import vaeinv

    folder = Path(vaeinv.__file__).parent / "priors"
    recipes = sorted(folder.glob("*/recipe.toml"))
    assert {r.parent.name for r in recipes} >= {"gaussian64", "channel64"}
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.name == path.parent.name
        assert recipe.vae.latent_dim == 256  # 16 x 16, as in MDGM


def test_train_cli_makes_a_loadable_prior(tmp_path, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--no-progress"]) == 0
    assert "best epoch" in capsys.readouterr().out
    prior = Prior.load(out / "run" / "model.safetensors")
    assert prior.grid.shape == (8, 8) and prior.latent_dim == 16  # 4 x 4
    assert prior.sample(3, generator=0).shape == (3, 8, 8)
    # the same data file is reused; a recipe asking for other data is refused
    for edit in (("seed = 7", "seed = 8"), ("std = 0.5", "std = 0.6")):
        recipe.write_text(TINY.replace(*edit))
        assert main(["train", str(recipe), "--out", str(out), "--no-progress", "--resume"]) == 2
        assert "remove the file or choose another --out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("[data]", "[data]\ncolour = 1"), "unknown key 'colour' in \\[data\\]"),
        (('name = "tiny"', 'name = "tiny"\nflavour = 2'), "unknown key 'flavour' in recipe"),
        (("num = 24", "num = 0"), "num must be an integer >= 1, got 0"),
        (("nx = 8\nchannels", "nx = 16\nchannels"), "expects 8 x 16"),
        (("epochs = 2", "epochz = 2"), "epochz"),
    ],
)
def test_bad_recipes(tmp_path, edit, match):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace(*edit))
    with pytest.raises(ValueError, match=match):
        load_recipe(path)


def test_missing_recipe(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")
