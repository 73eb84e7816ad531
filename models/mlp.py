"""The supervised baseline: a classifier trained on the labelled images alone.

A discriminative model, with no latent variables, for every labelled image n::

    y_n ~ Cat(softmax(g_theta(x_n)))

Unlabelled images carry no information about theta here, so they are not used.
With nothing latent the guide is empty, and the ELBO is the log-likelihood
sum_n log p(y_n | x_n): SVI on this pair is maximum likelihood.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.contrib.autoname import scope
from torch import nn

from ppl_ssvae.batch import Batch
from ppl_ssvae.labels import digits_of

from .two_digit import TwoDigit


class Classifier(nn.Module):
    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network  # shared with the guide, whose classify() reads it

    def story(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.sample("y", dist.Categorical(logits=self.network(x)), obs=y)

    def forward(self, batch: Batch) -> None:
        pyro.module("model", self)
        for part in batch.parts():
            if part.y is None:
                continue
            with part.plate(), scope(prefix=part.name):
                self.story(part.x, part.y)


class TwoDigitClassifier(Classifier):
    """The supervised baseline of the two-digit model, with its structure: two 10-way
    heads on one network, for every labelled image n (class 10 a + b)::

        y1_n ~ Cat(softmax(g1_theta(x_n))),  y2_n ~ Cat(softmax(g2_theta(x_n)))

    ``network(x)`` returns the two heads' logits."""

    label_sites = TwoDigit.label_sites  # y1, y2: the class 10 y1 + y2, as the two-digit model's
    split_label = staticmethod(TwoDigit.split_label)
    join_label = staticmethod(TwoDigit.join_label)

    def story(self, x: torch.Tensor, y: torch.Tensor) -> None:
        logits1, logits2 = self.network(x)
        tens, units = digits_of(y)
        pyro.sample("y1", dist.Categorical(logits=logits1), obs=tens)
        pyro.sample("y2", dist.Categorical(logits=logits2), obs=units)
