"""The pixel (or feature) likelihood p(x | y, z), chosen by ``--likelihood``.

Every model's story ends with ``x ~ likelihood(decoder(z, y))``: the decoder's output
is handed to one of these objects, which turns it into a distribution over the D
values of one example. The model is written once; the setting picks the object.

- ``bernoulli``: x_d ~ Bernoulli(sigmoid(out_d)), for values in [0, 1] (pixels,
  binarised or grey); the decoder outputs logits.
- ``gaussian``: x_d ~ N(out_d, sigma_d^2), for real-valued features; the decoder
  outputs the mean, and sigma_d is a learned parameter of each feature (positive
  through a softplus, floored at ``MIN_SCALE`` so that a constant feature cannot
  drive the density to infinity).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_ssvae.distributions import BernoulliImage

MIN_SCALE = 1e-3


class Bernoulli(nn.Module):
    """x_d ~ Bernoulli(sigmoid(out_d)); ``mean`` is the pixel probability."""

    name = "bernoulli"
    unit_range = True  # the data must lie in [0, 1]

    def __init__(self, x_dim: int):
        super().__init__()

    def forward(self, out: torch.Tensor) -> BernoulliImage:
        return BernoulliImage(out)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)


class Gaussian(nn.Module):
    """x_d ~ N(out_d, sigma_d^2), sigma learned per feature; ``mean`` is ``out``."""

    name = "gaussian"
    unit_range = False

    def __init__(self, x_dim: int):
        super().__init__()
        # softplus(raw) + MIN_SCALE = 1 at the start: unit variance for standardised data
        self.raw_scale = nn.Parameter(torch.full((x_dim,), math.log(math.expm1(1.0 - MIN_SCALE))))

    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + MIN_SCALE

    def forward(self, out: torch.Tensor) -> dist.Independent:
        return dist.Normal(out, self.scale().expand(out.shape)).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out


LIKELIHOODS: dict[str, type[nn.Module]] = {"bernoulli": Bernoulli, "gaussian": Gaussian}


def make_likelihood(name: str, x_dim: int) -> nn.Module:
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}: use one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name](x_dim)
