"""M2 of Kingma, Rezende, Mohamed and Welling (2014), "Semi-supervised learning
with deep generative models".

Generative process, for every image n (labelled or not)::

    y_n ~ Cat(1/K, ..., 1/K)                      class, an index in 0..K-1
    z_n ~ N(0, I_D)                               style
    x_n ~ Bernoulli(sigmoid(f_theta(z_n, y_n)))   784 pixels, independent given (y, z)

(``--likelihood gaussian``: x_n ~ N(f_theta(z_n, y_n), diag sigma^2), sigma learned;
``ppl_ssvae.likelihood``.)

Labelled and unlabelled images go through the same ``story``; the only difference
is ``obs=y``: observed in the labelled plate, latent (and summed out, sampled or
relaxed, as the guide's inference method says) in the unlabelled one.

y is a ``Categorical`` site whose value is a class index (the decoder reads it as
its one-hot vector), so Pyro's enumeration and ``infer_discrete`` handle it as
they handle any discrete site; under a relaxed inference method its unobserved
value is a point of the simplex instead, which the decoder reads as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_ssvae.batch import Batch
from ppl_ssvae.inference import ExactY
from ppl_ssvae.likelihood import make_likelihood
from ppl_ssvae.nets import MLP


class M2(nn.Module):
    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 y_family: ExactY | None = None, likelihood: str = "bernoulli"):
        super().__init__()
        self.num_classes, self.z_dim, self.x_dim = num_classes, z_dim, x_dim
        self.y_family = y_family or ExactY()
        self.decoder = MLP([z_dim, num_classes], hidden, x_dim, activation)
        self.likelihood = make_likelihood(likelihood, x_dim)  # p(x | decoder output)
        self.register_buffer("y_logits", torch.zeros(num_classes))  # uniform p(y)
        self.register_buffer("z_loc", torch.zeros(z_dim))
        self.register_buffer("z_scale", torch.ones(z_dim))

    def story(self, x: torch.Tensor | None, y: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The generative process for a plate of images; ``y=None`` leaves y latent
        (``x=None`` samples the images). Returns the values of (y, z, x), so that a
        model extending M2 can add nodes that depend on them."""
        y_prior = self.y_family.prior(self.y_logits) if y is None else \
            dist.Categorical(logits=self.y_logits)
        y = pyro.sample("y", y_prior, obs=y)
        z = pyro.sample("z", dist.Normal(self.z_loc, self.z_scale).to_event(1))
        x = pyro.sample("x", self.likelihood(self.decoder(z, y)), obs=x)
        return y, z, x

    def forward(self, batch: Batch) -> None:
        pyro.module("model", self)
        for part in batch.in_plates():
            self.story(part.x, part.y)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | y, z) (pixel probabilities under the Bernoulli likelihood); y a
        class index, or a point of the simplex."""
        return self.likelihood.mean(self.decoder(z, y))
