"""VAEConfig and TrainConfig: derived shapes, validation, dict and TOML loading."""

import pytest

from vaeinv.vae import TrainConfig, VAEConfig, from_dict, from_toml, to_dict


def test_default_config_on_64_gives_the_mdgm_latent():
    config = VAEConfig(ny=64, nx=64)
    assert config.factor == 4
    assert config.latent_shape == (1, 16, 16)
    assert config.latent_dim == 256


def test_a_grid_not_divisible_by_the_factor_is_padded():
    config = VAEConfig(ny=10, nx=13, channels=(4, 8, 8))
    assert config.padded_shape == (12, 16)
    assert config.latent_shape == (1, 3, 4)


def test_vector_latent_shape():
    assert VAEConfig(ny=8, nx=8, latent="vector", latent_dim=5).latent_shape == (5,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ny": 0}, "ny must be an integer >= 1"),
        ({"latent": "cube"}, "latent must be one of spatial, vector"),
        ({"output": "probit"}, "output must be one of linear, logits"),
        ({"activation": "swish"}, "activation must be one of"),
        ({"channels": ()}, "at least one stage"),
        ({"channels": (4, 0)}, "channels entry must be"),
        ({"channels": "abc"}, "sequence of widths"),
        ({"latent": "vector"}, "needs latent_dim"),
        ({"latent_dim": 3}, "contradicts the spatial latent"),
        ({"field_scale": 0.0}, "field_scale must be a positive finite"),
        ({"field_shift": float("nan")}, "field_shift must be a finite"),
        ({"blocks_per_stage": -1}, "blocks_per_stage must be"),
    ],
)
def test_bad_vae_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAEConfig(**{"ny": 8, "nx": 8, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be a positive finite"),
        ({"beta": -0.1}, "beta must be >= 0"),
        ({"val_fraction": 0.7}, r"val_fraction must be in \[0, 0.5\]"),
        ({"patience": 0}, "patience must be"),
        ({"grad_clip": 0.0}, "grad_clip must be a positive"),
        ({"seed": -3}, "seed must be"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of 'constant', 'cosine', got 'step'"),
        ({"lr": 1e-3, "lr_min": 2e-3}, r"lr_min must be in \[0, lr=0.001\], got 0.002"),
        ({"lr_min": -1.0}, r"lr_min must be in \[0, lr"),
    ],
)
def test_bad_train_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_dict_round_trip_and_unknown_keys():
    config = VAEConfig(ny=8, nx=8, channels=(4, 8))
    assert from_dict(VAEConfig, to_dict(config)) == config
    with pytest.raises(ValueError, match=r"unknown VAEConfig keys \['depth'\]; known keys: ny"):
        from_dict(VAEConfig, {"ny": 8, "nx": 8, "depth": 3})
    with pytest.raises(ValueError, match=r"VAEConfig: .*missing"):
        from_dict(VAEConfig, {"ny": 8})
    with pytest.raises(ValueError, match="needs a table"):
        from_dict(TrainConfig, [1, 2])


def test_from_toml(tmp_path):
    path = tmp_path / "vae.toml"
    path.write_text("[model]\nny = 8\nnx = 16\nchannels = [4, 8]\n[train]\nepochs = 2\n")
    assert from_toml(VAEConfig, path, "model").latent_shape == (1, 4, 8)
    assert from_toml(TrainConfig, path, "train").epochs == 2
    with pytest.raises(ValueError, match=r"has no \[optim\] table"):
        from_toml(TrainConfig, path, "optim")
