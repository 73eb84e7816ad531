"""The inference networks of M2 (Kingma et al. 2014)::

    q(y | x)    = Cat(y | softmax(g_phi(x)))              the classifier
    q(z | x, y) = N(z | mu_phi(x, y), diag sigma_phi(x, y)^2)

For an unlabelled image y is drawn from q(y | x) in the form the inference
method asks for (enumerated, sampled, or relaxed); for a labelled one the
observed y feeds q(z | x, y) directly and q(y | x) is not used by the ELBO (the
classifier term of the objective uses it instead, see ``ppl_ssvae.objective``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_ssvae.batch import Batch
from ppl_ssvae.inference import ExactY
from ppl_ssvae.nets import MLP, GaussianHead


class M2Guide(nn.Module):
    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 batch_norm: bool = False, input_dropout: float = 0.0,
                 y_family: ExactY | None = None):
        super().__init__()
        self.num_classes, self.z_dim = num_classes, z_dim
        self.y_family = y_family or ExactY({"enumerate": "parallel"})
        self.classifier = MLP([x_dim], hidden, num_classes, activation, batch_norm, input_dropout)
        self.encoder = GaussianHead([x_dim, num_classes], hidden, z_dim, activation=activation,
                                    batch_norm=batch_norm)
        # a learned score-function baseline b(x), if the inference method uses one
        self.baseline = self.y_family.baseline_network(x_dim, hidden, activation)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x)."""
        return self.classifier(x)

    def encode_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of q(z | x, y)."""
        return self.encoder(x, y)

    def forward(self, batch: Batch) -> None:
        pyro.module("guide", self)
        for part in batch.in_plates():
            y = part.y
            if y is None:
                q_y = self.y_family.posterior(self.classify(part.x))
                infer = self.y_family.site_infer(part, self.baseline)
                y = pyro.sample("y", q_y, infer=infer)
            loc, scale = self.encode_z(part.x, y)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
