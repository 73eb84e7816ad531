"""The auxiliary deep generative model (ADGM) of Maaloe, Sonderby, Sonderby and
Winther (2016), "Auxiliary deep generative models": M2 with one node added.

Generative process, for every image n; the line marked ``+`` is all that is new::

    y_n ~ Cat(1/K, ..., 1/K)                              as in M2
    z_n ~ N(0, I_D)                                       as in M2
    x_n ~ Bernoulli(sigmoid(f_theta(z_n, y_n)))           as in M2
  + a_n ~ N(mu_theta(x_n, y_n, z_n), diag sigma_theta(x_n, y_n, z_n)^2)

The auxiliary a is generated last, from everything else, so the marginal
p(x, y, z) is M2's unchanged: a adds nothing to what the model can generate. It
matters in the guide (``ppl_ssvae.guides.adgm``), where q(y | a, x) and
q(z | a, x, y) depend on a draw of a ~ q(a | x): integrating a out makes the
variational family a continuous mixture, richer than M2's, and p(a | x, y, z) is
the term of the ELBO that pays for that freedom.

In code, ``ADGM`` is ``M2`` plus one network, ``aux`` (p(a | x, y, z)), and one
sample statement after M2's story. ``a`` has the dimension of z, as in the paper
(both 100 there).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from ppl_ssvae.inference import ExactY
from ppl_ssvae.nets import GaussianHead

from .m2 import M2


class ADGM(M2):
    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 y_family: ExactY | None = None, a_dim: int | None = None,
                 likelihood: str = "bernoulli"):
        super().__init__(num_classes, z_dim, x_dim, hidden, activation, y_family, likelihood)
        self.a_dim = a_dim or z_dim
        # added to M2: the network of p(a | x, y, z), first layer W_x x + W_y y + W_z z
        self.aux = GaussianHead([x_dim, num_classes, z_dim], hidden, self.a_dim,
                                activation=activation)

    def story(self, x: torch.Tensor | None, y: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """M2's generative process, then a ~ p(a | x, y, z); ``y=None`` leaves y latent."""
        y, z, x = super().story(x, y)
        loc, scale = self.aux(x, y, z)
        pyro.sample("a", dist.Normal(loc, scale).to_event(1))
        return y, z, x
