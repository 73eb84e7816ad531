"""The hierarchical model: Kingma et al.'s stacked M1+M2 (2014) trained as one model,
and the structure of scANVI (Xu et al. 2021). The label touches only small networks.

Generative process, for every image n::

    y_n  ~ Cat(1/K, ..., 1/K)                                   class
    z2_n ~ N(0, I_D2)                                           style, within the class
    z1_n ~ N(mu_theta(y_n, z2_n), diag sigma_theta(y_n, z2_n)^2)   the image's code
    x_n  ~ Bernoulli(sigmoid(f_theta(z1_n)))                    pixels, given the code alone

x depends on y only through z1, so summing y out (``--inference enum``) costs K passes
of the small networks p(z1 | y, z2) and q(z2 | z1, y) (``--label-hidden``, on 50-dim
inputs) and one pass of the decoder and of the image encoder q(z1 | x), where M2 pays
K passes of its decoder. At K = 100 the exact sum then costs about what a relaxed
step of M2 does (``ppl-ssvae bench``).

``--z-dim`` is z2's dimension, ``--z1-dim`` z1's (50 each, as in Kingma et al.'s M1 and
M2); ``--hidden`` sizes the networks that read or write x (run once per image), and
``--label-hidden`` (50 softplus units, one layer; softplus in place of maxout) the two
that read y: their inputs are 50-dim codes, not 784 pixels, and at K = 100 they run on
K x B rows, so their width is what an exact sum costs.
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
from ppl_ssvae.nets import MLP, GaussianHead


class Hierarchical(nn.Module):
    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 y_family: ExactY | None = None, likelihood: str = "bernoulli",
                 z1_dim: int = 50, label_hidden: Sequence[int] = (50,),
                 label_activation: str | None = None):
        super().__init__()
        self.num_classes, self.z_dim, self.z1_dim, self.x_dim = num_classes, z_dim, z1_dim, x_dim
        self.y_family = y_family or ExactY()
        # p(z1 | y, z2): the small network, run K times when y is summed out
        self.code = GaussianHead([z_dim, num_classes], label_hidden, z1_dim,
                                 activation=label_activation or activation)
        self.decoder = MLP([z1_dim], hidden, x_dim, activation)  # p(x | z1): run once
        self.likelihood = make_likelihood(likelihood, x_dim)
        self.register_buffer("y_logits", torch.zeros(num_classes))
        self.register_buffer("z_loc", torch.zeros(z_dim))
        self.register_buffer("z_scale", torch.ones(z_dim))

    def story(self, x: torch.Tensor | None, y: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The generative process for a plate of images; ``y=None`` leaves y latent.
        Returns (y, z2, z1, x)."""
        y_prior = self.y_family.prior(self.y_logits) if y is None else \
            dist.Categorical(logits=self.y_logits)
        y = pyro.sample("y", y_prior, obs=y)
        z2 = pyro.sample("z2", dist.Normal(self.z_loc, self.z_scale).to_event(1))
        loc, scale = self.code(z2, y)
        # .mask(True) changes no density; it hides the Gaussian from closed-form KLs. The
        # guide draws z2 after z1 and from it, so KL(q(z1|x) || p(z1|y,z2)) at a drawn z2
        # is not an unbiased term of the ELBO: TraceMeanField_ELBO (the *-cat-kl methods)
        # then scores z1 by log p(z1|y,z2) - log q(z1|x) at the draws instead.
        z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1).mask(True))
        x = pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)
        return y, z2, z1, x

    def forward(self, batch: Batch) -> None:
        pyro.module("model", self)
        for part in batch.in_plates():
            self.story(part.x, part.y)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z1) at z1 = the mean of p(z1 | y, z2 = ``z``): what the
        class-conditional figures draw. ``y`` a class index or a point of the simplex."""
        loc, _ = self.code(z, y)
        return self.likelihood.mean(self.decoder(loc))
