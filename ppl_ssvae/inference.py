"""Inference methods for the class label y: how the guide draws an unobserved y,
which density the model scores it under, and which ELBO estimator is used.

Choosing an inference method never changes a model's generative story: it picks
a *family* for the unobserved y (exact categorical, enumerated or sampled, or a
continuous relaxation of it) that both the model and the guide ask for, and the
ELBO class that turns the pair into a loss. An observed y is always scored under
the exact categorical, whatever the family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from pyro.infer import (
    ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
)

MAX_PLATE_NESTING = 1


class ExactY:
    """y is a one-hot categorical; ``infer`` tells Pyro to enumerate it, or not."""

    relaxed = False

    def __init__(self, infer: dict | None = None):
        self.infer = dict(infer or {})

    def prior(self, logits: torch.Tensor) -> dist.Distribution:
        return dist.OneHotCategorical(logits=logits)

    def posterior(self, logits: torch.Tensor) -> dist.Distribution:
        return dist.OneHotCategorical(logits=logits)

    def set_step(self, step: int) -> None:
        """Exact families have no schedule."""


class RelaxedY(ExactY):
    """y is relaxed to the simplex: the Gumbel-Softmax (Concrete) distribution of
    Jang et al. and Maddison et al., optionally straight-through (a hard one-hot in
    the forward pass, the relaxed gradient in the backward pass). The temperature
    follows ``max(minimum, initial * exp(-decay * step))``."""

    relaxed = True

    def __init__(self, temperature: float = 1.0, minimum: float | None = None,
                 decay: float = 0.0, straight_through: bool = False):
        super().__init__()
        self.initial = temperature
        self.minimum = temperature if minimum is None else min(minimum, temperature)
        self.decay = decay
        self.temperature = temperature
        self.straight_through = straight_through

    def set_step(self, step: int) -> None:
        self.temperature = max(self.minimum, self.initial * math.exp(-self.decay * step))

    def _distribution(self, logits: torch.Tensor) -> dist.Distribution:
        cls = (dist.RelaxedOneHotCategoricalStraightThrough if self.straight_through
               else dist.RelaxedOneHotCategorical)
        temperature = torch.tensor(self.temperature, dtype=logits.dtype, device=logits.device)
        return cls(temperature, logits=logits)

    prior = posterior = _distribution


@dataclass
class Inference:
    """One entry of ``ppl-ssvae list``: a name, what it does, how to build its parts."""

    name: str
    description: str
    family: str  # "exact-enum", "exact-sample", "relaxed"
    infer: dict = field(default_factory=dict)
    straight_through: bool = False
    elbo_class: type = Trace_ELBO

    def y_family(self, settings) -> ExactY:
        if self.family == "relaxed":
            return RelaxedY(settings.temperature, settings.temperature_min,
                            settings.temperature_decay, self.straight_through)
        return ExactY(self.infer)

    def elbo(self, settings) -> ELBO:
        particles = max(1, settings.particles)
        kwargs = dict(num_particles=particles, max_plate_nesting=MAX_PLATE_NESTING,
                      vectorize_particles=particles > 1)
        if self.elbo_class is TraceEnum_ELBO and self.infer.get("enumerate") == "sequential":
            kwargs["vectorize_particles"] = False  # sequential enumeration cannot vectorise
        if self.elbo_class is RenyiELBO:
            return RenyiELBO(alpha=0.0, **kwargs)
        return self.elbo_class(**kwargs)


INFERENCES: dict[str, Inference] = {
    inference.name: inference
    for inference in [
        Inference("enum", "exact sum over y, enumerated in parallel (TraceEnum_ELBO)",
                  "exact-enum", {"enumerate": "parallel"}, elbo_class=TraceEnum_ELBO),
        Inference("enum-seq", "exact sum over y, one y value at a time (TraceEnum_ELBO)",
                  "exact-enum", {"enumerate": "sequential"}, elbo_class=TraceEnum_ELBO),
        Inference("score", "one y sampled, score-function gradient (Trace_ELBO)",
                  "exact-sample", elbo_class=Trace_ELBO),
        Inference("tracegraph", "one y sampled, score function with a running-average "
                  "baseline (TraceGraph_ELBO)", "exact-sample",
                  {"baseline": {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}},
                  elbo_class=TraceGraph_ELBO),
        Inference("gumbel", "y relaxed by Gumbel-Softmax at a temperature (Trace_ELBO)",
                  "relaxed", elbo_class=Trace_ELBO),
        Inference("st-gumbel", "straight-through Gumbel-Softmax: hard y forward, relaxed "
                  "gradient backward (Trace_ELBO)", "relaxed", straight_through=True,
                  elbo_class=Trace_ELBO),
        Inference("iwae", "importance-weighted bound over --particles samples (RenyiELBO, "
                  "alpha=0); needs every latent reparameterised", "relaxed",
                  elbo_class=RenyiELBO),
    ]
}
