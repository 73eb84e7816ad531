"""The importance-weighted bound of Burda, Grosse and Salakhutdinov (2016), one
per data point, for models whose latents all sit in data plates::

    L = sum_plates (N / B) sum_{n in batch} log (1/S) sum_{s=1}^{S} w_ns,
    w_ns = p(x_n, h_ns) / q(h_ns | x_n),   h_ns ~ q(h | x_n),

h_n being every latent of example n (y or alpha, and z). S = 1 gives the ELBO;
the bound tightens towards log p(x) as S grows. Every guide site must be
reparameterised: the gradient is that of L itself.

Why not Pyro's ``RenyiELBO(alpha=0)``, which computes the same bound: it keeps
per-example weights only for plates that every site shares, so with two plates
(unlabelled and labelled) it sums each particle's log-weight over the whole
batch and averages the weights of whole batches; and it takes the log-mean-exp
of log-weights already multiplied by the plate's subsampling scale N / B. Here
the weights are per example and the scale multiplies the bound. For one plate
without subsampling the two agree (``tests/test_inference.py`` checks it).
"""

from __future__ import annotations

import math

import torch
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled
from pyro.util import check_if_enumerated

from ppl_ssvae.terms import per_example_terms


class ImportanceWeightedELBO(ELBO):
    """IWAE bound with ``num_particles`` importance samples per data point."""

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs)
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def _log_weights(self, model_trace, guide_trace) -> dict[str, tuple[torch.Tensor, float]]:
        """plate name -> (log w of each example, with the particles in front if
        vectorised; the plate's scale N / B)."""
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and not site["fn"].has_rsample:
                raise NotImplementedError(
                    f"iwae needs every latent reparameterised; guide site {name!r} is not "
                    "(use a relaxed or reparameterised inference method)")
        plates = per_example_terms(model_trace, guide_trace, separate_labels=False)
        return {name: (plate.log_weight, plate.scale) for name, plate in plates.items()}

    def _bound(self, model, guide, args, kwargs) -> torch.Tensor:
        particles = [self._log_weights(m, g) for m, g in self._get_traces(model, guide, args, kwargs)]
        vectorised = self.vectorize_particles and self.num_particles > 1
        bound = torch.zeros(())
        for plate in particles[0]:
            scale = particles[0][plate][1]
            if vectorised:
                log_w = particles[0][plate][0]  # (S, B), the particle plate in front
            else:
                log_w = torch.stack([p[plate][0] for p in particles])  # (S, B)
            per_example = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
            bound = bound.to(per_example) + scale * per_example.sum()
        return bound

    def log_weights(self, model, guide, *args, **kwargs) -> dict[str, torch.Tensor]:
        """log w of every importance sample of every example, unscaled: plate name ->
        a tensor (S, B). The estimate of log p(x_n) is their log-mean-exp over S."""
        particles = [self._log_weights(m, g) for m, g in self._get_traces(model, guide, args, kwargs)]
        if self.vectorize_particles and self.num_particles > 1:
            return {plate: log_w for plate, (log_w, _) in particles[0].items()}
        return {plate: torch.stack([p[plate][0] for p in particles]) for plate in particles[0]}

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return -self._bound(model, guide, args, kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(-self._bound(model, guide, args, kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = -self._bound(model, guide, args, kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach())
