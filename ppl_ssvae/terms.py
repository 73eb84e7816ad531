"""Per-example, per-plate terms of a model/guide pair: the bookkeeping shared by the
estimators that Pyro does not ship (the IWAE bound of ``ppl_ssvae.iwae``, the
discrete-label estimators of ``ppl_ssvae.estimators``).

Pyro's ELBOs sum every site's log-density over its plates. An estimator that weighs
each example on its own (a log-mean-exp over importance samples, a leave-one-out
baseline, a sum over the top classes) needs the sums per example instead::

    model_trace, guide_trace = traces(model, guide, args, kwargs)
    for plate in per_example_terms(model_trace, guide_trace).values():
        plate.scale        # N / B (times --labelled-weight on the labelled plate)
        plate.log_p        # sum of the model's log-densities, one per example: (..., B)
        plate.log_q        # sum of the guide's, the label sites left out
        plate.labels       # the guide's unobserved discrete sites: LabelSite

Dimensions left of the plate (Pyro's vectorised particles, or the several label values
an estimator evaluates at once) stay in front: ``log_p`` of an M2 image evaluated at m
labels has shape (m, B). Every site must sit in exactly one data plate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

PARTICLE_PLATE = "num_particles_vectorized"  # the plate Pyro's ELBO adds for particles


@dataclass
class LabelSite:
    """An unobserved discrete site of the guide: its name, the distribution it was
    drawn from (its ``logits`` are those of q(y | x), one row per example), the values
    used, and their log-probabilities under it (unscaled)."""

    name: str
    fn: object
    value: torch.Tensor
    log_q: torch.Tensor


@dataclass
class PlateTerms:
    """The terms of one data plate, per example (see the module's docstring)."""

    name: str
    scale: float
    log_p: torch.Tensor | float = 0.0
    log_q: torch.Tensor | float = 0.0
    labels: list[LabelSite] = field(default_factory=list)

    @property
    def log_weight(self) -> torch.Tensor:
        """log p(x, h) - log q(h | x) of each example, label sites included."""
        return self.log_p - self.log_q - sum(label.log_q for label in self.labels)


def is_label_site(site: dict) -> bool:
    """An unobserved discrete sample site (a class label the guide draws)."""
    return (site["type"] == "sample" and not site["is_observed"]
            and getattr(site["fn"], "has_enumerate_support", False))


def traces(model: Callable, guide: Callable, args: tuple, kwargs: dict,
           guide_handler: Callable | None = None):
    """The guide's trace (run under ``guide_handler``, if given: e.g. a handler that sets
    the label sites' values) and the model's, replayed against it; subsample sites pruned
    and every site's log-density computed."""
    run_guide = guide_handler(guide) if guide_handler is not None else guide
    guide_trace = poutine.trace(run_guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return model_trace, guide_trace


def per_example_terms(model_trace, guide_trace, separate_labels: bool = True
                      ) -> dict[str, PlateTerms]:
    """Each data plate's terms, summed per example over the sites of model and guide.

    Args:
        model_trace: the model's trace, replayed against the guide's, log-densities
            computed (``traces`` makes both).
        guide_trace: the guide's trace.
        separate_labels: keep the guide's unobserved discrete sites apart
            (``PlateTerms.labels``) rather than summed into ``log_q``.

    Returns:
        plate name -> its ``PlateTerms``.

    Raises:
        ValueError: a site sits in no data plate or in several, or the sites of one plate
            are scaled differently.
    """
    plates: dict[str, PlateTerms] = {}
    for role, trace in (("model", model_trace), ("guide", guide_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            frames = [f for f in site["cond_indep_stack"]
                      if f.vectorized and f.name != PARTICLE_PLATE]
            if len(frames) != 1:
                raise ValueError(f"site {name!r} must sit in exactly one data plate to be "
                                 f"weighed per example (it is in {len(frames)})")
            log_density = scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
            scale = float(site["scale"])
            plate = plates.setdefault(frames[0].name, PlateTerms(frames[0].name, scale))
            if not math.isclose(plate.scale, scale):
                raise ValueError(f"the sites of plate {plate.name!r} are scaled differently, "
                                 "so their terms have no common scale")
            if role == "model":
                plate.log_p = plate.log_p + log_density
            elif separate_labels and is_label_site(site):
                plate.labels.append(LabelSite(name, site["fn"], site["value"], log_density))
            else:
                plate.log_q = plate.log_q + log_density
    return plates
