"""The inference networks of the two-digit model::

    q(y1 | x)        = Cat(y1 | softmax(g1_phi(x)))       the left digit's classifier
    q(y2 | x)        = Cat(y2 | softmax(g2_phi(x)))       the right digit's
    q(z | x, y1, y2) = N(z | mu_phi(x, y1, y2), diag sigma_phi(x, y1, y2)^2)

The two classifiers are two 10-way heads on one network (one hidden stack, an output
layer of 20). The class of an image is the pair, and its posterior the product::

    q(y = 10 a + b | x) = q(y1 = a | x) q(y2 = b | x)

so ``classify(x)`` returns the 100 joint logits log q(y1 | x) + log q(y2 | x): its argmax
is the pair of the two digits' argmaxes, and the objective's classifier term, the
cross-entropy of these logits, is the sum of the two digits' cross-entropies.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_ssvae.batch import Batch
from ppl_ssvae.inference import ExactY
from ppl_ssvae.labels import digits_of
from ppl_ssvae.nets import MLP, GaussianHead

DIGITS = 10


def joint_logits(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """log q(y1 = a) + log q(y2 = b) at class 10 a + b: (..., 100) from (..., 10) twice."""
    return (logits1.log_softmax(-1).unsqueeze(-1) + logits2.log_softmax(-1).unsqueeze(-2)
            ).flatten(-2)


class TwoDigitGuide(nn.Module):
    def __init__(self, z_dim: int = 50, x_dim: int = 1568, hidden: Sequence[int] = (500,),
                 activation: str = "softplus", batch_norm: bool = False,
                 input_dropout: float = 0.0, y_family: ExactY | None = None):
        super().__init__()
        self.num_classes, self.z_dim = DIGITS * DIGITS, z_dim
        self.y_family = y_family or ExactY({"enumerate": "parallel"})
        self.classifier = MLP([x_dim], hidden, (DIGITS, DIGITS), activation, batch_norm,
                              input_dropout)
        self.encoder = GaussianHead([x_dim, DIGITS, DIGITS], hidden, z_dim,
                                    activation=activation, batch_norm=batch_norm)

    def classify_digits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of q(y1 | x) and of q(y2 | x)."""
        return self.classifier(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | x) over the 100 classes: log q(y1 | x) + log q(y2 | x)."""
        return joint_logits(*self.classify_digits(x))

    def encode_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of q(z | x, y1, y2) for classes ``y`` (indices, or points of the
        simplex over the 100 classes)."""
        return self.encoder(x, *digits_of(y, DIGITS))

    def forward(self, batch: Batch) -> None:
        pyro.module("guide", self)
        for part in batch.in_plates():
            if part.y is None:
                logits1, logits2 = self.classify_digits(part.x)
                y1 = pyro.sample("y1", self.y_family.posterior(logits1), infer=self.y_family.infer)
                y2 = pyro.sample("y2", self.y_family.posterior(logits2), infer=self.y_family.infer)
            else:
                y1, y2 = digits_of(part.y, DIGITS)
            loc, scale = self.encoder(part.x, y1, y2)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
