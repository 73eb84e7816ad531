"""The guide of the supervised classifier: the model has no latent variables, so
the variational family is empty (q is a point mass on nothing) and the ELBO is
the log-likelihood. The guide still holds the classifier g_theta, shared with
the model, so that ``classify`` works as for every other pair."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from ppl_ssvae.batch import Batch

from .two_digit import joint_logits


class ClassifierGuide(nn.Module):
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of p(y | x)."""
        return self.network(x)

    def forward(self, batch: Batch) -> None:
        pyro.module("guide", self)  # nothing to sample


class TwoDigitClassifierGuide(ClassifierGuide):
    """The empty guide of the two-digit classifier; ``classify`` returns the 100 joint
    logits log p(y1 | x) + log p(y2 | x) of its two heads."""

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return joint_logits(*self.network(x))
