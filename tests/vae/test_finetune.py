"""The decoder's statistics fine-tune: its statistics, its loss, what it changes and what not."""

import math
from dataclasses import replace

import pytest
import torch

from vaeinv.vae import from_dict, init_vae, load_checkpoint, save_checkpoint, train
from vaeinv.vae.calibration import fit_latent_gaussian
from vaeinv.vae.finetune import (
    FinetuneConfig,
    finetune_checkpoint,
    finetune_decoder,
    statistics_loss,
    two_point_statistics,
)

from vae_helpers import tiny_config, tiny_fields, tiny_train_config


def test_statistics_of_a_plane_are_exact():
    """f = a i + b j (i rows, j columns): every pair h cells apart along x differs by b h, so
    gamma_x(h) = b^2 h^2 / 2 and gamma_y(h) = a^2 h^2 / 2 exactly."""
    a, b, max_lag = 0.3, -0.7, 5
    i, j = torch.meshgrid(torch.arange(9.0), torch.arange(12.0), indexing="ij")
    fields = torch.stack([a * i + b * j + 2.0, a * i + b * j - 1.0]).double()
    stats = two_point_statistics(fields, max_lag)
    h = torch.arange(1, max_lag + 1, dtype=torch.float64)
    torch.testing.assert_close(stats["gamma_x"], b**2 * h**2 / 2)
    torch.testing.assert_close(stats["gamma_y"], a**2 * h**2 / 2)
    torch.testing.assert_close(stats["mean"], fields.mean())
    torch.testing.assert_close(stats["var"], fields.flatten().var())


def test_statistics_loss_of_a_scaled_batch(generator):
    """Scaling every field by c multiplies each semivariogram and the variance by c^2 and the
    mean by c, so S(c f, f) = (2 log c)^2 + (2 log c)^2 + (c - 1)^2 m^2 / v exactly."""
    fields = tiny_fields(generator, n=6, ny=10, nx=9).double() + 0.4
    c = 1.7
    m, v = fields.mean(), fields.flatten().var()
    expected = 2 * (2 * math.log(c)) ** 2 + (c - 1) ** 2 * m**2 / v
    torch.testing.assert_close(statistics_loss(c * fields, fields, 4), expected)
    assert float(statistics_loss(fields, fields, 4)) == 0.0


def test_bad_statistics_input():
    with pytest.raises(ValueError, match="max_lag must be in \\[1, 7\\] for a 8 x 8 grid, got 8"):
        two_point_statistics(torch.zeros(2, 8, 8), 8)
    with pytest.raises(ValueError, match="must be \\(B, ny, nx\\)"):
        two_point_statistics(torch.zeros(8, 8), 2)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"stats_lambda": -1.0}, "stats_lambda must be >= 0, got -1.0"),
        ({"prior_draws": 1}, "prior_draws must be an integer >= 2, got 1"),
        ({"lr": 0.0}, "lr must be a positive finite number"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"max_lag": 1.5}, "max_lag must be an integer"),
    ],
)
def test_bad_config(settings, match):
    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**settings)


def test_unknown_config_key():
    with pytest.raises(ValueError, match="unknown FinetuneConfig keys \\['lambda'\\]"):
        from_dict(FinetuneConfig, {"lambda": 3.0})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE trained briefly and calibrated, its fields and its folder."""
    generator = torch.Generator().manual_seed(11)
    fields = tiny_fields(generator, n=64)
    out = tmp_path_factory.mktemp("pre")
    result = train(tiny_config(), tiny_train_config(epochs=4), fields, out, progress=False)
    fit_latent_gaussian(result.model, fields)
    save_checkpoint(out / "model.safetensors", result.model)
    return fields, out / "model.safetensors"


def _mismatch(model, fields, seed=5):
    """S between 512 fixed prior draws and the fields' mean reconstructions, no gradient."""
    with torch.no_grad():
        w = torch.randn(512, model.config.latent_dim, generator=torch.Generator().manual_seed(seed))
        drawn = model.decoder.raw(model.latent_prior(w))
        recon = model.decoder.raw(model.encode(fields)[0])
        return float(statistics_loss(drawn, recon, 3))


def test_finetune_moves_prior_draws_and_touches_only_the_decoder(trained):
    """The statistics of fixed prior draws move towards those of the reconstructions: against
    the start and against the same fine-tune without the statistics term (a control)."""
    fields, path = trained
    config = FinetuneConfig(epochs=15, batch_size=16, prior_draws=64, lr=3e-3,
                            stats_lambda=1000.0, max_lag=3, seed=2, num_threads=1)  # fmt: skip
    control = load_checkpoint(path).model
    finetune_decoder(control, fields, replace(config, stats_lambda=0.0), False, lambda s: None)
    model = load_checkpoint(path).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    start = _mismatch(model, fields)
    history = finetune_decoder(model, fields, config, progress=False, log=lambda line: None)
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(("encoder.", "latent_prior.")):
            assert torch.equal(after[key], value), key
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith("decoder."))
    assert [r["epoch"] for r in history] == list(range(1, 16))
    assert all(math.isfinite(r["reconstruction"]) and r["statistics"] >= 0 for r in history)
    end = _mismatch(model, fields)
    assert end < 0.5 * start and end < 0.4 * _mismatch(control, fields), (start, end)
    assert all(p.requires_grad for p in model.encoder.parameters())  # flags restored


def test_finetune_is_deterministic(trained):
    fields, path = trained
    config = FinetuneConfig(
        epochs=1, batch_size=16, prior_draws=8, max_lag=3, seed=4, num_threads=1
    )
    states = []
    for _ in range(2):
        model = load_checkpoint(path).model
        finetune_decoder(model, fields, config, progress=False, log=lambda line: None)
        states.append(model.state_dict())
    for key, value in states[0].items():
        assert torch.equal(states[1][key], value), key


def test_finetune_refuses_bad_fields(trained):
    fields, path = trained
    model = load_checkpoint(path).model
    config = FinetuneConfig(epochs=1, max_lag=3)
    bad = fields.clone()
    bad[5, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"fields\[5\] contains NaN or inf"):
        finetune_decoder(model, bad, config, progress=False)
    with pytest.raises(ValueError, match=r"shape \(64, 8, 9\), expected \(num_fields, 8, 8\)"):
        finetune_decoder(model, torch.zeros(64, 8, 9), config, progress=False)
    with pytest.raises(ValueError, match="max_lag 16 must be below the grid size 8 x 8"):
        finetune_decoder(model, fields, FinetuneConfig(epochs=1), progress=False)
    conditioned = init_vae(tiny_config(cond_channels=1), seed=0)
    with pytest.raises(ValueError, match="conditioned decoders"):
        finetune_decoder(conditioned, fields, config, progress=False)
    logits = init_vae(tiny_config(output="logits"), seed=0)
    with pytest.raises(ValueError, match="continuous fields"):
        finetune_decoder(logits, fields.clamp(0, 1), config, progress=False)


def test_finetune_checkpoint_keeps_a_record(trained, tmp_path):
    fields, path = trained
    config = FinetuneConfig(epochs=1, batch_size=32, prior_draws=8, max_lag=3, num_threads=1)
    first = tmp_path / "a" / "model.safetensors"
    record = finetune_checkpoint(path, fields, config, first, progress=False, log=lambda s: None)
    ckpt = load_checkpoint(first)
    assert record["pretrained_sha256"] == load_checkpoint(path).weights_sha256
    assert ckpt.metadata["train_config"]["finetune"] == [record]
    assert record["config"]["max_lag"] == 3 and record["num_fields"] == 64
    # in place, a second time: the record list grows and chains the hashes
    finetune_checkpoint(first, fields, config, first, progress=False, log=lambda s: None)
    again = load_checkpoint(first)
    records = again.metadata["train_config"]["finetune"]
    assert len(records) == 2 and records[1]["pretrained_sha256"] == ckpt.weights_sha256
