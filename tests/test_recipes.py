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


def test_second_stage_table(tmp_path):
    recipe = tmp_path / "tiny.toml"
    stage = "\n[second_stage]\nseed = 4\nflow_fields = 100\n[second_stage.flow]\ncouplings = 2\n"
    recipe.write_text(TINY + stage)
    loaded = load_recipe(recipe)
    assert loaded.second_stage == {
        "seed": 4,
        "residual_fields": 2000,
        "flow_fields": 100,
        "flow_epochs": 15,
        "flow": {"couplings": 2},
    }
    assert loaded.flow_config().latent_shape == loaded.vae.latent_shape
    assert load_recipe(_write(tmp_path, TINY)).flow_config() is None
    with pytest.raises(ValueError, match=r"unknown key 'flows' in \[second_stage\]"):
        load_recipe(_write(tmp_path, TINY + "\n[second_stage]\nflows = 1\n"))
    with pytest.raises(ValueError, match="flow_epochs must be an integer >= 0, got -1"):
        load_recipe(_write(tmp_path, TINY + "\n[second_stage]\nflow_epochs = -1\n"))
    with pytest.raises(ValueError, match="couplings must be even, got 3"):
        load_recipe(_write(tmp_path, TINY + "\n[second_stage.flow]\ncouplings = 3\n"))


def _write(folder, text):
    path = folder / "r.toml"
    path.write_text(text)
    return path


def test_train_cli_fits_the_second_stage(tmp_path):
    stage = "\n[second_stage]\nseed = 4\nresidual_fields = 16\nflow_fields = 40\nflow_epochs = 1\n"
    stage += "[second_stage.flow]\ncouplings = 2\nhidden = 8\n"
    recipe = _write(tmp_path, TINY + stage)
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--no-progress"]) == 0
    prior = Prior.load(out / "run")
    assert prior.residual is not None and prior.residual.shape == (8, 8)
    assert type(prior.latent_transform).__name__ == "FlowThenGaussian"
    assert prior.sample(2, generator=0, residual=True).shape == (2, 8, 8)
