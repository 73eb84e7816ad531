"""A logistic-normal prior over each image's class weights (the original's
"LogisticNormal" model).

Generative process, for every image n (labelled or not)::

    a_n     ~ N(0, s^2 I_K)                               class scores (s = 1 / --temperature)
    alpha_n = softmax(a_n)                                class weights, on the simplex
    y_n     ~ Cat(alpha_n)                                class index
    z_n     ~ N(0, I_D)                                   style
    x_n     ~ Bernoulli(sigmoid(f_theta(z_n, alpha_n)))   pixels, independent given (alpha, z)

The decoder reads the continuous alpha, not y, so y is a leaf of the graph: where
it is unobserved, sum_y p(y | alpha) = 1 and it drops out of the likelihood
exactly; where it is observed it contributes log alpha_{n, y_n}. So ``story``
samples y only when it is given, and the latent a is reparameterised for
labelled and unlabelled images alike.

``labelled_one_hot`` (``--labelled-input one-hot``) is the original's variant: a
labelled image is generated from its label's one-hot vector e_y in place of alpha,
``x ~ Bernoulli(sigmoid(f_theta(z, e_y)))`` (and q(z | x, .) reads e_y), so that the
decoder learns what each corner of the simplex draws; y then also enters through
log alpha_y. Unlabelled images are as above: the decoder reads alpha, a relaxation of
the one-hot y, as in M2's relaxed methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ppl_ssvae.inference import ExactY

from .m2 import M2


def class_input(a: torch.Tensor, y: torch.Tensor | None, one_hot: bool) -> torch.Tensor:
    """What the decoder and q(z | x, .) read: alpha = softmax(a), or, for a labelled
    image with ``one_hot`` (the original's feed), its label's one-hot vector."""
    if y is not None and one_hot:
        return F.one_hot(y, a.shape[-1]).to(a.dtype)
    return a.softmax(-1)


class LogisticNormalPrior(M2):
    """M2 with class weights between y and the image: the decoder (M2's) reads
    alpha = softmax(a) where M2's reads the one-hot y; ``forward`` and ``decode``
    are M2's."""

    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 y_family: ExactY | None = None, scale: float = 1.0,
                 likelihood: str = "bernoulli", labelled_one_hot: bool = False):
        super().__init__(num_classes, z_dim, x_dim, hidden, activation, y_family, likelihood)
        self.labelled_one_hot = labelled_one_hot
        self.register_buffer("a_loc", torch.zeros(num_classes))
        self.register_buffer("a_scale", torch.full((num_classes,), float(scale)))

    def story(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The generative process for a plate of images; ``y=None``: y unobserved."""
        a = pyro.sample("a", dist.Normal(self.a_loc, self.a_scale).to_event(1))
        if y is not None:  # an unobserved leaf sums to 1: nothing to sample
            pyro.sample("y", dist.Categorical(logits=a), obs=y)
        z = pyro.sample("z", dist.Normal(self.z_loc, self.z_scale).to_event(1))
        weights = class_input(a, y, self.labelled_one_hot)
        pyro.sample("x", self.likelihood(self.decoder(z, weights)), obs=x)
