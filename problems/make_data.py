"""Regenerate the data files of the problems in this folder, reproducibly.

For every problem (default: every folder here with a ``problem.toml``): a truth with a
``[truth] generator`` is drawn with its seed when its file is missing (or always, with
``--truths``); then ``data.csv`` is computed from the truth by our flow solver with noise
sd = ``noise_fraction`` x |clean value| and the ``[data] seed`` (`vaeinv.problems.make_data`).
``--check`` recomputes without writing and fails if a file differs.

    python problems/make_data.py                 # all problems
    python problems/make_data.py demo --check    # verify one
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from vaeinv.problems import list_problems, load_problem, make_data, make_truth, read_truth

HERE = Path(__file__).resolve().parent


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split(",") for line in lines if line.strip() and not line.startswith("#")]


def _same_data(a: Path, b: Path) -> bool:
    """Same header and values within 1e-12 (relative) in two data files."""
    x, y = _rows(a), _rows(b)
    if len(x) != len(y) or x[0] != y[0]:
        return False
    return bool(np.allclose(np.array(x[1:], float), np.array(y[1:], float), rtol=1e-12, atol=0))


def regenerate(name: str, *, truths: bool = False, check: bool = False) -> bool:
    """Regenerate (or with ``check``, verify) one problem's truth and data; True if all agree."""
    problem = load_problem(HERE / name, require_data=False)
    ok = True
    spec = problem.truth_spec or {}
    if "generator" in spec and (truths or check or problem.truth is None):
        path = Path(spec["path"])
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / path.name if check else path
            old = problem.truth
            make_truth(problem, target)
            if check:
                new = read_truth(target, "log_k", problem.grid)
                same = old is not None and bool(np.allclose(old, new, rtol=1e-9, atol=1e-9))
                ok &= same
                print(f"{name}: truth {path.name} {'matches' if same else 'DIFFERS'}")
            else:
                print(f"{name}: drew {path.name} (seed {spec['seed']})")
        problem = load_problem(HERE / name, require_data=False)
    if check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = make_data(problem, path=Path(tmp) / "data.csv")
            same = problem.data_file.is_file() and _same_data(fresh, problem.data_file)
        ok &= same
        print(f"{name}: {problem.data_file.name} {'matches' if same else 'DIFFERS'}")
    else:
        path = make_data(problem)
        print(f"{name}: wrote {path.relative_to(HERE)} (noise seed {problem.data_seed})")
    return ok


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="problem folders (default: all)")
    parser.add_argument("--truths", action="store_true", help="redraw generated truths too")
    parser.add_argument("--check", action="store_true", help="verify the files, write nothing")
    opts = parser.parse_args(args)
    names = opts.names or list_problems(HERE)
    ok = all([regenerate(n, truths=opts.truths, check=opts.check) for n in names])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
