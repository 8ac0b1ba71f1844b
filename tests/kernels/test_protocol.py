"""One protocol, every registered kernel (and a test-only one registered here): the class
contract (``Kernel``, a frozen validated ``Options``, a ``NamedTuple`` state led by ``z``), the
run loop through ``vaeinv.sample`` (layout of the ``InferenceData``), a checkpointed run
interrupted and resumed bit for bit, the ArviZ round trip, and determinism under the seed."""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import arviz as az
import numpy as np
import pytest
import torch

import vaeinv
from vaeinv import results
from vaeinv.kernels import Kernel, Options
from vaeinv.kernels.base import check_positive

# the inference tests' helpers, imported by bare name (not through a conftest.py here: a second
# top-level ``conftest`` module would shadow tests/conftest.py for ``from conftest import``)
_HELPERS = str(Path(__file__).resolve().parents[1] / "inference")
if _HELPERS not in sys.path:
    sys.path.insert(0, _HELPERS)

from interrupt import Stop, stop_after  # noqa: E402
from linear_gaussian import linear_gaussian  # noqa: E402

RWM = "test-rwm"

#: options that keep each kernel's run tiny (fits, approximations, trees)
TINY: dict[str, dict] = {
    "gpcn": {"laplace_steps": 5},
    "tpcn": {"laplace_steps": 5, "flow_steps": 10, "flow_layers": 2, "flow_hidden": 8},
    "hmc": {"laplace_steps": 5, "max_steps": 64},
    "nuts": {"max_tree_depth": 5},
    "staged": {"stage_iterations": 4},
    RWM: {"step_size": 0.5},
}
#: kernels' inputs (objects, not options): the coarse level of MLDA and of the staged run, here
#: the posterior itself
INPUTS = {
    "mlda": lambda posterior: {"coarse": [posterior]},
    "staged": lambda posterior: {"coarse": [posterior]},
}
NUM_CHAINS, NUM_DRAWS = 2, 12
RUN = {
    "num_chains": NUM_CHAINS,
    "num_draws": NUM_DRAWS,
    "num_warmup": 20,  # HMC: 0 or >= 20
    "thin": 1,
    "chunk_size": 4,
    "seed": 5,
    "progress": False,
}


# ---------------------------------------------------------------------- a test-only kernel
@dataclass(frozen=True)
class _RWMOptions(Options):
    """The random-walk Metropolis kernel's one option."""

    step_size: float = 0.5

    def validate(self) -> None:
        check_positive("step_size", self.step_size)


class _RWMState(NamedTuple):
    z: torch.Tensor  # (C, d)
    log_density: torch.Tensor  # (C,)


class _RWMInfo(NamedTuple):
    accepted: torch.Tensor
    acceptance_rate: torch.Tensor
    step_size: torch.Tensor


class _RWM(Kernel):
    """Gaussian random-walk Metropolis, no adaptation, a minimal state (no field or
    prediction kept: the run loop decodes the kept draws itself)."""

    name = RWM
    Options = _RWMOptions
    state_type = _RWMState
    state_key = "rwm"

    def init(self, run):
        z = run.z0.to(device=run.target.device, dtype=torch.float64)
        return _RWMState(z, run.target.evaluate(z).log_density)

    def step(self, target, state, generator, *, adapt, options):
        on = {"generator": generator, "dtype": torch.float64, "device": generator.device}
        xi = torch.randn(*state.z.shape, **on).to(state.z.device)
        u = torch.rand(state.z.shape[0], **on).to(state.z.device)
        proposal = state.z + options.step_size * xi
        log_new = target.evaluate(proposal).log_density
        ratio = (log_new - state.log_density).clamp(max=0.0).exp()
        ratio = torch.where(torch.isfinite(log_new), ratio, torch.zeros_like(ratio))
        accepted = u < ratio
        new = _RWMState(
            torch.where(accepted[:, None], proposal, state.z),
            torch.where(accepted, log_new, state.log_density),
        )
        step_size = torch.full_like(ratio, options.step_size)
        return new, _RWMInfo(accepted, ratio, step_size)


@pytest.fixture(scope="module", autouse=True)
def _registered():
    vaeinv.kernels.register(_RWM)
    yield
    vaeinv.kernels.unregister(RWM)


METHODS = [*(m for m in vaeinv.kernels.available() if m != RWM), RWM]  # read at collection


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian()


def _run(posterior, method, **overrides):
    inputs = INPUTS[method](posterior) if method in INPUTS else {}
    settings = {**RUN, **TINY.get(method, {}), **inputs, **overrides}
    return vaeinv.sample(posterior, method=method, **settings)


def _check_class(method: str) -> None:
    K = vaeinv.kernels.get(method)
    assert issubclass(K, Kernel) and K.name == method
    opts = K.Options
    assert issubclass(opts, Options) and dataclasses.is_dataclass(opts)
    assert opts.__dataclass_params__.frozen
    default = opts()
    assert opts(**opts.defaults()) == default
    assert opts(**default.as_dict()) == default
    assert list(default.as_dict()) == list(opts.names())
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(default, opts.names()[0], None)
    with pytest.raises(ValueError, match="nope") as err:
        opts.from_mapping({"nope": 1}, method)
    for name in opts.names():
        assert name in str(err.value), (name, str(err.value))
    state = K.state_type
    assert isinstance(state, type) and issubclass(state, tuple)
    assert "z" in state._fields  # what the run loop reads, by name


def _draws(idata) -> dict[str, np.ndarray]:
    """Every array of the draws: posterior, sample statistics, pointwise log-likelihood."""
    out = {f"posterior.{k}": idata.posterior[k].values for k in idata.posterior.data_vars}
    out |= {f"sample_stats.{k}": v.values for k, v in idata.sample_stats.data_vars.items()}
    out["log_likelihood.y"] = idata.log_likelihood["y"].values
    return out


@pytest.mark.parametrize("method", METHODS)
def test_kernel_protocol(problem, method, tmp_path):
    posterior = problem.posterior
    d = posterior.latent_dim

    # 1. the class contract
    _check_class(method)

    # 2. the run loop
    before = torch.random.get_rng_state()
    idata = _run(posterior, method)
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG untouched
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", "latent") and z.shape == (NUM_CHAINS, NUM_DRAWS, d)
    assert np.isfinite(z.values).all()
    log_k = idata.posterior["log_k"]
    assert log_k.shape[:2] == (NUM_CHAINS, NUM_DRAWS)
    assert log_k.shape[2:] == tuple(posterior.field_shape)
    stats = idata.sample_stats
    rate = stats["acceptance_rate"].values
    assert rate.shape == (NUM_CHAINS, NUM_DRAWS) and ((rate >= 0) & (rate <= 1)).all()
    lp = stats["lp"].values
    assert lp.shape == (NUM_CHAINS, NUM_DRAWS) and np.isfinite(lp).all()
    exact = posterior.log_density(torch.as_tensor(z.values).reshape(-1, d))
    np.testing.assert_allclose(lp.reshape(-1), exact.numpy(), rtol=0, atol=1e-9)
    assert idata.log_likelihood["y"].shape == (NUM_CHAINS, NUM_DRAWS, posterior.num_data)
    assert idata.attrs["method"] == method
    assert idata.attrs["forward_solves"] > 0
    assert (z.values.std(axis=1) > 0).all()  # every chain moves

    # 3. interrupted after the second block (in the warm-up, or NUTS's first chunk), resumed
    # and interrupted again after the first chunk of draws, then resumed to the end: the same
    # draws, bit for bit, and the same counts of work
    warm_blocks = math.ceil(RUN["num_warmup"] / RUN["chunk_size"])
    if not vaeinv.kernels.get(method).resumable_warmup:
        warm_blocks = 1  # the whole warm-up in one block
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        _run(posterior, method, checkpoint=folder, progress=stop_after(2))
    with pytest.raises(Stop):
        again = stop_after(max(warm_blocks - 2, 0) + 1)
        _run(posterior, method, checkpoint=folder, resume=True, progress=again)
    resumed = _run(posterior, method, checkpoint=folder, resume=True)
    expected, got = _draws(idata), _draws(resumed)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    for name in ("forward_solves", "gradient_evaluations", "divergences", "warmup_divergences"):
        assert resumed.attrs[name] == idata.attrs[name], name

    # 4. ArviZ: the netCDF round trip and a summary
    path = results.save(idata, tmp_path / "run.nc")
    np.testing.assert_array_equal(results.load(path).posterior["z"].values, z.values)
    summary = az.summary(idata, var_names=["z"])
    assert len(summary) == d
    assert not summary["r_hat"].isna().any()

    # 5. determinism under the seed
    np.testing.assert_array_equal(_run(posterior, method).posterior["z"].values, z.values)
    other = _run(posterior, method, seed=6).posterior["z"].values
    assert not np.array_equal(other, z.values)
    assert math.isfinite(float(other.sum()))
