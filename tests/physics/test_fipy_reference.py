"""The torch solver against the independent FiPy discretisation of the same problem."""

import pytest
import torch

from vaeinv import Grid
from vaeinv.physics import DarcyFlow, DarcyFlowFiPy

from conftest import random_log_k

CASES = {
    "left-right": dict(dirichlet={"left": 1.0, "right": 0.0}),
    "mdgm": dict(dirichlet={"left": 0.0, "right": 0.0}, source=3.0),
    "wells-and-profile": dict(
        dirichlet={"top": [0.0, 0.1, 0.2, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2, 0.0, 0.1], "left": 2.0},
        source=0.5,
        wells=[(0.2, 0.3, 1.5), (0.75, 0.66, -0.8)],
    ),
}


@pytest.mark.parametrize("solver", ["direct", "multigrid"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_agrees_with_fipy_to_1e10_at_contrast_e8(case, solver, generator):
    grid = Grid(11, 9, lx=1.0, ly=0.9)
    kwargs = CASES[case]
    source = kwargs.get("source", 0.0)
    if case == "wells-and-profile":  # a spatially varying source too
        source = torch.rand(grid.shape, generator=generator, dtype=torch.float64)
    kw = {**kwargs, "source": source}
    log_k = random_log_k((3, *grid.shape), generator, contrast=8.0)
    ours = DarcyFlow(grid, **kw, solver=solver, rtol=1e-14).solve(log_k)
    reference = DarcyFlowFiPy(grid, **kw).solve(log_k)
    rel = torch.linalg.vector_norm(ours - reference) / torch.linalg.vector_norm(reference)
    print(f"{case}/{solver}: relative difference {float(rel):.2e}")
    assert float(rel) < 1e-10


def test_fipy_on_a_larger_random_field(generator):
    grid = Grid(32, 32)
    log_k = random_log_k(grid.shape, generator, contrast=8.0)
    kw = dict(dirichlet={"left": 0.0, "right": 0.0}, source=3.0)
    ours = DarcyFlow(grid, **kw).solve(log_k)
    reference = DarcyFlowFiPy(grid, **kw).solve(log_k)
    assert float((ours - reference).norm() / reference.norm()) < 1e-10


def test_fipy_keeps_dtype_and_rejects_bad_fields():
    grid = Grid(4, 3)
    flow = DarcyFlowFiPy(grid)
    assert flow.solve(torch.zeros(3, 4, dtype=torch.float32)).dtype == torch.float32
    with pytest.raises(ValueError, match="non-finite"):
        flow.solve(torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="expected"):
        flow.solve(torch.zeros(4, 3))
