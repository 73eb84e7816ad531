"""Measurements of a trained pair: accuracy of q(y|x), the ELBO per image, the
importance-sampled log p(x), sum_y q(y|x) KL(q(z|x,y) || p(z)) per latent dimension,
and the labels of the model's own posterior p(y | x, z) by Pyro's ``infer_discrete``.

Every function puts the networks in evaluation mode (batch norm uses its running
statistics and leaves them as they are, dropout is off) and restores the mode it
found; images may come as (B, 784) or (B, 28, 28).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO, config_enumerate, infer_discrete
from pyro.poutine.util import site_is_subsample

from ppl_ssvae.batch import LABELLED, UNLABELLED, Batch, flat_images, one_hot
from ppl_ssvae.inference import MAX_PLATE_NESTING, ExactY
from ppl_ssvae.iwae import ImportanceWeightedELBO
from ppl_ssvae.labels import join_label, label_sites
from ppl_ssvae.objective import SSVAE, evaluation

__all__ = ["accuracy", "elbo_per_image", "evaluation", "exact_y", "guide_latents",
           "kl_description", "kl_per_dimension", "latent_means", "log_marginal", "pca_2d",
           "posterior_labels", "predict"]


def _label_site_names(pair: SSVAE) -> dict[str, str]:
    """The unlabelled plate's label sites of ``pair``'s model, by their name in the model
    (``{"y": "unlabelled/y"}`` for M2, ``y1`` and ``y2`` for the two-digit model)."""
    return {site: f"{UNLABELLED}/{site}" for site in label_sites(pair.model)}


def _images(pair: SSVAE, x: torch.Tensor) -> torch.Tensor:
    return flat_images(x, getattr(pair, "x_dim", None))


def predict(pair: SSVAE, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Class probabilities of q(y | x), in evaluation mode.

    Args:
        pair: a trained pair.
        x: images, (N, D) or (N, *shape).
        batch_size: images per forward pass.

    Returns:
        Probabilities, (N, K).
    """
    x = _images(pair, x)
    with evaluation(pair):
        return torch.cat([pair.guide.classify(chunk).softmax(-1)
                          for chunk in x.split(batch_size)])


def accuracy(pair: SSVAE, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> float:
    """The fraction of ``x`` whose most probable class under q(y | x) is ``y``.

    Args:
        pair: a trained pair.
        x: images, (N, D) or (N, *shape).
        y: their classes, (N,).
        batch_size: images per forward pass.

    Returns:
        The accuracy, in [0, 1].
    """
    return float((predict(pair, x, batch_size).argmax(-1) == y).float().mean())


def kl_per_dimension(pair: SSVAE, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Mean over x of sum_y q(y|x) KL(q(z|x,y) || N(0, I)), one value per dimension of z.

    For a guide whose z reads continuous class weights (``continuous_y``), the KL of
    q(z | x, alpha) at alpha = softmax(classify(x)), q(alpha | x)'s point estimate.

    Args:
        pair: a trained pair (`build`, or `load_run(...).pair`).
        x: images, (N, D) or (N, *shape).
        batch_size: images per forward pass.

    Returns:
        One KL per dimension of z, in nats; empty for a pair without a z (the ``mlp``
        classifier)."""
    guide = pair.guide
    if not hasattr(guide, "encode_z"):
        return torch.zeros(0)
    x = _images(pair, x)
    total = None
    with evaluation(pair):
        for chunk in x.split(batch_size):
            probs = guide.classify(chunk).softmax(-1)  # (B, K)
            k = probs.shape[-1]
            if getattr(guide, "continuous_y", False):
                ys = probs.unsqueeze(0)  # (1, B, K)
                probs = torch.ones_like(probs[:, :1])  # (B, 1): one component of weight 1
            else:
                ys = torch.arange(k, device=x.device).unsqueeze(1)  # (K, 1), enumerated
            loc, scale = guide.encode_z(chunk, ys)  # (K, B, D)
            kl = 0.5 * (loc**2 + scale**2 - 1.0) - scale.log()
            part = (probs.T.unsqueeze(-1) * kl).sum(0).sum(0)  # (D,)
            total = part if total is None else total + part
    return total / len(x)


def kl_description(pair: SSVAE) -> str:
    """What ``kl_per_dimension`` computes for this pair, for the title of its figure."""
    if getattr(pair.guide, "continuous_y", False):
        return "KL(q(z|x,alpha) || p(z)) at alpha = the mean of q(alpha|x)"
    if hasattr(pair.guide, "encode_a"):
        return "sum_y q(y|x) KL(q(z|a,x,y) || p(z)) at a = the mean of q(a|x)"
    if hasattr(pair.guide, "encode_z1"):
        return "sum_y q(y|x) KL(q(z2|z1,y) || p(z2)) at z1 = the mean of q(z1|x)"
    return "sum_y q(y|x) KL(q(z|x,y) || p(z))"


@contextlib.contextmanager
def exact_y(pair: SSVAE) -> Iterator[None]:
    """Swap the pair's y family for exact parallel enumeration, whatever it was
    trained with: the same model and guide, another inference method."""
    if not hasattr(pair.guide, "y_family"):  # no y to infer (the mlp classifier)
        yield
        return
    saved = pair.model.y_family, pair.guide.y_family
    exact = ExactY({"enumerate": "parallel"})
    pair.model.y_family = pair.guide.y_family = exact
    try:
        yield
    finally:
        pair.model.y_family, pair.guide.y_family = saved


def elbo_per_image(pair: SSVAE, x: torch.Tensor, batch_size: int = 1000, seed: int = 0,
                   exact: bool = True) -> float:
    """The ELBO of log p(x) per image, with one draw of the continuous latents per image.

    Args:
        pair: a trained pair (`build`, or `load_run(...).pair`).
        x: binarised images, (N, D) or (N, *shape).
        batch_size: images per forward pass.
        seed: fixes the draws of the latents.
        exact: sum y out by enumeration (for models whose y is a discrete latent), so that
            models trained with different inference methods are scored by the same
            bound; ``False``: the pair's own estimator.

    Returns:
        The mean ELBO per image, in nats.
    """
    x = _images(pair, x)
    elbo = TraceEnum_ELBO(max_plate_nesting=MAX_PLATE_NESTING) if exact else pair.eager_elbo
    swap = exact_y(pair) if exact else contextlib.nullcontext()
    total = 0.0
    with evaluation(pair), swap, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for chunk in x.split(batch_size):
            total -= elbo.loss(pair.model, pair.guide, Batch(x_u=chunk))
    return total / len(x)


def guide_latents(pair: SSVAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One draw from the guide of the continuous latents of unlabelled images ``x``: the
    label is drawn from q(y | x) on the way, z from q(z | x, y), and the label sites the
    model declares (``ppl_ssvae.labels``) are left out.

    Args:
        pair: a trained pair (`build`, or `load_run(...).pair`).
        x: images, (N, D) or (N, *shape).

    Returns:
        The draws by site name: ``unlabelled/z``, ``unlabelled/a`` for the ADGM,
        ``unlabelled/z1`` and ``unlabelled/z2`` for the hierarchical model.
    """
    x = _images(pair, x)
    labels = set(_label_site_names(pair).values())
    with evaluation(pair), exact_y(pair):
        trace = poutine.trace(pair.guide).get_trace(Batch(x_u=x))
    return {name: site["value"] for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and name not in labels}


def posterior_labels(pair: SSVAE, x: torch.Tensor, temperature: int = 0,
                     latents: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Class indices of unlabelled images ``x`` under the model's own posterior
    p(y | x, z) (and a, for the ADGM), computed by Pyro's ``infer_discrete`` on the
    model under ``config_enumerate``, its continuous latents conditioned on ``latents``.

    This is the model's answer, given z, where `predict` is the guide's classifier
    q(y | x); for a trained pair the two mostly agree.

    Args:
        pair: a trained pair (`build`, or `load_run(...).pair`).
        x: images, (N, D) or (N, *shape).
        temperature: 0: the MAP label; 1: a draw from the posterior.
        latents: the continuous latents by site name (default: one draw from the
            guide, `guide_latents`).

    Returns:
        Class indices, (N,).

    Raises:
        ValueError: the model has no discrete latent y (its class weights are continuous).
    """
    x = _images(pair, x)
    latents = guide_latents(pair, x) if latents is None else latents
    model = poutine.condition(config_enumerate(pair.model), data=latents)
    discrete = infer_discrete(model, first_available_dim=-1 - MAX_PLATE_NESTING,
                              temperature=temperature)
    with evaluation(pair), exact_y(pair):
        trace = poutine.trace(discrete).get_trace(Batch(x_u=x))
    sites = _label_site_names(pair)
    if not all(name in trace.nodes for name in sites.values()):
        raise ValueError("this model has no discrete latent y to infer (its class weights "
                         "are continuous): use predict() for its labels")
    return join_label(pair.model, {site: trace.nodes[name]["value"].reshape(len(x))
                                   for site, name in sites.items()})

def log_marginal(pair: SSVAE, x: torch.Tensor, samples: int = 100, exact: bool = True,
                 seed: int = 0, budget: int = 20_000) -> torch.Tensor:
    """The importance-sampled estimate of log p(x) of every row of ``x`` (Burda, Grosse
    and Salakhutdinov 2016), with ``samples`` draws from the guide per image:

    ```
    log p(x) ~ log sum_y (1/S) sum_s p(x, y, h_s) / q(h_s | x, y),   h_s ~ q(h | x, y)
    ```

    The estimate is a stochastic lower bound that tightens with S, and S = 1 gives an ELBO.

    Args:
        pair: a trained pair (`build`, or `load_run(...).pair`).
        x: images, (N, D) or (N, *shape).
        samples: S, the draws per image.
        exact: ``True`` (models whose y is a discrete latent) sums y out exactly: each of
            the K classes is run through the labelled path of model and guide (which turn
            it into the values of their label sites, two digits for the two-digit model),
            and only the continuous latents h (z, a for the ADGM, z1 and z2 for the
            hierarchical model) are importance-sampled. ``False``: the unlabelled path as
            it is (models whose y is a leaf, with continuous class weights in h).
        seed: fixes the draws.
        budget: caps images x samples per forward pass.

    Returns:
        log p(x) per image in nats, (N,).
    """
    estimator = ImportanceWeightedELBO(num_particles=samples, vectorize_particles=samples > 1,
                                       max_plate_nesting=MAX_PLATE_NESTING)
    k = pair.model.num_classes
    per_pass = max(1, budget // samples)
    results = []

    def log_mean_w(batch: Batch, plate: str) -> torch.Tensor:
        log_w = estimator.log_weights(pair.model, pair.guide, batch)[plate]  # (S, B)
        return torch.logsumexp(log_w, dim=0) - math.log(samples)

    with evaluation(pair), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for chunk in x.split(per_pass):
            if exact:
                terms = [log_mean_w(Batch(x_l=chunk, y_l=torch.full(
                    (len(chunk),), c, device=chunk.device)), LABELLED) for c in range(k)]
                results.append(torch.logsumexp(torch.stack(terms), dim=0))
            else:
                results.append(log_mean_w(Batch(x_u=chunk), UNLABELLED))
    return torch.cat(results)


def latent_means(pair: SSVAE, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000
                 ) -> torch.Tensor:
    """The means of q(z | x, y) at the given labels; for a guide whose z reads class
    weights (``continuous_y``), at the weights q(y | x) predicts.

    Args:
        pair: a trained pair (`build`, or `load_run(...).pair`).
        x: images, (N, D) or (N, *shape).
        y: their classes, (N,).
        batch_size: images per forward pass.

    Returns:
        The means, (N, z_dim).
    """
    guide = pair.guide
    out = []
    with evaluation(pair):
        for xs, ys in zip(x.split(batch_size), y.split(batch_size), strict=True):
            probs = pair.classify(xs).softmax(-1)
            weights = probs if getattr(guide, "continuous_y", False) else \
                one_hot(ys, probs.shape[-1])
            out.append(guide.encode_z(xs, weights)[0])
    return torch.cat(out)


def pca_2d(points: torch.Tensor) -> torch.Tensor:
    """``points`` (N, D) projected on their first two principal axes, (N, 2)."""
    centred = points - points.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T
