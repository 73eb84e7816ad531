"""The inference networks of the ADGM (Maaloe et al. 2016): M2's guide with an
auxiliary a drawn first and fed to both of M2's networks.

Variational family; lines marked ``+`` are new, ``~`` changed from M2's guide::

  + q(a | x)       = N(a | mu_phi(x), diag sigma_phi(x)^2)
  ~ q(y | a, x)    = Cat(y | softmax(g_phi(a, x)))                M2: q(y | x)
  ~ q(z | a, x, y) = N(z | mu_phi(a, x, y), diag sigma_phi(a, x, y)^2)   M2: q(z | x, y)

Given a, y and z are as in M2; integrated over a, q(y, z | x) is a continuous
mixture of M2-like families, so the classifier q(y | x) = E_q(a|x) q(y | a, x)
is more flexible than M2's. For an unlabelled image the sum over y stays exact
under ``--inference enum``: a is drawn once per image, y is enumerated given it.

What evaluation and figures see (the protocol every guide keeps):

- ``classify(x)``: logits of q(y | a, x). While training, a is one draw from
  q(a | x), so the classifier term of the objective is a one-sample estimate of
  E_q(a|x)[-log q(y | a, x)], as in Maaloe et al.; in evaluation mode
  (``module.eval()``, which ``ppl_ssvae.evaluate`` sets) a is the mean of q(a | x),
  so predictions are deterministic.
- ``encode_z(x, y)``: mean and scale of q(z | a, x, y) at a = the mean of
  q(a | x). The KL-per-dimension figure is therefore KL(q(z | a_bar, x, y) || p(z))
  at that single a, not the KL of the a-marginal q(z | x, y) (which has no closed form).
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


class ADGMGuide(nn.Module):
    def __init__(self, num_classes: int = 10, z_dim: int = 50, x_dim: int = 784,
                 hidden: Sequence[int] = (500,), activation: str = "softplus",
                 batch_norm: bool = False, input_dropout: float = 0.0,
                 y_family: ExactY | None = None, a_dim: int | None = None):
        super().__init__()
        self.num_classes, self.z_dim, self.a_dim = num_classes, z_dim, a_dim or z_dim
        self.y_family = y_family or ExactY({"enumerate": "parallel"})
        # new: q(a | x)
        self.aux_encoder = GaussianHead([x_dim], hidden, self.a_dim, activation=activation,
                                        batch_norm=batch_norm)
        # M2's two networks, each with a as one more input
        self.classifier = MLP([x_dim, self.a_dim], hidden, num_classes, activation, batch_norm,
                              input_dropout)
        self.encoder = GaussianHead([x_dim, self.a_dim, num_classes], hidden, z_dim,
                                    activation=activation, batch_norm=batch_norm)

    def encode_a(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of q(a | x)."""
        return self.aux_encoder(x)

    def classify_given_a(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | a, x)."""
        return self.classifier(x, a)

    def encode_z_given_a(self, x: torch.Tensor, a: torch.Tensor,
                         y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of q(z | a, x, y)."""
        return self.encoder(x, a, y)

    def _a_for_evaluation(self, x: torch.Tensor) -> torch.Tensor:
        loc, scale = self.encode_a(x)
        if self.training:  # one reparameterised draw: the classifier term is then unbiased for E_a
            return loc + scale * torch.randn_like(loc)
        return loc

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | a, x): a ~ q(a | x) while training, a = its mean in eval mode."""
        return self.classify_given_a(x, self._a_for_evaluation(x))

    def encode_z(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and scale of q(z | a, x, y) at a = the mean of q(a | x)."""
        a, _ = self.encode_a(x)
        return self.encode_z_given_a(x, a, y)

    def forward(self, batch: Batch) -> None:
        pyro.module("guide", self)
        for part in batch.in_plates():
            loc, scale = self.encode_a(part.x)  # new: a first, from x alone
            a = pyro.sample("a", dist.Normal(loc, scale).to_event(1))
            y = part.y
            if y is None:
                q_y = self.y_family.posterior(self.classify_given_a(part.x, a))
                y = pyro.sample("y", q_y, infer=self.y_family.infer)
            loc, scale = self.encode_z_given_a(part.x, a, y)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
