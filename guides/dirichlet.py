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

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.contrib.autoname import scope
from torch import nn
from torch.nn import functional as F

from ppl_ssvae.batch import Batch
from ppl_ssvae.inference import ExactY
from ppl_ssvae.nets import MLP, GaussianHead
from ppl_ssvae.relaxed import LogSpaceDirichlet

MIN_CONCENTRATION = 1e-2  # below this the Gamma sampler's gradients become erratic


class DirichletGuide(nn.Module):
    continuous_y = True  # q(z | x, .) reads class weights on the simplex, not a one-hot y

    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 batch_norm: bool = False, input_dropout: float = 0.0,
                 y_family: ExactY | None = None):
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.y_family = y_family or ExactY()  # nothing discrete to infer: unused
        self.classifier = MLP([x_dim], hidden, num_classes, activation, batch_norm, input_dropout)
        self.encoder = GaussianHead([x_dim, num_classes], hidden, z_dim, activation=activation,
                                    batch_norm=batch_norm)

    def concentration(self, x: torch.Tensor) -> torch.Tensor:
        """c_phi(x), the concentration of q(alpha | x)."""
        return F.softplus(self.classifier(x)) + MIN_CONCENTRATION

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the prediction: log c, so that softmax gives the mean of q(alpha | x)."""
        return self.concentration(x).log()

    def encode_z(self, x: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of q(z | x, alpha)."""
        return self.encoder(x, alpha)

    def forward(self, batch: Batch) -> None:
        pyro.module("guide", self)
        for part in batch.parts():
            with part.plate(), scope(prefix=part.name):
                alpha = pyro.sample("alpha", LogSpaceDirichlet(self.concentration(part.x)))
                loc, scale = self.encode_z(part.x, alpha)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))
