"""Interrupting a run from its progress callback, for the resume tests."""

from __future__ import annotations

__all__ = ["Stop", "stop_after"]


class Stop(Exception):
    """Raised by `stop_after`'s callback to interrupt a run."""


def stop_after(n: int, seen: list | None = None):
    """A progress callback that interrupts the run at its ``n``-th report (appending every
    report to ``seen`` when given)."""
    calls = []

    def callback(info) -> None:
        calls.append(info)
        if seen is not None:
            seen.append(info)
        if len(calls) == n:
            raise Stop

    return callback
