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
    """Same header, same words (an experiment's ``kind`` column) and numbers within 1e-12
    (relative) in two data files."""
    x, y = _rows(a), _rows(b)
    if len(x) != len(y) or x[0] != y[0]:
        return False
    numeric = [i for i, cell in enumerate(x[1]) if cell.strip() != "kind" and _number(cell)]
    words = [[r[i] for i in range(len(r)) if i not in numeric] for r in x[1:] + y[1:]]
    if words[: len(x) - 1] != words[len(x) - 1 :]:
        return False
    values = [np.array([[r[i] for i in numeric] for r in rows[1:]], float) for rows in (x, y)]
    return bool(np.allclose(*values, rtol=1e-12, atol=0))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    # a problem of several experiments has a data file for each
    targets = [e.data_file for e in problem.experiments] or [problem.data_file]
    if check:
        with tempfile.TemporaryDirectory() as tmp:
            where = Path(tmp) if problem.experiments else Path(tmp) / "data.csv"
            fresh = make_data(problem, path=where)
            for new, old in zip(fresh if problem.experiments else [fresh], targets, strict=True):
                same = old.is_file() and _same_data(new, old)
                ok &= same
                print(f"{name}: {old.name} {'matches' if same else 'DIFFERS'}")
    else:
        make_data(problem)
        for path in targets:
            print(f"{name}: wrote {path.relative_to(HERE)}")
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
