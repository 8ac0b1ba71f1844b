"""Transport-map pCN (method "tpcn"): the coupling flow is invertible with the exact log
Jacobian, tpCN samples the closed-form posterior whatever the map (a random one here), the
variational fit moves a wrong map towards the posterior, and the runner's tpCN run counts the
fit's solves, resumes bit for bit and refuses bad settings."""

from __future__ import annotations

import json

import pytest
import torch
from test_runner import assert_same_draws

from vaeinv.approx.transport import CouplingFlow, TransportMap, fit_transport
from vaeinv.kernels.pcn import freeze_adaptation
from vaeinv.kernels.tpcn import tpcn_init, tpcn_step
from vaeinv.runs.sampling import sample

from interrupt import Stop, stop_after
from linear_gaussian import assert_moments, linear_gaussian

QUICK = {"num_chains": 3, "num_draws": 12, "num_warmup": 10, "chunk_size": 4, "progress": False}
TINY_FLOW = {"flow_steps": 20, "flow_particles": 4, "flow_layers": 2, "flow_hidden": 8}


@pytest.fixture(scope="module")
def problem():
    return linear_gaussian(latent_dim=3, num_data=4, noise_std=0.3, seed=11)


def random_map(d: int, seed: int, scale: float = 0.4, mean=None, scale_tril=None):
    """A transport map whose flow is far from the identity (random last layers)."""
    flow = CouplingFlow(d, layers=4, hidden=8, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in flow.nets:
            last = net[-1]
            last.weight.copy_(scale * torch.randn(last.weight.shape, generator=generator))
            last.bias.copy_(scale * torch.randn(last.bias.shape, generator=generator))
    mean = torch.zeros(d, dtype=torch.float64) if mean is None else mean
    scale_tril = torch.eye(d, dtype=torch.float64) if scale_tril is None else scale_tril
    transport = TransportMap(mean, scale_tril, flow)
    for p in transport.parameters():
        p.requires_grad_(False)
    return transport


def test_the_flow_is_invertible_with_the_exact_log_jacobian():
    tril = torch.tensor([[1.2, 0.0, 0.0], [0.3, 0.7, 0.0], [-0.2, 0.1, 0.5]], dtype=torch.float64)
    transport = random_map(3, seed=4, mean=torch.tensor([0.1, -0.2, 0.3]).double(), scale_tril=tril)
    u = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z, log_det = transport(u)
    assert not torch.allclose(z, transport.mean + u @ tril.T)  # the flow does something
    torch.testing.assert_close(transport.inverse(z), u, rtol=0, atol=1e-12)
    for i in range(5):
        jacobian = torch.autograd.functional.jacobian(lambda x: transport(x)[0], u[i])
        sign, logabs = torch.linalg.slogdet(jacobian)
        assert sign > 0
        torch.testing.assert_close(log_det[i], logabs, rtol=0, atol=1e-10)
    identity = CouplingFlow(3, layers=2, hidden=4, seed=0)  # zero last layers: g = id
    v, zero = identity(u)
    assert torch.equal(v, u) and torch.equal(zero, torch.zeros(5, dtype=torch.float64))


def test_tpcn_with_any_map_samples_the_linear_gaussian_posterior(problem):
    """The chain is exact whatever the map: a random one, not fitted, centred away from the
    posterior; moments within 4 MCSE of the closed form."""
    transport = random_map(3, seed=7, mean=problem.mean + 0.5)
    generator = torch.Generator().manual_seed(20261201)
    u0 = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    state = tpcn_init(problem.posterior, u0, transport, step_size=0.3)
    for _ in range(500):
        state, _ = tpcn_step(problem.posterior, state, generator, transport=transport, adapt=True)
    state = freeze_adaptation(state)
    draws = []
    for _ in range(4000):
        state, _ = tpcn_step(problem.posterior, state, generator, transport=transport, adapt=False)
        draws.append(state.z)
    torch.testing.assert_close(state.z, transport(state.u)[0], rtol=0, atol=1e-12)
    assert_moments(torch.stack(draws, 1), problem.mean, problem.cov)


def test_the_fit_moves_a_wrong_map_onto_the_posterior(problem):
    """From a Gaussian map with the wrong centre and twice the spread, the ELBO rises and the
    fitted map's push-forward has the posterior's mean and covariance (to within what the
    stochastic fit reaches)."""
    chol = torch.linalg.cholesky(problem.cov)
    wrong = TransportMap(
        problem.mean + 2.0 * chol.diagonal(), 2.0 * chol, CouplingFlow(3, 4, 16, seed=3)
    )
    fit = fit_transport(
        problem.posterior, wrong, steps=400, particles=16, lr=0.01,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    assert fit.num_forward_solves == fit.num_gradient_evaluations == 400 * 16
    assert fit.failed_particles == 0
    assert fit.elbo[-50:].mean() > fit.elbo[:10].mean() + 2.0
    u = torch.randn(20000, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with torch.no_grad():
        z = wrong(u)[0]
    sd = problem.cov.diagonal().sqrt()
    assert ((z.mean(0) - problem.mean).abs() / sd).max() < 0.15
    ratio = z.T.cov().diagonal() / problem.cov.diagonal()
    assert ((ratio > 0.7) & (ratio < 1.3)).all(), ratio


def test_a_tpcn_run_counts_its_fit_and_resumes_bit_for_bit(problem, tmp_path):
    reference = sample(problem.posterior, "tpcn", seed=3, **QUICK, **TINY_FLOW)
    attrs = reference.attrs
    assert json.loads(attrs["sampler_options"])["flow_steps"] == 20
    # solves: the Laplace fit's, the flow fit's 20 x 4, and one per chain per iteration
    assert int(attrs["forward_solves"]) > 3 * (1 + 10 + 12) + 20 * 4
    assert int(attrs["gradient_evaluations"]) >= 20 * 4
    folder = tmp_path / "run"
    with pytest.raises(Stop):
        sample(
            problem.posterior, "tpcn", seed=3, checkpoint=folder,
            **{**QUICK, "progress": stop_after(2)}, **TINY_FLOW,
        )  # fmt: skip
    resumed = sample(
        problem.posterior, "tpcn", seed=3, checkpoint=folder, resume=True, **QUICK, **TINY_FLOW
    )
    assert_same_draws(reference, resumed)
    other = sample(problem.posterior, "tpcn", seed=4, **QUICK, **TINY_FLOW)
    assert not torch.equal(
        torch.as_tensor(other.posterior["z"].values),
        torch.as_tensor(reference.posterior["z"].values),
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"flow_steps": -1}, "flow_steps"),
        ({"flow_particles": 0}, "flow_particles"),
        ({"flow_hidden": 0}, "flow_hidden"),
        ({"flow_lr": 0.0}, "flow_lr must be a positive number"),
        ({"step_size": 1.5}, r"step_size \(pCN beta\) must be in \(0, 1\]"),
        ({"mass": "pooled"}, "unknown sampler option"),
    ],
)
def test_bad_tpcn_settings_are_refused_before_any_work(problem, option, message):
    with pytest.raises(ValueError, match=message):
        sample(problem.posterior, "tpcn", **QUICK, **option)


def test_the_progress_bar_shows_the_flow_fit(capsys):
    """With the tqdm bar on, the fit posts ``flow_fit=25/25`` (text) to the bar beside the
    acceptance (a number to 3 digits); a text postfix once crashed the run with a format
    error at the fit's 25th step."""
    problem = linear_gaussian()
    sample(problem.posterior, "tpcn", seed=1, **{**QUICK, "progress": True},
           **{**TINY_FLOW, "flow_steps": 25})  # fmt: skip
    shown = capsys.readouterr().err
    assert "done: 100%" in shown and "acc=" in shown
    # the formatting itself: text as it is, numbers to 3 significant digits
    from vaeinv.runs.progress import Bar

    bar = Bar(True, 10, 0, "tpcn")
    bar.postfix(flow_fit="25/25", acc=0.123456)
    assert bar.bar.postfix == "flow_fit=25/25, acc=0.123"
    bar.close()
