"""A local prior that ends the first worker process it is used in (a worker lost in the
middle of a decomposed run), for the decomposed-run tests. Shipped to Dask workers by value."""

from __future__ import annotations

import os
from pathlib import Path


class KillingPrior:
    """``prior``'s attributes; the first use in a process other than the one that made it
    creates ``marker`` and ends that process at once (the test process never dies)."""

    def __init__(self, prior, marker: str) -> None:
        self.prior, self.marker, self.home = prior, marker, os.getpid()

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("prior", "marker", "home"):
            raise AttributeError(name)
        path = Path(self.marker)
        if os.getpid() != self.home and not path.exists():
            path.write_text("killed once")
            os._exit(1)
        return getattr(self.prior, name)
