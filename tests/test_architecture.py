"""House rules of the source tree, checked by parsing ``src/vaeinv/**/*.py`` with ``ast``.

Every checker takes ``files`` (path relative to ``src/vaeinv``, posix, -> source text) and returns
one line per offender, so a failing test's message is the to-do list. The self-tests at the end
feed each checker a tiny synthetic tree that breaks its rule, and one that keeps it.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vaeinv"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 100
MAX_PARAMETERS = 12
MAX_PACKAGE_SHARE = 0.30
METHOD_NAMES = frozenset({"pcn", "gpcn", "tpcn", "hmc", "nuts"})
DISPATCH_HOME = "kernels/registry.py"
# the lowest layers, and the other top-level packages each may import from
#: the floor below the grid: provenance (versions, JSON) imports nothing of vaeinv
_FLOOR = frozenset({"provenance"})
LAYERS = {
    "grid": _FLOOR,
    "fields": _FLOOR | {"grid"},
    "physics": _FLOOR | {"grid"},
    "provenance": frozenset(),
}


def load_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*.py"))}


def top_of(rel: str) -> str:
    """The top-level package (or module, without ``.py``) a file belongs to."""
    return rel.split("/")[0].removesuffix(".py")


def nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, in source order (``ast.walk`` alone goes breadth first)."""
    return sorted(
        ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))
    )


def functions(tree: ast.AST):
    return (n for n in nodes(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def imports(rel: str, tree: ast.AST):
    """``(lineno, target)`` for everything imported, ``target`` the resolved dotted parts."""
    module = ["vaeinv", *rel.removesuffix(".py").split("/")]
    package = module[:-1]  # for __init__.py, module[:-1] is the package itself
    for node in nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            base = base + (node.module.split(".") if node.module else [])
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else [*base, alias.name]


def check_file_lines(files: dict[str, str]) -> list[str]:
    sizes = {rel: len(text.splitlines()) for rel, text in files.items()}
    return [f"{rel}: {n} lines" for rel, n in sizes.items() if n > MAX_FILE_LINES]


def check_function_lines(files: dict[str, str]) -> list[str]:
    out = []
    for rel, text in files.items():
        for f in functions(ast.parse(text)):
            n = f.end_lineno - f.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{rel}:{f.lineno} {f.name}: {n} lines")
    return out


def check_parameters(files: dict[str, str]) -> list[str]:
    out = []
    for rel, text in files.items():
        for f in functions(ast.parse(text)):
            a = f.args
            names = [p.arg for p in a.posonlyargs + a.args if p.arg not in ("self", "cls")]
            n = len(names) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
            if n > MAX_PARAMETERS:
                out.append(f"{rel}:{f.lineno} {f.name}: {n} parameters")
    return out


def _method_names(node: ast.AST) -> list[str]:
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    return [e.value for e in items if isinstance(e, ast.Constant) and e.value in METHOD_NAMES]


def check_method_dispatch(files: dict[str, str]) -> list[str]:
    out = []
    ops = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)
    for rel, text in files.items():
        if rel == DISPATCH_HOME:
            continue
        for node in nodes(ast.parse(text)):
            hits = []
            if isinstance(node, ast.Compare) and any(isinstance(op, ops) for op in node.ops):
                hits = [s for side in (node.left, *node.comparators) for s in _method_names(side)]
                kind = "comparison"
            elif isinstance(node, ast.Dict):
                hits = [s for k in node.keys if k is not None for s in _method_names(k)]
                hits = hits if len(hits) >= 2 else []
                kind = "dict keyed by"
            elif isinstance(node, ast.MatchValue):
                hits, kind = _method_names(node.value), "match case"
            if hits:
                out.append(f"{rel}:{node.lineno} {kind} {', '.join(map(repr, hits))}")
    return out


def check_package_share(files: dict[str, str]) -> list[str]:
    lines = Counter()
    for rel, text in files.items():
        lines[top_of(rel)] += len(text.splitlines())
    total = sum(lines.values())
    return [
        f"{top}: {n} of {total} lines ({n / total:.1%})"
        for top, n in lines.most_common()
        if n > MAX_PACKAGE_SHARE * total
    ]


def check_layering(files: dict[str, str]) -> list[str]:
    tops = {top_of(rel) for rel in files}
    out = []
    for rel, text in files.items():
        own = top_of(rel)
        if own not in LAYERS:
            continue
        for line, target in imports(rel, ast.parse(text)):
            if target[0] != "vaeinv":
                continue
            # `from .. import x` with x no top-level module/package takes x from the root
            layer = target[1] if len(target) > 1 and target[1] in tops else "vaeinv (root)"
            if layer != own and layer not in LAYERS[own]:
                out.append(f"{rel}:{line} imports {'.'.join(target)} (from {layer})")
    return out


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def check_private_imports(files: dict[str, str]) -> list[str]:
    """A private module or name imported from another top-level package.

    Modules directly under ``src/vaeinv`` share one package (the root) here, so ``cli.py`` may
    use ``_commands.py``; any package may not.
    """
    dirs = {rel.split("/")[0] for rel in files if "/" in rel}
    out = []
    for rel, text in files.items():
        own = rel.split("/")[0] if "/" in rel else ""
        for line, target in imports(rel, ast.parse(text)):
            private = [i for i, part in enumerate(target) if i and _private(part)]
            if target[0] != "vaeinv" or not private:
                continue
            theirs = target[1] if target[1] in dirs else ""
            found = f"{rel}:{line} imports {'.'.join(target[: private[0] + 1])}"
            if theirs != own and found not in out:  # one line per private module or name
                out.append(found)
    return out


RULES = {
    "file_lines": check_file_lines,
    "function_lines": check_function_lines,
    "parameters": check_parameters,
    "method_dispatch": check_method_dispatch,
    "package_share": check_package_share,
    "layering": check_layering,
    "private_imports": check_private_imports,
}


@pytest.mark.parametrize("rule", RULES)
def test_house_rule(rule):
    assert (SRC / "__init__.py").is_file(), SRC
    offenders = RULES[rule](load_tree(SRC))
    assert not offenders, f"{rule}: {len(offenders)} offender(s)\n" + "\n".join(offenders)


def _body(n: int) -> str:
    return "def f():\n" + "    x = 1\n" * (n - 1)


def _params(n: int) -> str:
    return f"class C:\n    def m(self, {', '.join(f'a{i}' for i in range(n - 2))}, *a, **k): ...\n"


# (rule, a tree that breaks it, a tree that keeps it)
CASES = [
    ("file_lines", {"a.py": "x = 1\n" * 401}, {"a.py": "x = 1\n" * 400}),
    ("function_lines", {"a.py": "@d\n" + _body(101)}, {"a.py": "@d\n" + _body(100)}),
    ("parameters", {"a.py": _params(13)}, {"a.py": _params(12)}),
    ("method_dispatch", {"i/a.py": "if m == 'hmc': pass\n"}, {"i/a.py": "if m == 'hmcx': pass\n"}),
    ("method_dispatch", {"i/a.py": "b = m in ('x', 'pcn')\n"}, {"i/a.py": "b = {'pcn': 1}\n"}),
    (
        "method_dispatch",
        {"i/a.py": "T = {'pcn': 1, 'nuts': 2}\n"},
        {DISPATCH_HOME: "T = {'pcn': 1, 'nuts': 2}\n"},
    ),
    (
        "method_dispatch",
        {"a.py": "match m:\n    case 'tpcn': pass\n"},
        {"a.py": "x = m < 'tpcn'\n"},
    ),
    (
        "package_share",
        {"big/a.py": "x\n" * 4, "b.py": "x\n" * 3, "c.py": "x\n" * 3},
        {"big/a.py": "x\n" * 3, "b.py": "x\n" * 3, "c.py": "x\n" * 3, "d.py": "x\n" * 2},
    ),
    (
        "layering",
        {"grid.py": "", "physics/a.py": "from ..fields import F\n", "fields/b.py": ""},
        {"grid.py": "", "physics/a.py": "from ..grid import Grid\nfrom . import b\n"},
    ),
    (
        "layering",
        {"fields/a.py": "from .. import __version__\n"},
        {"fields/a.py": "import numpy\n"},
    ),
    ("layering", {"grid.py": "import vaeinv.physics\n"}, {"grid.py": "from .grid import x\n"}),
    (
        "private_imports",
        {"i/a.py": "from ..p._linalg import X\n", "p/_linalg.py": ""},
        {"i/a.py": "from ._draws import _x\n", "i/_draws.py": ""},
    ),
    (
        "private_imports",
        {"i/a.py": "from ..f import _c\n", "f/__init__.py": ""},
        {"cli.py": "from . import _commands\n"},
    ),
    (
        "private_imports",
        {"_c.py": "from .i.r import _s\n", "i/r.py": ""},
        {"_c.py": "from .i.r import s\n"},
    ),
]


@pytest.mark.parametrize(("rule", "bad", "good"), CASES)
def test_rule_checker_flags_bad_and_passes_good(rule, bad, good):
    assert RULES[rule](bad), f"{rule} missed a breach in {bad}"
    assert not RULES[rule](good), f"{rule} flagged {RULES[rule](good)} in {good}"


def test_load_tree_reads_a_nested_tree(tmp_path):
    (tmp_path / "fields").mkdir()
    (tmp_path / "fields" / "a.py").write_text("from ..inference import x\n")
    (tmp_path / "inference").mkdir()
    (tmp_path / "inference" / "__init__.py").write_text("x = 1\n")
    files = load_tree(tmp_path)
    assert sorted(files) == ["fields/a.py", "inference/__init__.py"]
    assert check_layering(files) == ["fields/a.py:1 imports vaeinv.inference.x (from inference)"]


def test_the_old_inference_names_still_resolve_with_a_warning():
    """Code written against ``vaeinv.inference`` keeps running, warned where each name is."""
    import vaeinv.inference as old
    from vaeinv.posterior.target import Posterior

    with pytest.warns(DeprecationWarning, match="moved to vaeinv.posterior.target"):
        assert old.Posterior is Posterior
    for name in old.__all__:
        with pytest.warns(DeprecationWarning):
            getattr(old, name)
    with pytest.raises(AttributeError, match="no attribute 'runner'"):
        old.runner  # noqa: B018
