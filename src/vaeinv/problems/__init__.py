"""Inverse problems as folders: ``problems/<name>/problem.toml`` -> a validated `Problem`.

A problem names everything an inversion needs: the grid, the flow physics, the sensors, the
prior, the observed data (a CSV file next to the TOML), optionally the true field, and the
sampler's defaults. Layout (every key not marked optional is required; unknown keys anywhere
are errors)::

    name = "mdgm-gaussian"
    description = "..."                      # optional

    [grid]
    nx = 64
    ny = 64
    lx = 1.0                                 # optional, default 1
    ly = 1.0                                 # optional, default 1

    [physics]
    dirichlet = { left = 0.0, right = 0.0 }  # fixed pressures; other sides are no-flow
    source = 3.0                             # optional, default 0
    solver = "auto"                          # optional: "auto" | "direct" | "multigrid"
    rtol = "noise"                           # optional: multigrid tolerance, "noise" ties it
                                             # to the data's noise (noise_tied_rtol) or a number
    wells = [{ x = 0.5, y = 0.5, rate = -1.0 }]  # optional: < 0 pumps, > 0 injects

    [sensors]                                # exactly one of:
    lattice = 8                              # PointSensors.lattice(grid, 8)
    # file = "sensors.csv"                   # columns x,y

    [prior]                                  # a VAE checkpoint:
    name = "gaussian64"                      # a shipped name, or a path relative to the folder
    # or the Gaussian-field baseline:
    # kind = "gaussian-field"
    # mean, std, length_scale, kernel, nu, anisotropy, angle, method, num_modes (optional)

    [truth]                                  # optional
    file = "truth.txt"
    format = "log_k"                         # "log_k" (ny rows of nx values, row 0 at y = 0)
                                             # or "mdgm-k" (permeability K, rows as MDGM's)
    seed = 7                                 # optional, with generator: the truth was drawn
    generator = { kind = "gaussian", ... }   # from this vaeinv.fields config with this seed

    [data]
    file = "data.csv"                        # columns x,y,value,noise_std; '#' comments
    noise_kind = "absolute"                  # sd = the noise_std column, or "relative":
                                             # sd = noise_fraction * |value|
    noise_fraction = 0.05                    # how the data was made: sd = fraction * |clean|
    seed = 1                                 # and the seed of the noise (see make_data)

    [sampler]                                # defaults of `vaeinv invert`, all optional
    method = "hmc"                           # batched HMC: every chain in one batch
    num_chains = 16
    num_draws = 150                          # iterations per chain after warm-up
    num_warmup = 100
    thin = "auto"                            # or an integer: keep every thin-th iteration
    seed = 0
    chunk_size = 100
    [sampler.hmc]                            # options of one method, passed to vaeinv.sample
    target_accept = 0.65

Optional ``[observations]`` (heads, head differences, side fluxes) and ``[[experiment]]`` tables
(several field tests on the same field, each with its own wells and data file, instead of
``[data]``) are described in `vaeinv.problems.experiments`.

The data file's sensor positions must be those of ``[sensors]``, in the same order.
[`make_data`][vaeinv.problems.make_data] regenerates it from the truth.
"""

from ._checks import check_sampler_options, problem_methods, sampler_option_names
from .files import make_data, make_truth, read_truth
from .load import list_problems, load_problem, problems_folder
from .spec import PhysicsSpec, PriorSpec, Problem, SamplerDefaults

__all__ = [
    "PhysicsSpec",
    "PriorSpec",
    "Problem",
    "SamplerDefaults",
    "check_sampler_options",
    "list_problems",
    "load_problem",
    "make_data",
    "make_truth",
    "problem_methods",
    "problems_folder",
    "read_truth",
    "sampler_option_names",
]
