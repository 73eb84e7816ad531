"""M2's objective written out by hand in plain PyTorch, on the same networks.

This is the oracle the tests hold the Pyro pair to, and the plain-PyTorch step
the benchmark compares it with. For an unlabelled image the label is summed out
in closed form::

    ELBO(x) = sum_k q(y_k|x) [ log p(x|y_k,z_k) + log p(y_k) + log p(z_k) - log q(z_k|x,y_k) ]
              - sum_k q(y_k|x) log q(y_k|x),        z_k = mu(x, y_k) + sigma(x, y_k) * eps_k

and for a labelled one ``ELBO(x, y)`` is the bracket at the observed y. Sums are
scaled by ``n / batch size`` as Pyro's plates scale them. The noise ``eps`` is
drawn as ``torch.randn``: unlabelled first, shape (K, B, D), then labelled, (B, D),
which is the order and shape in which Pyro's guide draws it under parallel
enumeration, so with the same seed both see the same z.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ppl_ssvae.batch import Batch


def _normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(x | loc, diag scale^2), summed over the last dimension."""
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def _bracket(model, guide, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y) at z = mu + sigma * eps."""
    loc, scale = guide.encode_z(x, y)
    z = loc + scale * eps
    out = model.decoder(z, y)
    if model.likelihood.name == "gaussian":  # x_d ~ N(out_d, sigma_d^2)
        log_px = _normal_log_prob(x, out, model.likelihood.scale())
    else:  # x_d ~ Bernoulli(sigmoid(out_d))
        log_px = -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
    log_py = -math.log(model.num_classes)
    log_pz = _normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
    log_qz = _normal_log_prob(z, loc, scale)
    return log_px + log_py + log_pz - log_qz


def m2_negative_elbo(model, guide, batch: Batch, eps_u: torch.Tensor | None = None,
                     eps_l: torch.Tensor | None = None) -> torch.Tensor:
    """-(ELBO_U + w ELBO_L) of the batch, each part scaled to its full set, w the batch's
    ``labelled_weight``. Draws the
    noise with ``torch.randn`` when it is not given."""
    total = torch.zeros(())
    k = model.num_classes
    if batch.x_u is not None:
        x = batch.x_u
        if eps_u is None:
            eps_u = torch.randn(k, len(x), model.z_dim, device=x.device)
        log_q = F.log_softmax(guide.classify(x), dim=-1)  # (B, K)
        ys = torch.arange(k, device=x.device).unsqueeze(1)  # (K, 1): every class index
        brackets = _bracket(model, guide, x, ys, eps_u)  # (K, B)
        q = log_q.exp()
        elbo = (q * brackets.T).sum(-1) - (q * log_q).sum(-1)
        total = total - (batch.n_u or len(x)) / len(x) * elbo.sum()
    if batch.x_l is not None:
        x = batch.x_l
        if eps_l is None:
            eps_l = torch.randn(len(x), model.z_dim, device=x.device)
        elbo = _bracket(model, guide, x, batch.y_l, eps_l)
        total = total - batch.labelled_weight * (batch.n_l or len(x)) / len(x) * elbo.sum()
    return total
