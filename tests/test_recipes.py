"""Prior recipes and `vaeinv train`, end to end on a tiny problem."""

import pytest

from vaeinv import Prior
from vaeinv.cli import main
from vaeinv.priors.recipes import load_recipe

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

    folder = Path(vaeinv.__file__).parent / "priors" / "shipped"
    recipes = sorted(folder.glob("*/recipe.toml"))
    from vaeinv.priors.multiscale_recipe import is_multiscale_recipe, load_multiscale_recipe

    names = {"gaussian64", "channel64", "gaussian16-64", "channel16-32-64", "gaussian-patch72"}
    assert {r.parent.name for r in recipes} >= names
    for path in recipes:
        multiscale = is_multiscale_recipe(path)
        recipe = (load_multiscale_recipe if multiscale else load_recipe)(path)
        assert recipe.name == path.parent.name
        vae = recipe.levels[-1][0] if multiscale else recipe.vae
        # a latent map of a quarter of the grid's side: 16 x 16 for 64 x 64 cells, as in MDGM
        assert vae.latent_dim == (vae.ny // 4) * (vae.nx // 4)
        if multiscale:  # the coarsest level: 16 x 16 cells, a 4 x 4 latent map (MDGM's)
            assert recipe.levels[0][0].latent_dim == 16


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


FINETUNE = "\n[finetune]\nepochs = 1\nbatch_size = 8\nprior_draws = 4\nmax_lag = 3\nseed = 5\n"


def test_finetune_table(tmp_path):
    loaded = load_recipe(_write(tmp_path, TINY + FINETUNE))
    assert loaded.finetune.epochs == 1 and loaded.finetune.stats_lambda == 300.0
    assert load_recipe(_write(tmp_path, TINY)).finetune is None
    with pytest.raises(ValueError, match=r"unknown FinetuneConfig keys \['lags'\]"):
        load_recipe(_write(tmp_path, TINY + "\n[finetune]\nlags = 3\n"))
    with pytest.raises(ValueError, match="max_lag 8 must be below the grid size 8 x 8"):
        load_recipe(_write(tmp_path, TINY + "\n[finetune]\nmax_lag = 8\n"))


def test_train_cli_fine_tunes_once(tmp_path, capsys):
    """`vaeinv train` fine-tunes after the calibration and records it; a resumed run that is
    already fine-tuned is left as it is (bit for bit)."""
    from vaeinv.vae import load_checkpoint

    recipe = _write(tmp_path, TINY + FINETUNE)
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--no-progress"]) == 0
    ckpt = load_checkpoint(out / "run")
    (record,) = ckpt.metadata["train_config"]["finetune"]
    assert record["num_fields"] == 24 and record["config"]["seed"] == 5
    assert not ckpt.model.latent_prior.is_identity  # calibrated before the fine-tune
    assert main(["train", str(recipe), "--out", str(out), "--no-progress", "--resume"]) == 0
    assert "already fine-tuned" in capsys.readouterr().out
    assert load_checkpoint(out / "run").weights_sha256 == ckpt.weights_sha256


def test_finetune_cli(tmp_path, capsys):
    from vaeinv.vae import load_checkpoint

    recipe = _write(tmp_path, TINY)
    pre = tmp_path / "pre"
    assert main(["train", str(recipe), "--out", str(pre), "--no-progress"]) == 0
    source = pre / "run" / "model.safetensors"
    # a recipe without [finetune], an unknown prior name: refused before any work
    out = tmp_path / "tuned"
    args = ["finetune", str(recipe), "--prior", str(source), "--out", str(out), "--no-progress"]
    assert main(args) == 2
    assert "has no [finetune] table" in capsys.readouterr().err
    recipe.write_text(TINY + FINETUNE + "\n[second_stage]\nseed = 4\nresidual_fields = 16\n")
    assert main([*args[:3], "nope", *args[4:]]) == 2
    err = capsys.readouterr().err
    assert "'nope' is neither a checkpoint path nor a shipped prior" in err and "channel64" in err
    assert not out.exists()
    assert main(args) == 0
    tuned = load_checkpoint(out / "run")
    assert tuned.metadata["train_config"]["finetune"][0]["pretrained_sha256"] == (
        load_checkpoint(source).weights_sha256
    )
    assert Prior.load(out / "run").residual is not None
    assert main(args) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
