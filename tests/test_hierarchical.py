"""The hierarchical model (models/hierarchical.py, guides/hierarchical.py): its Pyro ELBO
equals the ELBO written by hand in plain PyTorch on the same networks and draws, values
and gradients, with y summed out over the small networks alone; the relaxed methods'
closed-form KLs leave z1 to its draws; evaluation reads z1 and z2."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence
from torch.nn import functional as F

from conftest import assert_enumerated_gradients_match, make_batch, small_pair
from ppl_ssvae import Batch, evaluate


def normal_log_prob(x, loc, scale):
    return (-0.5 * ((x - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def hierarchical_negative_elbo(model, guide, batch: Batch, draw=torch.randn) -> torch.Tensor:
    """-(ELBO_U + ELBO_L), y summed out in closed form. For an unlabelled image::

        ELBO(x) = log p(x|z1) - log q(z1|x) + H(q(y|z1))
                  + sum_k q(y_k|z1) [ log p(y_k) + log p(z2_k) + log p(z1|y_k,z2_k)
                                      - log q(z2_k|z1,y_k) ]

    z1 one draw from q(z1|x), z2_k one from q(z2|z1,y_k): the decoder p(x|z1) and q(z1|x)
    run once, only the bracket K times. A labelled image's ELBO has the bracket at its y
    and no entropy. The noise comes from ``draw`` in the order and shapes the guide draws
    it under parallel enumeration: per part z1 (B, D1), then z2 ((K, B, D2) for y
    enumerated)."""
    k = model.num_classes
    total = torch.zeros(())

    def bracket(z1, y, eps):
        loc, scale = guide.encoder_z2(z1, y)
        z2 = loc + scale * eps
        code_loc, code_scale = model.code(z2, y)
        return (-math.log(k) + normal_log_prob(z2, torch.zeros_like(z2), torch.ones_like(z2))
                + normal_log_prob(z1, code_loc, code_scale) - normal_log_prob(z2, loc, scale))

    def draw_z1(x):
        loc, scale = guide.encode_z1(x)
        z1 = loc + scale * draw(len(x), guide.z1_dim)
        logits = model.decoder(z1)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        return z1, log_px - normal_log_prob(z1, loc, scale)

    if batch.x_u is not None:
        x = batch.x_u
        z1, elbo = draw_z1(x)
        log_qy = F.log_softmax(guide.classify_given_z1(x, z1), -1)  # (B, K)
        brackets = bracket(z1, torch.arange(k).unsqueeze(1), draw(k, len(x), model.z_dim))
        q = log_qy.exp()
        elbo = elbo + (q * brackets.T).sum(-1) - (q * log_qy).sum(-1)
        total = total - batch.n_u / len(x) * elbo.sum()
    if batch.x_l is not None:
        x = batch.x_l
        z1, elbo = draw_z1(x)
        elbo = elbo + bracket(z1, batch.y_l, draw(len(x), model.z_dim))
        total = total - batch.n_l / len(x) * elbo.sum()
    return total


@pytest.mark.parametrize("part", ["unlabelled", "labelled", "both"])
@pytest.mark.parametrize("classifier_input", ["z1", "x"])
def test_hierarchical_elbo_equals_hand_computation(tiny, part, classifier_input):
    pair, _ = small_pair(model="hierarchical", z1_dim=6, label_hidden=8,
                         classifier_input=classifier_input)
    full = make_batch(tiny)
    batch = Batch(x_u=full.x_u if part != "labelled" else None, n_u=full.n_u,
                  x_l=full.x_l if part != "unlabelled" else None,
                  y_l=full.y_l if part != "unlabelled" else None, n_l=full.n_l)
    pyro.set_rng_seed(1)
    by_pyro = TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        by_hand = float(hierarchical_negative_elbo(pair.model, pair.guide, batch))
    assert by_pyro == pytest.approx(by_hand, rel=1e-5)


def test_hierarchical_gradients_match_the_hand_computation(tiny):
    pair, _ = small_pair(model="hierarchical", z1_dim=6, label_hidden=8)
    batch = make_batch(tiny)
    assert_enumerated_gradients_match(pair, batch, hierarchical_negative_elbo)


def test_the_decoder_runs_once_however_many_classes(tiny):
    """The point of the structure: under enumeration p(x|z1) sees (B, D1), not (K, B, D1)."""
    pair, _ = small_pair(model="hierarchical")
    shapes = []
    hook = pair.model.decoder.register_forward_hook(lambda m, i, o: shapes.append(i[0].shape))
    TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, make_batch(tiny, b_u=8))
    hook.remove()
    assert shapes and all(len(shape) == 2 for shape in shapes)


def test_cat_kl_takes_closed_forms_for_y_and_z2_and_draws_for_z1(tiny):
    """TraceMeanField_ELBO (gumbel-cat-kl) differs from the one-draw ELBO by the closed
    form minus the draw of each KL it can close: y's (categorical) and z2's. z1's prior
    depends on z2, drawn from z1 in the guide, so its KL at a drawn z2 would be biased:
    the model hides it (``.mask(True)``) and the draw stays."""
    pair, _ = small_pair(model="hierarchical", inference="gumbel-cat-kl")
    batch = make_batch(tiny)
    pyro.set_rng_seed(13)
    mean_field = TraceMeanField_ELBO(max_plate_nesting=1).loss(pair.model, pair.guide, batch)
    pyro.set_rng_seed(13)
    with torch.no_grad():
        trace = pyro.poutine.trace(pair.guide).get_trace(batch)
        replay = pyro.poutine.trace(pyro.poutine.replay(pair.model, trace)).get_trace(batch)
    monte_carlo = -float(replay.log_prob_sum() - trace.log_prob_sum())
    difference, closed_sites = 0.0, set()
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site_is_subsample(site):
            try:
                closed = kl_divergence(site["fn"], replay.nodes[name]["fn"])
            except NotImplementedError:
                continue
            closed_sites.add(name.split("/")[-1])
            one_draw = site["fn"].log_prob(site["value"]) - replay.nodes[name]["fn"].log_prob(
                site["value"])
            difference += float((site["scale"] * (closed - one_draw)).sum())
    assert closed_sites == {"y", "z2"}
    assert mean_field == pytest.approx(monte_carlo + difference, rel=1e-5)


def test_evaluation_reads_z1_and_z2(tiny):
    pair, _ = small_pair(model="hierarchical")
    x = tiny.valid.x[:6]
    latents = evaluate.guide_latents(pair, x)
    assert set(latents) == {"unlabelled/z1", "unlabelled/z2"}
    labels = evaluate.posterior_labels(pair, x, latents=latents)
    assert labels.shape == (6,)
    assert evaluate.kl_per_dimension(pair, x).shape == (pair.model.z_dim,)
    assert "z2" in evaluate.kl_description(pair)
    log_px = evaluate.log_marginal(pair, x, samples=2)
    assert log_px.shape == (6,) and bool(torch.isfinite(log_px).all())
    with torch.no_grad():
        images = pair.model.decode(torch.randn(3, pair.model.z_dim), torch.tensor([0, 4, 9]))
    assert images.shape == (3, 784)
