"""The inference networks of the logistic-normal prior model::

    q(a | x)        = N(a | mu_phi(x), diag sigma_phi(x)^2)    class scores; alpha = softmax(a)
    q(z | x, alpha) = N(z | m_phi(x, alpha), diag s_phi(x, alpha)^2)

Both are reparameterised, for labelled and unlabelled images alike (a labelled
image's observed y enters through the model's p(y | alpha), not the guide). The
classifier is q(a | x)'s mean: the prediction is argmax_k mu_phi(x)_k, the
logits ``classify`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_ssvae.batch import Batch
from ppl_ssvae.inference import ExactY
from ppl_ssvae.models.logistic_normal_prior import class_input
from ppl_ssvae.nets import GaussianHead


class LogisticNormalPriorGuide(nn.Module):
    continuous_y = True  # q(z | x, .) reads class weights on the simplex, not a one-hot y

    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 batch_norm: bool = False, input_dropout: float = 0.0,
                 y_family: ExactY | None = None, labelled_one_hot: bool = False):
        super().__init__()
        self.labelled_one_hot = labelled_one_hot  # q(z | x, e_y) for a labelled image
        self.num_classes, self.z_dim = num_classes, z_dim
        self.y_family = y_family or ExactY()  # nothing discrete to infer: unused
        self.scores = GaussianHead([x_dim], hidden, num_classes, activation=activation,
                                   batch_norm=batch_norm, input_dropout=input_dropout)
        self.encoder = GaussianHead([x_dim, num_classes], hidden, z_dim, activation=activation,
                                    batch_norm=batch_norm)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the prediction: the mean of q(a | x)."""
        return self.scores(x)[0]

    def encode_z(self, x: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of q(z | x, alpha)."""
        return self.encoder(x, alpha)

    def forward(self, batch: Batch) -> None:
        pyro.module("guide", self)
        for part in batch.in_plates():
            loc, scale = self.scores(part.x)
            a = pyro.sample("a", dist.Normal(loc, scale).to_event(1))
            z_loc, z_scale = self.encode_z(part.x, class_input(a, part.y, self.labelled_one_hot))
            pyro.sample("z", dist.Normal(z_loc, z_scale).to_event(1))
