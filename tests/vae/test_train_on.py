"""Training a prior on the user's own fields: ``vaeinv.vae.train_on`` and ``vaeinv train
--data``, its bad inputs, kill -9 and resume, and torchrun with two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from vaeinv.cli import main
from vaeinv.priors import Prior
from vaeinv.vae import TrainOnOptions, load_checkpoint, train_on
from vaeinv.vae._distributed import Parallel

from conftest import random_log_k

#: a tiny network for 8 x 8 fields: widths 4 and 8, a 4 x 4 latent of one channel (16 latents)
TINY_RECIPE = """
[vae]
channels = [4, 8]
norm_groups = 2

[training]
epochs = 2
batch_size = 16
num_threads = 1
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


@pytest.fixture
def stack(generator):
    return random_log_k((60, 8, 8), generator, contrast=2.0).float().numpy()


def test_a_prior_trained_on_an_npy_stack_loads_standardised_and_reported(tmp_path, stack, recipe):
    path = tmp_path / "fields.npy"
    np.save(path, stack)
    out = tmp_path / "prior"
    result = train_on(path, out, recipe=recipe, progress=False)
    prior = Prior.load(out)
    assert prior.latent_dim == 16 and prior.grid.shape == (8, 8)
    draws = prior.sample(5, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (5, 8, 8) and bool(torch.isfinite(draws).all())
    config = load_checkpoint(out / "model.safetensors").model.config
    assert config.field_shift == pytest.approx(float(stack.mean()), rel=1e-5)
    assert config.field_scale == pytest.approx(float(stack.std()), rel=1e-4)
    assert result.num_fields == 60 and len(result.training.history) == 2
    report = json.loads((out / "quality.json").read_text())
    assert report == json.loads(json.dumps(result.quality))
    assert report["num_held_out"] == 6  # the validation split: ceil(0.1 * 60)
    for name in ("quality.md", "quality.png", "history.json"):
        assert (out / name).is_file()
    # the latent Gaussian was fitted: not the identity
    assert not load_checkpoint(out / "model.safetensors").model.latent_prior.is_identity


def test_log_of_a_permeability_stack_trains_on_log_k(tmp_path, stack, recipe):
    path = tmp_path / "k.npy"
    np.save(path, np.exp(stack.astype(np.float64)))
    train_on(path, tmp_path / "prior", recipe=recipe, log=True, epochs=1, progress=False)
    config = load_checkpoint(tmp_path / "prior" / "model.safetensors").model.config
    assert config.field_shift == pytest.approx(float(stack.mean()), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize(
    ("latent_dim", "latent", "size"), [(32, "spatial", 32), (10, "vector", 10)]
)
def test_latent_dim_gives_channels_on_the_coarse_grid_or_a_vector(
    tmp_path, stack, recipe, latent_dim, latent, size
):
    out = tmp_path / "prior"
    train_on(stack, out, recipe=recipe, latent_dim=latent_dim, epochs=1, progress=False)
    config = load_checkpoint(out / "model.safetensors").model.config
    assert config.latent == latent and config.latent_dim == size
    assert Prior.load(out).latent_dim == size


def test_patches_of_a_training_image_make_the_stack(tmp_path, generator, recipe):
    image = random_log_k((1, 24, 24), generator, contrast=2.0)[0].float().numpy()
    out = tmp_path / "prior"
    # 8 x 8 patches every 2 cells: 9 corners per axis, 81 patches > 16 latents
    result = train_on(image, out, recipe=recipe, patches=8, stride=2, epochs=1, progress=False)
    assert result.num_fields == 81
    assert Prior.load(out).grid.shape == (8, 8)


def test_binary_media_get_bernoulli_outputs_between_their_two_values(tmp_path, stack, recipe):
    binary = np.where(stack > np.median(stack), 5.0, -1.0).astype(np.float32)
    out = tmp_path / "prior"
    train_on(binary, out, recipe=recipe, epochs=1, progress=False)
    config = load_checkpoint(out / "model.safetensors").model.config
    assert (config.output, config.field_shift, config.field_scale) == ("logits", -1.0, 6.0)


def _bad(stack, tmp_path, match, **settings):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=match):
        train_on(stack, out, progress=False, **settings)
    assert not out.exists()  # refused before any work


def test_bad_data_is_refused_before_any_training(tmp_path, stack, recipe):
    nan = stack.copy()
    nan[3, 2, 5] = np.nan
    _bad(nan, tmp_path, r"NaN.*\(3, 2, 5\)", recipe=recipe)
    _bad(stack, tmp_path, "positive", recipe=recipe, log=True)  # log k is negative somewhere
    _bad(stack[0], tmp_path, "patches", recipe=recipe)  # a 2-D image without --patches
    _bad(stack[:16], tmp_path, "16 fields.*latent dimension 16", recipe=recipe)
    _bad(stack[0], tmp_path, "larger", recipe=recipe, patches=9)
    _bad(stack, tmp_path, "unknown setting", recipe=recipe, latent=3)
    _bad(stack, tmp_path, "stride is given without patches", stride=2)
    _bad(stack, tmp_path, r"validation_fraction must be in \[0, 0.5\]", validation_fraction=0.7)
    _bad(stack, tmp_path, "latent_dim must be a positive integer", latent_dim=0)
    bad_recipe = tmp_path / "bad.toml"
    bad_recipe.write_text("[data]\nnum = 3\n")
    _bad(stack, tmp_path, r"unknown key\(s\) \['data'\]", recipe=bad_recipe)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"lx": -1.0}, "lx must be a positive length"),
        ({"log": "yes"}, "log must be True or False"),
        ({"epochs": 2.5}, "epochs must be a positive integer"),
        ({"validation_fraction": -0.1}, r"validation_fraction must be in \[0, 0.5\]"),
    ],
)
def test_bad_options_are_refused_on_construction(settings, match):
    with pytest.raises(ValueError, match=match):
        TrainOnOptions(**settings)


def test_the_epoch_batches_of_two_processes_split_each_batch_once():
    """Each process takes every second field of each global batch; a last batch smaller than
    the number of processes joins the one before, so that every process has a share."""
    index = torch.arange(33)
    shares = []
    for rank in (0, 1):
        group = Parallel()
        group.rank, group.size = rank, 2
        batches, noise = group.epoch_batches(index, 16, torch.Generator(), seed=3, epoch=2)
        shares.append(batches)
        assert isinstance(noise, torch.Generator)
    assert len(shares[0]) == len(shares[1]) == 2  # 16 + 17: the last field joined
    for first, second in zip(*shares, strict=True):
        assert len(first) >= 1 and len(second) >= 1
    every = torch.cat([torch.cat(s) for s in shares])
    assert torch.equal(every.sort().values, index)


def _cli_train(data, out, recipe, *extra):
    return [
        sys.executable, "-m", "vaeinv.cli", "train", "--data", str(data), "--out", str(out),
        "--recipe", str(recipe), "--no-progress", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_9_of_training_then_resume_gives_the_uninterrupted_weights(
    tmp_path, stack, recipe, capsys
):
    path = tmp_path / "fields.npy"
    np.save(path, stack)
    out = tmp_path / "killed"
    flags = ["--epochs", "40"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _cli_train(path, out, recipe, *flags),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    epochs = 0
    try:
        deadline = time.monotonic() + 120
        while epochs < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            try:
                epochs = len(json.loads((out / "history.json").read_text())["epochs"])
            except (OSError, ValueError, KeyError):
                continue
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 3 <= epochs < 40
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["--data", str(path), "--recipe", str(recipe), "--no-progress", *flags]
        assert main(["train", "--out", str(out), *args]) != 0
        assert "already holds a training run; resume it" in capsys.readouterr().err
        assert main(["train", "--out", str(out), *args, "--resume"]) == 0
        assert main(["train", "--out", str(tmp_path / "reference"), *args]) == 0
    finally:
        torch.set_num_threads(threads)
    resumed = load_checkpoint(out / "model.safetensors").model.state_dict()
    reference = load_checkpoint(tmp_path / "reference" / "model.safetensors").model.state_dict()
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_torchrun_on_two_processes_follows_the_one_process_loss_curve(tmp_path, stack, recipe):
    """Two gloo processes (each half of every batch, gradients averaged) against one: the
    same loss curve up to the batch order and the noise, and both learn."""
    path = tmp_path / "fields.npy"
    np.save(path, np.concatenate([stack, stack[::-1] + 0.1]))  # 120 fields
    flags = ["--epochs", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command = _cli_train(path, tmp_path / "two", recipe, *flags)[1:]  # without the interpreter
    two = subprocess.run(
        [*launcher, "2", *command],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        _cli_train(path, tmp_path / "one", recipe, *flags),
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    curves = {}
    for name in ("one", "two"):
        history = json.loads((tmp_path / name / "history.json").read_text())["epochs"]
        curves[name] = np.array([epoch["train"]["total"] for epoch in history])
    assert len(curves["two"]) == len(curves["one"]) == 6
    assert curves["two"][-1] < 0.7 * curves["two"][0] and curves["one"][-1] < 0.7 * curves["one"][0]
    relative = np.abs(curves["two"] - curves["one"]) / curves["one"]
    assert relative.max() < 0.15, (curves, relative)
    assert two.stdout.count("trained on 120 fields") == 1  # one process reports
    assert Prior.load(tmp_path / "two").latent_dim == 16


def test_patches_of_an_hdf5_image_keep_its_cell_size(tmp_path, generator, recipe):
    """The image's physical size comes from its HDF5 attributes; the patches keep its cells."""
    import h5py

    image = random_log_k((1, 24, 24), generator, contrast=2.0)[0].float().numpy()
    path = tmp_path / "image.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("ti", data=image).attrs.update(lx=6.0, ly=3.0)
    result = train_on(path, tmp_path / "prior", recipe=recipe, patches=8, epochs=1, progress=False)
    assert (result.grid.lx, result.grid.ly) == pytest.approx((2.0, 1.0))  # 8 of 24 cells
    assert Prior.load(tmp_path / "prior").grid == result.grid
    with pytest.raises(ValueError, match=r"lx=1\.0 disagrees"):
        train_on(path, tmp_path / "other", recipe=recipe, patches=8, lx=1.0, progress=False)
