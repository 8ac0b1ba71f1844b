"""Training: the loss falls, runs are reproducible and resumable, bad inputs are refused."""

import json

import pytest
import safetensors.torch
import torch

from vaeinv.vae import train, training

from vae_helpers import tiny_config, tiny_fields, tiny_train_config


def weights(path):
    return safetensors.torch.load_file(str(path))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def two_facies_fields(generator, n=64, size=8):
    """Fields of -1 and 2 split by a random straight line: the kind the facies output is for."""
    yy, xx = torch.meshgrid(torch.arange(size) - 3.5, torch.arange(size) - 3.5, indexing="ij")
    angle = 2 * torch.pi * torch.rand(n, 1, 1, generator=generator)
    offset = 3 * (torch.rand(n, 1, 1, generator=generator) - 0.5)
    side = xx * angle.cos() + yy * angle.sin() > offset
    return torch.where(side, 2.0, -1.0)


@pytest.mark.parametrize("output", ["linear", "facies"])
def test_loss_falls_and_files_are_written(tmp_path, generator, output):
    fields = tiny_fields(generator, n=64) if output == "linear" else two_facies_fields(generator)
    config, epochs = tiny_config(output=output), 6 if output == "linear" else 10
    result = train(config, tiny_train_config(epochs=epochs), fields, tmp_path, progress=False)
    history = result.history
    assert len(history) == epochs
    assert history[-1]["train"]["total"] < 0.7 * history[0]["train"]["total"]
    assert history[-1]["val"]["total"] < history[0]["val"]["total"]
    for name in ("model", "last", "train_state"):
        assert (tmp_path / f"{name}.safetensors").is_file()
        assert (tmp_path / f"{name}.json").is_file()
    assert (tmp_path / "history.png").stat().st_size > 0
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["best_epoch"] == result.best_epoch
    assert len(saved["epochs"]) == epochs
    assert not result.model.training


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, generator):
    fields = tiny_fields(generator)
    for run, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(tiny_config(), tiny_train_config(seed=seed), fields, tmp_path / run, progress=False)
    a, b, c = (weights(tmp_path / run / "last.safetensors") for run in "abc")
    assert same(a, b)
    assert not same(a, c)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(
    tmp_path, generator, monkeypatch, schedule
):
    fields = tiny_fields(generator)
    config = tiny_train_config(epochs=4, lr_schedule=schedule, lr_min=1e-4)
    full = train(tiny_config(), config, fields, tmp_path / "full", progress=False)

    real_run_epoch, calls = training._run_epoch, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:  # training pass of epoch 3 (each epoch: train + validation)
            raise KeyboardInterrupt
        return real_run_epoch(*args)

    monkeypatch.setattr(training, "_run_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), config, fields, tmp_path / "cut", progress=False)
    monkeypatch.setattr(training, "_run_epoch", real_run_epoch)
    resumed = train(tiny_config(), config, fields, tmp_path / "cut", resume=True, progress=False)

    for name in ("last", "model"):
        assert same(weights(tmp_path / "full" / f"{name}.safetensors"),
                    weights(tmp_path / "cut" / f"{name}.safetensors"))  # fmt: skip
    terms = [(r["train"], r["val"], r["lr"]) for r in resumed.history]
    assert terms == [(r["train"], r["val"], r["lr"]) for r in full.history]


def test_cosine_schedule_sets_each_epochs_rate(tmp_path, generator):
    config = tiny_train_config(epochs=3, lr=2e-3, lr_schedule="cosine", lr_min=2e-4)
    result = train(tiny_config(), config, tiny_fields(generator), tmp_path, progress=False)
    # lr_min + (lr - lr_min) (1 + cos(pi (e - 1) / 3)) / 2 for e = 1, 2, 3
    expected = [2e-3, 2e-4 + 1.8e-3 * 0.75, 2e-4 + 1.8e-3 * 0.25]
    assert [r["lr"] for r in result.history] == pytest.approx(expected, rel=1e-12)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [r["lr"] for r in saved["epochs"]] == pytest.approx(expected, rel=1e-12)
    constant = train(tiny_config(), tiny_train_config(epochs=2, lr=3e-3),
                     tiny_fields(generator), tmp_path / "c", progress=False)  # fmt: skip
    assert [r["lr"] for r in constant.history] == [3e-3, 3e-3]


def test_cosine_resume_must_keep_the_number_of_epochs(tmp_path, generator):
    fields = tiny_fields(generator, n=12)
    cosine = tiny_train_config(epochs=1, lr_schedule="cosine")
    train(tiny_config(), cosine, fields, tmp_path, progress=False)
    longer = tiny_train_config(epochs=2, lr_schedule="cosine")
    with pytest.raises(ValueError, match="cannot resume: train_config differs"):
        train(tiny_config(), longer, fields, tmp_path, resume=True, progress=False)


def test_resume_can_extend_the_number_of_epochs(tmp_path, generator):
    fields = tiny_fields(generator)
    train(tiny_config(), tiny_train_config(epochs=3), fields, tmp_path / "a", progress=False)
    train(tiny_config(), tiny_train_config(epochs=1), fields, tmp_path / "b", progress=False)
    train(
        tiny_config(), tiny_train_config(epochs=3), fields, tmp_path / "b", resume=True,
        progress=False,
    )  # fmt: skip
    assert same(
        weights(tmp_path / "a" / "last.safetensors"), weights(tmp_path / "b" / "last.safetensors")
    )


def test_early_stopping(tmp_path, generator):
    fields = tiny_fields(generator)
    config = tiny_train_config(epochs=30, patience=1, lr=0.5)  # a wild lr: no steady progress
    result = train(tiny_config(), config, fields, tmp_path, progress=False)
    assert result.stopped_early
    assert len(result.history) < 30


def test_no_validation_split_monitors_the_training_loss(tmp_path, generator):
    config = tiny_train_config(epochs=1, val_fraction=0.0)
    result = train(tiny_config(), config, tiny_fields(generator), tmp_path, progress=False)
    assert result.history[0]["val"] is None
    assert result.best_loss == result.history[0]["train"]["total"]


def test_bad_inputs(tmp_path, generator):
    fields = tiny_fields(generator, n=10)
    run = (tiny_config(), tiny_train_config(epochs=1))
    bad = fields.clone()
    bad[6, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"fields\[6\] contains NaN or inf"):
        train(*run, bad, tmp_path / "nan", progress=False)
    with pytest.raises(
        ValueError, match=r"fields has shape \(10, 8, 9\), expected \(num_fields, 8, 8\)"
    ):
        train(*run, torch.zeros(10, 8, 9), tmp_path / "shape", progress=False)
    with pytest.raises(ValueError, match=r"must be a torch.Tensor"):
        train(*run, fields.numpy(), tmp_path / "numpy", progress=False)
    with pytest.raises(ValueError, match="leave none for training"):
        train(*run, fields[:1], tmp_path / "one", progress=False)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\] for output='logits'"):
        train(tiny_config(output="logits"), run[1], fields, tmp_path / "logits", progress=False)
    with pytest.raises(ValueError, match="cond_channels=2: pass cond"):
        train(tiny_config(cond_channels=2), run[1], fields, tmp_path / "cond", progress=False)
    with pytest.raises(ValueError, match="cond_channels=0"):
        train(*run, fields, tmp_path / "nocond", cond=fields, progress=False)


def test_existing_run_needs_resume_and_matching_settings(tmp_path, generator):
    fields = tiny_fields(generator, n=12)
    run = (tiny_config(), tiny_train_config(epochs=1))
    train(*run, fields, tmp_path, progress=False)
    with pytest.raises(ValueError, match="already holds a training run; resume it"):
        train(*run, fields, tmp_path, progress=False)
    with pytest.raises(ValueError, match="cannot resume: train_config differs"):
        train(run[0], tiny_train_config(lr=0.1), fields, tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="cannot resume: data_sha256 differs"):
        train(*run, fields + 1, tmp_path, resume=True, progress=False)


def test_binary_fields_with_logits_and_conditioning(tmp_path, generator):
    fields = (tiny_fields(generator, n=16) > 0).float() * 3.0 - 1.0  # log k in {-1, 2}
    config = tiny_config(output="logits", field_shift=-1.0, field_scale=3.0, cond_channels=1)
    cond = fields.mean((1, 2), keepdim=True).expand_as(fields)
    result = train(config, tiny_train_config(epochs=1), fields, tmp_path, cond=cond, progress=False)
    out = result.model.decoder(torch.zeros(2, 16), cond[:2])
    assert out.min() >= -1.0 and out.max() <= 2.0


def test_mmd_term_is_recorded_and_reproducible(tmp_path, generator):
    fields = tiny_fields(generator)
    config = tiny_train_config(beta=0.5, mmd_lambda=20.0)
    runs = [train(tiny_config(), config, fields, tmp_path / r, progress=False) for r in "ab"]
    assert same(*(weights(tmp_path / r / "last.safetensors") for r in "ab"))
    for record in runs[0].history:
        for terms in (record["train"], record["val"]):
            assert terms["mmd"] != 0.0
            # every term is a field-weighted mean over batches, so the identity holds per epoch
            expected = terms["reconstruction"] + 0.5 * terms["kl"] + 20.0 * terms["mmd"]
            assert terms["total"] == pytest.approx(expected, rel=1e-5)
    plain = train(
        tiny_config(), tiny_train_config(beta=0.5), fields, tmp_path / "c", progress=False
    )
    assert all(r["train"]["mmd"] == 0.0 for r in plain.history)
    with pytest.raises(ValueError, match=r"mmd_lambda must be >= 0, got -1\.0"):
        tiny_train_config(mmd_lambda=-1.0)
