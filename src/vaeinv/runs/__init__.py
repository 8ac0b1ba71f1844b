"""Runs: the one chunked loop every kernel goes through, with checkpoints, resume, thinning,
progress, extension of finished runs and merging of parts.

```
sample(posterior, method=..., **settings)   chains, chunks on disk, resume -> ArviZ
extend_run(idata, posterior, num_draws=...)  a finished run's chains continued
merge_runs(parts)                           parts of a run (chains=...) joined
```
"""

from .extend import extend_run
from .merge import merge_runs
from .progress import RunProgress
from .sampling import RunSettings, sample, sampler_options

__all__ = ["RunProgress", "RunSettings", "extend_run", "merge_runs", "sample", "sampler_options"]
