"""The code of docs/extending.md runs as written, top to bottom, in an empty folder.

The page's own ``assert`` statements make the run a check: the kernel registered, its
acceptance in (0, 1), an interrupted and resumed run equal to an uninterrupted one, R-hat, and
posterior means that agree with pCN's.
"""

from __future__ import annotations

from pathlib import Path

import torch

import vaeinv

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
KERNEL = "my-rwm"  # the name the page registers its kernel under


def python_source(text: str) -> str:
    """The page's ```python blocks in order, each on its own lines of the page (every other line
    left blank), so that a traceback names the page's line."""
    lines, inside = [], False
    for line in text.splitlines():
        if not inside and line.strip() == "```python":
            inside = True
            lines.append("")
        elif inside and line.strip() == "```":
            inside = False
            lines.append("")
        else:
            lines.append(line if inside else "")
    assert not inside, "an unclosed ```python block"
    return "\n".join(lines) + "\n"


def test_python_source_keeps_the_page_lines():
    text = "intro\n```python\nx = 1\n```\nprose\n```text\nnot code\n```\n```python\ny = x\n```\n"
    source = python_source(text)
    assert source.splitlines()[2] == "x = 1"
    assert source.splitlines()[9] == "y = x"
    assert "not code" not in source and "prose" not in source


def test_the_page_code_fits_in_100_columns():
    long = [
        f"docs/extending.md:{n}: {len(line)} columns"
        for n, line in enumerate(python_source(DOC.read_text()).splitlines(), start=1)
        if len(line) > 100
    ]
    assert not long, long


def test_the_extending_page_runs(tmp_path, monkeypatch):
    source = python_source(DOC.read_text())
    assert source.count("assert ") >= 10, "the page's code should check what it claims"
    assert KERNEL not in vaeinv.kernels.available()
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()  # the page sets one thread: restored afterwards
    try:
        namespace = {"__name__": "extending_page"}
        # dont_inherit: the page runs without this module's `from __future__ import annotations`
        exec(compile(source, str(DOC), "exec", dont_inherit=True), namespace)
    finally:
        torch.set_num_threads(threads)
        if KERNEL in vaeinv.kernels.available():
            vaeinv.kernels.unregister(KERNEL)
    assert KERNEL not in vaeinv.kernels.available()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rwm-run"]
    assert (tmp_path / "rwm-run" / "state.safetensors").is_file()
    assert "resumed" in namespace and "reference" in namespace
