"""The layout of the source tree: one markdown row per top-level package or module of vaeinv.

For each directory directly under ``src/vaeinv`` (shown with a trailing ``/``) and each top-level
module it prints the number of ``.py`` files, their lines and that share of all the lines of
``src/vaeinv/**/*.py``, largest first, then the totals. It reads the files only (no import), so
it describes the tree beside it, not the installed package.

Run ``python benchmarks/layout.py`` (or pass another package folder as the one argument).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vaeinv"


def layout(root: Path) -> tuple[Counter, Counter]:
    """Files and lines per top-level entry (``name/`` for a package, ``name.py`` for a module)."""
    files, lines = Counter(), Counter()
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        top = parts[0] + "/" if len(parts) > 1 else parts[0]
        files[top] += 1
        lines[top] += len(path.read_text().splitlines())
    return files, lines


def table(root: Path) -> str:
    files, lines = layout(root)
    total = sum(lines.values())
    rows = ["| package / module | files | lines | share of src |", "|---|---:|---:|---:|"]
    for top, n in sorted(lines.items(), key=lambda item: (-item[1], item[0])):
        rows.append(f"| `{top}` | {files[top]} | {n} | {100 * n / total:.1f} % |")
    rows.append(f"| **total** | {sum(files.values())} | {total} | 100.0 % |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC))
