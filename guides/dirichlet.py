"""The inference networks of the Dirichlet prior model::

    q(alpha | x)    = Dirichlet(alpha | c_phi(x)),  c_phi(x) = softplus(g_phi(x)) + c_min
    q(z | x, alpha) = N(z | m_phi(x, alpha), diag s_phi(x, alpha)^2)

alpha is sampled with a reparameterised gradient, for labelled and unlabelled
images alike: log-gamma variables by shape augmentation on top of PyTorch's
implicit reparameterisation of the Gamma (``ppl_ssvae.relaxed.LogSpaceDirichlet``).
The classifier is q(alpha | x)'s mean c / sum(c): the logits ``classify`` returns
are log c, whose softmax is that mean.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

from ppl_ssvae.batch import Batch
from ppl_ssvae.relaxed import LogSpaceDirichlet

from .m2 import M2Guide

MIN_CONCENTRATION = 1e-2  # below this the Gamma sampler's gradients become erratic


class DirichletGuide(M2Guide):
    """M2's networks, with q(alpha | x) where M2 has q(y | x): the classifier's
    output is a concentration, and q(z | x, alpha) reads the sampled weights."""

    continuous_y = True  # q(z | x, .) reads class weights on the simplex, not a one-hot y

    def concentration(self, x: torch.Tensor) -> torch.Tensor:
        """c_phi(x), the concentration of q(alpha | x)."""
        return F.softplus(self.classifier(x)) + MIN_CONCENTRATION

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the prediction: log c, so that softmax gives the mean of q(alpha | x)."""
        return self.concentration(x).log()

    def forward(self, batch: Batch) -> None:
        pyro.module("guide", self)
        for part in batch.in_plates():
            alpha = pyro.sample("alpha", LogSpaceDirichlet(self.concentration(part.x)))
            loc, scale = self.encode_z(part.x, alpha)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
