"""The examples run, small, and say what they promise."""

import importlib.util
from pathlib import Path

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
