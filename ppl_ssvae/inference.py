"""Inference methods for the class label y: how the guide draws an unobserved y,
which density the model scores it under, and which ELBO estimator is used.

Choosing an inference method never changes a model's generative story: it picks
a *family* for the unobserved y (exact categorical, enumerated or sampled, or a
continuous relaxation of it) that both the model and the guide ask for, and the
ELBO class that turns the pair into a loss. An observed y is always scored under
the exact categorical, whatever the family: a one-hot y has no finite relaxed
density.

Models whose class weights are a continuous latent (``logistic-normal-prior``,
``dirichlet``) have no discrete y to infer: their methods only pick the ELBO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import (
    ELBO,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from torch import nn

from ppl_ssvae.batch import Part
from ppl_ssvae.estimators import RLOO, LabelEstimator, SumAndSample, UnorderedSet
from ppl_ssvae.iwae import ImportanceWeightedELBO
from ppl_ssvae.nets import MLP
from ppl_ssvae.relaxed import (
    CategoricalKLConcrete,
    CategoricalKLConcreteStraightThrough,
    CategoricalKLGumbelRao,
    CategoricalKLLogisticNormal,
    Concrete,
    ConcreteStraightThrough,
    LogisticNormalSimplex,
)

MAX_PLATE_NESTING = 1
# the Gumbel-Softmax distribution by (categorical KL, straight-through)
CONCRETE = {(False, False): Concrete, (False, True): ConcreteStraightThrough,
            (True, False): CategoricalKLConcrete, (True, True): CategoricalKLConcreteStraightThrough}
RELAXATIONS = ("gumbel", "st-gumbel", "logistic-normal")
GUMBEL_RAO = "gumbel-rao"  # straight-through, its backward pass averaged over Gumbel noise
RELAXED_FAMILIES = (*RELAXATIONS, GUMBEL_RAO)
# Pyro's JIT-compiled ELBOs (--jit), checked against the uncompiled ones on the same
# draws (tests/test_plain_pyro.py). Left out: JitTraceGraph_ELBO, whose tracing fails
# ("Cannot insert a Tensor that requires grad as a constant": the guide reads the
# baseline's running average from Pyro's param store, not from the traced function's
# inputs); JitTraceMeanField_ELBO, which runs but whose loss on the same draws differs
# from TraceMeanField_ELBO's by up to 0.5% here (not investigated further).
JIT_ELBOS = {Trace_ELBO: JitTrace_ELBO, TraceEnum_ELBO: JitTraceEnum_ELBO}
# where TraceGraph_ELBO keeps its running average of a site's downstream cost
AVERAGE_BASELINE_PARAM = "__baseline_avg_downstream_cost_"


class ExactY:
    """y is a categorical, its value a class index (the networks read it as the
    one-hot vector it stands for, ``ppl_ssvae.nets``); ``infer`` tells Pyro to
    enumerate it, or not. An index, unlike a one-hot vector, has no event
    dimension, which is what Pyro's ``infer_discrete`` and its enumeration
    machinery expect of a discrete site."""

    relaxed = False

    def __init__(self, infer: dict | None = None):
        self.infer = dict(infer or {})

    def prior(self, logits: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=logits)

    def posterior(self, logits: torch.Tensor) -> dist.Distribution:
        return dist.Categorical(logits=logits)

    def set_step(self, step: int) -> None:
        """Exact families have no schedule."""

    def baseline_network(self, x_dim: int, hidden: Sequence[int], activation: str) -> nn.Module | None:
        """A network the guide should own for this family (a learned baseline), if any."""
        return None

    def site_infer(self, part: Part, baseline: nn.Module | None = None) -> dict:
        """The ``infer`` dict of the guide's y site for one plate of data."""
        return self.infer


class SampledY(ExactY):
    """One y drawn from q(y | x) per image; its gradient is the score function
    (REINFORCE). ``baseline`` (read by ``TraceGraph_ELBO``) lowers its variance:

    - ``"none"``: no baseline;
    - ``"average"``: a running average of the cost downstream of y, kept by Pyro;
    - ``"learned"``: that running average plus ``N/B * b(x)``, b a small network
      trained by Pyro's baseline loss ``sum (cost - baseline)^2``.
    """

    def __init__(self, baseline: str = "none", beta: float = 0.9):
        if baseline not in ("none", "average", "learned"):
            raise ValueError(f"unknown baseline {baseline!r}")
        super().__init__()
        self.baseline, self.beta = baseline, beta

    def baseline_network(self, x_dim: int, hidden: Sequence[int], activation: str) -> nn.Module | None:
        return LearnedBaseline(x_dim, hidden, activation) if self.baseline == "learned" else None

    def site_infer(self, part: Part, baseline: nn.Module | None = None) -> dict:
        if self.baseline == "none":
            return {}
        options = {"use_decaying_avg_baseline": True, "baseline_beta": self.beta}
        shape = _plate_shape()  # (B,), or (particles, B) with vectorised particles
        _fit_running_average(f"{part.name}/y", shape)
        if self.baseline == "learned":
            options["baseline_value"] = baseline(part.x, part.size / len(part.x)).expand(shape)
        return {"baseline": options}


def _plate_shape() -> torch.Size:
    """The batch shape the enclosing plates give a site (Pyro wants a baseline of
    exactly the shape of the cost it corrects)."""
    frames = [f for f in pyro.poutine.runtime.get_plates() if f.dim is not None]
    shape = [1] * max((-f.dim for f in frames), default=0)
    for frame in frames:
        shape[frame.dim] = frame.size
    return torch.Size(shape)


def _fit_running_average(site: str, shape: torch.Size) -> None:
    """Pyro keeps one running average per position in the batch; when the batch size
    changes (the last, shorter batch of an epoch) start the new positions from the
    mean of the old ones, instead of failing to broadcast."""
    store = pyro.get_param_store()
    name = AVERAGE_BASELINE_PARAM + site
    if name in store:
        average = store[name].detach()
        if average.shape != shape:
            store[name] = average.mean().expand(shape).clone()


class LearnedBaseline(nn.Module):
    """b(x), a per-image correction to the running-average baseline of the cost
    downstream of y. Pyro's baseline loss sees the cost scaled by N/B; a gradient
    hook divides that scale back out, so b learns in nats per image."""

    def __init__(self, x_dim: int, hidden: Sequence[int], activation: str = "softplus"):
        super().__init__()
        self.net = MLP([x_dim], hidden, 1, activation)

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        b = self.net(x).squeeze(-1)
        if b.requires_grad:
            b.register_hook(lambda grad: grad / scale**2)
        return scale * b


class RelaxedY(ExactY):
    """y is relaxed to the simplex, in model and guide alike, with a temperature
    that follows ``max(minimum, initial * exp(-decay * step))``:

    - ``"gumbel"``: Gumbel-Softmax (Concrete), softmax((logits + Gumbel noise) / tau);
    - ``"st-gumbel"``: its straight-through version, a hard one-hot in the forward
      pass and the relaxed gradient in the backward pass;
    - ``"logistic-normal"``: softmax((logits + N(0, I) noise) / tau), with the
      logistic-normal density of ``ppl_ssvae.relaxed.LogisticNormalSimplex``.

    The model's prior for an unobserved y is the same relaxation of Cat(1/K).
    """

    relaxed = True

    def __init__(self, temperature: float = 1.0, minimum: float | None = None,
                 decay: float = 0.0, straight_through: bool = False,
                 relaxation: str | None = None, categorical_kl: bool = False,
                 noise_draws: int = 1):
        super().__init__()
        relaxation = relaxation or ("st-gumbel" if straight_through else "gumbel")
        if relaxation not in RELAXED_FAMILIES:
            raise ValueError(f"unknown relaxation {relaxation!r}: use one of {RELAXED_FAMILIES}")
        if relaxation == GUMBEL_RAO and not categorical_kl:
            raise ValueError("gumbel-rao is scored by the categorical KL (categorical_kl=True)")
        self.relaxation = relaxation
        self.straight_through = relaxation in ("st-gumbel", GUMBEL_RAO)
        self.noise_draws = noise_draws
        self.initial = temperature
        self.minimum = temperature if minimum is None else min(minimum, temperature)
        self.decay = decay
        self.temperature = temperature
        self.categorical_kl = categorical_kl

    def set_step(self, step: int) -> None:
        self.temperature = max(self.minimum, self.initial * math.exp(-self.decay * step))

    def _distribution(self, logits: torch.Tensor) -> dist.Distribution:
        temperature = torch.tensor(self.temperature, dtype=logits.dtype, device=logits.device)
        if self.relaxation == "logistic-normal":
            cls = CategoricalKLLogisticNormal if self.categorical_kl else LogisticNormalSimplex
            return cls(temperature, logits)
        if self.relaxation == GUMBEL_RAO:
            return CategoricalKLGumbelRao(temperature, logits=logits, noise_draws=self.noise_draws)
        cls = CONCRETE[self.categorical_kl, self.straight_through]
        return cls(temperature, logits=logits)

    prior = posterior = _distribution


@dataclass
class Inference:
    """One inference method of ``ppl-ssvae list``, everything about it in one entry:

    - ``name``, ``description``: what ``--inference`` takes and what it does to y;
    - ``family``: what model and guide are asked for y: ``"exact"`` (a categorical,
      enumerated if ``infer`` says so; also the family of the label estimators, which
      set y's values themselves), ``"sampled"`` (drawn, score-function gradient, with
      ``baseline``), or one of ``RELAXED_FAMILIES``;
    - ``elbo_class``: Pyro's ELBO or the library's own (``ppl_ssvae.iwae``,
      ``ppl_ssvae.estimators``);
    - ``passes``: its cost, in decoder passes per unlabelled image;
    - ``defaults``: its own settings when the command line leaves them out
      (``samples``: k, S or the noise draws; ``particles``);
    - ``models``: the models that accept it, beyond those listing it in the registry
      (a new method declares them here, and nowhere else);
    - ``per_part``: the objective calls the ELBO on each part of a batch apart (a
      sampled y's score-function term would otherwise carry the other plate's terms).
    """

    name: str
    description: str
    family: str
    infer: dict = field(default_factory=dict)
    baseline: str = "none"
    elbo_class: type = Trace_ELBO
    categorical_kl: bool = False
    passes: str = "1"
    defaults: dict = field(default_factory=dict)
    models: tuple[str, ...] = ()
    per_part: bool = False

    @property
    def reruns_guide(self) -> bool:
        """The ELBO runs the guide once per label value (sequential enumeration)."""
        return self.infer.get("enumerate") == "sequential"

    @property
    def straight_through(self) -> bool:
        return self.family == "st-gumbel"

    @property
    def samples_meaning(self) -> str | None:
        """What ``--samples`` counts for this method, or None if it takes none."""
        if self.family == GUMBEL_RAO:
            return "noise draws per image"
        if isinstance(self.elbo_class, type) and issubclass(self.elbo_class, LabelEstimator):
            return self.elbo_class.samples_name
        return None

    def resolve(self, settings):
        """``settings`` with this method's defaults where the command line left them
        unset (None); ``--samples`` for a method that takes none is refused."""
        if settings.samples is not None and self.samples_meaning is None:
            raise ValueError(f"--inference {self.name} takes no --samples (the methods that "
                             f"do: {', '.join(n for n, i in INFERENCES.items() if i.samples_meaning)})")
        changes = {name: value for name, value in {"particles": 1, **self.defaults}.items()
                   if getattr(settings, name) is None}
        return settings.replace(**changes) if changes else settings

    def y_family(self, settings) -> ExactY:
        if self.family in RELAXED_FAMILIES:
            return RelaxedY(settings.temperature, settings.temperature_min,
                            settings.temperature_decay, relaxation=self.family,
                            categorical_kl=self.categorical_kl,
                            noise_draws=settings.samples or 1)
        if self.family == "sampled":
            return SampledY(self.baseline)
        return ExactY(self.infer)

    def jit_problem(self, settings) -> str | None:
        """Why ``--jit`` cannot compile this method's ELBO, or None if it can."""
        if self.elbo_class not in JIT_ELBOS:
            return (f"--inference {self.name} uses {self.elbo_class.__name__}, which has no "
                    f"JIT version that works here (see ppl_ssvae/inference.py, JIT_ELBOS)")
        if self.family in RELAXED_FAMILIES and settings.temperature_decay > 0:
            return ("the temperature would be a constant of the compiled ELBO, so it cannot "
                    "follow --temperature-decay")
        return None

    def elbo(self, settings) -> ELBO:
        if issubclass(self.elbo_class, LabelEstimator):
            return self.elbo_class(settings.samples, max_plate_nesting=MAX_PLATE_NESTING)
        particles = max(1, settings.particles or 1)
        kwargs = dict(num_particles=particles, max_plate_nesting=MAX_PLATE_NESTING,
                      vectorize_particles=particles > 1)
        if self.elbo_class is TraceEnum_ELBO and self.infer.get("enumerate") == "sequential":
            kwargs["vectorize_particles"] = False  # sequential enumeration cannot vectorise
        if getattr(settings, "jit", False):
            problem = self.jit_problem(settings)
            if problem:
                raise ValueError(problem)
            return JIT_ELBOS[self.elbo_class](ignore_jit_warnings=True, **kwargs)
        return self.elbo_class(**kwargs)


INFERENCES: dict[str, Inference] = {
    inference.name: inference
    for inference in [
        Inference("enum", "exact sum over y, enumerated in parallel (TraceEnum_ELBO)",
                  "exact", {"enumerate": "parallel"}, elbo_class=TraceEnum_ELBO, passes="K"),
        Inference("enum-seq", "exact sum over y, one y value at a time (TraceEnum_ELBO)",
                  "exact", {"enumerate": "sequential"}, elbo_class=TraceEnum_ELBO, passes="K"),
        Inference("score", "one y sampled, score-function gradient, no baseline: the "
                  "original's ApproxM2 (Trace_ELBO)", "sampled", elbo_class=Trace_ELBO,
                  per_part=True),
        Inference("tracegraph", "one y sampled, score function with a running-average "
                  "baseline (TraceGraph_ELBO)", "sampled", baseline="average",
                  elbo_class=TraceGraph_ELBO),
        Inference("tracegraph-nn", "one y sampled, score function with a running average "
                  "plus a learned baseline b(x) (TraceGraph_ELBO)", "sampled",
                  baseline="learned", elbo_class=TraceGraph_ELBO),
        Inference("gumbel", "y relaxed by Gumbel-Softmax at a temperature (Trace_ELBO)",
                  "gumbel", elbo_class=Trace_ELBO),
        Inference("st-gumbel", "straight-through Gumbel-Softmax: hard y forward, relaxed "
                  "gradient backward (Trace_ELBO)", "st-gumbel", elbo_class=Trace_ELBO),
        Inference("gumbel-cat-kl", "y relaxed by Gumbel-Softmax, scored by the KL of the "
                  "categoricals it relaxes; closed-form KL for z (TraceMeanField_ELBO)", "gumbel",
                  elbo_class=TraceMeanField_ELBO, categorical_kl=True),
        Inference("st-gumbel-cat-kl", "straight-through Gumbel-Softmax, scored by the KL of "
                  "the categoricals it relaxes (TraceMeanField_ELBO)", "st-gumbel",
                  elbo_class=TraceMeanField_ELBO, categorical_kl=True),
        Inference("logistic-normal", "y relaxed as softmax((logits + N(0, I)) / temperature) "
                  "(Trace_ELBO)", "logistic-normal", elbo_class=Trace_ELBO),
        Inference("logistic-normal-cat-kl", "y relaxed as in logistic-normal, scored by the KL "
                  "of the categoricals it relaxes; closed-form KL for z (TraceMeanField_ELBO)",
                  "logistic-normal", elbo_class=TraceMeanField_ELBO, categorical_kl=True),
        Inference("iwae", "importance-weighted bound, --particles samples per image; M2's y "
                  "relaxed as in gumbel (ImportanceWeightedELBO)", "gumbel",
                  elbo_class=ImportanceWeightedELBO, passes="particles"),
        Inference("iwae-logistic-normal", "importance-weighted bound, --particles samples per "
                  "image; y relaxed as in logistic-normal (ImportanceWeightedELBO)",
                  "logistic-normal", elbo_class=ImportanceWeightedELBO, passes="particles"),
        Inference("sum-and-sample", "the k most probable y summed exactly, one drawn from "
                  "the rest, score function baselined by the summed ones (Liu et al. 2019; "
                  "--samples k, default 4)", "exact", elbo_class=SumAndSample,
                  passes="k + 1", defaults={"samples": 4}, models=("m2", "adgm", "hierarchical")),
        Inference("rloo", "S values of y drawn, each one's score function baselined by the "
                  "others' mean (Kool et al. 2019; --samples S, default 4)", "exact",
                  elbo_class=RLOO, passes="S", defaults={"samples": 4},
                  models=("m2", "adgm", "hierarchical")),
        Inference("unordered-set", "S distinct values of y drawn without replacement, the "
                  "unordered set estimator with its built-in baseline (Kool et al. 2020; "
                  "--samples S, default 4)", "exact", elbo_class=UnorderedSet, passes="S",
                  defaults={"samples": 4}, models=("m2", "adgm", "hierarchical")),
        Inference("gumbel-rao", "straight-through Gumbel-Softmax, its backward pass averaged "
                  "over Gumbel noise given the class drawn (Paulus et al. 2021; --samples noise "
                  "draws, default 10); categorical KL (TraceMeanField_ELBO)", GUMBEL_RAO,
                  elbo_class=TraceMeanField_ELBO, categorical_kl=True,
                  defaults={"samples": 10}, models=("m2", "two-digit", "hierarchical")),
        Inference("reparam", "every latent reparameterised, one sample (Trace_ELBO)",
                  "exact", elbo_class=Trace_ELBO),
        Inference("analytic-kl", "closed-form KL terms where they exist "
                  "(TraceMeanField_ELBO)", "exact", elbo_class=TraceMeanField_ELBO),
        Inference("ml", "maximum likelihood: no latent variables (Trace_ELBO)", "exact",
                  elbo_class=Trace_ELBO, passes="0"),
    ]
}
