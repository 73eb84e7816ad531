"""The two-digit model: M2 whose label is two digits, for images of two digits side by
side (``--dataset two-digit-mnist``, 100 classes, the class of an image 10 * left + right).

Generative process, for every image n; the lines marked ``~`` differ from M2::

  ~ y1_n ~ Cat(1/10, ..., 1/10)                            the left digit
  ~ y2_n ~ Cat(1/10, ..., 1/10)                            the right digit
    z_n ~ N(0, I_D)                                        style
  ~ x_n ~ Bernoulli(sigmoid(f_theta(z_n, y1_n, y2_n)))     1,568 pixels

An observed class c is observed digits y1 = c // 10, y2 = c % 10. The prior is M2's
Cat(1/100) over the 100 pairs, written as two independent digits; what changes is
what is learned from an image: the guide's q(y1 | x) q(y2 | x) learns each digit from
every image that shows it, ten times as many as each of the 100 classes has.

``--inference enum`` sums the 100 pairs out exactly: Pyro enumerates y1 and y2 in
two dimensions of their own, and the decoder's first layer, W_z z + W_y1 y1 + W_y2 y2,
is a broadcast add of the two digits' looked-up columns (``ppl_ssvae.nets``), so the
network sees the 10 x 10 grid of pairs without any copy of x. The relaxed methods relax
each digit on its own simplex.

The label sites are declared, and everything shared reads them (``ppl_ssvae.labels``):
``label_sites = ("y1", "y2")``, ``split_label`` and ``join_label``.
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
from ppl_ssvae.likelihood import make_likelihood
from ppl_ssvae.nets import MLP

DIGITS = 10


class TwoDigit(nn.Module):
    label_sites = ("y1", "y2")

    def __init__(self, z_dim: int = 50, x_dim: int = 1568, hidden: Sequence[int] = (500,),
                 activation: str = "softplus", y_family: ExactY | None = None,
                 likelihood: str = "bernoulli"):
        super().__init__()
        self.num_classes, self.z_dim, self.x_dim = DIGITS * DIGITS, z_dim, x_dim
        self.y_family = y_family or ExactY()
        self.decoder = MLP([z_dim, DIGITS, DIGITS], hidden, x_dim, activation)
        self.likelihood = make_likelihood(likelihood, x_dim)
        self.register_buffer("digit_logits", torch.zeros(DIGITS))  # uniform p(y1), p(y2)
        self.register_buffer("z_loc", torch.zeros(z_dim))
        self.register_buffer("z_scale", torch.ones(z_dim))

    @staticmethod
    def split_label(c: torch.Tensor) -> dict[str, torch.Tensor]:
        """The digits of class indices ``c``: ``{"y1": c // 10, "y2": c % 10}``."""
        y1, y2 = digits_of(c, DIGITS)
        return {"y1": y1, "y2": y2}

    @staticmethod
    def join_label(values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The class ``10 * y1 + y2`` of digits ``y1``, ``y2``."""
        return DIGITS * values["y1"] + values["y2"]

    def story(self, x: torch.Tensor | None, y: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The generative process for a plate of images; ``y`` (class indices 0..99) is
        observed as its two digits, ``y=None`` leaves both latent. Returns (y1, y2, z, x)."""
        if y is None:
            prior = self.y_family.prior(self.digit_logits)
            y1 = pyro.sample("y1", prior)
            y2 = pyro.sample("y2", prior)
        else:
            digit = dist.Categorical(logits=self.digit_logits)
            tens, units = digits_of(y, DIGITS)
            y1 = pyro.sample("y1", digit, obs=tens)
            y2 = pyro.sample("y2", digit, obs=units)
        z = pyro.sample("z", dist.Normal(self.z_loc, self.z_scale).to_event(1))
        x = pyro.sample("x", self.likelihood(self.decoder(z, y1, y2)), obs=x)
        return y1, y2, z, x

    def forward(self, batch: Batch) -> None:
        pyro.module("model", self)
        for part in batch.in_plates():
            self.story(part.x, part.y)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | y1, y2, z) for classes ``y`` (indices 0..99, or points of the
        simplex over the 100 classes, read as their two marginals)."""
        y1, y2 = digits_of(y, DIGITS)
        return self.likelihood.mean(self.decoder(z, y1, y2))
