"""Priors over a latent space: the protocol, the VAE prior, the Gaussian-field baseline.

```
LatentPrior                 the protocol's base: standard-normal latent, decode(z) -> log_k
Prior.load(name)            a trained VAE's decoder (shipped: gaussian64, channel64)
MultiscalePrior             multiscale VAEs over a joint latent, level(k) per grid
                            (shipped: gaussian16-64, channel16-32-64)
CoarsenedPrior(prior, grid) a prior's fields upscaled to a coarser grid, the same latent
GaussianFieldPrior(grid)    the classical Gaussian random field (KL or circulant embedding)
CallablePrior(decode, d)    a plain function as a prior
load_recipe / Recipe        the recipe files that train a VAE prior
```
"""

from .base import CallablePrior, LatentPrior, standard_normal_log_prob
from .coarsened import CoarsenedPrior
from .gaussian_field import GaussianFieldPrior
from .multiscale import MultiscalePrior
from .vae import Prior, shipped_priors

__all__ = [
    "CallablePrior",
    "CoarsenedPrior",
    "GaussianFieldPrior",
    "LatentPrior",
    "MultiscalePrior",
    "Prior",
    "shipped_priors",
    "standard_normal_log_prob",
]
