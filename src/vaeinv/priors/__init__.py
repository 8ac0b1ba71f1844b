"""Priors over a latent space: the protocol, the VAE prior, the Gaussian-field baseline.

```
LatentPrior                 the protocol's base: standard-normal latent, decode(z) -> log_k
Prior.load(name)            a trained VAE's decoder (shipped: gaussian64, channel64)
GaussianFieldPrior(grid)    the classical Gaussian random field (KL or circulant embedding)
CallablePrior(decode, d)    a plain function as a prior
load_recipe / Recipe        the recipe files that train a VAE prior
```
"""

from .base import CallablePrior, LatentPrior, standard_normal_log_prob
from .gaussian_field import GaussianFieldPrior
from .vae import Prior, shipped_priors

__all__ = [
    "CallablePrior",
    "GaussianFieldPrior",
    "LatentPrior",
    "Prior",
    "shipped_priors",
    "standard_normal_log_prob",
]
