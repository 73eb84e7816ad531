"""Measurements of a trained pair: accuracy of q(y|x), the ELBO per image, and
KL(q(z|x) || p(z)) per latent dimension.

Every function puts the networks in evaluation mode (batch norm uses its running
statistics, dropout is off) and restores the mode it found.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from pyro.infer import TraceEnum_ELBO

from ppl_ssvae.batch import Batch
from ppl_ssvae.inference import MAX_PLATE_NESTING, ExactY
from ppl_ssvae.objective import SSVAE


@contextlib.contextmanager
def evaluation(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def predict(pair: SSVAE, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Class probabilities of q(y | x)."""
    with evaluation(pair):
        return torch.cat([pair.classify(chunk).softmax(-1) for chunk in x.split(batch_size)])


def accuracy(pair: SSVAE, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    return float((predict(pair, x, batch_size).argmax(-1) == y).float().mean())


def kl_per_dimension(pair: SSVAE, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Mean over x of sum_y q(y|x) KL(q(z|x,y) || N(0, I)), one value per dimension of z."""
    guide = pair.guide
    total = None
    with evaluation(pair):
        for chunk in x.split(batch_size):
            probs = pair.classify(chunk).softmax(-1)  # (B, K)
            k = probs.shape[-1]
            ys = torch.eye(k, device=x.device).unsqueeze(1)  # (K, 1, K), enumerated
            loc, scale = guide.encode_z(chunk, ys)  # (K, B, D)
            kl = 0.5 * (loc**2 + scale**2 - 1.0) - scale.log()
            part = (probs.T.unsqueeze(-1) * kl).sum(0).sum(0)  # (D,)
            total = part if total is None else total + part
    return total / len(x)


@contextlib.contextmanager
def exact_y(pair: SSVAE) -> Iterator[None]:
    """Swap the pair's y family for exact parallel enumeration, whatever it was
    trained with: the same model and guide, another inference method."""
    saved = pair.model.y_family, pair.guide.y_family
    exact = ExactY({"enumerate": "parallel"})
    pair.model.y_family = pair.guide.y_family = exact
    try:
        yield
    finally:
        pair.model.y_family, pair.guide.y_family = saved


def elbo_per_image(pair: SSVAE, x: torch.Tensor, batch_size: int = 1000, seed: int = 0,
                   exact: bool = True) -> float:
    """The ELBO of log p(x) per image in nats for binarised ``x``, with one draw of
    the continuous latents per image, fixed by ``seed``. ``exact=True`` sums y out
    by enumeration (for models whose y is a discrete latent), so models trained
    with different inference methods are scored by the same bound; otherwise the
    pair's own estimator is used."""
    elbo = TraceEnum_ELBO(max_plate_nesting=MAX_PLATE_NESTING) if exact else pair.elbo
    swap = exact_y(pair) if exact else contextlib.nullcontext()
    total = 0.0
    with evaluation(pair), swap, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for chunk in x.split(batch_size):
            total -= elbo.loss(pair.model, pair.guide, Batch(x_u=chunk))
    return total / len(x)

