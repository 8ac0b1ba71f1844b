"""The examples run, small, and say what they promise."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_and_gradient_example():
    example = load("01_forward_and_gradient")
    out = example.main(example.parse_args(["--n", "16", "--batch", "2"]))
    assert out["fipy_difference"] < 1e-10
    assert out["readings"].shape == (2, 64)


def test_prior_in_your_own_code_example(tmp_path):
    from test_recipes import TINY
    from vaeinv.cli import main as cli

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY)
    assert cli(["train", str(recipe), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    checkpoint = str(tmp_path / "p" / "run" / "model.safetensors")
    example = load("02_prior_in_your_own_code")
    out = example.main(example.parse_args(["--prior", checkpoint, "--steps", "30"]))
    assert len(out["pressures"]) == 3 and all(p.shape == (8, 8) for p in out["pressures"])
    assert all(np.isfinite(p).all() and p.max() > 0 for p in out["pressures"])
    # the fit improves on its start
    assert np.mean(out["losses"][-5:]) < np.mean(out["losses"][:5])


@pytest.mark.slow
def test_inversion_in_python_example(tmp_path):
    """A short run of both posteriors: results saved and read back, finite diagnostics."""
    import arviz as az

    example = load("03_inversion_in_python")
    args = ["--chains", "2", "--draws", "20", "--warmup", "10", "--out", str(tmp_path)]
    out = example.main(example.parse_args(args))
    assert set(out["summary"]) == {"vae-gpcn", "gf-pcn"}
    for name, figures in out["summary"].items():
        assert np.isfinite(list(figures.values())).all(), name
        assert 0 < figures["rel_l2"] < 1.5
        back = az.from_netcdf(tmp_path / f"{name}.nc")
        assert back.posterior["log_k"].shape == (2, 20, 64, 64)


@pytest.mark.slow
def test_prior_from_your_fields_example(tmp_path):
    """Small: 300 fields, and the training image cut every 16 cells (441 patches, more than
    the 256 latents), one epoch each, a short inversion of the demo with each."""
    from vaeinv import Prior

    example = load("04_prior_from_your_fields")
    flags = ["--fields", "300", "--epochs", "1", "--stride", "16", "--out", str(tmp_path)]
    rows = example.main([*flags, "--chains", "2", "--warmup", "30", "--draws", "5"])
    assert set(rows) == {"stack", "image"}
    assert rows["image"]["trained"].num_fields == 21 * 21  # corners 0, 16, ..., 320
    for name, row in rows.items():
        assert Prior.load(row["trained"].folder).grid.shape == (64, 64)
        assert 0 < row["summary"]["rel_l2_error"] < 1.5, name
        assert (tmp_path / f"{name}-prior" / "quality.md").is_file()
