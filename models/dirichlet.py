"""A Dirichlet prior over each image's class weights (the original's "LogGamma"
model: alpha = softmax(U) with U_k ~ LogGamma(beta0) is alpha ~ Dirichlet(beta0)).

Generative process, for every image n (labelled or not)::

    alpha_n ~ Dirichlet(beta0, ..., beta0)                class weights; beta0 < 1
                                                          favours the corners
    y_n     ~ Cat(alpha_n)                                class index
    z_n     ~ N(0, I_D)                                   style
    x_n     ~ Bernoulli(sigmoid(f_theta(z_n, alpha_n)))   pixels, independent given (alpha, z)

beta0 is ``--dirichlet-concentration`` (0.2 in the original). As in the
logistic-normal model, y is a leaf: observed it contributes log alpha_{n, y_n},
unobserved it sums out to 1, so ``story`` samples it only when it is given.
Unlike the original, alpha's guide is sampled with a reparameterised gradient,
in log space so that alpha's small components do not underflow
(``ppl_ssvae.relaxed.LogSpaceDirichlet``); the prior scores it in log space too.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from ppl_ssvae.inference import ExactY
from ppl_ssvae.relaxed import LogSpaceDirichlet, log_of

from .m2 import M2


class DirichletPrior(M2):
    """M2 with class weights between y and the image: the decoder (M2's) reads
    alpha ~ Dirichlet(beta0) where M2's reads the one-hot y; ``forward`` and
    ``decode`` are M2's."""

    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 concentration: float = 0.2, y_family: ExactY | None = None,
                 likelihood: str = "bernoulli"):
        super().__init__(num_classes, z_dim, x_dim, hidden, activation, y_family, likelihood)
        self.register_buffer("concentration", torch.full((num_classes,), float(concentration)))

    def story(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The generative process for a plate of images; ``y=None``: y unobserved."""
        alpha = pyro.sample("alpha", LogSpaceDirichlet(self.concentration))
        if y is not None:  # an unobserved leaf sums to 1: nothing to sample
            # log alpha as the sampler computed it: alpha_y may underflow to 0
            pyro.sample("y", dist.Categorical(logits=log_of(alpha)), obs=y)
        z = pyro.sample("z", dist.Normal(self.z_loc, self.z_scale).to_event(1))
        pyro.sample("x", self.likelihood(self.decoder(z, alpha)), obs=x)
